"""The Debian packages the update agent needs in every root: minisign (it verifies release
signatures; the agent never does its own cryptography) and dosfstools (fsck.fat repairs a
boot partition the power was cut from while it was written, before the agent writes it
again).

They do not depend on the recipe, so they are pinned once per (suite, architecture) in a
lock of their own, appliancekit/agent/debian-SUITE-ARCH.lock (same format as a recipe's),
instead of in every recipe's lock. `python -m appliancekit.agent.packages SUITE ARCH...`
writes it; a build without one for its (suite, arch) resolves through apt.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from appliancekit.cache import Cache, default_cache_dir
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

AGENT_PACKAGES = ("minisign", "dosfstools")
LOCK_DIR = Path(__file__).resolve().parent
MINISIGN = "/usr/bin/minisign"
FSCK_FAT = "/usr/sbin/fsck.fat"  # agent.json's fsck_fat: the agent runs it from there


def agent_lock_path(suite: str, arch: str) -> Path:
    return lock_path(LOCK_DIR, suite, arch)


def agent_source(
    suite: str, arch: str, cache: Cache, mirrors: Mirrors = DEFAULT_MIRRORS
) -> DebianSource:
    path = agent_lock_path(suite, arch)
    if path.exists():
        return LockedSource(read_lock(path), path, cache, arch, mirrors)
    source = AptSource(cache, suite, arch, mirrors.debian, mirrors.security)
    source.update()
    return source


def agent_packages(source: DebianSource, root: tuple[DebPackage, ...]) -> tuple[DebPackage, ...]:
    """The agent's closure less what the root has already (libc6 comes from the recipe's
    own lock, so one root never holds two versions of a package)."""
    have = {p.name for p in root}
    return tuple(p for p in source.resolve(AGENT_PACKAGES) if p.name not in have)


def write_agent_lock(suite: str, arch: str, cache: Cache) -> Path:
    apt = AptSource(cache, suite, arch)
    apt.update(force=True)
    recorder = RecordingSource(apt, arch)
    recorder.resolve(AGENT_PACKAGES)
    lock = lock_from(
        suite,
        arch,
        [],
        time.strftime(SNAPSHOT_FORMAT, time.gmtime()),
        apt.release_dates(),
        [recorder],
        apt.missing_indexes(),
    )
    path = agent_lock_path(suite, arch)
    write_lock(path, lock)
    return path


if __name__ == "__main__":  # python -m appliancekit.agent.packages SUITE ARCH...
    for arch in sys.argv[2:]:
        print(write_agent_lock(sys.argv[1], arch, Cache(default_cache_dir())))
