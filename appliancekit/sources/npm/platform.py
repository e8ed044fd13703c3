"""Which packages of a lock a Debian architecture gets: npm's os/cpu fields and the
prebuilt native binaries a package ships for each platform."""

from __future__ import annotations

import re

from appliancekit.sources.npm.lockfile import LockedPackage

# Debian architecture -> npm's (and Node's process.arch) cpu name
NPM_CPU = {"amd64": "x64", "arm64": "arm64", "armhf": "arm"}
ARCHES = tuple(NPM_CPU)
NPM_OS = "linux"


def _matches(values: tuple[str, ...], wanted: str) -> bool:
    """npm's rule: an empty list fits every platform; "!x" excludes x; else it must be listed."""
    if not values:
        return True
    allowed = [v for v in values if not v.startswith("!")]
    if wanted in {v[1:] for v in values if v.startswith("!")}:
        return False
    return not allowed or wanted in allowed


def fits(package: LockedPackage, arch: str) -> bool:
    """Whether npm would install `package` on Linux for the Debian architecture `arch`."""
    return _matches(package.os, NPM_OS) and _matches(package.cpu, NPM_CPU[arch])


# node-gyp-build's and prebuildify's layout: PACKAGE/prebuilds/PLATFORM-ARCH/*.node
# (universal builds name several cpus: darwin-x64+arm64)
_PREBUILD_RE = re.compile(r"(?:^|/)prebuilds/(?P<platform>[a-z0-9]+)-(?P<cpu>[a-z0-9+]+)(?:/|$)")


def prebuild_platform(path: str) -> tuple[str, tuple[str, ...]] | None:
    """(os, cpus) of the prebuilds directory `path` lies in, if any."""
    match = _PREBUILD_RE.search(path)
    return (match["platform"], tuple(match["cpu"].split("+"))) if match else None


def other_platform_binary(path: str, arch: str) -> bool:
    """A prebuilt native binary for another platform than Debian's Linux/`arch` (glibc:
    prebuildify's musl builds are for Alpine)."""
    found = prebuild_platform(path)
    if found is None:
        return False
    platform, cpus = found
    return platform != NPM_OS or NPM_CPU[arch] not in cpus or ".musl." in path
