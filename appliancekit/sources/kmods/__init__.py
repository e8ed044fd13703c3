"""Out-of-tree kernel modules that appliancekit builds from source: a board lists them in
`[kernel] built_modules`, each a directory here with its C source and Kbuild file.

Each is built by kbuild against the board's own Debian kernel (its headers and Module.symvers,
so the module's vermagic and symbol versions are that kernel's) in a root of pinned Debian
packages (`toolchain.py`), under `chroot` at the fixed path /build/NAME, stripped of debug
information, and cached by the sources, the kernel release and every package of the root.
Fixed paths, a fixed environment and stripped output make the module the same bytes on any
host, which the release's bit-for-bit rebuild needs.

Why build instead of ship: Debian's kernel lacks a small piece the appliance needs on one
board (the Pi firmware's tryboot flag, `ak_tryboot/`), and a module keeps Debian's signed
kernel image untouched.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.digest import fingerprint, sha256_file
from appliancekit.errors import ToolError, UserError
from appliancekit.sources.debian import DEFAULT_MIRRORS, Mirrors
from appliancekit.sources.kmods.toolchain import Toolchain, kernel_release, prepare_toolchain

SOURCES_DIR = Path(__file__).resolve().parent
BUILD_DIR = "/build"  # inside the root: the one path the module's build ever sees


@dataclass(frozen=True)
class BuiltModule:
    name: str  # e.g. ak_tryboot
    path: Path  # the stripped .ko in the cache
    sha256: str
    size: int


def available() -> tuple[str, ...]:
    return tuple(sorted(p.parent.name for p in SOURCES_DIR.glob("*/Kbuild")))


def source_dir(name: str) -> Path:
    path = SOURCES_DIR / name
    if not (path / "Kbuild").is_file():
        raise UserError(f"no kernel module source {name!r} (known: {', '.join(available())})")
    return path


def _source_digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return fingerprint([(str(p.relative_to(path)), sha256_file(p)) for p in files])


def build_modules(
    names: tuple[str, ...],
    suite: str,
    release: str,
    arch: str,
    cache: Cache,
    mirrors: Mirrors = DEFAULT_MIRRORS,
) -> tuple[BuiltModule, ...]:
    """Each named module built for the kernel `release` (e.g. 6.12.118+deb13-arm64)."""
    if not names:
        return ()
    sources = {name: source_dir(name) for name in names}
    tools = prepare_toolchain(suite, kernel_release(release, arch), cache, mirrors)
    built = []
    for name, source in sources.items():
        key = fingerprint(
            _source_digest(source), release, sorted(p.sha256 for p in tools.packages)
        )
        module = cache.root / "kmods" / key / f"{name}.ko"
        if not module.is_file():
            _build(name, source, tools, module)
        built.append(BuiltModule(name, module, sha256_file(module), module.stat().st_size))
    return tuple(built)


def _build(name: str, source: Path, tools: Toolchain, output: Path) -> None:
    # one build at a time per root: both would use /build/NAME
    with open(tools.root / "build" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        workdir = tools.root / BUILD_DIR.lstrip("/") / name
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(source, workdir)
        inside = f"{BUILD_DIR}/{name}"
        make = [
            "make",
            "-C",
            tools.kernel.headers_dir,
            f"M={inside}",
            f"CROSS_COMPILE={tools.cross_compile}",
            "modules",
        ]
        strip = [
            f"{tools.cross_compile}strip",
            "--strip-debug",
            "-o",
            f"{inside}/{name}.stripped",
            f"{inside}/{name}.ko",
        ]
        try:
            for argv in (make, strip):
                _in_root(tools.root, argv)
            output.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=output.parent, delete=False) as part:
                part.write((workdir / f"{name}.stripped").read_bytes())
            os.replace(part.name, output)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _in_root(root: Path, argv: list[str]) -> None:
    # root may chroot; anyone else enters the root through a user namespace where that is allowed
    enter = ["chroot", str(root)] if os.geteuid() == 0 else ["unshare", "-r", "chroot", str(root)]
    env = ["/usr/bin/env", "-i", "PATH=/usr/bin", "LC_ALL=C", "TZ=UTC", "HOME=/tmp"]
    result = subprocess.run(
        [*enter, *env, *argv], capture_output=True, text=True, check=False, umask=0o022
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise ToolError(f"building a kernel module: {' '.join(argv[:3])} failed:\n" + "\n".join(tail))
