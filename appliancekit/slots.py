"""The two-slot layout every board shares (A/B updates, issue 12).

A disk holds two root slots, `ak-root-a` and `ak-root-b`. A slot is ONE partition holding the
erofs image (padded to 4 KiB) followed by its dm-verity hash image (superblock first), so a
slot is a single unit to write and MBR boards (four primary partitions: boot, slot A, slot B,
data) carry two slots without logical partitions. dm-verity reads data and hash tree from the
same device: the hash tree starts at block `data_blocks + 1`.

Each slot's boot files (kernel, initramfs, command line, device trees) live in their own
directory on the boot partition or ESP (`slot-a/`, `slot-b/`); the data partition and the
per-device settings (`settings.env` on the boot partition) are shared by both slots. A fresh
image carries its release in slot A; slot B is reserved space, written by the first update.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from appliancekit.errors import UserError

SLOTS = ("a", "b")
MIB = 1 << 20
BLOCK = 4096
# A slot leaves room for releases that grow: half again its first release, plus 16 MiB,
# at least 32 MiB. A release that does not fit is refused by the agent (reflash once).
MIN_SLOT_BYTES = 32 * MIB
SLOT_HEADROOM = 16 * MIB


def check_slot(slot: str) -> str:
    if slot not in SLOTS:
        raise UserError(f"unknown slot {slot!r} (slots are {', '.join(SLOTS)})", field="slot")
    return slot


def partition_name(slot: str) -> str:
    """The GPT name of a slot's root partition (MBR boards: by number, see PARTITION_NUMBERS)."""
    return f"ak-root-{check_slot(slot)}"


def boot_dir(slot: str) -> str:
    """The directory holding a slot's boot files on the boot partition or ESP."""
    return f"slot-{check_slot(slot)}"


def other(slot: str) -> str:
    return SLOTS[1 - SLOTS.index(check_slot(slot))]


# Partition numbers, the same on every board (MBR boards find partitions by number).
PARTITION_NUMBERS = {"boot": 1, "root_a": 2, "root_b": 3, "data": 4}


@dataclass(frozen=True)
class SlotImage:
    path: Path
    data_bytes: int  # the erofs image, padded to 4 KiB (= data_blocks * 4096)
    hash_offset: int  # where the verity image starts (= data_bytes)
    hash_bytes: int  # the verity image: superblock and hash tree

    @property
    def size(self) -> int:
        return self.hash_offset + self.hash_bytes

    @property
    def hash_start_block(self) -> int:
        """dm-verity's hash_start, in 4 KiB hash blocks: past the data and the superblock."""
        return self.hash_offset // BLOCK + 1


def combine(erofs_image: Path, verity_image: Path, output: Path) -> SlotImage:
    """The slot content: erofs image then verity image, one file."""
    data_bytes = erofs_image.stat().st_size
    if data_bytes % BLOCK:
        raise UserError(f"{erofs_image} is not padded to {BLOCK} bytes", file=erofs_image)
    with open(output, "wb") as out:
        for part in (erofs_image, verity_image):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, MIB)
    os.chmod(output, 0o644)
    return SlotImage(output, data_bytes, data_bytes, verity_image.stat().st_size)


def slot_partition_bytes(content_bytes: int, minimum_mib: int = 0) -> int:
    """The size of each root slot partition for a first release of `content_bytes`."""
    want = max(content_bytes * 3 // 2 + SLOT_HEADROOM, MIN_SLOT_BYTES, minimum_mib * MIB)
    return -(-want // MIB) * MIB
