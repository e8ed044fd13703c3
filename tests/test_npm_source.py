"""The npm source kind against a local registry (tests/npm_registry.py): the lock written
by npm, packages fetched, verified, unpacked and trimmed for each architecture, and the
bad inputs (unknown package, hash mismatch, no build for the architecture) as one line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliancekit.cache import Cache
from appliancekit.errors import UserError
from appliancekit.recipe import load_recipe
from appliancekit.sources import npm
from appliancekit.sources.debian import DebPackage
from appliancekit.sources.npm.cli import write_lock
from appliancekit.sources.npm.registry import REGISTRY_ENV
from appliancekit.sources.npm.trim import category
from appliancekit.sources.unpack import UnpackedPackage

from .conftest import REPO
from .npm_registry import EM_AARCH64, EM_X86_64, FakePackage, Registry, elf, serve

needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")

PACKAGES = [
    FakePackage(
        "app",
        "1.0.0",
        {
            "index.js": b"require('lib')\n",
            "README.md": b"# app\n" * 100,
            "LICENSE": b"MIT\n",
            "index.d.ts": b"export {}\n",
            "src/index.ts": b"export {}\n",
            "index.js.map": b"{}" * 50,
            "test/app.test.js": b"//\n" * 30,
            "dist/index.min.js": b"!function(){}()\n" * 40,
            "lib/init-docs/readme.js": b"module.exports = 1\n",
        },
        dependencies={"lib": "^1.0.0", "@scope/addon": "2.0.0"},
        optional={"fsevents": "1.0.0"},
    ),
    FakePackage("lib", "1.0.0", {"index.js": b"module.exports = 1\n"}),
    FakePackage("lib", "1.1.0", {"index.js": b"module.exports = 2\n"}),
    FakePackage(
        "@scope/addon",
        "2.0.0",
        {
            "index.js": b"require('node-gyp-build')(__dirname)\n",
            "binding.gyp": b"{}\n",
            "prebuilds/linux-x64/node.napi.glibc.node": elf(EM_X86_64),
            "prebuilds/linux-x64/node.napi.musl.node": elf(EM_X86_64),
            "prebuilds/linux-arm64/node.napi.glibc.node": elf(EM_AARCH64),
            "prebuilds/darwin-x64+arm64/node.napi.node": b"\xcf\xfa\xed\xfe" + b"\0" * 60,
        },
        install_script=True,
    ),
    FakePackage("fsevents", "1.0.0", {"index.js": b"//\n"}, os=("darwin",)),
]
RECIPE = """[appliance]
name = "{name}"
summary = "npm test"

[debian]
packages = ["nodejs"]

[npm]
requirements = {requirements}
prefix = "/usr/lib/app"

[[service]]
name = "app"
exec = ["/usr/bin/node", "/usr/lib/app/node_modules/app/index.js"]
"""


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    with serve(Registry(list(PACKAGES))) as running:
        yield running


def make_recipe(tmp_path: Path, requirements: list[str], name: str = "npmapp") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    quoted = "[" + ", ".join(f'"{r}"' for r in requirements) + "]"
    (directory / "recipe.toml").write_text(RECIPE.format(name=name, requirements=quoted))
    return directory


@pytest.fixture(scope="module")
def locked(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recipe directory whose npm.lock npm wrote against the local registry."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    directory = make_recipe(tmp_path_factory.mktemp("recipe"), ["app@1.0.0"])
    write_lock(directory, registry.url)
    return directory


NODE = UnpackedPackage(DebPackage("nodejs", "20", "arm64", "0" * 64, 0, ""), Path("/"), ())


@needs_npm
def test_lock_pins_the_closure_with_integrity_and_platforms(locked: Path) -> None:
    lock = npm.read_lock(locked / "npm.lock")
    by_path = {p.path: p for p in lock.packages}
    assert lock.requirements == ("app@1.0.0",)
    assert set(by_path) == {
        "node_modules/app",
        "node_modules/lib",
        "node_modules/@scope/addon",
        "node_modules/fsevents",
    }
    assert by_path["node_modules/lib"].version == "1.1.0"  # ^1.0.0: npm picks the newest
    assert by_path["node_modules/@scope/addon"].tarball == "@scope/addon/-/addon-2.0.0.tgz"
    assert by_path["node_modules/@scope/addon"].install_script
    assert by_path["node_modules/fsevents"].optional
    assert by_path["node_modules/fsevents"].os == ("darwin",)
    assert all(re.fullmatch(r"sha512-[A-Za-z0-9+/]+=*", p.integrity) for p in lock.packages)
    text = (locked / "npm.lock").read_text()
    assert "127.0.0.1" not in text  # tarball paths are relative to the registry
    assert npm.format_lock(lock) == text  # reading and writing round-trip


@needs_npm
def test_unknown_package_is_one_line_at_the_requirement(registry: Registry, tmp_path: Path) -> None:
    directory = make_recipe(tmp_path, ["app@1.0.0", "nosuch@1.0.0"])
    result = subprocess.run(
        [sys.executable, "-m", "appliancekit.sources.npm", "lock", str(directory)],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "HOME": str(tmp_path),
            REGISTRY_ENV: registry.url,
        },
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {directory / 'recipe.toml'}:9: npm.requirements[1]:")
    assert "nosuch@1.0.0" in lines[-1]
    assert not (directory / "npm.lock").exists()


@pytest.mark.parametrize(
    ("arch", "binary"),
    [
        ("arm64", "prebuilds/linux-arm64/node.napi.glibc.node"),
        ("amd64", "prebuilds/linux-x64/node.napi.glibc.node"),
    ],
)
@needs_npm
def test_install_trims_and_keeps_the_target_binary(
    locked: Path,
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    arch: str,
    binary: str,
) -> None:
    monkeypatch.setenv(REGISTRY_ENV, registry.url)
    plan = npm.plan(load_recipe(locked), arch)
    assert plan is not None
    assert [p.name for p in plan.skipped] == ["fsevents"]  # optional, darwin only
    result = npm.install(Cache(tmp_path / "cache"), plan, [NODE])
    request = result.requests[0]
    keep = set(request.keep)
    app = "/usr/lib/app/node_modules/app/"
    addon = "/usr/lib/app/node_modules/@scope/addon/"
    assert {app + "index.js", app + "LICENSE", app + "package.json"} <= keep
    assert app + "lib/init-docs/readme.js" in keep  # code named readme is not a doc
    for trimmed in (
        "README.md",
        "index.d.ts",
        "src/index.ts",
        "index.js.map",
        "test/app.test.js",
        "dist/index.min.js",
    ):
        assert app + trimmed not in keep
    assert addon + binary in keep
    assert request.libraries == (addon + binary,)  # kept with its ELF closure
    assert not any("darwin" in path or "musl" in path for path in keep)
    assert request.executables == ("/usr/bin/node",)
    report = result.trim
    assert report is not None and report.packages == 3
    trimmed = {name: files for name, files, _bytes in report.by_category}
    assert trimmed == {
        "tests": 1,
        "docs": 1,
        "type definitions": 1,
        "TypeScript sources": 1,
        "source maps": 1,
        "other platforms' binaries": 3,
        "browser bundles": 1,
    }
    assert report.bytes_after < report.bytes_before
    assert "trimmed browser bundles" in report.to_text()
    manifest = {m["name"]: m for m in result.manifest}
    assert manifest["npm:@scope/addon"]["architecture"] == arch
    assert manifest["npm:app"]["architecture"] == "all"
    assert manifest["npm:lib"]["role"] == "npm"
    assert len(str(manifest["npm:lib"]["sha256"])) == 64


@needs_npm
def test_hash_mismatch_is_one_line_at_the_integrity(
    locked: Path, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "npmapp"
    shutil.copytree(locked, directory)
    lock_file = directory / "npm.lock"
    text = lock_file.read_text()
    block = text.index('path = "node_modules/lib"')
    start = text.index('integrity = "sha512-', block) + len('integrity = "sha512-')
    flipped = "B" if text[start] != "B" else "C"
    lock_file.write_text(text[:start] + flipped + text[start + 1 :])
    line = text[:start].count("\n") + 1
    monkeypatch.setenv(REGISTRY_ENV, registry.url)
    plan = npm.plan(load_recipe(directory), "arm64")
    with pytest.raises(UserError) as caught:
        npm.install(Cache(tmp_path / "cache"), plan, [NODE])
    message = caught.value.one_line()
    assert message.startswith(f"{lock_file}:{line}: package[")
    assert "].integrity: lib 1.1.0: the tarball's sha512 is" in message
    assert not list((tmp_path / "cache").rglob("lib-1.1.0.tgz"))  # nothing stored


@needs_npm
def test_no_build_for_the_architecture_is_one_line(
    locked: Path, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REGISTRY_ENV, registry.url)
    plan = npm.plan(load_recipe(locked), "armhf")  # the addon ships x64 and arm64 only
    with pytest.raises(UserError) as caught:
        npm.install(Cache(tmp_path / "cache"), plan, [NODE])
    message = caught.value.one_line()
    lock_text = (locked / "npm.lock").read_text()
    line = lock_text[: lock_text.index("install_script = true")].count("\n") + 1
    assert message.startswith(f"{locked / 'npm.lock'}:{line}: package[0].install_script: ")
    assert "@scope/addon 2.0.0 is a native addon with no prebuilt binary for linux-arm" in message


def test_required_package_for_another_cpu_is_one_line(tmp_path: Path) -> None:
    directory = make_recipe(tmp_path, ["x@1.0.0"])
    lock = npm.NpmLock(
        ("x@1.0.0",),
        (
            npm.LockedPackage(
                "node_modules/x", "x", "1.0.0", "x/-/x-1.0.0.tgz", "sha512-AA==", cpu=("x64",)
            ),
        ),
    )
    (directory / "npm.lock").write_text(npm.format_lock(lock))
    with pytest.raises(UserError) as caught:
        npm.plan(load_recipe(directory), "arm64")
    assert caught.value.one_line() == (
        f"{directory / 'npm.lock'}:13: package[0].cpu: x 1.0.0 has no build for linux-arm64 "
        "(os [], cpu ['x64']): recipe 'npmapp' cannot be built for arm64"
    )
    assert npm.plan(load_recipe(directory), "amd64") is not None


def test_stale_lock_and_missing_node(tmp_path: Path) -> None:
    directory = make_recipe(tmp_path, ["x@1.0.0"])
    lock = npm.NpmLock(
        ("x@0.9.0",),
        (npm.LockedPackage("node_modules/x", "x", "0.9.0", "x/-/x-0.9.0.tgz", "sha512-AA=="),),
    )
    (directory / "npm.lock").write_text(npm.format_lock(lock))
    with pytest.raises(UserError, match=r"npm.lock:5: requirements: lock is for \['x@0.9.0'\]"):
        npm.plan(load_recipe(directory), "arm64")
    lock = npm.NpmLock(("x@1.0.0",), lock.packages)
    (directory / "npm.lock").write_text(npm.format_lock(lock))
    plan = npm.plan(load_recipe(directory), "arm64")
    with pytest.raises(UserError, match=r"recipe.toml: debian.packages: .*add nodejs"):
        npm.install(Cache(tmp_path / "cache"), plan, [])


def test_recipe_npm_section_errors(tmp_path: Path) -> None:
    directory = make_recipe(tmp_path, ["ipfs@^0.66"])
    with pytest.raises(UserError, match=r"recipe.toml:9: npm.requirements\[0\]: .*NAME@X.Y.Z"):
        load_recipe(directory)
    other = make_recipe(tmp_path, ["ipfs@0.66.1"], name="nolock")
    with pytest.raises(UserError, match=r"npm.lock' does not exist; generate it with"):
        load_recipe(other)


@pytest.mark.parametrize(
    ("path", "arch", "expected"),
    [
        ("index.js", "arm64", None),
        ("lib/test/helper.js", "arm64", "tests"),
        ("README", "arm64", "docs"),
        ("readme.js", "arm64", None),
        ("docs/api.html", "arm64", "docs"),
        ("lib/docs/x.js", "arm64", None),
        ("LICENSE.md", "arm64", None),
        ("types/index.d.ts", "arm64", "type definitions"),
        ("src/a.ts", "arm64", "TypeScript sources"),
        ("dist/a.js.map", "arm64", "source maps"),
        ("prebuilds/linux-arm64/a.node", "arm64", None),
        ("prebuilds/linux-arm/a.node", "arm64", "other platforms' binaries"),
        ("prebuilds/linux-arm/a.node", "armhf", None),
        ("prebuilds/win32-x64/a.node", "amd64", "other platforms' binaries"),
        ("dist/index.min.js", "amd64", "browser bundles"),
    ],
)
def test_trim_categories(path: str, arch: str, expected: str | None) -> None:
    assert category(path, arch) == expected


def test_the_peoples_cloud_lock_is_read_for_every_architecture() -> None:
    recipe = load_recipe(REPO / "recipes" / "peoples-cloud")
    for arch in npm.ARCHES:
        plan = npm.plan(recipe, arch)
        assert plan is not None
        assert {p.name for p in plan.packages} == {"@msgpack/msgpack"}


def test_debian_nodes_externalized_builtins_are_kept(tmp_path: Path) -> None:
    lib = tmp_path / "usr/lib/aarch64-linux-gnu/libnode.so.115"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(
        b'\0junk"NODE_SHARED_BUILTIN_ACORN_PATH=/usr/share/nodejs/acorn/dist/acorn.js", '
        b'"NODE_SHARED_BUILTIN_UNDICI_UNDICI_PATH=/usr/share/nodejs/undici/undici-fetch.js"\0'
    )
    from appliancekit.sources.unpack import PackageFile

    libnode = UnpackedPackage(
        DebPackage("libnode115", "20", "arm64", "0" * 64, 0, ""),
        tmp_path,
        (PackageFile("/usr/lib/aarch64-linux-gnu/libnode.so.115", "file", 0o644, 0, 0, 1),),
    )
    from appliancekit.sources.npm.install import node_builtins

    assert node_builtins([NODE, libnode]) == (
        "/usr/share/nodejs/acorn/dist/acorn.js",
        "/usr/share/nodejs/undici/undici-fetch.js",
    )
