"""`appliancekit audit IMAGE_DIR`: static compliance checks on a sealed image.

The root partition is checked against the manifest's dm-verity root hash, then extracted
(`fsck.erofs --extract`, no mounts) and every registered check reads the extracted tree and
the manifest. Each check is one module under audit/checks/ registering itself with
`@audit_check`; importing this package imports them all, so a new check is a new module.
"""

from __future__ import annotations

import importlib
import pkgutil

from appliancekit.audit.image import AuditImage
from appliancekit.audit.registry import CHECKS, AuditReport, CheckResult, audit_check, run_audit
from appliancekit.audit.report import to_json, to_junit, to_text


def _load_checks() -> None:
    from appliancekit.audit import checks

    for module in sorted(pkgutil.iter_modules(checks.__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{checks.__name__}.{module.name}")


_load_checks()

__all__ = [
    "CHECKS",
    "AuditImage",
    "AuditReport",
    "CheckResult",
    "audit_check",
    "run_audit",
    "to_json",
    "to_junit",
    "to_text",
]
