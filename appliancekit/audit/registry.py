"""The check registry and the runner: every check sees the same extracted image."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliancekit.audit.image import AuditImage
from appliancekit.errors import ToolError

Check = Callable[[AuditImage], list[str]]  # the findings; none: the check passed


class Skip(Exception):
    """The check does not apply to this image (the reason is reported)."""


@dataclass(frozen=True)
class CheckSpec:
    name: str
    title: str  # what holds when the check passes
    check: Check


CHECKS: dict[str, CheckSpec] = {}


def audit_check(name: str, title: str) -> Callable[[Check], Check]:
    """Register a check: `@audit_check("setuid", "no setuid or setgid files")`."""

    def register(check: Check) -> Check:
        CHECKS[name] = CheckSpec(name, title, check)
        return check

    return register


@dataclass(frozen=True)
class CheckResult:
    name: str
    title: str
    status: str  # "passed" | "failed" | "skipped"
    findings: tuple[str, ...]
    seconds: float

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "findings": list(self.findings),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class AuditReport:
    image: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.status != "failed" for r in self.results)

    def to_json(self) -> dict[str, object]:
        return {
            "image": self.image,
            "passed": self.passed,
            "checks": [r.to_json() for r in self.results],
        }


def run_audit(image_dir: Path, *, only: tuple[str, ...] = (), lynis: bool = False) -> AuditReport:
    """Run every registered check (or those named in `only`) on the image in `image_dir`;
    with `lynis`, also Lynis on the extracted root (audit/lynis.py)."""
    unknown = sorted(set(only) - set(CHECKS))
    if unknown:
        from appliancekit.errors import UserError

        raise UserError(
            f"unknown audit check {unknown[0]!r}; known: {', '.join(sorted(CHECKS))}",
            field="--check",
        )
    results = []
    with AuditImage.open(image_dir) as image:
        for spec in sorted(CHECKS.values(), key=lambda s: s.name):
            if only and spec.name not in only:
                continue
            start = time.monotonic()
            try:
                findings = tuple(spec.check(image))
                status = "failed" if findings else "passed"
            except Skip as skip:
                findings, status = (str(skip),), "skipped"
            except ToolError as exc:  # the image could not be read for this check
                findings, status = (str(exc),), "failed"
            results.append(
                CheckResult(spec.name, spec.title, status, findings, time.monotonic() - start)
            )
        if lynis:
            from appliancekit.audit.lynis import lynis_result

            results.append(lynis_result(image))
    return AuditReport(str(image_dir), tuple(results))
