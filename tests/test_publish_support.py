"""Small synthetic image directories for the publish / flash / bmap tests (no tests here).

An image is assembled with the real disk code (sfdisk, mkfs.vfat, mtools): a FAT boot
partition with a few files, a "root" partition of pseudo-random bytes with an all-zero
stretch inside (verity would read it, so it must be written), a small "verity" partition
and an empty data partition, plus manifest.json and SHA256SUMS like a real build's.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliancekit.disk import (
    PartitionRole,
    PartitionSpec,
    assemble_disk,
    make_fat_image,
    write_sha256sums,
)
from appliancekit.manifest import (
    DiskRecord,
    Manifest,
    SettingRecord,
    SizeRecord,
    SlotRecord,
    VerityRecord,
    write_manifest,
)
from appliancekit.recipe import UNIVERSAL_SETTINGS

MIB = 1 << 20
KIB = 1 << 10

needs_disk_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("sfdisk", "mkfs.vfat", "mcopy", "mtype", "mdir")),
    reason="fdisk / dosfstools / mtools not installed",
)


def noise(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# The synthetic image's recipe settings: what flash checks per-device values against.
# Besides its own, every appliance has the universal ones (hostname, net_*, data_volume).
SYNTHETIC_SETTINGS = (
    SettingRecord("domain", "domain", per_device=True),
    SettingRecord("motd", "string", per_device=True),
    SettingRecord("port", "int", per_device=True),
    SettingRecord("site", "path"),
    SettingRecord("token", "secret", per_device=True, secret=True),
    *(SettingRecord(s.name, str(s.kind), per_device=True) for s in UNIVERSAL_SETTINGS),
)


def make_image(
    directory: Path,
    *,
    name: str = "synthetic-qemu-virt-arm64",
    arch: str = "arm64",
    board: str = "qemu-virt-arm64",
    data_mib: int = 64,
    seed: int = 1,
    boot_files: dict[str, bytes] | None = None,
    recipe: str = "synthetic",
    ports: tuple[int, ...] = (),
) -> Path:
    """Write an image directory (disk.img, manifest.json, SHA256SUMS) and return it."""
    directory = Path(directory)
    work = directory.parent / f".{directory.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    files = boot_files or {"vmlinuz": noise(700 * KIB, seed), "cmdline.txt": b"console=ttyAMA0\n"}
    sources = {}
    for fname, content in files.items():
        (work / fname).parent.mkdir(parents=True, exist_ok=True)
        (work / fname).write_bytes(content)
        sources[fname] = work / fname
    boot = make_fat_image(work / "boot.vfat", sources, 8 * MIB, "AK-BOOT", f"seed{seed}")
    root = noise(1 * MIB, seed + 1) + bytes(64 * KIB) + noise(256 * KIB, seed + 2)
    # two slots (appliancekit/slots.py): slot A holds the root and its hash tree, B is empty
    verity = noise(64 * KIB, seed + 3)
    (work / "slot.img").write_bytes(root + verity)
    disk = assemble_disk(
        directory / "disk.img",
        "gpt",
        arch,
        [
            PartitionSpec("ak-boot", PartitionRole.BOOT, 8 * MIB, boot, bootable=True),
            PartitionSpec("ak-root-a", PartitionRole.ROOT, 2 * MIB, work / "slot.img"),
            PartitionSpec("ak-root-b", PartitionRole.ROOT, 2 * MIB, None),
            PartitionSpec("ak-data", PartitionRole.DATA, data_mib * MIB, None),
        ],
        f"seed{seed}",
    )
    manifest = Manifest(
        name=name,
        recipe=recipe,
        board=board,
        arch=arch,
        suite="trixie",
        boot="direct",
        inputs=hashlib.sha256(f"{seed}".encode()).hexdigest(),
        appliancekit="0.1.0",
        settings={"domain": "example.org"},
        setting_records=SYNTHETIC_SETTINGS,
        packages=[],
        kernel_version="6.12",
        kernel_cmdline="console=ttyAMA0",
        initramfs_modules=[],
        verity=VerityRecord(
            root_hash=hashlib.sha256(root).hexdigest(),
            salt="00",
            data_blocks=len(root) // 4096,
            hash_offset=len(root),
            hash_bytes=len(verity),
        ),
        slots=(
            SlotRecord("a", "ak-root-a", "slot-a", (), written=True),
            SlotRecord("b", "ak-root-b", "slot-b", ()),
        ),
        disk=DiskRecord.of(disk, "disk.img"),
        sizes=SizeRecord(disk_bytes=disk.size),
        probes=[],
        ports=list(ports),
    )
    write_manifest(directory, manifest)
    write_sha256sums(directory, ["disk.img", "manifest.json"])
    shutil.rmtree(work)
    return directory


def sha256_of(path: Path, offset: int = 0, size: int | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        remaining = size if size is not None else os.fstat(f.fileno()).st_size - offset
        while remaining > 0:
            chunk = f.read(min(remaining, MIB))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def copy_image_dir(src: Path, dest: Path) -> Path:
    """A copy of an image directory (disk.img stays sparse)."""
    dest.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.is_file():
            subprocess.run(
                ["cp", "--sparse=always", str(entry), str(dest / entry.name)], check=True
            )
    return dest


def cli_inprocess(*args: str) -> Any:
    """The click command line in this process (much faster than a subprocess); the result
    has .exit_code, .stdout and .stderr."""
    from click.testing import CliRunner

    from appliancekit.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)
