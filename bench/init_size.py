"""PID 1's share of the image: s6-svscan, execline and their libraries as the sealed root keeps
them (the image's size report), against what systemd with udev installs on Debian (the
archive's Installed-Size for the same suite and architecture, read through the bench's apt)."""

from __future__ import annotations

import json
from pathlib import Path

from appliancekit.sources.debian import AptSource

# The supervisor's packages and the libraries only they bring (supervisor.PACKAGES and
# their skalibs / execline / s6 libraries).
S6_PACKAGES = ("s6", "execline", "libskarnet", "libexecline", "libs6")
# systemd as PID 1 with networkd, and the udev networkd needs to see network devices.
SYSTEMD_PACKAGES = ("systemd", "libsystemd-shared", "udev")


def s6_bytes(image_dir: Path) -> int:
    """Bytes the sealed root keeps of the supervisor's packages (size-report.json)."""
    report = json.loads((image_dir / "size-report.json").read_text())
    return sum(
        p["bytes_after"]
        for p in report["packages"]
        if p["package"].startswith(S6_PACKAGES)
    )


def systemd_installed_bytes(apt: AptSource) -> int:
    packages = apt.resolve(list(SYSTEMD_PACKAGES))
    return sum(p.installed_size for p in packages if p.name in SYSTEMD_PACKAGES)
