"""An audit report as text, JSON and JUnit XML (for CI)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from appliancekit.audit.registry import AuditReport

MARK = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}


def to_text(report: AuditReport) -> str:
    lines = [f"audit of {report.image}"]
    for r in report.results:
        lines.append(f"{MARK[r.status]} {r.name}: {r.title}")
        lines.extend(f"     {finding}" for finding in r.findings)
    failed = sum(r.status == "failed" for r in report.results)
    lines.append(
        f"{len(report.results)} checks, {failed} failed"
        + ("" if failed else ": the image is compliant")
    )
    return "\n".join(lines) + "\n"


def to_json(report: AuditReport) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"


def to_junit(report: AuditReport) -> str:
    """One <testsuite>, one <testcase> per check; findings go into <failure> / <skipped>."""
    suite = ET.Element(
        "testsuite",
        name=f"appliancekit audit {report.image}",
        tests=str(len(report.results)),
        failures=str(sum(r.status == "failed" for r in report.results)),
        skipped=str(sum(r.status == "skipped" for r in report.results)),
        errors="0",
        time=f"{sum(r.seconds for r in report.results):.3f}",
    )
    for r in report.results:
        case = ET.SubElement(
            suite, "testcase", classname="appliancekit.audit", name=r.name, time=f"{r.seconds:.3f}"
        )
        if r.status == "failed":
            failure = ET.SubElement(case, "failure", message=f"{r.title}: {r.findings[0]}")
            failure.text = "\n".join(r.findings)
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", message=r.findings[0] if r.findings else "")
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, "unicode") + "\n"
