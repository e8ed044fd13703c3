"""Nothing in the root is writable by every user (the root is read-only at run time, but a
world-writable mode there becomes one wherever the tree is copied or overlaid)."""

from __future__ import annotations

import stat

from appliancekit.audit.image import AuditImage
from appliancekit.audit.registry import audit_check


@audit_check("world-writable", "no world-writable files (sticky directories like /tmp aside)")
def check_world_writable(image: AuditImage) -> list[str]:
    findings = []
    for entry in image.entries():
        if entry.is_symlink or not entry.mode & stat.S_IWOTH:
            continue
        if entry.is_dir and entry.mode & stat.S_ISVTX:
            continue  # a mount point like /tmp: everyone may create, nobody may remove others'
        kind = "directory" if entry.is_dir else "file"
        findings.append(f"world-writable {kind} {oct(stat.S_IMODE(entry.mode))}: {entry.path}")
    return findings
