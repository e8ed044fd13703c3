"""The real homepage appliance: flashed to a file with a per-device hostname, and its SD
release copied by Debian's bmaptool. (The boot test of the flashed copy lives with the
boot-side tests: they call `appliancekit.flash.flash_to_file`.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from appliancekit.disk import extract_fat_file
from appliancekit.flash import flash_to_file
from appliancekit.manifest import load_manifest
from appliancekit.publish.sdcard import publish_sdcard
from tests.test_publish_support import sha256_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("mtype"), reason="mtools not installed"),
]


def test_flash_homepage_with_a_hostname(homepage_image: Path, tmp_path: Path) -> None:
    target = tmp_path / "card.img"
    result = flash_to_file(homepage_image, target, {"hostname": "flashed-pi"})
    assert result.verified and result.settings["hostname"] == "flashed-pi"
    assert result.written_bytes < result.image_size
    manifest = load_manifest(homepage_image)
    boot = manifest.partition("ak-boot")
    extract_fat_file(target, boot.offset, "settings.env", tmp_path / "settings.env")
    text = (tmp_path / "settings.env").read_text()
    assert "hostname=flashed-pi" in text.splitlines()
    disk = homepage_image / manifest.disk.path
    for name in ("ak-root-a",):
        part = manifest.partition(name)
        assert sha256_of(target, part.offset, part.size) == sha256_of(
            disk, part.offset, part.size
        )
    # everything outside the boot partition is byte-identical too
    assert sha256_of(target, 0, boot.offset) == sha256_of(disk, 0, boot.offset)
    after = boot.offset + boot.size
    assert sha256_of(target, after) == sha256_of(disk, after)


@pytest.mark.skipif(not shutil.which("bmaptool"), reason="bmap-tools not installed")
def test_bmaptool_writes_the_homepage_release(homepage_image: Path, tmp_path: Path) -> None:
    release = publish_sdcard(homepage_image, tmp_path / "release")
    target = tmp_path / "card.img"
    proc = subprocess.run(
        ["bmaptool", "copy", "--bmap", str(release.bmap), str(release.image), str(target)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert sha256_of(target) == release.image_sha256 == load_manifest(homepage_image).disk.sha256
