"""The typed manifest: records for disk, partitions, verity and sizes, the backend field, old
manifests still read, and every command that reads one handling a NixOS-built image."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from appliancekit.disk import write_sha256sums
from appliancekit.errors import UserError
from appliancekit.manifest import (
    DiskRecord,
    Manifest,
    PartitionRecord,
    SizeRecord,
    VerityRecord,
    load_manifest,
    read_manifest,
    write_manifest,
)

from .conftest import run_cli

MIB = 1 << 20


def debian_manifest() -> Manifest:
    return Manifest(
        name="homepage-rpi4",
        recipe="homepage",
        board="rpi4",
        arch="arm64",
        suite="trixie",
        boot="rpi",
        inputs="f" * 64,
        appliancekit="0.1.0",
        settings={"domain": "example.org"},
        packages=[{"name": "nginx", "role": "root"}],
        kernel_version="6.12.1",
        kernel_cmdline="console=ttyS0",
        initramfs_modules=["dm-verity"],
        verity=VerityRecord(root_hash="a" * 64, salt="b" * 64, data_blocks=100),
        disk=DiskRecord(
            path="disk.img",
            size=64 * MIB,
            sha256="c" * 64,
            table="mbr",
            disk_id="0x1234",
            partitions=(
                PartitionRecord("ak-boot", "boot", 1, MIB, 8 * MIB),
                PartitionRecord("ak-root", "root", 2, 9 * MIB, 4 * MIB, sha256="d" * 64),
            ),
        ),
        sizes=SizeRecord(disk_bytes=64 * MIB, sealed_root_bytes=4 * MIB),
        probes=[],
        ports=[80],
    )


def test_round_trip_through_json(tmp_path: Path) -> None:
    manifest = debian_manifest()
    write_manifest(tmp_path, manifest)
    again = load_manifest(tmp_path)
    assert again == manifest
    assert again.backend == "debian"
    assert again.partition("ak-root").end == 13 * MIB
    assert again.disk.by_role("esp", "boot") == manifest.disk.partitions[0]


def test_a_manifest_without_backend_is_debian(tmp_path: Path) -> None:
    """Images built before the typed manifest: no backend, no sizes.disk_bytes."""
    data = debian_manifest().to_json()
    del data["backend"]
    del data["sizes"]["disk_bytes"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    manifest = load_manifest(tmp_path)
    assert manifest.backend == "debian"
    assert manifest.sizes.disk_bytes == 64 * MIB


def old_nixos_manifest(disk: bytes) -> dict[str, Any]:
    """What nixos/build.py wrote before the typed manifest (no disk.size, backend in extra)."""
    import hashlib

    return {
        "name": "pixelfed-rpi4",
        "recipe": "pixelfed",
        "board": "rpi4",
        "arch": "arm64",
        "suite": "nixos-25.05",
        "boot": "rpi",
        "inputs": "e" * 64,
        "appliancekit": "0.1.0",
        "settings": {"domain": "example.org"},
        "packages": [],
        "kernel_version": "",
        "kernel_cmdline": "",
        "initramfs_modules": [],
        "verity": {},
        "disk": {"path": "disk.img", "sha256": hashlib.sha256(disk).hexdigest(), "partitions": []},
        "sizes": {"disk_bytes": len(disk)},
        "probes": [],
        "ports": [80],
        "format": 1,
        "extra": {
            "backend": "nixos",
            "nixpkgs": {"rev": "0123456789abcdef0123", "branch": "nixos-25.05"},
            "seal": "verity",
            "flake": "flake",
        },
    }


@pytest.fixture()
def nixos_image(tmp_path: Path) -> Path:
    """An image directory as `build --backend nixos` leaves it where Nix built the image."""
    image_dir = tmp_path / "images" / "pixelfed-rpi4"
    image_dir.mkdir(parents=True)
    disk = random.Random(7).randbytes(2 * MIB) + bytes(2 * MIB)
    (image_dir / "disk.img").write_bytes(disk)
    (image_dir / "manifest.json").write_text(json.dumps(old_nixos_manifest(disk)))
    write_sha256sums(image_dir, ["disk.img", "manifest.json"])
    return image_dir


def test_an_old_nixos_manifest_reads_as_nixos(nixos_image: Path) -> None:
    manifest = load_manifest(nixos_image)
    assert manifest.backend == "nixos"
    assert manifest.disk.size == 4 * MIB and manifest.disk.partitions == ()
    assert manifest.verity is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["disk"].pop("sha256"), "disk.sha256"),
        (lambda d: d["disk"]["partitions"].append({"name": "x"}), "disk.partitions[2].role"),
        (lambda d: d["sizes"].update(disk_bytes="big"), "sizes.disk_bytes"),
        (lambda d: d.update(backend="gentoo"), "backend"),
        (lambda d: d.pop("recipe"), "recipe"),
    ],
)
def test_a_broken_manifest_is_one_line_naming_the_field(
    tmp_path: Path, change: Any, field: str
) -> None:
    data = debian_manifest().to_json()
    change(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError) as exc:
        read_manifest(tmp_path)
    assert f"manifest.json: {field}:" in exc.value.one_line()


def test_inspect_a_nixos_image(nixos_image: Path) -> None:
    result = run_cli("inspect", str(nixos_image), "--verify")
    assert result.returncode == 0, result.stderr
    assert "NixOS nixos-25.05" in result.stdout and "(ok)" in result.stdout
    assert "root seal: verity" in result.stdout


def test_inspect_verify_json_fails_on_a_mismatch(nixos_image: Path) -> None:
    with open(nixos_image / "disk.img", "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    result = run_cli("inspect", str(nixos_image), "--verify", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["verified"] is False


def test_flash_a_nixos_image_to_a_file(nixos_image: Path, tmp_path: Path) -> None:
    target = tmp_path / "card.img"
    result = run_cli("flash", str(nixos_image), str(target), "--json")
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == (nixos_image / "disk.img").read_bytes()


def test_flash_settings_onto_a_nixos_image_is_one_line(nixos_image: Path, tmp_path: Path) -> None:
    target = tmp_path / "card.img"
    result = run_cli("flash", str(nixos_image), str(target), "-s", "domain=example.net")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and not target.exists()


def test_publish_a_nixos_image_as_an_sdcard_release(nixos_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "release"
    result = run_cli("publish", str(nixos_image), "--to", "sdcard", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert (out / "pixelfed-rpi4.img.zst").is_file() and (out / "SHA256SUMS").is_file()


@pytest.mark.parametrize("recipe", ["pixelfed", "mastodon", "peertube", "garage"])
def test_test_and_run_of_a_nixos_first_recipe_stop_as_build_does(
    recipe: str, tmp_path: Path
) -> None:
    """No Debian build of a recipe that has no Debian part: build's line, build's exit code."""
    from appliancekit.nixos.build import nix_unavailable_reason

    if nix_unavailable_reason() is None:
        pytest.skip("a usable Nix is installed: build would run it")
    env = {"APPLIANCEKIT_IMAGES": str(tmp_path / "images")}
    results = {
        verb: run_cli(verb, recipe, "--board", "rpi4", env=env) for verb in ("build", "test", "run")
    }
    for verb, result in results.items():
        assert result.returncode == 3, (verb, result.stderr)
        assert result.stderr == results["build"].stderr, verb
        assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{recipe}-rpi4"]
    assert not (tmp_path / "images" / f"{recipe}-rpi4" / "disk.img").exists()


def test_the_debian_backend_of_a_nixos_first_recipe_is_one_line(tmp_path: Path) -> None:
    env = {"APPLIANCEKIT_IMAGES": str(tmp_path / "images")}
    result = run_cli("test", "pixelfed", "--board", "rpi4", "--backend", "debian", env=env)
    assert result.returncode == 2
    assert "pixelfed/recipe.toml:4: appliance.backend:" in result.stderr
    assert not (tmp_path / "images").exists()
