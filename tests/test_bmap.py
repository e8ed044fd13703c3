"""Block maps: what is mapped, the XML format, and Debian's bmaptool reading our files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliancekit.errors import UserError
from appliancekit.manifest import load_manifest
from appliancekit.publish.bmap import (
    BLOCK_SIZE,
    Bmap,
    BmapRange,
    _subtract,
    bmap_xml,
    fat_used_extents,
    merge_extents,
    must_map_extents,
    parse_bmap,
    scan_image,
    verify_image,
    write_bmap,
)
from appliancekit.publish.image import open_image_dir, write_image_bmap
from tests.test_publish_support import (
    MIB,
    copy_image_dir,
    flip_byte,
    make_image,
    needs_disk_tools,
    sha256_of,
)

pytestmark = needs_disk_tools
needs_bmaptool = pytest.mark.skipif(not shutil.which("bmaptool"), reason="bmap-tools not installed")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image(tmp_path_factory.mktemp("bmap") / "img", data_mib=16)


def mapped_blocks(bmap: Bmap) -> set[int]:
    return {b for r in bmap.ranges for b in range(r.first, r.last + 1)}


def test_scan_maps_every_nonzero_block_and_the_blocks_whose_zeros_matter(image_dir: Path) -> None:
    manifest = load_manifest(image_dir)
    disk = image_dir / "disk.img"
    scan = scan_image(disk, must_map_extents(manifest, disk), full_digest=True)
    assert scan.sha256 == manifest.disk.sha256
    bmap = scan.bmap
    mapped = mapped_blocks(bmap)
    data = disk.read_bytes()
    zero = bytes(BLOCK_SIZE)
    for block in range(bmap.blocks_count):
        if data[block * BLOCK_SIZE : (block + 1) * BLOCK_SIZE] != zero:
            assert block in mapped, f"non-zero block {block} is not mapped"
    parts = {p.name: p for p in manifest.disk.partitions}
    # the partition table head (protective MBR, GPT header, the mostly-zero entry array)
    assert set(range(parts["ak-boot"].offset // BLOCK_SIZE)) <= mapped
    # the backup GPT at the end
    end = parts["ak-data"].offset + parts["ak-data"].size
    assert set(range(end // BLOCK_SIZE, bmap.blocks_count)) <= mapped
    # the zero stretch inside the verity-protected root data is written anyway
    root = parts["ak-root-a"].offset // BLOCK_SIZE
    zero_stretch = range(root + MIB // BLOCK_SIZE, root + (MIB + 64 * 1024) // BLOCK_SIZE)
    assert not any(data[zero_stretch.start * BLOCK_SIZE : zero_stretch.stop * BLOCK_SIZE])
    assert set(zero_stretch) <= mapped
    # slot A's hash tree, right behind its erofs image in the same partition
    assert manifest.verity is not None and manifest.verity.hash_offset
    hash_start = parts["ak-root-a"].offset + manifest.verity.hash_offset
    hash_end = hash_start + manifest.verity.hash_bytes
    assert set(range(hash_start // BLOCK_SIZE, hash_end // BLOCK_SIZE)) <= mapped
    # the empty slot B: its first MiB (old signatures wiped), nothing after
    slot_b = parts["ak-root-b"]
    first_b = slot_b.offset // BLOCK_SIZE
    assert set(range(first_b, first_b + MIB // BLOCK_SIZE)) <= mapped
    assert not set(range(first_b + MIB // BLOCK_SIZE, slot_b.end // BLOCK_SIZE)) & mapped
    # the empty data partition: its first MiB (old signatures wiped), nothing after
    data_first = parts["ak-data"].offset // BLOCK_SIZE
    assert set(range(data_first, data_first + MIB // BLOCK_SIZE)) <= mapped
    assert not set(range(data_first + MIB // BLOCK_SIZE, end // BLOCK_SIZE)) & mapped
    assert bmap.mapped_bytes < bmap.image_size // 4


def test_fat_metadata_and_allocated_clusters_are_mapped_free_clusters_are_not(
    image_dir: Path,
) -> None:
    manifest = load_manifest(image_dir)
    boot = manifest.partition("ak-boot")
    with open(image_dir / "disk.img", "rb") as f:
        used = fat_used_extents(f.fileno(), boot.offset, boot.size)
    assert used is not None
    total = sum(e - s for s, e in used)
    # reserved sectors + 2 FATs + root dir + ~700 KiB of files, far less than 8 MiB
    assert 700 * 1024 < total < 2 * MIB
    assert used[0][0] == boot.offset
    with open(image_dir / "disk.img", "rb") as f:
        assert fat_used_extents(f.fileno(), manifest.partition("ak-root-a").offset, MIB) is None


def test_xml_round_trip_and_checksum(image_dir: Path, tmp_path: Path) -> None:
    bmap = open_image_dir(image_dir).bmap
    path = write_bmap(bmap, tmp_path / "x.bmap")
    text = path.read_text()
    for tag in (
        "ImageSize",
        "BlockSize",
        "BlocksCount",
        "MappedBlocksCount",
        "ChecksumType",
        "BmapFileChecksum",
    ):
        assert f"<{tag}>" in text
    assert '<bmap version="2.0">' in text and "<BlockSize> 4096 </BlockSize>" in text
    assert parse_bmap(path) == bmap
    tampered = tmp_path / "t.bmap"
    tampered.write_text(
        text.replace(f"{bmap.ranges[0].last} </Range>", f"{bmap.ranges[0].last + 1} </Range>", 1)
    )
    with pytest.raises(UserError, match="checksum mismatch"):
        parse_bmap(tampered)
    garbage = tmp_path / "g.bmap"
    garbage.write_text("<bmap version='9.0'></bmap>")
    with pytest.raises(UserError, match="version"):
        parse_bmap(garbage)


def test_verify_image_catches_changes_in_mapped_and_unmapped_bytes(
    image_dir: Path, tmp_path: Path
) -> None:
    bmap = open_image_dir(image_dir).bmap
    mapped = copy_image_dir(image_dir, tmp_path / "a")
    flip_byte(mapped / "disk.img", bmap.ranges[0].first * BLOCK_SIZE + 5000)
    with pytest.raises(UserError, match="checksum mismatch"):
        verify_image(mapped / "disk.img", bmap)
    unmapped = copy_image_dir(image_dir, tmp_path / "b")
    data = load_manifest(unmapped).partition("ak-data")
    flip_byte(unmapped / "disk.img", data.offset + data.size // 2)
    with pytest.raises(UserError, match="not zero"):
        verify_image(unmapped / "disk.img", bmap)
    verify_image(image_dir / "disk.img", bmap)


def test_listed_bmap_is_used_to_verify_the_image_dir(image_dir: Path, tmp_path: Path) -> None:
    """With disk.img.bmap in SHA256SUMS, open_image_dir checks against it (no full hash)."""
    from appliancekit.disk import write_sha256sums

    copy = copy_image_dir(image_dir, tmp_path / "c")
    write_image_bmap(copy)
    write_sha256sums(copy, ["disk.img", "manifest.json", "disk.img.bmap"])
    assert open_image_dir(copy).bmap == open_image_dir(image_dir).bmap
    flip_byte(copy / "disk.img", load_manifest(copy).partition("ak-root-a").offset + 10)
    with pytest.raises(UserError, match="does not match its block map"):
        open_image_dir(copy)


@needs_bmaptool
def test_bmaptool_copy_accepts_our_bmap_and_writes_an_identical_image(
    image_dir: Path, tmp_path: Path
) -> None:
    image = open_image_dir(image_dir)
    bmap = write_bmap(image.bmap, tmp_path / "disk.img.bmap")
    target = tmp_path / "target.img"
    proc = subprocess.run(
        ["bmaptool", "copy", "--bmap", str(bmap), str(image_dir / "disk.img"), str(target)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert sha256_of(target) == image.sha256
    # bmaptool wrote only the mapped blocks: the rest of the file is a hole
    assert os.stat(target).st_blocks * 512 < image.size // 2


@needs_bmaptool
def test_bmaptool_refuses_a_tampered_bmap_checksum(image_dir: Path, tmp_path: Path) -> None:
    image = open_image_dir(image_dir)
    text = bmap_xml(image.bmap)
    start = text.index("<BmapFileChecksum> ") + len("<BmapFileChecksum> ")
    digit = text[start]
    bad = tmp_path / "bad.bmap"
    bad.write_text(text[:start] + ("0" if digit != "0" else "1") + text[start + 1 :])
    proc = subprocess.run(
        [
            "bmaptool",
            "copy",
            "--bmap",
            str(bad),
            str(image_dir / "disk.img"),
            str(tmp_path / "t.img"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "checksum mismatch for bmap file" in proc.stderr


@needs_bmaptool
def test_bmaptool_refuses_an_image_that_does_not_match_a_range_checksum(
    image_dir: Path, tmp_path: Path
) -> None:
    image = open_image_dir(image_dir)
    bmap = write_bmap(image.bmap, tmp_path / "disk.img.bmap")
    copy = copy_image_dir(image_dir, tmp_path / "c")
    flip_byte(copy / "disk.img", load_manifest(copy).partition("ak-root-a").offset + 100)
    proc = subprocess.run(
        ["bmaptool", "copy", "--bmap", str(bmap), str(copy / "disk.img"), str(tmp_path / "t.img")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "checksum mismatch" in proc.stderr


def test_scan_handles_an_image_whose_size_is_not_a_block_multiple(tmp_path: Path) -> None:
    path = tmp_path / "odd.img"
    path.write_bytes(bytes(5000) + b"x" * 3000 + bytes(9000) + b"y")
    bmap = scan_image(path).bmap
    assert bmap.blocks_count == 5 and bmap.image_size == 17001
    assert [(r.first, r.last) for r in bmap.ranges] == [(1, 1), (4, 4)]
    assert bmap.mapped_bytes == 4096 + (17001 - 4 * 4096)
    file = write_bmap(bmap, tmp_path / "odd.bmap")
    assert parse_bmap(file) == bmap
    verify_image(path, bmap)


extent_lists = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=12,
)


@given(extent_lists, extent_lists)
def test_merge_and_subtract_agree_with_sets(
    a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> None:
    def as_set(extents: list[tuple[int, int]]) -> set[int]:
        return {i for s, e in extents for i in range(s, e)}

    ma, mb = merge_extents(a), merge_extents(b)
    assert as_set(ma) == as_set(a)
    assert all(ma[i][1] < ma[i + 1][0] for i in range(len(ma) - 1))
    assert as_set(_subtract(ma, mb)) == as_set(a) - as_set(b)


def test_bmap_range_byte_range_clips_the_last_block() -> None:
    r = BmapRange(2, 3, "0" * 64)
    assert r.byte_range(4096, 4096 * 3 + 10) == (8192, 4096 * 3 + 10)


@pytest.mark.parametrize(("bits", "size_mib"), [(12, 2), (16, 16), (32, 40)])
def test_fat_used_extents_cover_every_file_for_fat12_16_32(
    tmp_path: Path, bits: int, size_mib: int
) -> None:
    from appliancekit.disk import make_fat_image
    from tests.test_publish_support import noise

    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    contents = {
        "a.bin": noise(70_000, 1),
        "dir/b.bin": noise(5_000, 2),
        "dir/c.bin": noise(300_000, 3),
    }
    for name, data in contents.items():
        (src / name).write_bytes(data)
    image = make_fat_image(
        tmp_path / "fat.img",
        {"a.bin": src / "a.bin", "dir": src / "dir"},
        size_mib * MIB,
        "T",
        "s",
        fat_bits=bits,
    )
    raw = image.read_bytes()
    with open(image, "rb") as f:
        used = fat_used_extents(f.fileno(), 0, len(raw))
    assert used is not None
    total = sum(e - s for s, e in used)
    assert total < len(raw) // 2
    for data in contents.values():
        for probe in range(0, len(data) - 64, 4096):
            at = raw.find(data[probe : probe + 64])
            assert at >= 0 and any(s <= at < e for s, e in used), (
                f"FAT{bits}: file data at {at} not covered"
            )
