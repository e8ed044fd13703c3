"""disk.py: raw disk assembly (GPT/MBR), FAT images, SHA256SUMS — with the real host tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliancekit.digest import sha256_file
from appliancekit.disk import (
    ESP_GUID,
    GPT_TAIL,
    LINUX_DATA_GUID,
    MIB,
    ROOT_GUIDS,
    ROOT_VERITY_GUIDS,
    DiskImage,
    PartitionRole,
    PartitionSpec,
    assemble_disk,
    compute_layout,
    extract_fat_file,
    make_fat_image,
    read_partition_table,
    write_sha256sums,
)
from appliancekit.errors import UserError
from appliancekit.seal import derive_uuid

needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("sfdisk", "mkfs.vfat", "mcopy", "mmd", "mdir")),
    reason="fdisk / dosfstools / mtools not installed",
)
pytestmark = needs_tools


def blob(path: Path, size: int, seed: int) -> Path:
    """A file of `size` pseudo-random bytes (no all-zero chunks)."""
    pattern = bytes((i * 131 + seed * 17 + 1) % 251 + 1 for i in range(4096))
    path.write_bytes((pattern * (size // 4096 + 1))[:size])
    return path


def read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    (src / "overlays").mkdir(parents=True)
    blob(src / "kernel", 300_000, 1)
    (src / "cmdline.txt").write_text("console=ttyAMA0 ak.roothash=abc\n")
    (src / "overlays" / "a.dtbo").write_bytes(b"dtbo-a")
    (src / "overlays" / "b.dtbo").write_bytes(b"dtbo-b")
    esp = make_fat_image(
        tmp_path / "esp.vfat",
        {
            "EFI/BOOT/BOOTAA64.EFI": src / "kernel",
            "cmdline.txt": src / "cmdline.txt",
            "overlays": src / "overlays",
        },
        16 * MIB,
        "AKBOOT",
        "seed",
    )
    return {
        "esp": esp,
        "root": blob(tmp_path / "root.erofs", 3 * MIB + 4096, 2),
        "verity": blob(tmp_path / "root.verity", 40960, 3),
    }


def gpt_specs(parts: dict[str, Path], data_size: int = 64 * MIB) -> list[PartitionSpec]:
    return [
        PartitionSpec("ak-esp", PartitionRole.ESP, 16 * MIB, parts["esp"], bootable=True),
        PartitionSpec("ak-root", PartitionRole.ROOT, 0, parts["root"]),
        PartitionSpec("ak-verity", PartitionRole.VERITY, 0, parts["verity"]),
        PartitionSpec("ak-data", PartitionRole.DATA, data_size, None),
    ]


@pytest.fixture
def gpt_disk(tmp_path: Path, parts: dict[str, Path]) -> DiskImage:
    return assemble_disk(tmp_path / "out" / "disk.img", "gpt", "arm64", gpt_specs(parts), "seed")


# --- layout (pure) ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=4 << 30), min_size=1, max_size=8),
    table=st.sampled_from(["gpt", "mbr"]),
    first_mib=st.integers(min_value=1, max_value=16),
    pow2=st.booleans(),
    min_size=st.integers(min_value=0, max_value=64 << 30),
    fill_last=st.booleans(),
)
def test_layout_properties(sizes, table, first_mib, pow2, min_size, fill_last):
    layout = compute_layout(
        sizes,
        table,
        first_offset=first_mib * MIB,
        round_to_power_of_two=pow2,
        min_size=min_size,
        fill_last=fill_last,
    )
    assert len(layout.slots) == len(sizes)
    end_of_previous = first_mib * MIB
    for (offset, size), wanted in zip(layout.slots, sizes, strict=True):
        assert offset % MIB == 0 and size % MIB == 0
        assert size >= wanted
        assert offset >= end_of_previous  # in order, never overlapping
        end_of_previous = offset + size
    for (_, size), wanted in zip(layout.slots[:-1], sizes, strict=False):
        assert size - wanted < MIB
    tail = GPT_TAIL if table == "gpt" else 0
    assert end_of_previous + tail <= layout.size  # inside the disk, room for the backup GPT
    if fill_last:
        assert end_of_previous + tail == layout.size
    else:
        assert layout.slots[-1][1] - sizes[-1] < MIB
    assert layout.size >= min_size
    assert layout.size % MIB == 0
    if pow2:
        assert layout.size & (layout.size - 1) == 0


def test_layout_rejects_unaligned_first_offset():
    with pytest.raises(UserError, match="first_offset"):
        compute_layout([MIB], "gpt", first_offset=8192)


# --- GPT --------------------------------------------------------------------------------


def test_gpt_table_matches_the_layout(gpt_disk: DiskImage):
    pt = read_partition_table(gpt_disk.path)
    assert pt["label"] == "gpt"
    assert pt["id"].lower() == gpt_disk.disk_id == derive_uuid("seed", "gpt-disk")
    assert pt["sectorsize"] == 512
    got = pt["partitions"]
    assert [p["name"] for p in got] == ["ak-esp", "ak-root", "ak-verity", "ak-data"]
    assert [p["type"].lower() for p in got] == [
        ESP_GUID,
        ROOT_GUIDS["arm64"],
        ROOT_VERITY_GUIDS["arm64"],
        LINUX_DATA_GUID,
    ]
    assert got[0].get("attrs") == "LegacyBIOSBootable"
    assert "attrs" not in got[1]
    for entry, p in zip(gpt_disk.partitions, got, strict=True):
        assert p["start"] * 512 == entry.offset
        assert p["size"] * 512 == entry.size
        assert p["uuid"].lower() == entry.uuid
        assert entry.offset % MIB == 0
    sizes = [e.size for e in gpt_disk.partitions]
    assert sizes == [16 * MIB, 4 * MIB, MIB, 64 * MIB]
    assert gpt_disk.partitions[0].offset == MIB
    assert gpt_disk.size == gpt_disk.path.stat().st_size == (1 + 16 + 4 + 1 + 64 + 1) * MIB
    assert pt["lastlba"] == gpt_disk.size // 512 - 34


def test_contents_at_offsets(gpt_disk: DiskImage, parts: dict[str, Path]):
    for entry in gpt_disk.partitions:
        if entry.role is PartitionRole.DATA:
            assert entry.sha256 is None
            continue
        image = parts[entry.role.value]
        data = image.read_bytes()
        assert read_at(gpt_disk.path, entry.offset, len(data)) == data
        assert entry.sha256 == sha256_file(image)
        rest = entry.size - len(data)
        assert read_at(gpt_disk.path, entry.offset + len(data), rest) == bytes(rest)
    assert gpt_disk.sha256 == sha256_file(gpt_disk.path)
    whole = subprocess.run(["sha256sum", gpt_disk.path], capture_output=True, text=True)
    assert whole.stdout.split()[0] == gpt_disk.sha256
    # no temp files left next to the output
    assert sorted(p.name for p in gpt_disk.path.parent.iterdir()) == ["disk.img"]


def test_empty_partition_is_zero_and_sparse(tmp_path: Path, parts: dict[str, Path]):
    disk = assemble_disk(
        tmp_path / "disk.img", "gpt", "amd64", gpt_specs(parts, data_size=256 * MIB), "seed"
    )
    data = disk.partition("ak-data")
    assert data.size == 256 * MIB
    assert read_at(disk.path, data.offset, MIB) == bytes(MIB)
    assert read_at(disk.path, data.offset + data.size - MIB, MIB) == bytes(MIB)
    allocated = disk.path.stat().st_blocks * 512
    assert disk.size > 256 * MIB
    assert allocated < 12 * MIB  # only the partition table and the written images
    assert disk.partition("ak-root").type_id == ROOT_GUIDS["amd64"]


def test_fat_partition_readable_in_place(gpt_disk: DiskImage, parts, tmp_path: Path):
    esp = gpt_disk.partition("ak-esp")
    dest = tmp_path / "BOOTAA64.EFI"
    extract_fat_file(gpt_disk.path, esp.offset, "EFI/BOOT/BOOTAA64.EFI", dest)
    assert dest.read_bytes() == (tmp_path / "src" / "kernel").read_bytes()
    extract_fat_file(gpt_disk.path, esp.offset, "/overlays/b.dtbo", tmp_path / "b.dtbo")
    assert (tmp_path / "b.dtbo").read_bytes() == b"dtbo-b"


def test_disk_is_reproducible(tmp_path: Path, parts: dict[str, Path]):
    a = assemble_disk(tmp_path / "a" / "disk.img", "gpt", "arm64", gpt_specs(parts), "seed")
    b = assemble_disk(tmp_path / "b" / "disk.img", "gpt", "arm64", gpt_specs(parts), "seed")
    assert a.sha256 == b.sha256
    assert a.to_json()["partitions"] == b.to_json()["partitions"]
    c = assemble_disk(tmp_path / "c" / "disk.img", "gpt", "arm64", gpt_specs(parts), "other")
    assert c.sha256 != a.sha256
    assert c.disk_id != a.disk_id


def test_to_json(gpt_disk: DiskImage):
    doc = gpt_disk.to_json()
    assert doc["table"] == "gpt"
    assert doc["size"] == gpt_disk.size
    assert doc["partitions"][1]["role"] == "root"
    assert doc["partitions"][3]["sha256"] is None
    assert doc["path"] == str(gpt_disk.path)


def test_power_of_two_and_min_size(tmp_path: Path, parts: dict[str, Path]):
    disk = assemble_disk(
        tmp_path / "sd.img",
        "gpt",
        "arm64",
        gpt_specs(parts),
        "seed",
        round_to_power_of_two=True,
    )
    assert disk.size == 128 * MIB == disk.path.stat().st_size
    pt = read_partition_table(disk.path)
    assert pt["lastlba"] == disk.size // 512 - 34  # backup GPT at the real end
    bigger = assemble_disk(
        tmp_path / "sd2.img",
        "mbr",
        "arm64",
        gpt_specs(parts),
        "seed",
        round_to_power_of_two=True,
        min_size=200 * MIB,
    )
    assert bigger.size == 256 * MIB


def test_failure_leaves_no_output_and_no_temp(tmp_path: Path, parts: dict[str, Path]):
    out = tmp_path / "out"
    specs = [PartitionSpec("ak-root", PartitionRole.ROOT, MIB, tmp_path)]  # a directory
    with pytest.raises(IsADirectoryError):
        assemble_disk(out / "disk.img", "gpt", "arm64", specs, "seed")
    assert list(out.iterdir()) == []


def test_errors_are_user_errors(tmp_path: Path, parts: dict[str, Path]):
    too_small = [PartitionSpec("ak-root", PartitionRole.ROOT, MIB, parts["root"])]
    with pytest.raises(UserError, match="does not fit"):
        assemble_disk(tmp_path / "d.img", "gpt", "arm64", too_small, "seed")
    missing = [PartitionSpec("ak-root", PartitionRole.ROOT, MIB, tmp_path / "missing")]
    with pytest.raises(UserError, match="does not exist"):
        assemble_disk(tmp_path / "d.img", "gpt", "arm64", missing, "seed")
    root = [PartitionSpec("ak-root", PartitionRole.ROOT, 0, parts["root"])]
    with pytest.raises(UserError, match="riscv64"):
        assemble_disk(tmp_path / "d.img", "gpt", "riscv64", root, "seed")
    with pytest.raises(UserError, match="used twice"):
        assemble_disk(tmp_path / "d.img", "gpt", "arm64", root * 2, "seed")
    with pytest.raises(UserError, match="at most 4"):
        assemble_disk(tmp_path / "d.img", "mbr", "arm64", gpt_specs(parts) * 2, "seed")
    spl = blob(tmp_path / "spl.bin", 32768, 9)
    with pytest.raises(UserError, match="reserved_head"):  # would overwrite the GPT entries
        assemble_disk(tmp_path / "d.img", "gpt", "arm64", root, "seed", reserved_head=[(8192, spl)])
    assert not (tmp_path / "d.img").exists()


# --- MBR --------------------------------------------------------------------------------


def test_mbr_with_spl_in_reserved_head(tmp_path: Path, parts: dict[str, Path]):
    spl = blob(tmp_path / "u-boot-sunxi-with-spl.bin", 500_000, 7)
    specs = [
        PartitionSpec("ak-boot", PartitionRole.BOOT, 16 * MIB, parts["esp"], bootable=True),
        PartitionSpec("ak-root", PartitionRole.ROOT, 0, parts["root"]),
        PartitionSpec("ak-verity", PartitionRole.VERITY, 0, parts["verity"]),
        PartitionSpec("ak-data", PartitionRole.DATA, 32 * MIB, None),
    ]
    disk = assemble_disk(
        tmp_path / "cubie.img",
        "mbr",
        "armhf",
        specs,
        "seed",
        first_offset=4 * MIB,
        reserved_head=[(8192, spl)],
    )
    assert read_at(disk.path, 8192, 500_000) == spl.read_bytes()
    assert read_at(disk.path, 512, 8192 - 512) == bytes(8192 - 512)
    pt = read_partition_table(disk.path)
    assert pt["label"] == "dos"
    assert pt["id"] == disk.disk_id
    assert re.fullmatch(r"0x[0-9a-f]{8}", disk.disk_id)
    got = pt["partitions"]
    assert [int(p["type"], 16) for p in got] == [0x0C, 0x83, 0x83, 0x83]
    assert [p.get("bootable", False) for p in got] == [True, False, False, False]
    assert got[0]["start"] * 512 == 4 * MIB
    for entry, p in zip(disk.partitions, got, strict=True):
        assert p["start"] * 512 == entry.offset
        assert p["size"] * 512 == entry.size
        assert entry.uuid == f"{disk.disk_id[2:]}-{entry.number:02x}"
    root = disk.partition("ak-root")
    assert read_at(disk.path, root.offset, 4096) == parts["root"].read_bytes()[:4096]
    assert read_at(disk.path, 510, 2) == b"\x55\xaa"
    again = assemble_disk(
        tmp_path / "cubie2.img",
        "mbr",
        "armhf",
        specs,
        "seed",
        first_offset=4 * MIB,
        reserved_head=[(8192, spl)],
    )
    assert again.sha256 == disk.sha256


# --- FAT --------------------------------------------------------------------------------


def _mtools(*args: str) -> str:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1", TZ="UTC")
    return subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout


def test_fat_image_is_reproducible_and_timestamps_fixed(tmp_path: Path):
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "sub" / "deep.txt").write_text("deep\n")
    (src / "config.txt").write_text("arm_64bit=1\n")
    files = {"config.txt": src / "config.txt", "boot/dir": src / "dir"}

    os.utime(src / "config.txt", (1_600_000_000, 1_600_000_000))
    a = make_fat_image(tmp_path / "a.vfat", files, 8 * MIB, "AKBOOT", "seed")
    os.utime(src / "config.txt", (1_700_000_000, 1_700_000_000))
    os.utime(src / "dir" / "sub" / "deep.txt", (1_234_567_890, 1_234_567_890))
    b = make_fat_image(
        tmp_path / "b.vfat", dict(reversed(files.items())), 8 * MIB, "AKBOOT", "seed"
    )
    assert a.stat().st_size == 8 * MIB
    assert sha256_file(a) == sha256_file(b)
    c = make_fat_image(tmp_path / "c.vfat", files, 8 * MIB, "AKBOOT", "seed2")
    assert sha256_file(c) != sha256_file(a)

    listing = _mtools("mdir", "-/", "-i", str(a), "::/")
    stamped = re.findall(r"\d{4}-\d{2}-\d{2} +\d+:\d{2}", listing)
    assert len(stamped) >= 8
    assert set(re.sub(" +", " ", s) for s in stamped) == {"1980-01-01 0:00"}
    assert "deep" in _mtools("mtype", "-i", str(a), "::/boot/dir/sub/deep.txt")
    assert "Volume in drive : is AKBOOT" in listing


def test_fat_rejects_bad_inputs(tmp_path: Path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(UserError, match="label"):
        make_fat_image(tmp_path / "x.vfat", {"f": f}, MIB, "WAYTOOLONGLABEL", "s")
    with pytest.raises(UserError, match="only in case"):
        make_fat_image(tmp_path / "x.vfat", {"A.txt": f, "a.txt": f}, MIB, "L", "s")
    with pytest.raises(UserError, match="bad path"):
        make_fat_image(tmp_path / "x.vfat", {"../f": f}, MIB, "L", "s")
    assert not (tmp_path / "x.vfat").exists()


# --- SHA256SUMS -------------------------------------------------------------------------


def test_sha256sums_format(tmp_path: Path):
    (tmp_path / "b.img").write_bytes(b"bee")
    (tmp_path / "a.json").write_text("{}")
    path = write_sha256sums(tmp_path, ["b.img", "a.json"])
    lines = path.read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["a.json", "b.img"]
    assert all(re.fullmatch(r"[0-9a-f]{64}  \S+", line) for line in lines)
    subprocess.run(["sha256sum", "--strict", "-c", path.name], cwd=tmp_path, check=True)
    (tmp_path / "b.img").write_bytes(b"changed")
    bad = subprocess.run(["sha256sum", "-c", path.name], cwd=tmp_path, capture_output=True)
    assert bad.returncode != 0


def test_sha256_file_skips_holes_and_reads_pipes(tmp_path: Path) -> None:
    """One sha256_file for all: a sparse file hashes like its bytes, a pipe like its stream."""
    import hashlib
    import os
    import threading

    sparse = tmp_path / "sparse.img"
    with open(sparse, "wb") as f:
        f.seek(3 * MIB + 17)
        f.write(b"data in the middle")
        f.truncate(7 * MIB + 5)  # ends in a hole
    assert sha256_file(sparse) == hashlib.sha256(sparse.read_bytes()).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    payload = os.urandom(3 * MIB + 1)

    def feed() -> None:
        with open(fifo, "wb") as w:
            w.write(payload)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert sha256_file(fifo) == hashlib.sha256(payload).hexdigest()
    finally:
        writer.join(timeout=10)
