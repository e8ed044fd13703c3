"""What the build adds for a recipe's [npm] section: the fetched, verified and unpacked
packages at their node_modules paths, what of them to keep (the trimming), and checks that
every native addon has a binary for the target (install scripts never run)."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from appliancekit.cache import Cache
from appliancekit.digest import sha256_file
from appliancekit.errors import UserError
from appliancekit.minimise import ClosureRequest
from appliancekit.sources.debian import DebPackage
from appliancekit.sources.elfmachine import ELF_MACHINES, elf_machine
from appliancekit.sources.npm.download import fetch
from appliancekit.sources.npm.lockfile import LockedPackage
from appliancekit.sources.npm.plan import NpmPlan
from appliancekit.sources.npm.platform import NPM_CPU, NPM_OS, other_platform_binary
from appliancekit.sources.npm.tarball import unpack_tarball
from appliancekit.sources.npm.trim import (
    OTHER_PLATFORMS,
    TrimReport,
    category,
    excluded,
    trim_report,
)
from appliancekit.sources.pypi.wheel import PrefixedPackage
from appliancekit.sources.unpack import UnpackedPackage

NODE = "/usr/bin/node"
NODE_PACKAGE = "nodejs"


@dataclass(frozen=True)
class NpmInstall:
    packages: tuple[UnpackedPackage, ...] = ()
    requests: tuple[ClosureRequest, ...] = ()
    manifest: tuple[dict[str, object], ...] = field(default_factory=tuple)
    trim: TrimReport | None = None


def package_dir(npm: NpmPlan, package: LockedPackage) -> str:
    return posixpath.join(npm.prefix, package.path)


def install(
    cache: Cache,
    npm: NpmPlan | None,
    debian: Sequence[UnpackedPackage],
    progress: Callable[[], None] | None = None,
) -> NpmInstall:
    """Fetch and verify the tarballs, unpack them, check native addons, trim."""
    if npm is None:
        return NpmInstall()
    recipe_file = npm.lock_file.parent / "recipe.toml"
    if not any(u.package.name == NODE_PACKAGE for u in debian):
        raise UserError(
            f"[npm] packages run on Debian's Node: add {NODE_PACKAGE} to debian.packages",
            file=recipe_file,
            field="debian.packages",
        )
    tarballs = fetch(cache, npm.lock, npm.packages, progress=progress)
    unpacked: list[PrefixedPackage] = []
    manifest: list[dict[str, object]] = []
    for locked in npm.packages:
        path = tarballs[locked]
        package = DebPackage(
            name=f"npm:{locked.name}",
            version=locked.version,
            architecture="all",
            sha256=sha256_file(path),
            size=path.stat().st_size,
            filename=locked.tarball,
        )
        tree = unpack_tarball(cache, package, locked.integrity, path, package_dir(npm, locked))
        native = _native_addons(tree, npm.arch)
        if native is not None and not native:
            raise npm.lock.error(
                locked,
                "install_script" if locked.install_script else "name",
                f"{locked.name} {locked.version} is a native addon with no prebuilt binary "
                f"for {NPM_OS}-{NPM_CPU[npm.arch]} (install scripts are off, nothing is "
                "compiled): it cannot be installed for " + npm.arch,
            )
        if native:
            package = DebPackage(**{**package.__dict__, "architecture": npm.arch})
            tree = PrefixedPackage(package, tree.root, tree.files, tree.prefix)
        unpacked.append(tree)
        manifest.append(
            package.to_json() | {"role": "npm", "path": locked.path, "integrity": locked.integrity}
        )
    keep, libraries, report = _trim(npm, unpacked)
    request = ClosureRequest(
        executables=(NODE,),
        keep=tuple(keep) + node_builtins(debian),
        libraries=tuple(libraries),
        origin=f"{recipe_file}: npm",
    )
    return NpmInstall(tuple(unpacked), (request,), tuple(manifest), report)


# Debian builds Node with some builtins (acorn, cjs-module-lexer, undici, ...) kept out of
# libnode and read from /usr/share/nodejs at start-up; without them node aborts ("Cannot
# load externalized builtin"). libnode names them in its embedded build configuration.
_SHARED_BUILTIN = re.compile(rb"NODE_SHARED_BUILTIN_[A-Z0-9_]+_PATH=(/usr/share/nodejs/[A-Za-z0-9_./+-]+)")


def node_builtins(debian: Sequence[UnpackedPackage]) -> tuple[str, ...]:
    """The files Debian's libnode loads its externalized builtins from."""
    found: set[str] = set()
    for unpacked in debian:
        if not unpacked.package.name.startswith("libnode"):
            continue
        for item in unpacked.files:
            name = posixpath.basename(item.path)
            if item.kind == "file" and name.startswith("libnode.so"):
                data = unpacked.host_path(item.path).read_bytes()
                found.update(m.decode() for m in _SHARED_BUILTIN.findall(data))
    return tuple(sorted(found))


def _native_addons(tree: PrefixedPackage, arch: str) -> list[str] | None:
    """None for a pure-JS package; else its addons (.node ELF files) built for `arch`,
    outside its nested node_modules and other platforms' prebuild directories."""
    own = [
        f
        for f in tree.files
        if f.kind == "file"
        and not posixpath.relpath(f.path, tree.prefix).startswith("node_modules/")
    ]
    needs_build = any(posixpath.relpath(f.path, tree.prefix) == "binding.gyp" for f in own)
    addons = []
    for item in own:
        if not item.path.endswith(".node"):
            continue
        needs_build = True
        if other_platform_binary(posixpath.relpath(item.path, tree.prefix), arch):
            continue
        if elf_machine(tree.host_path(item.path)) == ELF_MACHINES[arch]:
            addons.append(item.path)
    return addons if needs_build else None


def _entry_points(tree: PrefixedPackage) -> frozenset[str]:
    """The files a package's package.json names (main, exports, bin), relative to it: a
    minified bundle named there is what Node loads, not a browser build."""
    try:
        data = json.loads(tree.host_path(posixpath.join(tree.prefix, "package.json")).read_text())
    except (OSError, ValueError):
        return frozenset()
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, str):
            found.add(posixpath.normpath(value))
        elif isinstance(value, dict):
            for sub in value.values():
                walk(sub)
        elif isinstance(value, list):
            for sub in value:
                walk(sub)

    if isinstance(data, dict):
        for key in ("main", "exports", "bin", "module"):
            walk(data.get(key))
    return frozenset(found)


def _trim(
    npm: NpmPlan, packages: Sequence[PrefixedPackage]
) -> tuple[list[str], list[str], TrimReport]:
    patterns = tuple(npm.section.exclude)  # type: ignore[attr-defined]
    sizes: dict[str, int] = {}
    why: dict[str, str | None] = {}
    for tree in packages:
        entry_points = _entry_points(tree)
        for item in tree.files:
            if item.kind != "file":
                continue
            rel = posixpath.relpath(item.path, tree.prefix)
            sizes[item.path] = item.size
            reason = category(rel, npm.arch, entry_points)
            if reason is None and item.path.endswith(".node"):
                machine = elf_machine(tree.host_path(item.path))
                if machine is not None and machine != ELF_MACHINES[npm.arch]:
                    reason = OTHER_PLATFORMS  # a build/Release binary of another machine
            if reason is None and excluded(item.path, patterns):
                reason = "recipe's exclude"
            why[item.path] = reason
    keep = sorted(p for p, reason in why.items() if reason is None)
    libraries = [p for p in keep if p.endswith(".node")]
    return keep, libraries, trim_report(len(packages), sizes, why)
