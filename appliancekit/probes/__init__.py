"""Probes: check that a booted appliance does its job (HTTP, TCP, DNS, SMTP, IMAP, ...).

`runner` holds the registry (`KINDS`, `@probe_kind`) and everything shared: names, port
forwards, retries, deadlines, results. Every other public module of this package is one
protocol and registers its kinds when imported; importing this package imports them all, so
a new probe kind is a new module here and nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil

from appliancekit.probes.runner import (
    ATTEMPT_TIMEOUT,
    KINDS,
    RETRY_INTERVAL,
    Check,
    ProbeFailed,
    ProbeKindSpec,
    ProbeResult,
    forward_map,
    forwards_for,
    probe_kind,
    probe_name,
    probe_protocol,
    run_probe_once,
    wait_for_probes,
)


def _load_kinds() -> None:
    """Import every protocol module (not `runner`, not `_private` helpers) so it registers."""
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name != "runner" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_load_kinds()

__all__ = [
    "ATTEMPT_TIMEOUT",
    "KINDS",
    "RETRY_INTERVAL",
    "Check",
    "ProbeFailed",
    "ProbeKindSpec",
    "ProbeResult",
    "forward_map",
    "forwards_for",
    "probe_kind",
    "probe_name",
    "probe_protocol",
    "run_probe_once",
    "wait_for_probes",
]
