"""The baseline an appliance is compared with: the same service installed the plain Debian
way. mmdebstrap's minbase (Debian's required-priority packages, apt) plus the recipe's
packages, for the board's suite and architecture, maintainer scripts run (under
qemu-user-static through binfmt for a foreign architecture), from the same archive lines the
build uses. `scripts/setup-host.sh bench` installs mmdebstrap, qemu-user-static and
binfmt-support and enables the binfmt entries.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliancekit.sources.debian import AptSource

# What mmdebstrap leaves in a tree that is not part of the installed system: the downloaded
# .debs of a run that keeps them (the warm run syncs them out first).
NOT_INSTALLED = ("var/cache/apt/archives",)


@dataclass(frozen=True)
class DebianInstall:
    seconds: float  # mmdebstrap's wall-clock time: index download, packages, maintainer scripts
    tree_bytes: int  # regular files of the installed tree, each hard-linked inode once
    packages: int  # packages dpkg reports installed


def archive_sources(apt: AptSource) -> list[str]:
    """The archive lines a build of this suite and architecture reads. A build from a lock
    fetches its .debs by URL and never writes apt's configuration, so it is written here."""
    apt.prepare()
    sources_file = apt.root / "etc/sources.list"
    return [line for line in sources_file.read_text().splitlines() if line.strip()]


def mmdebstrap_argv(
    suite: str,
    arch: str,
    packages: Sequence[str],
    sources: Sequence[str],
    target: Path,
    deb_cache: Path | None,
) -> list[str]:
    """mmdebstrap for minbase + `packages`. With `deb_cache`, packages already there are
    installed from it instead of downloaded, and the run's packages are copied back to it
    (mmdebstrap's own recipe for a package cache, from its manual)."""
    argv = [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        "--mode=root" if os.geteuid() == 0 else "--mode=unshare",
        f"--arch={arch}",
        f"--include={','.join(packages)}",
    ]
    if deb_cache is not None:
        argv += [
            "--skip=essential/unlink",
            f"--setup-hook=mkdir -p {deb_cache} \"$1\"/var/cache/apt/archives/",
            f"--setup-hook=sync-in {deb_cache} /var/cache/apt/archives/",
            f"--customize-hook=sync-out /var/cache/apt/archives {deb_cache}",
        ]
    return [*argv, suite, str(target), *sources]


def install(
    suite: str,
    arch: str,
    packages: Sequence[str],
    sources: Sequence[str],
    target: Path,
    deb_cache: Path | None = None,
) -> DebianInstall:
    """Install into `target` (which must not exist), time it, size the result."""
    if shutil.which("mmdebstrap") is None:
        raise SystemExit("bench: mmdebstrap missing: run scripts/setup-host.sh bench")
    argv = mmdebstrap_argv(suite, arch, packages, sources, target, deb_cache)
    start = time.monotonic()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        tail = " / ".join(done.stderr.strip().splitlines()[-3:])
        raise SystemExit(f"bench: mmdebstrap failed ({done.returncode}): {tail}")
    for leftover in NOT_INSTALLED:
        shutil.rmtree(target / leftover, ignore_errors=True)
    return DebianInstall(seconds, tree_bytes(target), installed_packages(target))


def tree_bytes(root: Path) -> int:
    """Bytes of file content under `root`, as the appliance's size report counts its trees:
    regular files only (no directories or symlinks), each hard-linked inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def installed_packages(root: Path) -> int:
    status = (root / "var/lib/dpkg/status").read_text()
    return sum(1 for stanza in status.split("\n\n") if "Status: install ok installed" in stanza)
