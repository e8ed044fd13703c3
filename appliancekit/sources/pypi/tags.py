"""Which wheels a target can run: manylinux platform tags per architecture and glibc."""

from __future__ import annotations

import re

from appliancekit.sources.debian import DebPackage

# Debian architecture -> the machine name in manylinux platform tags
MACHINES = {"arm64": "aarch64", "armhf": "armv7l", "amd64": "x86_64"}
ARCHES = tuple(MACHINES)
# glibc of each Debian suite: the newest manylinux tag its wheels may carry
SUITE_GLIBC = {"bookworm": (2, 36), "trixie": (2, 41), "forky": (2, 41), "sid": (2, 41)}
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def platform_tags(arch: str, glibc: tuple[int, int]) -> list[str]:
    """Every manylinux platform tag a Debian system of `arch` with `glibc` can run.

    pip does not expand manylinux_2_X down to older tags for --platform: list them all."""
    machine = MACHINES[arch]
    major, newest = glibc
    tags = [f"manylinux_{major}_{minor}_{machine}" for minor in range(newest, 16, -1)]
    tags.append(f"manylinux2014_{machine}")
    if machine == "x86_64":
        tags += [f"manylinux_2_{minor}_{machine}" for minor in range(16, 4, -1)] + [
            f"manylinux2010_{machine}",
            f"manylinux1_{machine}",
        ]
    return tags


def wheel_glibc(filename: str) -> tuple[int, int] | None:
    """The oldest glibc a wheel runs on, from its platform tags; None for pure wheels."""
    platforms = filename[: -len(".whl")].split("-")[-1].split(".")
    needs: list[tuple[int, int]] = []
    for tag in platforms:
        if tag == "any":
            return None
        match = re.fullmatch(r"manylinux_(\d+)_(\d+)_\w+", tag)
        if match:
            needs.append((int(match[1]), int(match[2])))
        elif tag.split("_", 1)[0] in LEGACY_MANYLINUX:
            needs.append(LEGACY_MANYLINUX[tag.split("_", 1)[0]])
    return min(needs) if needs else None


def target_glibc(libc6: DebPackage | None, suite: str) -> tuple[int, int]:
    """The target's glibc: libc6's version if the build has it, else the suite's."""
    if libc6 is not None:
        match = re.match(r"(\d+)\.(\d+)", libc6.version)
        if match:
            return int(match[1]), int(match[2])
    return SUITE_GLIBC.get(suite.split("-")[0], (2, 17))
