"""The optional Lynis check (`appliancekit audit --lynis`): Debian's Lynis run with
`--rootdir` on the extracted root, its warnings and suggestions included in the report.

Lynis audits the machine it runs on, and `--rootdir` moves only some of its tests to the
given tree: with Lynis 3.0.8, even within its authentication and file-permission groups,
tests read the host's /etc/login.defs, /etc/issue or process list. So only the tests that
read nothing but `${ROOTDIR}` files run (TESTS, checked in Lynis's source): accounts with
UID 0, duplicate UIDs, GIDs and group names, password hashing methods, the shells list. The
rest of what Lynis looks at is covered by the audit's own checks (no shell or login,
setuid, world-writable) or does not apply to a sealed root. Lynis's "this release is old"
notice (test id LYNIS) is about the host's Lynis and is left out.

A Lynis warning fails the check; suggestions are reported with a passing check."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from appliancekit.audit.image import AuditImage
from appliancekit.audit.registry import CheckResult
from appliancekit.hostcmd import run

NAME = "lynis"
TITLE = "Lynis (with --rootdir on the extracted root) reports no warning"
# Lynis tests that read only ${ROOTDIR} files; see the module docstring.
TESTS = ("AUTH-9204", "AUTH-9208", "AUTH-9222", "AUTH-9226", "AUTH-9229", "SHLL-6211")
IGNORED_TESTS = frozenset({"LYNIS"})  # "this release is more than 4 months old" (the host's)


@dataclass(frozen=True)
class LynisFinding:
    kind: str  # "warning" | "suggestion"
    test: str  # Lynis test id, e.g. AUTH-9204
    text: str

    def __str__(self) -> str:
        return f"{self.kind} {self.test}: {self.text}"


def parse_report(text: str) -> list[LynisFinding]:
    """`warning[]=` and `suggestion[]=` lines of a Lynis report file (TEST|TEXT|DETAIL|...)."""
    findings = []
    for line in text.splitlines():
        kind, sep, value = line.partition("[]=")
        if not sep or kind not in ("warning", "suggestion"):
            continue
        test, _, rest = value.partition("|")
        message, _, rest = rest.partition("|")
        detail = rest.partition("|")[0]
        if test in IGNORED_TESTS:
            continue
        if detail and detail != "-":
            message = f"{message} ({detail})"
        findings.append(LynisFinding(kind, test, message))
    return findings


def run_lynis(root: Path, work: Path) -> list[LynisFinding]:
    """Lynis on the tree at `root`; its report and log stay in `work`."""
    work.mkdir(parents=True, exist_ok=True)
    report = work / "lynis-report.dat"
    run(
        [
            "lynis",
            "audit",
            "system",
            "--rootdir",
            # Lynis builds paths as ${ROOTDIR}etc/passwd: the trailing slash is needed
            f"{str(root).rstrip('/')}/",
            "--tests",
            " ".join(TESTS),
            "--no-colors",
            "--quiet",
            "--skip-plugins",
            "--report-file",
            str(report),
            "--logfile",
            str(work / "lynis.log"),
        ],
        cwd=work,
    )
    return parse_report(report.read_text(errors="replace"))


def lynis_result(image: AuditImage) -> CheckResult:
    start = time.monotonic()
    findings = run_lynis(image.root, image.work / "lynis")
    warnings = [f for f in findings if f.kind == "warning"]
    ordered = [*warnings, *(f for f in findings if f.kind != "warning")]
    return CheckResult(
        NAME,
        TITLE,
        "failed" if warnings else "passed",
        tuple(str(f) for f in ordered),
        time.monotonic() - start,
    )
