"""`python -m appliancekit.sources.kmods SUITE KERNEL_RELEASE...`: pin the root that builds
kernel modules for these Debian kernel releases (e.g. trixie 6.12.118+deb13-arm64)."""

from __future__ import annotations

import sys

from appliancekit.cache import Cache, default_cache_dir
from appliancekit.sources.kmods.toolchain import kernel_arch, write_toolchain_lock


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m appliancekit.sources.kmods SUITE KERNEL_RELEASE...")
    suite, releases = argv[0], argv[1:]
    arches = {kernel_arch(r) for r in releases}
    if len(arches) != 1:
        sys.exit("one kernel architecture per lock: its releases' flavours differ")
    print(write_toolchain_lock(suite, releases, arches.pop(), Cache(default_cache_dir())))


if __name__ == "__main__":
    main(sys.argv[1:])
