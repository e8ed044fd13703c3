"""Block maps in bmaptool's format (version 2.0), made and checked without bmaptool.

A block map lists the 4 KiB blocks of a raw disk image that have to be written ("mapped"
blocks), as ranges with a sha256 each, and carries a checksum of the map file itself. Any
block not listed is zero in the image and is not written, which is what makes flashing a
mostly empty image fast.

What counts as mapped: holes (SEEK_DATA/SEEK_HOLE) and all-zero blocks are left out, with
one exception that bmaptool's own `bmaptool create` does not make. A flashed card still
holds whatever was on it before in every block that is not written, so blocks whose
*zeros* carry meaning must be written even though they are zero:

- the partition tables (everything before the first partition and after the last: the
  protective MBR, the GPT header and entry array, the backup GPT at the end);
- the verity-protected part of the root partition and the whole verity partition: a
  stale block there is a dm-verity error the moment it is read;
- the FAT boot partition's reserved sectors, FATs and root directory (a zero FAT entry
  means "free cluster") and every allocated cluster (files and directories);
- partitions written with content whose format we do not parse (map them whole), and the
  first MiB of partitions left empty, so a filesystem signature from an earlier card
  cannot make first boot reuse stale data.

`must_map_extents(manifest, image)` computes those byte ranges; `scan_image` combines them
with the non-zero blocks. Free FAT clusters and the empty data partition stay unmapped.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree

from appliancekit.errors import UserError

if TYPE_CHECKING:
    from appliancekit.manifest import Manifest

BLOCK_SIZE = 4096
BMAP_VERSION = "2.0"
CHECKSUM_TYPE = "sha256"
MIB = 1 << 20
CHUNK = MIB  # read size while scanning (a multiple of BLOCK_SIZE)
_ZERO_CHUNK = bytes(CHUNK)
_ZERO_BLOCK = bytes(BLOCK_SIZE)

Extent = tuple[int, int]  # [start, end) in bytes


@dataclass(frozen=True)
class BmapRange:
    first: int  # first block (inclusive)
    last: int  # last block (inclusive)
    sha256: str  # of the bytes of blocks first..last (the last block may be short)

    def byte_range(self, block_size: int, image_size: int) -> Extent:
        return self.first * block_size, min((self.last + 1) * block_size, image_size)


@dataclass(frozen=True)
class Bmap:
    image_size: int
    ranges: tuple[BmapRange, ...]
    block_size: int = BLOCK_SIZE
    checksum_type: str = CHECKSUM_TYPE

    @property
    def blocks_count(self) -> int:
        return -(-self.image_size // self.block_size)

    @property
    def mapped_blocks(self) -> int:
        return sum(r.last - r.first + 1 for r in self.ranges)

    @property
    def mapped_bytes(self) -> int:
        """Bytes that a flash writes (the last block of the image may be short)."""
        return sum(end - start for start, end in self.byte_ranges())

    def byte_ranges(self) -> Iterator[Extent]:
        for r in self.ranges:
            yield r.byte_range(self.block_size, self.image_size)

    def to_json(self) -> dict:
        return {
            "image_size": self.image_size,
            "block_size": self.block_size,
            "blocks_count": self.blocks_count,
            "mapped_blocks": self.mapped_blocks,
            "mapped_bytes": self.mapped_bytes,
            "ranges": len(self.ranges),
        }


# --- extents ---------------------------------------------------------------------------


def merge_extents(extents: Iterable[Extent]) -> list[Extent]:
    """Sorted, non-overlapping, non-adjacent extents covering the same bytes."""
    merged: list[list[int]] = []
    for start, end in sorted(e for e in extents if e[1] > e[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def data_extents(fd: int, size: int) -> list[Extent]:
    """The non-hole extents of an open file, from SEEK_DATA/SEEK_HOLE.

    A file system without hole reporting returns one extent for the whole file, which is
    still correct: zero blocks are then found by reading.
    """
    extents: list[Extent] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end))
        pos = end
    return extents


def _block_extents(extents: Iterable[Extent], size: int) -> list[Extent]:
    """Byte extents widened to whole blocks, in block numbers, clipped to the image."""
    blocks = -(-size // BLOCK_SIZE)
    out = []
    for start, end in extents:
        start, end = max(0, start), min(end, size)
        if end > start:
            out.append((start // BLOCK_SIZE, min(-(-end // BLOCK_SIZE), blocks)))
    return merge_extents(out)


# --- what must be written even when zero ------------------------------------------------


def fat_used_extents(fd: int, offset: int, size: int) -> list[Extent] | None:
    """Byte extents (absolute) of a FAT file system's metadata and allocated clusters.

    None if the bytes at `offset` are not a FAT boot sector we understand.
    """
    boot = os.pread(fd, 512, offset)
    if len(boot) < 512 or boot[510:512] != b"\x55\xaa":
        return None
    bps, spc, reserved, nfats, root_entries, total16, _media, fat16 = struct.unpack_from(
        "<HBHBHHBH", boot, 11
    )
    total32, fat32 = struct.unpack_from("<II", boot, 32)
    fat_sectors = fat16 or fat32
    total = total16 or total32
    if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or not nfats:
        return None
    if not fat_sectors or not total or total * bps > size:
        return None
    root_sectors = -(-(root_entries * 32) // bps)
    first_data = reserved + nfats * fat_sectors + root_sectors
    if first_data >= total:
        return None
    clusters = (total - first_data) // spc
    bits = 12 if clusters < 4085 else 16 if clusters < 65525 else 32
    fat = os.pread(fd, fat_sectors * bps, offset + reserved * bps)
    cluster_bytes = spc * bps
    data_start = offset + first_data * bps
    extents: list[Extent] = [(offset, data_start)]
    for cluster in range(2, clusters + 2):
        if bits == 12:
            pair = fat[cluster * 3 // 2 : cluster * 3 // 2 + 2]
            if len(pair) < 2:
                break
            value = int.from_bytes(pair, "little")
            value = value >> 4 if cluster & 1 else value & 0xFFF
        elif bits == 16:
            value = int.from_bytes(fat[cluster * 2 : cluster * 2 + 2], "little")
        else:
            value = int.from_bytes(fat[cluster * 4 : cluster * 4 + 4], "little") & 0x0FFFFFFF
        if value:
            start = data_start + (cluster - 2) * cluster_bytes
            extents.append((start, start + cluster_bytes))
    return merge_extents(extents)


def must_map_extents(manifest: Manifest, image: Path) -> list[Extent]:
    """Byte extents of `image` that must be written even where they are zero (see above).
    An image without a recorded partition table (a Nix-built one) is mapped whole."""
    verity = manifest.verity
    size = os.stat(image).st_size
    parts = sorted(manifest.disk.partitions, key=lambda p: p.offset)
    if not parts:
        return [(0, size)]
    extents: list[Extent] = [(0, parts[0].offset)]
    last_end = max(p.end for p in parts)
    extents.append((last_end, size))
    with open(image, "rb") as f:
        fd = f.fileno()
        for part in parts:
            offset, psize, role = part.offset, part.size, part.role
            if role == "root" and not part.sha256:
                extents.append((offset, offset + min(psize, MIB)))  # an empty slot: wipe it
            elif role == "root" and verity is not None and verity.data_blocks:
                # a slot holds the erofs image and, from hash_offset, its hash tree
                content = verity.data_blocks * 4096
                if verity.hash_offset:
                    content = verity.hash_offset + verity.hash_bytes
                extents.append((offset, offset + min(psize, content)))
            elif role in ("root", "verity"):
                extents.append((offset, offset + psize))
            elif role in ("boot", "esp"):
                used = fat_used_extents(fd, offset, psize)
                extents.extend(used if used is not None else [(offset, offset + psize)])
            elif part.sha256:
                extents.append((offset, offset + psize))  # content we cannot parse: all of it
            else:
                extents.append((offset, offset + min(psize, MIB)))  # wipe old signatures
    return merge_extents((max(0, s), min(e, size)) for s, e in extents)


# --- scanning --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanResult:
    bmap: Bmap
    sha256: str | None  # of the whole image, if asked for
    data_bytes: int  # bytes in non-hole extents


def scan_image(
    image: Path,
    must_map: Sequence[Extent] = (),
    *,
    full_digest: bool = False,
    progress: object | None = None,
) -> ScanResult:
    """The block map of `image`: non-zero blocks plus `must_map` (byte extents).

    Reads only the non-hole extents and the must-map extents. With full_digest, also the
    sha256 of the whole image (holes are hashed as zeros without reading them).
    `progress` gets .advance(bytes) calls.
    """
    image = Path(image)
    full = hashlib.sha256() if full_digest else None
    ranges: list[BmapRange] = []
    with open(image, "rb", buffering=0) as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size == 0:
            raise UserError(f"{image} is empty", file=image)
        data = data_extents(fd, size)
        forced = _block_extents(must_map, size)
        regions = _block_extents(
            [*data, *((s * BLOCK_SIZE, e * BLOCK_SIZE) for s, e in forced)], size
        )
        forced_iter = _ForcedBlocks(forced)

        run_first: int | None = None
        run_hash = hashlib.sha256()
        prev_block = -1

        def close_run() -> None:
            nonlocal run_first, run_hash
            if run_first is not None:
                ranges.append(BmapRange(run_first, prev_block, run_hash.hexdigest()))
                run_first = None
                run_hash = hashlib.sha256()

        pos = 0  # bytes fed to `full` so far
        for first_block, end_block in regions:
            start, end = first_block * BLOCK_SIZE, min(end_block * BLOCK_SIZE, size)
            if full is not None:
                _feed_zeros(full, start - pos)
            if progress is not None:
                progress.advance(start - pos)  # type: ignore[attr-defined]
            pos = start
            while pos < end:
                chunk = os.pread(fd, min(CHUNK, end - pos), pos)
                if not chunk:
                    raise UserError(f"{image} shrank while being read", file=image)
                if full is not None:
                    full.update(chunk)
                block0 = pos // BLOCK_SIZE
                nblocks = -(-len(chunk) // BLOCK_SIZE)
                mapped = _mapped_flags(chunk, block0, nblocks, forced_iter)
                view = memoryview(chunk)
                i = 0
                while i < nblocks:
                    if not mapped[i]:
                        close_run()
                        i += 1
                        continue
                    j = i
                    while j < nblocks and mapped[j]:
                        j += 1
                    if run_first is None:
                        run_first = block0 + i
                    run_hash.update(view[i * BLOCK_SIZE : j * BLOCK_SIZE])
                    prev_block = block0 + j - 1
                    i = j
                pos += len(chunk)
                if progress is not None:
                    progress.advance(len(chunk))  # type: ignore[attr-defined]
            close_run()  # regions are separated by at least one unmapped block
        if full is not None:
            _feed_zeros(full, size - pos)
        if progress is not None:
            progress.advance(size - pos)  # type: ignore[attr-defined]
    bmap = Bmap(image_size=size, ranges=tuple(ranges))
    return ScanResult(
        bmap, full.hexdigest() if full is not None else None, sum(e - s for s, e in data)
    )


class _ForcedBlocks:
    """Answers "which blocks of [b0, b0+n) are forced?" for increasing b0."""

    def __init__(self, extents: Sequence[Extent]) -> None:
        self.extents = list(extents)
        self.index = 0

    def overlap(self, b0: int, n: int) -> list[Extent]:
        while self.index < len(self.extents) and self.extents[self.index][1] <= b0:
            self.index += 1
        out = []
        k = self.index
        while k < len(self.extents) and self.extents[k][0] < b0 + n:
            s, e = self.extents[k]
            out.append((max(s, b0) - b0, min(e, b0 + n) - b0))
            k += 1
        return out


def _mapped_flags(chunk: bytes, block0: int, nblocks: int, forced: _ForcedBlocks) -> list[bool]:
    overlap = forced.overlap(block0, nblocks)
    if overlap == [(0, nblocks)]:
        return [True] * nblocks
    if chunk == _ZERO_CHUNK[: len(chunk)]:
        flags = [False] * nblocks
    else:
        flags = [
            chunk[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE]
            != _ZERO_BLOCK[: len(chunk) - i * BLOCK_SIZE]
            for i in range(nblocks)
        ]
    for s, e in overlap:
        for i in range(s, e):
            flags[i] = True
    return flags


def _feed_zeros(digest: hashlib._Hash, count: int) -> None:  # type: ignore[name-defined]
    while count > 0:
        n = min(count, CHUNK)
        digest.update(_ZERO_CHUNK[:n])
        count -= n


# --- the XML file ----------------------------------------------------------------------


def _human_size(size: float) -> str:
    """bmaptool's human_size(): '1.0 MiB' style."""
    if size <= 0:
        return "0 bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "bytes" else f"{int(size)} bytes"
        size /= 1024
    raise AssertionError("unreachable")


def bmap_xml(bmap: Bmap) -> str:
    """The .bmap text, byte for byte the layout `bmaptool create` writes, with the
    BmapFileChecksum filled in the way bmaptool computes it (sha256 of the file with the
    checksum field set to zeros)."""
    cs_len = len(hashlib.new(bmap.checksum_type).hexdigest())
    mapped_size = bmap.mapped_blocks * bmap.block_size
    percent = bmap.mapped_blocks * 100.0 / bmap.blocks_count
    lines = [
        '<?xml version="1.0" ?>',
        "<!-- This file contains the block map for an image file, which is basically",
        "     a list of useful (mapped) block numbers in the image file. In other words,",
        "     it lists only those blocks which contain data (boot sector, partition",
        "     table, file-system metadata, files, directories, extents, etc). These",
        "     blocks have to be copied to the target device. The other blocks do not",
        "     contain any useful data and do not have to be copied to the target",
        "     device.",
        "",
        "     Written by appliancekit: blocks whose zeros matter (partition tables,",
        "     verity-protected data, FAT metadata) are mapped even when they are zero. -->",
        "",
        f'<bmap version="{BMAP_VERSION}">',
        f"    <!-- Image size in bytes: {_human_size(bmap.image_size)} -->",
        f"    <ImageSize> {bmap.image_size} </ImageSize>",
        "",
        "    <!-- Size of a block in bytes -->",
        f"    <BlockSize> {bmap.block_size} </BlockSize>",
        "",
        "    <!-- Count of blocks in the image file -->",
        f"    <BlocksCount> {bmap.blocks_count} </BlocksCount>",
        "",
        f"    <!-- Count of mapped blocks: {_human_size(mapped_size)} or {percent:.1f}%   -->",
        f"    <MappedBlocksCount> {bmap.mapped_blocks} </MappedBlocksCount>",
        "",
        "    <!-- Type of checksum used in this file -->",
        f"    <ChecksumType> {bmap.checksum_type} </ChecksumType>",
        "",
        "    <!-- The checksum of this bmap file. When it is calculated, the value of",
        '         the checksum has be zero (all ASCII "0" symbols).  -->',
        "    <BmapFileChecksum> @CHECKSUM@ </BmapFileChecksum>",
        "",
        "    <!-- The block map which consists of elements which may either be a",
        "         range of blocks or a single block. The 'chksum' attribute",
        "         (if present) is the checksum of this blocks range. -->",
        "    <BlockMap>",
    ]
    for r in bmap.ranges:
        blocks = f"{r.first}-{r.last}" if r.first != r.last else f"{r.first}"
        lines.append(f'        <Range chksum="{r.sha256}"> {blocks} </Range>')
    lines += ["    </BlockMap>", "</bmap>", ""]
    text = "\n".join(lines)
    zeroed = text.replace("@CHECKSUM@", "0" * cs_len)
    checksum = hashlib.new(bmap.checksum_type, zeroed.encode()).hexdigest()
    return text.replace("@CHECKSUM@", checksum)


def write_bmap(bmap: Bmap, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(bmap_xml(bmap))
    os.replace(tmp, path)
    return path


_CHECKSUM_RE = re.compile(rb"(<BmapFileChecksum>\s*)([0-9a-fA-F]+)(\s*</BmapFileChecksum>)")


def parse_bmap(path: Path) -> Bmap:
    """Read a .bmap (format 1.4/2.x), checking its BmapFileChecksum as bmaptool does."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read block map: {exc.strerror}", file=path) from exc
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError as exc:
        raise UserError(f"not a block map (bad XML: {exc})", file=path) from exc
    version = root.attrib.get("version", "")
    if root.tag != "bmap" or not re.fullmatch(r"(2\.\d+|1\.4)", version):
        raise UserError(
            f"unsupported block map version {version!r} (need 2.x)", file=path, field="version"
        )

    def number(tag: str) -> int:
        node = root.find(tag)
        try:
            return int((node.text or "").strip())  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            raise UserError(f"missing or bad <{tag}>", file=path, field=tag) from None

    image_size, block_size = number("ImageSize"), number("BlockSize")
    blocks_count, mapped_count = number("BlocksCount"), number("MappedBlocksCount")
    cs_node = root.find("ChecksumType")
    cs_type = (cs_node.text or "").strip().lower() if cs_node is not None else ""
    try:
        cs_len = len(hashlib.new(cs_type).hexdigest())
    except ValueError:
        raise UserError(
            f"unknown checksum type {cs_type!r}", file=path, field="ChecksumType"
        ) from None
    if block_size <= 0 or image_size <= 0 or blocks_count != -(-image_size // block_size):
        raise UserError(
            f"inconsistent block map: {image_size} bytes is not {blocks_count} blocks of {block_size}",
            file=path,
        )
    match = _CHECKSUM_RE.search(raw)
    if match is None or len(match.group(2)) != cs_len:
        raise UserError(
            "block map has no valid BmapFileChecksum", file=path, field="BmapFileChecksum"
        )
    zeroed = raw[: match.start(2)] + b"0" * cs_len + raw[match.end(2) :]
    actual = hashlib.new(cs_type, zeroed).hexdigest()
    if actual != match.group(2).decode().lower():
        raise UserError(
            f"block map checksum mismatch: file says {match.group(2).decode()}, content is {actual}",
            file=path,
            field="BmapFileChecksum",
        )
    ranges = []
    block_map = root.find("BlockMap")
    for node in block_map if block_map is not None else []:
        text = (node.text or "").strip()
        first_s, _, last_s = text.partition("-")
        try:
            first = int(first_s)
            last = int(last_s) if last_s else first
        except ValueError:
            raise UserError(f"bad block range {text!r}", file=path, field="BlockMap") from None
        chksum = node.attrib.get("chksum", "")
        if len(chksum) != cs_len:
            raise UserError(f"range {text} has no {cs_type} checksum", file=path, field="BlockMap")
        if first > last or last >= blocks_count or (ranges and first <= ranges[-1].last):
            raise UserError(f"block range {text} is out of order or out of the image", file=path)
        ranges.append(BmapRange(first, last, chksum.lower()))
    bmap = Bmap(image_size, tuple(ranges), block_size, cs_type)
    if bmap.mapped_blocks != mapped_count:
        raise UserError(
            f"MappedBlocksCount says {mapped_count}, the ranges hold {bmap.mapped_blocks}",
            file=path,
        )
    return bmap


# --- checking an image against a map ----------------------------------------------------


def verify_image(image: Path, bmap: Bmap, *, progress: object | None = None) -> None:
    """Raise UserError unless `image` is exactly the image `bmap` describes: the size,
    every mapped range's checksum, and zeros everywhere else (holes are not read)."""
    image = Path(image)
    with open(image, "rb", buffering=0) as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size != bmap.image_size:
            raise UserError(
                f"image is {size} bytes, its block map says {bmap.image_size}", file=image
            )
        mapped = list(bmap.byte_ranges())
        for (start, end), r in zip(mapped, bmap.ranges, strict=True):
            digest = hashlib.new(bmap.checksum_type)
            pos = start
            while pos < end:
                chunk = os.pread(fd, min(CHUNK, end - pos), pos)
                if not chunk:
                    break
                digest.update(chunk)
                pos += len(chunk)
            if progress is not None:
                progress.advance(end - start)  # type: ignore[attr-defined]
            if digest.hexdigest() != r.sha256:
                raise UserError(
                    f"checksum mismatch in blocks {r.first}-{r.last}: the image does not match"
                    " its block map",
                    file=image,
                )
        # Outside the mapped ranges the image must be zero: check the data extents there.
        for start, end in _subtract(data_extents(fd, size), mapped):
            pos = start
            while pos < end:
                chunk = os.pread(fd, min(CHUNK, end - pos), pos)
                if not chunk:
                    break
                if chunk != _ZERO_CHUNK[: len(chunk)]:
                    raise UserError(
                        f"unmapped bytes at offset {pos} are not zero: the image does not match"
                        " its block map",
                        file=image,
                    )
                pos += len(chunk)


def _subtract(extents: Sequence[Extent], minus: Sequence[Extent]) -> list[Extent]:
    """extents minus `minus` (both sorted, non-overlapping)."""
    out: list[Extent] = []
    k = 0
    for start, end in extents:
        cur = start
        while k < len(minus) and minus[k][1] <= cur:
            k += 1
        j = k
        while j < len(minus) and minus[j][0] < end:
            if minus[j][0] > cur:
                out.append((cur, minus[j][0]))
            cur = max(cur, minus[j][1])
            j += 1
        if cur < end:
            out.append((cur, end))
    return out
