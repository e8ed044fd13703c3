"""Flash vs dd, and EC2 upload bytes, on an image whose data partition is mostly empty.

    .venv/bin/python bench/bench_flash.py [--data-mib 1024] [--runs 2] [--keep DIR]

Builds a synthetic image (GPT; FAT boot partition with 24 MiB of files, 16 MiB "root",
1 MiB "verity", a sparse empty data partition), then in the same run:

- `dd if=disk.img of=T bs=4M conv=fsync` (the whole image),
- `appliancekit flash IMAGE_DIR T --yes` (the image directory: full sha256 check first),
- `appliancekit flash RELEASE_DIR T --yes` (publish --to sdcard output: .img.zst + .bmap),
- `appliancekit flash` of an image directory whose SHA256SUMS lists disk.img.bmap,

each writing a regular file on the same file system, best of --runs, and prints the ratios.
Then publishes the image to EC2 through a local moto server and prints the bytes sent
against the image size (and again for a re-publish, which must send nothing).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliancekit.disk import (  # noqa: E402
    PartitionRole,
    PartitionSpec,
    assemble_disk,
    make_fat_image,
    write_sha256sums,
)
from appliancekit.manifest import DiskRecord, Manifest, SizeRecord, VerityRecord, write_manifest  # noqa: E402
from appliancekit.publish.image import write_image_bmap  # noqa: E402

MIB = 1 << 20


def build_image(directory: Path, data_mib: int) -> Path:
    work = directory.parent / "work"
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(42)
    (work / "vmlinuz").write_bytes(rng.randbytes(20 * MIB))
    (work / "initrd.img").write_bytes(rng.randbytes(4 * MIB))
    boot = make_fat_image(
        work / "boot.vfat",
        {"vmlinuz": work / "vmlinuz", "initrd.img": work / "initrd.img"},
        64 * MIB,
        "AK-BOOT",
        "bench",
    )
    root = rng.randbytes(16 * MIB)
    (work / "root.img").write_bytes(root)
    (work / "verity.img").write_bytes(rng.randbytes(1 * MIB))
    disk = assemble_disk(
        directory / "disk.img",
        "gpt",
        "arm64",
        [
            PartitionSpec("ak-boot", PartitionRole.BOOT, 64 * MIB, boot, bootable=True),
            PartitionSpec("ak-root", PartitionRole.ROOT, 0, work / "root.img"),
            PartitionSpec("ak-verity", PartitionRole.VERITY, 0, work / "verity.img"),
            PartitionSpec("ak-data", PartitionRole.DATA, data_mib * MIB, None),
        ],
        "bench",
    )
    manifest = Manifest(
        name="bench-ec2-arm64",
        recipe="bench",
        board="ec2-arm64",
        arch="arm64",
        suite="trixie",
        boot="uefi",
        inputs="bench",
        appliancekit="bench",
        settings={},
        packages=[],
        kernel_version="",
        kernel_cmdline="",
        initramfs_modules=[],
        verity=VerityRecord(
            root_hash=hashlib.sha256(root).hexdigest(), salt="", data_blocks=len(root) // 4096
        ),
        disk=DiskRecord.of(disk, "disk.img"),
        sizes=SizeRecord(disk_bytes=disk.size),
        probes=[],
        ports=[],
    )
    write_manifest(directory, manifest)
    write_sha256sums(directory, ["disk.img", "manifest.json"])
    shutil.rmtree(work)
    return directory


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def sha256(path: Path) -> str:
    from appliancekit.digest import sha256_file

    return sha256_file(path)


def best(
    label: str, argv_for: list[str], target: Path, runs: int, times: list[float] | None = None
) -> float:
    times = [] if times is None else times
    for _ in range(runs):
        target.unlink(missing_ok=True)
        times.append(timed(argv_for))
    print(f"  {label:<56} {min(times):7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times)})")
    return min(times)


def bench_flash(base: Path, image: Path, runs: int, target_dir: Path) -> None:
    ak = [sys.executable, "-m", "appliancekit"]
    size = (image / "disk.img").stat().st_size
    print(
        f"image: {size / MIB:.0f} MiB, {os.stat(image / 'disk.img').st_blocks * 512 / MIB:.0f} MiB allocated"
    )
    release = base / "release"
    subprocess.run(
        [*ak, "publish", str(image), "--to", "sdcard", "--out", str(release)], check=True
    )
    listed = base / "listed"
    listed.mkdir()
    for entry in image.iterdir():  # cp keeps disk.img sparse (shutil.copytree would not)
        subprocess.run(["cp", "--sparse=always", str(entry), str(listed / entry.name)], check=True)
    write_image_bmap(listed)
    write_sha256sums(listed, ["disk.img", "manifest.json", "disk.img.bmap"])

    target = target_dir / "ak-bench-target.img"
    dd_times: list[float] = []
    dd = best(
        "dd bs=4M conv=fsync (whole image)",
        ["dd", f"if={image / 'disk.img'}", f"of={target}", "bs=4M", "conv=fsync", "status=none"],
        target,
        runs,
        dd_times,
    )
    dd_median = statistics.median(dd_times)
    want = sha256(image / "disk.img")
    assert sha256(target) == want
    results = {}
    sources = (
        ("IMAGE_DIR (full sha256 first)", image),
        ("RELEASE_DIR (.zst + .bmap)", release),
        ("IMAGE_DIR (disk.img.bmap in SHA256SUMS)", listed),
    )
    for label, src in sources:
        label = f"appliancekit flash {label}"
        results[label] = best(label, [*ak, "flash", str(src), str(target), "--yes"], target, runs)
        assert sha256(target) == want, label
    # the same work without the interpreter start and CLI imports (~0.4 s here)
    from appliancekit.flash import flash

    for label, src in sources:
        label = f"flash() in-process {label}"
        times = []
        for _ in range(runs):
            target.unlink(missing_ok=True)
            start = time.perf_counter()
            flash(src, target, yes=True)
            times.append(time.perf_counter() - start)
        print(f"  {label:<56} {min(times):7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times)})")
        results[label] = min(times)
    target.unlink(missing_ok=True)
    print()
    print("  ratios against dd's best and median run (dd's later runs can be much faster than its")
    print("  first when the storage under this file system recognises zero writes):")
    for label, seconds in results.items():
        print(f"  dd / {label}: {dd / seconds:5.1f}x (median dd: {dd_median / seconds:5.1f}x)")


def bench_ec2(image: Path) -> None:
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    from moto.server import ThreadedMotoServer

    from appliancekit.publish.ec2 import EBS_BLOCK, nonzero_blocks, publish_ec2

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for var, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(var, value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        disk = image / "disk.img"
        size = disk.stat().st_size
        with open(disk, "rb") as f:
            nonzero = sum(1 for _ in nonzero_blocks(f.fileno(), size)) * EBS_BLOCK
        first = publish_ec2(image, region="us-east-1", endpoint_url=url)
        again = publish_ec2(image, region="us-east-1", endpoint_url=url)
        print(
            f"  EC2 (EBS direct, moto): sent {first.bytes_sent / MIB:.1f} MiB in {first.blocks_sent} blocks"
            f" for a {size / MIB:.0f} MiB image ({100 * first.bytes_sent / size:.1f}%);"
            f" non-zero 512 KiB blocks: {nonzero / MIB:.1f} MiB; {first.seconds:.1f}s"
        )
        print(
            f"  EC2 re-publish: sent {again.bytes_sent} bytes ({again.reused} {again.image_id} found by tag)"
        )
        assert first.bytes_sent <= nonzero and again.bytes_sent == 0
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument(
        "--target-dir",
        type=Path,
        help="write the targets here (e.g. a mounted USB stick) instead of next to the image",
    )
    args = parser.parse_args()
    base = args.keep or Path(
        tempfile.mkdtemp(prefix="ak-bench-flash-", dir=os.environ.get("TMPDIR"))
    )
    base.mkdir(parents=True, exist_ok=True)
    try:
        image = build_image(base / "image", args.data_mib)
        print("flash to a regular file on the same file system:")
        bench_flash(base, image, args.runs, args.target_dir or base)
        print("EC2 upload:")
        bench_ec2(image)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
