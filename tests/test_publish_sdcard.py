"""`publish --to sdcard`: the release directory, checked with zstd, sha256sum and bmaptool."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliancekit.manifest import load_manifest
from appliancekit.publish.bmap import parse_bmap
from tests.test_publish_support import (
    copy_image_dir,
    flip_byte,
    make_image,
    needs_disk_tools,
    sha256_of,
)

pytestmark = needs_disk_tools


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image(tmp_path_factory.mktemp("sd") / "img", name="syn-rpi4", board="rpi4", seed=5)


@pytest.fixture(scope="module")
def release(
    image_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("sdrel") / "release"
    proc = run_cli(
        "publish", str(image_dir), "--to", "sdcard", "--out", str(out), "--level", "3", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout)


def test_release_directory_contents(release: tuple[Path, dict[str, Any]], image_dir: Path) -> None:
    out, info = release
    assert sorted(p.name for p in out.iterdir()) == [
        "SHA256SUMS",
        "manifest.json",
        "syn-rpi4.img.bmap",
        "syn-rpi4.img.zst",
    ]
    manifest = load_manifest(image_dir)
    assert info["image_sha256"] == manifest.disk.sha256
    assert info["compressed_size"] < info["image_size"] // 10
    assert (out / "manifest.json").read_bytes() == (image_dir / "manifest.json").read_bytes()
    # sha256sum -c accepts SHA256SUMS (NAME.img itself is not in the directory)
    check = subprocess.run(
        ["sha256sum", "-c", "--ignore-missing", "SHA256SUMS"],
        cwd=out,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{manifest.disk.sha256}  syn-rpi4.img" in (out / "SHA256SUMS").read_text()
    bmap = parse_bmap(out / "syn-rpi4.img.bmap")
    assert bmap.image_size == manifest.disk.size and bmap.mapped_bytes == info["mapped_bytes"]


def test_the_compressed_image_decompresses_to_the_image(
    release: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, info = release
    raw = tmp_path / "raw.img"
    subprocess.run(["zstd", "-q", "-d", str(out / "syn-rpi4.img.zst"), "-o", str(raw)], check=True)
    assert sha256_of(raw) == info["image_sha256"]
    # the frame header records the content size (progress bars, preallocation)
    header = subprocess.run(
        ["zstd", "-l", "-v", str(out / "syn-rpi4.img.zst")], capture_output=True, text=True
    )
    assert (
        str(info["image_size"]) in header.stdout.replace(",", "")
        or "Decompressed Size" in header.stdout
    )


@pytest.mark.skipif(not shutil.which("bmaptool"), reason="bmap-tools not installed")
def test_bmaptool_copies_the_compressed_release(
    release: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, info = release
    target = tmp_path / "card.img"
    proc = subprocess.run(
        ["bmaptool", "copy", str(out / "syn-rpi4.img.zst"), str(target)],
        capture_output=True,
        text=True,
    )  # the .bmap next to the image is found by name
    assert proc.returncode == 0, proc.stderr
    assert "syn-rpi4.img.bmap" in proc.stderr
    assert sha256_of(target) == info["image_sha256"]


def test_a_corrupt_image_is_not_published(cli: Any, image_dir: Path, tmp_path: Path) -> None:
    bad = copy_image_dir(image_dir, tmp_path / "bad")
    flip_byte(bad / "disk.img", load_manifest(bad).partition("ak-root-a").offset + 1)
    out = tmp_path / "release"
    proc = cli("publish", str(bad), "--to", "sdcard", "--out", str(out))
    assert proc.returncode == 2 and "checksum mismatch" in proc.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".release")]  # no temp dir left


def test_republishing_replaces_the_release_atomically(image_dir: Path, tmp_path: Path) -> None:
    from appliancekit.publish.sdcard import publish_sdcard

    out = tmp_path / "rel"
    first = publish_sdcard(image_dir, out, level=1)
    (out / "stale-file").write_text("x")
    second = publish_sdcard(image_dir, out, level=1)
    assert second.image_sha256 == first.image_sha256
    assert not (out / "stale-file").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]
