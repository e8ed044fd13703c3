"""U-Boot from the SD card (Allwinner boards): the SoC's boot ROM loads U-Boot's SPL from
8 KiB into the card, the SPL loads U-Boot proper right behind it, and U-Boot's distro boot
runs `boot.scr` from the bootable FAT partition. That script chooses one of the two slots
with U-Boot's bootcount/bootlimit/altbootcmd semantics (boot/ubootcount.py: Debian's
U-Boot is built without them) and boots the slot's `slot-X/extlinux.conf` with `sysboot`;
that names the slot's kernel, device tree and initramfs and carries the command line with
the verity root hash and `ak.slot=${ak_slot}` (U-Boot fills in the slot it boots).

The slot's files are extlinux.conf rather than a script of their own: plain text the update
agent writes for either slot, and U-Boot loads a raw initramfs from it with its size. The
one script is a legacy script image written in Python (no mkimage on the build host).

Board data (`[firmware.config]`):
- `spl`: the SPL+U-Boot image in the firmware package (u-boot-sunxi-with-spl.bin),
- `spl_offset`: where the boot ROM looks for it (8192 on Allwinner SoCs),
- `device_tree`: the device tree, put on the partition by `[firmware.files]` (it moves into
  the slot's directory: it belongs to the slot's kernel),
- `kernel` (default `vmlinuz`),
- `env.NAME`: U-Boot environment variables changed from the defaults compiled into the
  image ("" deletes one), with `env_size` (the build's CONFIG_ENV_SIZE): written as
  `uboot.env` on the FAT partition, where sunxi U-Boot loads its environment from. This is
  how a board skips U-Boot's USB scan and autoboot delay (7 s of every boot under QEMU).

The boot test boots the card as the board does: QEMU's cubieboard copies the SPL from the SD
card into SRAM like the boot ROM (QEMU >= 8), then everything runs from the card.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

from appliancekit.board import Board
from appliancekit.boot import (
    MIB,
    BootInputs,
    BootLayout,
    QemuBoot,
    firmware_files,
    package_files,
    ubootcount,
)
from appliancekit.boot.ethaddr import fallback_ethaddr
from appliancekit.boot.slotswitch import SlotSwitch
from appliancekit.errors import UserError
from appliancekit.manifest import Manifest

EXTLINUX = "extlinux/extlinux.conf"  # a single-slot card's
SLOT_EXTLINUX = ubootcount.EXTLINUX  # in each slot's directory
INITRD = "initrd.img"
DEFAULT_KERNEL = "vmlinuz"
# U-Boot and its environment stay clear of the partitions; the card's first 4 MiB are an
# erase block on most cards anyway.
FIRST_PARTITION = 4 * MIB
ENV_FILE = "uboot.env"
_ENV_ENTRY = re.compile(rb"[A-Za-z0-9_.]+=[\x09\x0a\x20-\x7e]*")


def render_extlinux(
    board: Board, kernel: str, device_tree: str | None, cmdline: str, *, relative: bool = False
) -> str:
    """extlinux.conf; `relative`: paths relative to its own directory (a slot's), which
    U-Boot's sysboot resolves against the directory it read the file from."""
    top = "" if relative else "/"
    lines = [
        f"# {board.name}: written by appliancekit; read by U-Boot's sysboot",
        "default appliance",
        "prompt 0",
        "timeout 0",
        "",
        "label appliance",
        f"    kernel {top}{kernel}",
        f"    initrd {top}{INITRD}",
    ]
    if device_tree:
        lines.append(f"    fdt {top}{device_tree}")
    lines.append(f"    append {cmdline}")
    return "\n".join(lines) + "\n"


def default_environment(image: bytes) -> list[tuple[str, str]]:
    """U-Boot's compiled-in default environment: the NUL-separated name=value block that
    holds `bootcmd=` (it ends with an empty entry)."""
    anchor = image.find(b"\0bootcmd=")
    if anchor < 0:
        raise UserError("no default U-Boot environment (bootcmd=) found in the boot loader")
    start = anchor + 1
    while True:  # back to the first entry of the block
        previous = image.rfind(b"\0", 0, start - 1)
        if previous < 0 or not _ENV_ENTRY.fullmatch(image[previous + 1 : start - 1]):
            break
        start = previous + 1
    end = image.index(b"\0\0", anchor)
    pairs = (e.decode().split("=", 1) for e in image[start:end].split(b"\0"))
    return [(name, value) for name, value in pairs]


def environment_image(defaults: list[tuple[str, str]], changes: dict[str, str], size: int) -> bytes:
    """An environment file as U-Boot's env_fat reads it: CRC32 of the data, then the
    NUL-separated entries, zero-padded to `size` bytes."""
    env = dict(defaults)
    for name, value in changes.items():
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    data = b"".join(f"{name}={value}".encode() + b"\0" for name, value in env.items()) + b"\0"
    if len(data) > size - 4:
        raise UserError(f"U-Boot environment of {len(data)} bytes exceeds env_size {size}")
    data = data.ljust(size - 4, b"\0")
    return struct.pack("<I", zlib.crc32(data)) + data


def _config(board: Board, key: str) -> str:
    value = dict(board.firmware.config).get(key)
    if not value:
        raise UserError(
            f"the uboot boot path needs [firmware.config] {key}",
            file=board.source_file,
            field=f"firmware.config.{key}",
        )
    return value


def _int_config(board: Board, key: str, example: str) -> int:
    try:
        return int(_config(board, key), 0)
    except ValueError:
        raise UserError(
            f"{key} must be {example}", file=board.source_file, field=f"firmware.config.{key}"
        ) from None


def spl_image(inputs: BootInputs) -> Path:
    """The boot loader image named by [firmware.config] spl, from the firmware packages."""
    pattern = _config(inputs.board, "spl")
    matches = package_files(inputs.firmware, pattern, inputs.board, ("firmware", "config", "spl"))
    return matches[0][1]


def layout(inputs: BootInputs) -> BootLayout:
    board = inputs.board
    config = dict(board.firmware.config)
    kernel = config.get("kernel", DEFAULT_KERNEL)
    device_tree = config.get("device_tree")
    files = {path.lstrip("/"): host for path, host in firmware_files(inputs).items()}
    if device_tree and device_tree not in files:
        raise UserError(
            f"device tree {device_tree!r} is not put on the boot partition by [firmware.files]",
            file=board.source_file,
            field="firmware.config.device_tree",
        )
    # Each slot's own files in its directory; boot.scr at the top (U-Boot's distro boot runs
    # it) chooses the slot by bootcount and boots the slot's extlinux.conf (boot/ubootcount.py)
    extlinux = inputs.workdir / "extlinux.conf"
    append = ubootcount.slot_append(inputs.cmdline)
    extlinux.write_text(render_extlinux(board, kernel, device_tree, append, relative=True))
    slot_files = {kernel: inputs.kernel.image, INITRD: inputs.initramfs, SLOT_EXTLINUX: extlinux}
    if device_tree:
        slot_files[device_tree] = files.pop(device_tree)
    mac = fallback_ethaddr(inputs.appliance, board.name)  # only where U-Boot has none
    files.update(ubootcount.boot_files(board, inputs.workdir, mac))

    spl = spl_image(inputs)
    changes = {k[4:]: v for k, v in config.items() if k.startswith("env.")}
    if changes:
        size = _int_config(board, "env_size", "a size in bytes such as 0x20000")
        env = inputs.workdir / ENV_FILE
        env.write_bytes(environment_image(default_environment(spl.read_bytes()), changes, size))
        files[ENV_FILE] = env
    offset = _int_config(board, "spl_offset", "a byte offset such as 8192")
    end = offset + spl.stat().st_size
    first = max(FIRST_PARTITION, -(-end // MIB) * MIB)
    # QEMU's SD card model only takes power-of-two sizes, like the raspi ones.
    return BootLayout(
        files=files,
        slot_files=slot_files,
        first_offset=first,
        reserved_head=((offset, spl),),
        round_to_power_of_two=True,
    )


def slot_switch(board: Board) -> SlotSwitch:
    return ubootcount.slot_switch(board)


def qemu_boot(disk: Path, manifest: Manifest, board: Board, workdir: Path) -> QemuBoot:
    # No -kernel: QEMU's boot ROM stand-in loads the SPL from the card and U-Boot does the rest.
    return QemuBoot()
