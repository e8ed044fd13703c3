"""Raw disk images assembled from partition images, without mounts or loop devices.

`sfdisk --no-reread --no-tell-kernel` writes the partition table into a regular (sparse)
file, then each partition image is copied to its offset with os.pwrite, skipping all-zero
chunks so empty space stays a hole. FAT partitions are made with `mkfs.vfat -C --invariant`
and filled with mtools. Everything that would be random (disk/partition UUIDs, FAT volume
id) is derived from a seed, and all timestamps are fixed, so the same inputs give the same
bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath

from appliancekit.digest import sha256_file
from appliancekit.errors import UserError
from appliancekit.hostcmd import run
from appliancekit.seal import derive_uuid

MIB = 1 << 20
SECTOR = 512
GPT_HEADER_END = 34 * SECTOR  # protective MBR + GPT header + 128 entries of 128 bytes
MBR_HEADER_END = SECTOR
GPT_TAIL = MIB  # room for the backup GPT (33 sectors) that keeps the disk size MiB-aligned
MBR_MAX_SIZE = (1 << 32) * SECTOR
FAT_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the FAT epoch: every FAT timestamp gets it

_CHUNK = MIB
_SUBCHUNK = 64 << 10
_ZERO_CHUNK = bytes(_CHUNK)


class PartitionRole(StrEnum):
    ESP = "esp"
    BOOT = "boot"
    ROOT = "root"
    VERITY = "verity"
    DATA = "data"
    RAW = "raw"


# GPT partition type GUIDs from the UAPI Group's Discoverable Partitions Specification.
LINUX_DATA_GUID = "0fc63daf-8483-4772-8e79-3d69d8477de4"
ESP_GUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ROOT_GUIDS = {
    "arm64": "b921b045-1df0-41c3-af44-4c6f280d3fae",  # SD_GPT_ROOT_ARM64
    "armhf": "69dad710-2ce4-4e3c-b16c-21a1d49abed3",  # SD_GPT_ROOT_ARM
    "amd64": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",  # SD_GPT_ROOT_X86_64
}
ROOT_VERITY_GUIDS = {
    "arm64": "df3300ce-d69f-4c92-978c-9bfb0f38d820",  # SD_GPT_ROOT_ARM64_VERITY
    "armhf": "7386cdf2-203c-47a9-a498-f2ecce45a2d6",  # SD_GPT_ROOT_ARM_VERITY
    "amd64": "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",  # SD_GPT_ROOT_X86_64_VERITY
}
MBR_TYPES = {
    PartitionRole.ESP: "0c",  # FAT32 (LBA)
    PartitionRole.BOOT: "0c",
    PartitionRole.ROOT: "83",
    PartitionRole.VERITY: "83",
    PartitionRole.DATA: "83",
    PartitionRole.RAW: "83",
}


def gpt_type(role: PartitionRole, arch: str) -> str:
    """The GPT partition type GUID for a role on an architecture (lower case)."""
    if role is PartitionRole.ESP:
        return ESP_GUID
    if role in (PartitionRole.ROOT, PartitionRole.VERITY):
        table = ROOT_GUIDS if role is PartitionRole.ROOT else ROOT_VERITY_GUIDS
        if str(arch) not in table:
            raise UserError(
                f"no GPT {role} partition type for architecture {arch!r}"
                f" (known: {', '.join(sorted(table))})",
                field="arch",
            )
        return table[str(arch)]
    return LINUX_DATA_GUID  # BOOT, DATA, RAW


@dataclass(frozen=True)
class PartitionSpec:
    name: str  # GPT name, e.g. "ak-root" (the initramfs finds partitions by it)
    role: PartitionRole
    size_bytes: int  # rounded up to 1 MiB; 0 = just large enough for `image`
    image: Path | None  # contents; None = left empty (zeros, kept sparse)
    bootable: bool = False  # MBR active flag / GPT LegacyBIOSBootable attribute


@dataclass(frozen=True)
class PartitionEntry:
    name: str
    role: PartitionRole
    number: int
    offset: int
    size: int
    uuid: str  # GPT partition UUID, or the Linux MBR PARTUUID "DISKID-NN"
    type_id: str  # GPT type GUID (lower case) or MBR type byte as two hex digits
    sha256: str | None  # sha256 of the written content (None if empty)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "role": str(self.role),
            "number": self.number,
            "offset": self.offset,
            "size": self.size,
            "uuid": self.uuid,
            "type_id": self.type_id,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class DiskImage:
    path: Path
    size: int
    sha256: str
    table: str  # "gpt" or "mbr"
    disk_id: str  # GPT label-id, or MBR disk identifier "0x1234abcd"
    partitions: tuple[PartitionEntry, ...]

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "table": self.table,
            "disk_id": self.disk_id,
            "partitions": [p.to_json() for p in self.partitions],
        }

    def partition(self, name: str) -> PartitionEntry:
        for p in self.partitions:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True)
class Layout:
    size: int  # total disk size in bytes
    slots: tuple[tuple[int, int], ...]  # (offset, size) per partition, in order


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _table_kind(table: str) -> str:
    kind = str(table).lower()
    if kind == "dos":
        kind = "mbr"
    if kind not in ("gpt", "mbr"):
        raise UserError(f"unknown partition table {table!r} (use gpt or mbr)", field="table")
    return kind


def compute_layout(
    sizes: Sequence[int],
    table: str,
    *,
    first_offset: int = MIB,
    round_to_power_of_two: bool = False,
    min_size: int = 0,
    fill_last: bool = False,
) -> Layout:
    """Place partitions of the given sizes back to back from first_offset, 1 MiB aligned.

    GPT disks get 1 MiB at the end for the backup table. The disk grows to min_size
    (rounded up to 1 MiB) and then, if asked, to the next power of two; with `fill_last`
    the last partition takes the space that adds (an SD image's power-of-two padding goes
    to the data partition instead of being grown into on first boot).
    """
    kind = _table_kind(table)
    if first_offset <= 0 or first_offset % MIB:
        raise UserError(
            f"first partition offset {first_offset} is not a positive multiple of 1 MiB",
            field="first_offset",
        )
    slots: list[tuple[int, int]] = []
    offset = first_offset
    for size in sizes:
        if size <= 0:
            raise UserError(f"partition size {size} must be positive", field="size_bytes")
        size = round_up(size, MIB)
        slots.append((offset, size))
        offset += size
    total = offset + (GPT_TAIL if kind == "gpt" else 0)
    total = max(total, round_up(max(min_size, 0), MIB))
    if round_to_power_of_two:
        total = 1 << (total - 1).bit_length()
    if kind == "mbr" and total > MBR_MAX_SIZE:
        raise UserError(f"disk of {total} bytes is too large for an MBR table", field="table")
    if fill_last:
        last_offset, _ = slots[-1]
        end = total - (GPT_TAIL if kind == "gpt" else 0)
        slots[-1] = (last_offset, (end - last_offset) // MIB * MIB)
    return Layout(size=total, slots=tuple(slots))


def _copy_sparse(src: Path, fd: int, offset: int) -> str:
    """Write src into fd at offset, skipping all-zero chunks (holes); return its sha256."""
    digest = hashlib.sha256()
    pos = offset
    with open(src, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            if chunk != _ZERO_CHUNK[: len(chunk)]:
                for i in range(0, len(chunk), _SUBCHUNK):
                    piece = chunk[i : i + _SUBCHUNK]
                    if piece != _ZERO_CHUNK[: len(piece)]:
                        os.pwrite(fd, piece, pos + i)
            pos += len(chunk)
    return digest.hexdigest()


@contextmanager
def _atomic_output(output: Path) -> Iterator[Path]:
    """A temp file next to `output`, renamed over it when the block succeeds."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _mbr_disk_id(seed: str) -> int:
    value = int.from_bytes(hashlib.sha256((seed + "mbr-disk-id").encode()).digest()[:4], "big")
    return value or 1


def _partition_size(spec: PartitionSpec) -> int:
    if spec.image is not None and not spec.image.exists():
        raise UserError(f"image {spec.image} for partition {spec.name!r} does not exist")
    image_size = spec.image.stat().st_size if spec.image is not None else 0
    size = spec.size_bytes if spec.size_bytes > 0 else image_size
    size = round_up(size, MIB)
    if image_size > size:
        raise UserError(
            f"image {spec.image} ({image_size} bytes) does not fit in partition {spec.name!r}"
            f" ({size} bytes)",
            field="size_bytes",
        )
    return size


def _check_name(name: str) -> None:
    ok = 0 < len(name) <= 36 and name.isascii() and name.isprintable()
    if not ok or '"' in name or "," in name or "\\" in name:
        raise UserError(
            f"partition name {name!r} must be 1-36 printable ASCII characters"
            " without quotes, commas or backslashes",
            field="name",
        )


def assemble_disk(
    output: Path,
    table: str,
    arch: str,
    partitions: Sequence[PartitionSpec],
    seed: str,
    *,
    first_offset: int = MIB,
    round_to_power_of_two: bool = False,
    min_size: int = 0,
    reserved_head: Sequence[tuple[int, Path]] = (),
    fill_last: bool = False,
) -> DiskImage:
    """Write a raw disk image with a GPT or MBR table and the given partitions.

    `reserved_head` is (byte offset, file) pairs written between the partition table and
    the first partition (e.g. the Allwinner U-Boot SPL at 8192 on an MBR disk).
    """
    output = Path(output)
    kind = _table_kind(table)
    if not partitions:
        raise UserError("a disk needs at least one partition", field="partitions")
    if kind == "mbr" and len(partitions) > 4:
        raise UserError(
            f"an MBR disk holds at most 4 primary partitions, got {len(partitions)}",
            field="partitions",
        )
    names = [p.name for p in partitions]
    for name in names:
        _check_name(name)
        if names.count(name) > 1:
            raise UserError(f"partition name {name!r} is used twice", field="name")

    layout = compute_layout(
        [_partition_size(p) for p in partitions],
        kind,
        first_offset=first_offset,
        round_to_power_of_two=round_to_power_of_two,
        min_size=min_size,
        fill_last=fill_last,
    )

    header_end = GPT_HEADER_END if kind == "gpt" else MBR_HEADER_END
    head_regions: list[tuple[int, int, Path]] = []
    for offset, path in sorted(reserved_head, key=lambda item: item[0]):
        end = offset + Path(path).stat().st_size
        if offset < header_end or end > first_offset:
            raise UserError(
                f"{path} at byte {offset} must lie between the {kind} table (ends at"
                f" {header_end}) and the first partition (at {first_offset})",
                field="reserved_head",
            )
        if head_regions and offset < head_regions[-1][1]:
            raise UserError(f"{path} at byte {offset} overlaps {head_regions[-1][2]}")
        head_regions.append((offset, end, Path(path)))

    entries: list[PartitionEntry] = []
    if kind == "gpt":
        disk_id = derive_uuid(seed, "gpt-disk")
        lines = [
            "label: gpt",
            f"label-id: {disk_id}",
            "unit: sectors",
            f"first-lba: {first_offset // SECTOR}",
            f"sector-size: {SECTOR}",
            "",
        ]
        for number, (spec, (offset, size)) in enumerate(
            zip(partitions, layout.slots, strict=True), 1
        ):
            part_uuid = derive_uuid(seed, f"gpt-partition:{spec.name}")
            type_id = gpt_type(spec.role, arch)
            line = (
                f"start={offset // SECTOR}, size={size // SECTOR}, type={type_id},"
                f' uuid={part_uuid}, name="{spec.name}"'
            )
            if spec.bootable:
                line += ', attrs="LegacyBIOSBootable"'
            lines.append(line)
            entries.append(
                PartitionEntry(spec.name, spec.role, number, offset, size, part_uuid, type_id, None)
            )
    else:
        mbr_id = _mbr_disk_id(seed)
        disk_id = f"0x{mbr_id:08x}"
        lines = [
            "label: dos",
            f"label-id: {disk_id}",
            "unit: sectors",
            f"sector-size: {SECTOR}",
            "",
        ]
        for number, (spec, (offset, size)) in enumerate(
            zip(partitions, layout.slots, strict=True), 1
        ):
            type_id = MBR_TYPES[spec.role]
            line = f"start={offset // SECTOR}, size={size // SECTOR}, type={type_id}"
            if spec.bootable:
                line += ", bootable"
            lines.append(line)
            part_uuid = f"{mbr_id:08x}-{number:02x}"
            entries.append(
                PartitionEntry(spec.name, spec.role, number, offset, size, part_uuid, type_id, None)
            )
    script = "\n".join(lines) + "\n"

    with _atomic_output(output) as tmp:
        os.truncate(tmp, layout.size)
        run(["sfdisk", "--no-reread", "--no-tell-kernel", "--quiet", tmp], input=script)
        fd = os.open(tmp, os.O_WRONLY)
        try:
            for offset, _end, path in head_regions:
                _copy_sparse(path, fd, offset)
            for i, spec in enumerate(partitions):
                if spec.image is not None:
                    digest = _copy_sparse(spec.image, fd, entries[i].offset)
                    entries[i] = replace(entries[i], sha256=digest)
            os.fsync(fd)
        finally:
            os.close(fd)
        disk_sha = sha256_file(tmp)

    return DiskImage(
        path=output,
        size=layout.size,
        sha256=disk_sha,
        table=kind,
        disk_id=disk_id,
        partitions=tuple(entries),
    )


def read_partition_table(image: Path) -> dict:
    """`sfdisk --json IMAGE` parsed: the "partitiontable" object."""
    proc = run(["sfdisk", "--json", image])
    return json.loads(proc.stdout)["partitiontable"]


def _fat_env(epoch: int = FAT_EPOCH) -> dict[str, str]:
    # mtools 4.0.32 stamps new entries with SOURCE_DATE_EPOCH, converted with the local TZ.
    return {"MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(epoch), "TZ": "UTC"}


def _fat_destination(key: str) -> PurePosixPath:
    parts = [p for p in key.replace("\\", "/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise UserError(f"bad path {key!r} for a file on the FAT partition", field="files")
    return PurePosixPath(*parts)


def _expand_fat_files(
    files: Mapping[str, Path],
) -> tuple[set[PurePosixPath], dict[PurePosixPath, Path]]:
    """Destination directories to create and destination file -> source file."""
    dirs: set[PurePosixPath] = set()
    regular: dict[PurePosixPath, Path] = {}
    for key, source in files.items():
        dest = _fat_destination(key)
        source = Path(source)
        if source.is_dir():
            dirs.add(dest)
            for dirpath, dirnames, filenames in os.walk(source):
                rel = PurePosixPath(Path(dirpath).relative_to(source).as_posix())
                for d in dirnames:
                    dirs.add(dest / rel / d)
                for f in filenames:
                    regular[dest / rel / f] = Path(dirpath) / f
        elif source.is_file():
            regular[dest] = source
        else:
            raise UserError(f"{source}: no such file for FAT path {key!r}", field="files")
    for dest in list(regular) + list(dirs):
        dirs.update(p for p in dest.parents if p != PurePosixPath("."))
    seen: dict[str, PurePosixPath] = {}
    for path in sorted(dirs | set(regular)):
        folded = path.as_posix().casefold()
        if folded in seen and seen[folded] != path:
            raise UserError(
                f"FAT paths {seen[folded]} and {path} differ only in case", field="files"
            )
        seen[folded] = path
    clash = dirs & set(regular)
    if clash:
        raise UserError(f"FAT path {sorted(clash)[0]} is both a file and a directory")
    return dirs, regular


def make_fat_image(
    output: Path,
    files: Mapping[str, Path],
    size_bytes: int,
    label: str,
    seed: str,
    *,
    fat_bits: int | None = None,
    epoch: int = FAT_EPOCH,
) -> Path:
    """A FAT filesystem image holding `files` (FAT path -> host file or directory).

    Reproducible: fixed volume id (from seed and label), `mkfs.vfat --invariant`, every
    timestamp = `epoch` (SOURCE_DATE_EPOCH, TZ=UTC), directories and files created in
    sorted order. `fat_bits` forces FAT12/16/32 (default: mkfs.vfat's choice by size).
    """
    output = Path(output)
    if not 0 < len(label) <= 11:
        raise UserError(f"FAT label {label!r} must be 1-11 characters", field="label")
    dirs, regular = _expand_fat_files(files)
    volid = hashlib.sha256((seed + "fat-volid:" + label).encode()).hexdigest()[:8]
    kib = round_up(size_bytes, 1024) // 1024
    env = _fat_env(epoch)
    with _atomic_output(output) as tmp:
        tmp.unlink()  # mkfs.vfat -C refuses to overwrite
        argv: list[str | Path] = ["mkfs.vfat", "-C", "--invariant", "-i", volid, "-n", label]
        if fat_bits is not None:
            argv += ["-F", str(fat_bits)]
        run([*argv, tmp, str(kib)], env=env)
        if dirs:
            run(["mmd", "-i", tmp, *(f"::/{d}" for d in sorted(dirs))], env=env, input="")
        for dest in sorted(regular):
            run(["mcopy", "-i", tmp, regular[dest], f"::/{dest}"], env=env, input="")
    return output


def extract_fat_file(image: Path, offset: int, name: str, dest: Path) -> None:
    """Copy file `name` out of the FAT filesystem at byte `offset` of `image` to `dest`."""
    inner = "::/" + _fat_destination(name).as_posix()
    run(["mcopy", "-n", "-i", f"{image}@@{offset}", inner, dest], env=_fat_env(), input="")


def write_sha256sums(directory: Path, names: Sequence[str]) -> Path:
    """Write directory/SHA256SUMS ("HASH  NAME" lines sorted by name, GNU coreutils format)."""
    directory = Path(directory)
    lines = [f"{sha256_file(directory / name)}  {name}\n" for name in sorted(set(names))]
    target = directory / "SHA256SUMS"
    with _atomic_output(target) as tmp:
        tmp.write_text("".join(lines))
    return target
