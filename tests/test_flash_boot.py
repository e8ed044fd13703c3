"""Per-card settings written at flash time take effect on the booted copy (issue 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.boottest import boot_test
from appliancekit.flash import flash_to_file
from appliancekit.manifest import load_manifest

from .conftest import PROJECT

pytestmark = pytest.mark.slow


def test_flashed_hostname_reaches_the_service(homepage_image: Path, tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    flash_to_file(homepage_image, card, {"hostname": "flashed-pi"})
    manifest = load_manifest(homepage_image)
    report = boot_test(
        homepage_image,
        manifest,
        find_board("qemu-virt-arm64", PROJECT.boards_dir),
        disk=card,
        log_dir=tmp_path,
    )
    assert report.passed, report.failure
    hostname_probe = next(p for p in report.probes if p.name == "per-device hostname")
    assert hostname_probe.ok
    serial = Path(report.serial_log).read_text()
    assert "per-device settings read from the boot partition" in serial
    # the image itself still says the build-time default: only the card changed
    clean = boot_test(
        homepage_image,
        manifest,
        find_board("qemu-virt-arm64", PROJECT.boards_dir),
        log_dir=tmp_path,
    )
    assert clean.passed and "per-device settings read" not in Path(clean.serial_log).read_text()
