"""No file gains privileges when run."""

from __future__ import annotations

import stat

from appliancekit.audit.image import AuditImage
from appliancekit.audit.registry import audit_check


@audit_check("setuid", "no setuid or setgid files")
def check_setuid(image: AuditImage) -> list[str]:
    findings = []
    for entry in image.entries():
        if entry.is_dir or entry.is_symlink:
            continue
        bits = [
            name
            for bit, name in ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid"))
            if entry.mode & bit
        ]
        if bits:
            findings.append(f"{' and '.join(bits)} {oct(stat.S_IMODE(entry.mode))}: {entry.path}")
    return findings
