"""The partition table of a disk image nixpkgs built, in the manifest's partition records.

nixpkgs decides the layout (systemd-repart's GPT, or the sd-image's MBR), so it is read back
from the image rather than known in advance. What the rest of appliancekit needs from it is
the FAT partition that `flash` writes settings.env to, where the image's
appliancekit-secrets.service reads it (appliancekit/nixos/secrets.py): the ESP of a GPT image
(role "esp"), the FAT FIRMWARE partition of an sd-image (role "boot").
"""

from __future__ import annotations

from pathlib import Path

from appliancekit.digest import sha256_file
from appliancekit.disk import ESP_GUID, PartitionRole, read_partition_table
from appliancekit.manifest import DiskRecord, PartitionRecord

MBR_FAT_TYPES = {"1", "4", "6", "b", "c", "e"}  # FAT12/16/32 (CHS and LBA)
GPT_DATA_NAMES = {"data"}  # the renderer's data partition (30-data, Label "data")


def disk_record(image: Path, path: str) -> DiskRecord:
    """The manifest's record of `image` (stored at `path` in the image directory), with one
    partition record per partition of its table."""
    table = read_partition_table(image)
    sector = int(table.get("sectorsize", 512))
    label = table["label"]
    disk_id = str(table.get("id", ""))
    parts = []
    for number, part in enumerate(table.get("partitions", []), 1):
        type_id = str(part["type"]).lower()
        name = part.get("name", "")
        if label == "gpt":
            role = (
                PartitionRole.ESP
                if type_id == ESP_GUID
                else PartitionRole.DATA
                if name in GPT_DATA_NAMES
                else PartitionRole.RAW
            )
            uuid = str(part.get("uuid", "")).lower()
        else:
            role = PartitionRole.BOOT if type_id in MBR_FAT_TYPES else PartitionRole.RAW
            uuid = f"{disk_id.removeprefix('0x')}-{number:02d}"
            type_id = type_id.zfill(2)
        parts.append(
            PartitionRecord(
                name=name,
                role=str(role),
                number=number,
                offset=int(part["start"]) * sector,
                size=int(part["size"]) * sector,
                uuid=uuid,
                type_id=type_id,
            )
        )
    return DiskRecord(
        path=path,
        size=image.stat().st_size,
        sha256=sha256_file(image),
        table="gpt" if label == "gpt" else "mbr",
        disk_id=disk_id,
        partitions=tuple(parts),
    )
