"""Every package that makes up the image is recorded with its version and sha256, and every
Python distribution found in the root is one of them."""

from __future__ import annotations

import posixpath
import re

from appliancekit.audit.image import AuditImage
from appliancekit.audit.registry import audit_check

SITE_DIRS = ("site-packages", "dist-packages")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DIST_INFO = re.compile(r"(?P<name>.+)-(?P<version>[^-]+)\.dist-info")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@audit_check("packages-recorded", "every package and version is recorded")
def check_packages_recorded(image: AuditImage) -> list[str]:
    packages = image.manifest.packages
    if not packages:
        return ["the manifest records no packages"]
    findings = []
    versions: dict[tuple[str, str], set[str]] = {}
    for i, package in enumerate(packages):
        name = str(package.get("name") or "")
        where = f"packages[{i}] ({name or 'no name'})"
        for key in ("name", "version", "architecture", "role"):
            if not str(package.get(key) or "").strip():
                findings.append(f"{where}: no {key}")
        if not _SHA256.fullmatch(str(package.get("sha256") or "")):
            findings.append(f"{where}: no sha256 of the package file")
        versions.setdefault((name, str(package.get("role"))), set()).add(
            str(package.get("version"))
        )
    for (name, role), seen in sorted(versions.items()):
        if len(seen) > 1:
            findings.append(f"{name} ({role}) is recorded with versions {', '.join(sorted(seen))}")
    wheels = {
        (_canonical(str(p.get("name"))), str(p.get("version")))
        for p in packages
        if p.get("role") == "pypi"
    }
    for entry in image.entries():
        # a distribution installed in a site directory; one vendored inside another
        # package's tree ships with (and is recorded as) that package
        parent = posixpath.basename(posixpath.dirname(entry.path))
        installed = entry.is_dir and parent in SITE_DIRS
        match = _DIST_INFO.fullmatch(posixpath.basename(entry.path)) if installed else None
        if match and (_canonical(match["name"]), match["version"]) not in wheels:
            findings.append(
                f"{entry.path}: Python distribution {match['name']} {match['version']} is not recorded"
            )
    return findings
