"""Each service runs as the user its recipe declares, and as root only where the recipe says
why (`root_reason` of the [[service]])."""

from __future__ import annotations

import re

from appliancekit import supervisor
from appliancekit.audit.image import AuditImage
from appliancekit.audit.registry import Skip, audit_check

_APPLY = re.compile(rf"^{re.escape(supervisor.APPLYUIDGID)}\s+-u\s+(\d+)\s+-g\s+(\d+)", re.M)


def run_uids(image: AuditImage) -> dict[str, int]:
    """service name -> the uid its run script drops to (0: it never drops root)."""
    services = image.host_path(supervisor.SERVICE_DIR)
    if not services.is_dir():
        return {}
    uids = {}
    for run in sorted(services.glob("*/run")):
        match = _APPLY.search(run.read_text(errors="replace"))
        uids[run.parent.name] = int(match[1]) if match else 0
    return uids


@audit_check("service-users", "every service runs as its declared user, root only with a reason")
def check_service_users(image: AuditImage) -> list[str]:
    uids = run_uids(image)
    if not uids:
        raise Skip(f"no service directories under {supervisor.SERVICE_DIR}")
    if not image.manifest.services:
        return [
            "the manifest records no declared services (an image from before appliancekit "
            "recorded them): rebuild it to audit its service users"
        ]
    names = image.users()
    declared = {s.name: s for s in image.manifest.services}
    findings = []
    for name, uid in uids.items():
        actual = names.get(uid, f"uid {uid}")
        record = declared.get(name)
        if record is None:
            findings.append(
                f"service {name} runs as {actual} but the manifest declares no such service"
            )
            continue
        if record.user != actual:
            findings.append(f"service {name} runs as {actual}, the recipe declares {record.user}")
        if uid == 0 and not record.root_reason.strip():
            findings.append(
                f"service {name} runs as root and the recipe does not say why (root_reason)"
            )
    for name in sorted(set(declared) - set(uids)):
        findings.append(f"declared service {name} has no run script in the image")
    return findings
