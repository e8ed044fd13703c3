"""`appliancekit audit --boot` through the real command line on the session's homepage image:
booted with the scanner appliance on one network, every TCP port scanned; nginx's 80 is
the only port that answers and the only one declared, so the check passes (the failing
case, an image answering on an undeclared port, is in test_monitoring_cloud.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import ApplianceCache, run_cli

pytestmark = pytest.mark.slow


@pytest.mark.timeout(2400)
def test_audit_boot_of_the_homepage(
    homepage_image: Path, appliances: ApplianceCache, session_images: Path, tmp_path: Path
) -> None:
    appliances.build("scanner", "qemu-virt-arm64")  # built once per session, like any image
    junit = tmp_path / "runtime.xml"
    result = run_cli(
        "audit", "--boot", str(homepage_image), "--json", "--junit", str(junit),
        "--timeout", "1500",
        env={"APPLIANCEKIT_IMAGES": str(session_images)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True
    (check,) = report["checks"]
    assert check["name"] == "listening-ports[homepage]" and check["status"] == "passed"
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == ["listening-ports[homepage]"]
    print(f"audit --boot of homepage: {check['seconds']:.0f}s from its boot to the scan's end")
