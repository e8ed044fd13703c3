"""The root that builds out-of-tree kernel modules: Debian's own kernel headers and the
compiler they name, pinned and unpacked into a tree that `chroot` runs make in.

Which compiler: a module must be built by the compiler the kernel was (its headers'
configuration tests that compiler's flags), and Debian's headers say which in
`.kernelvariables` (`CC = $(CROSS_COMPILE)gcc-14`). So the headers are resolved first and
the compiler package follows from them: `gcc-14-aarch64-linux-gnu` on an amd64 host for an
arm64 kernel. It comes from the kernel's own suite, which is why the build runs in a root of
that suite's packages rather than with the host's compiler.

What is pinned: one lock per (suite, host architecture), `debian-SUITE-HOST.lock` beside
this file (same format as a recipe's), holding per kernel release three closures: the host's
kbuild tools and the common headers, the kernel's architecture-specific headers, and the
compiler with make, a shell and the text tools kbuild runs. `python -m
appliancekit.sources.kmods SUITE KERNEL_RELEASE...` writes it; without a lock the build
resolves through apt, as the update agent's packages do.
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.digest import fingerprint
from appliancekit.errors import UserError
from appliancekit.sources.debian import (
    DEFAULT_MIRRORS,
    AptSource,
    DebianSource,
    DebPackage,
    Mirrors,
)
from appliancekit.sources.debian_lock import (
    SNAPSHOT_FORMAT,
    LockedSource,
    RecordingSource,
    lock_from,
    lock_path,
    read_lock,
    write_lock,
)
from appliancekit.sources.unpack import LISTING, unpack

LOCK_DIR = Path(__file__).resolve().parent
# what kbuild runs besides the compiler and its binutils
BUILD_TOOLS = ("make", "dash", "coreutils", "sed", "mawk", "grep")
GNU_TRIPLETS = {"arm64": "aarch64-linux-gnu", "armhf": "arm-linux-gnueabihf", "amd64": "x86-64-linux-gnu"}
HOST_ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}
COMPILER = re.compile(r"^CC\s*=.*\$\(CROSS_COMPILE\)(gcc-\d+)\s*$", re.MULTILINE)


def host_arch() -> str:
    machine = platform.machine()
    if machine not in HOST_ARCHES:
        raise UserError(f"kernel modules are built on amd64 or arm64 hosts, not {machine}")
    return HOST_ARCHES[machine]


@dataclass(frozen=True)
class KernelRelease:
    """A Debian kernel release, e.g. 6.12.118+deb13-arm64: its ABI version and flavour."""

    release: str
    abi: str  # 6.12.118+deb13
    arch: str  # the kernel's Debian architecture

    @property
    def headers(self) -> str:
        return f"linux-headers-{self.release}"

    @property
    def common_headers(self) -> str:
        return f"linux-headers-{self.abi}-common"

    @property
    def kbuild(self) -> str:
        return f"linux-kbuild-{self.abi}"

    @property
    def headers_dir(self) -> str:
        return f"/usr/src/{self.headers}"


# Debian's kernel flavours name their architecture: 6.12.118+deb13-arm64, -cloud-arm64,
# -rpi (armhf's Pi flavour), -armmp, -amd64, -cloud-amd64
FLAVOUR_ARCHES = {"arm64": "arm64", "amd64": "amd64", "armmp": "armhf", "armmp-lpae": "armhf"}


def kernel_arch(release: str) -> str:
    for flavour, arch in sorted(FLAVOUR_ARCHES.items(), key=lambda item: -len(item[0])):
        if release.endswith(f"-{flavour}"):
            return arch
    raise UserError(f"{release!r}: not a Debian kernel flavour this builds for")


def kernel_release(release: str, arch: str) -> KernelRelease:
    found = re.fullmatch(r"(\d+\.\d+\.\d+\+deb\d+(?:\.\d+)?)-[a-z0-9-]+", release)
    if found is None:
        raise UserError(f"{release!r} is not a Debian kernel release (e.g. 6.12.118+deb13-arm64)")
    return KernelRelease(release, found.group(1), arch)


@dataclass(frozen=True)
class Toolchain:
    """The unpacked build root, ready for `chroot`."""

    root: Path
    kernel: KernelRelease
    cross_compile: str  # e.g. aarch64-linux-gnu- ("" for a native build)
    packages: tuple[DebPackage, ...]


def toolchain_lock_path(suite: str, host: str) -> Path:
    return lock_path(LOCK_DIR, suite, host)


def _sources(
    suite: str, kernel: KernelRelease, cache: Cache, mirrors: Mirrors
) -> tuple[DebianSource, DebianSource]:
    """(host source, kernel-architecture source): the lock's, or apt's without one."""
    host = host_arch()
    path = toolchain_lock_path(suite, host)
    if path.exists():
        lock = read_lock(path)
        return (
            LockedSource(lock, path, cache, host, mirrors),
            LockedSource(lock, path, cache, kernel.arch, mirrors),
        )
    sources = []
    for arch in (host, kernel.arch):
        apt = AptSource(cache, suite, arch, mirrors.debian, mirrors.security)
        apt.update()
        sources.append(apt)
    return sources[0], sources[1]


def _resolve(
    host_source: DebianSource, kernel_source: DebianSource, kernel: KernelRelease, cache: Cache
) -> tuple[tuple[DebPackage, ...], str, str]:
    """Every package of the build root, the compiler's package and CROSS_COMPILE."""
    headers = [p for p in kernel_source.resolve([kernel.headers]) if p.name == kernel.headers]
    if not headers:
        raise UserError(f"Debian has no {kernel.headers} for the kernel {kernel.release}")
    (fetched,) = kernel_source.fetch(headers)
    variables = unpack(cache, fetched).host_path(f"{kernel.headers_dir}/.kernelvariables")
    found = COMPILER.search(variables.read_text()) if variables.is_file() else None
    if found is None:
        raise UserError(f"{kernel.headers} names no compiler in .kernelvariables")
    host = host_arch()
    native = host == kernel.arch
    compiler = found.group(1) if native else f"{found.group(1)}-{GNU_TRIPLETS[kernel.arch]}"
    kbuild = host_source.resolve([kernel.kbuild, kernel.common_headers])
    tools = host_source.resolve([compiler, *BUILD_TOOLS])
    packages = {(p.name, p.architecture): p for p in (*headers, *kbuild, *tools)}
    cross = "" if native else f"{GNU_TRIPLETS[kernel.arch]}-"
    return tuple(sorted(packages.values())), compiler, cross


def prepare_toolchain(
    suite: str, kernel: KernelRelease, cache: Cache, mirrors: Mirrors = DEFAULT_MIRRORS
) -> Toolchain:
    host_source, kernel_source = _sources(suite, kernel, cache, mirrors)
    try:
        packages, _, cross = _resolve(host_source, kernel_source, kernel, cache)
    except UserError as exc:
        if isinstance(host_source, LockedSource):
            raise UserError(
                f"{exc.message}; pin the kernel's headers and compiler with `python -m "
                f"appliancekit.sources.kmods {suite} {kernel.release}`",
                file=host_source.lock_file,
            ) from None
        raise
    key = fingerprint(sorted(p.sha256 for p in packages))
    root = cache.root / "kmod-toolchain" / key
    root.parent.mkdir(parents=True, exist_ok=True)
    # one assembler at a time: a second one's rename would pull the tree from under a build
    with open(root.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "usr").is_dir():
            _assemble(packages, host_source, kernel_source, cache, root)
    return Toolchain(root, kernel, cross, packages)


def _assemble(
    packages: tuple[DebPackage, ...],
    host_source: DebianSource,
    kernel_source: DebianSource,
    cache: Cache,
    root: Path,
) -> None:
    """Every package unpacked into one merged-/usr tree, plus what maintainer scripts would
    have made and kbuild needs: /bin and /lib links, awk, /dev/null and /tmp."""
    host = host_arch()
    fetched = host_source.fetch([p for p in packages if p.architecture in (host, "all")])
    fetched += kernel_source.fetch([p for p in packages if p.architecture not in (host, "all")])
    root.parent.mkdir(parents=True, exist_ok=True)
    with cache.staged_dir(root, "kmod-toolchain-") as staging:
        for deb in fetched:
            tree = unpack(cache, deb).root
            subprocess.run(["cp", "-a", "--reflink=auto", f"{tree}/.", f"{staging}/"], check=True)
        for name in ("bin", "sbin", "lib", "lib64"):
            if (staging / "usr" / name).is_dir() and not (staging / name).exists():
                (staging / name).symlink_to(f"usr/{name}")
        awk = staging / "usr/bin/awk"
        if not awk.exists():
            awk.symlink_to("mawk")
        (staging / LISTING).unlink(missing_ok=True)  # each package's, copied with it
        (staging / "tmp").mkdir(mode=0o1777, exist_ok=True)
        (staging / "dev").mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.mknod(staging / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
        (staging / "build").mkdir()


def write_toolchain_lock(suite: str, releases: list[str], arch: str, cache: Cache) -> Path:
    """Resolve the build root of each kernel release through apt and pin it."""
    host = host_arch()
    apts = {}
    for wanted in dict.fromkeys((host, arch)):
        apts[wanted] = AptSource(cache, suite, wanted)
        apts[wanted].update(force=True)
    tools = RecordingSource(apts[host], host)
    headers = RecordingSource(apts[arch], arch)
    for release in releases:
        kernel = kernel_release(release, arch)
        _resolve(tools, headers, kernel, cache)
    # the headers' own dependencies (the kernel architecture's kbuild and libc) are never
    # unpacked: the host's kbuild runs instead, so only the headers package is pinned
    for key, resolved in headers.closures.items():
        headers.closures[key] = [p for p in resolved if p.name.startswith("linux-headers-")]
    lock = lock_from(
        suite,
        host,
        [],
        time.strftime(SNAPSHOT_FORMAT, time.gmtime()),
        apts[host].release_dates(),
        [tools, headers],
        apts[host].missing_indexes(),
    )
    path = toolchain_lock_path(suite, host)
    write_lock(path, lock)
    return path
