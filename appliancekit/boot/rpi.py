"""Raspberry Pi firmware boot: the GPU firmware (start4.elf + fixup4.dat on a Pi 4) reads
`config.txt` from the FAT partition, loads the kernel, the device tree and the initramfs it
names and starts the kernel with `cmdline.txt`.

The board's `[firmware].files` put the firmware and device trees on the partition; its
`[firmware].config` entries become `config.txt` lines (``arm_64bit=1``, ``device_tree=...``).
This module adds the kernel (named by the `kernel` entry, ``kernel8.img`` by default), the
initramfs (``initramfs initrd.img followkernel``) and `cmdline.txt`.

QEMU's raspi models have no GPU firmware, so the boot test does its job: it reads
`config.txt` and `cmdline.txt` from the image's FAT partition and hands QEMU the very kernel,
device tree and initramfs files they name. Like the real firmware, which edits the device
tree and adds its own words to the command line, the stand-in applies the board's
`[qemu] dtb_delete` and `append` entries: only for what the QEMU model lacks (raspi4b answers
no firmware GPIO requests and maps nothing at the HDMI block), and only on the copies handed
to QEMU; the image keeps Debian's files.
"""

from __future__ import annotations

from pathlib import Path

from appliancekit.board import Board
from appliancekit.boot import BootInputs, BootLayout, QemuBoot, firmware_files
from appliancekit.boot.slotswitch import Mechanism, SlotSwitch, not_implemented
from appliancekit.disk import extract_fat_file
from appliancekit.errors import UserError
from appliancekit.hostcmd import run
from appliancekit.manifest import Manifest

CONFIG = "config.txt"
CMDLINE = "cmdline.txt"
INITRD = "initrd.img"
DEFAULT_KERNEL = "kernel8.img"


def config_entries(board: Board) -> dict[str, str]:
    return dict(board.firmware.config)


def render_config(board: Board) -> str:
    entries = config_entries(board)
    entries.setdefault("kernel", DEFAULT_KERNEL)
    lines = [f"# {board.name}: written by appliancekit; read by the Raspberry Pi firmware"]
    lines += [f"{key}={value}" for key, value in entries.items()]
    lines.append(f"initramfs {INITRD} followkernel")
    return "\n".join(lines) + "\n"


def parse_config(text: str) -> dict[str, str]:
    """The entries the firmware acts on: key=value lines and the `initramfs FILE` line."""
    entries: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("["):
            continue
        if line.startswith("initramfs "):
            entries["initramfs"] = line.split()[1]
        elif "=" in line:
            key, value = line.split("=", 1)
            entries[key.strip()] = value.strip()
    return entries


def layout(inputs: BootInputs) -> BootLayout:
    board = inputs.board
    config = render_config(board)
    kernel_name = parse_config(config)["kernel"]
    (inputs.workdir / CONFIG).write_text(config)
    (inputs.workdir / CMDLINE).write_text(inputs.cmdline + "\n")
    files = {path.lstrip("/"): host for path, host in firmware_files(inputs).items()}
    device_tree = parse_config(config).get("device_tree")
    if device_tree and device_tree not in files:
        raise UserError(
            f"config.txt names device tree {device_tree!r} but [firmware].files puts no such file"
            " on the boot partition",
            file=board.source_file,
            field="firmware.config.device_tree",
        )
    files.update(
        {
            CONFIG: inputs.workdir / CONFIG,
            CMDLINE: inputs.workdir / CMDLINE,
            kernel_name: inputs.kernel.image,
            INITRD: inputs.initramfs,
        }
    )
    # The slot's own copies: what `os_prefix=slot-X/` makes the firmware load (kernel,
    # initramfs, cmdline.txt and the device trees); start4.elf and fixup4.dat stay shared.
    slot_files = {
        name: host
        for name, host in files.items()
        if name in (kernel_name, INITRD, CMDLINE) or name.endswith(".dtb")
    }
    # QEMU's raspi models want an SD card whose size is a power of two.
    return BootLayout(files=files, slot_files=slot_files, round_to_power_of_two=True)


def slot_switch(board: Board) -> SlotSwitch:
    return not_implemented(
        Mechanism.RPI_TRYBOOT,
        arm="tryboot.txt names the trial slot's os_prefix; reboot with the tryboot flag",
        commit="config.txt names the committed slot's os_prefix",
        fallback="the firmware clears the tryboot flag at any reset and boots config.txt",
    )


def qemu_boot(disk: Path, manifest: Manifest, board: Board, workdir: Path) -> QemuBoot:
    offset = manifest.partition("ak-boot").offset
    extract_fat_file(disk, offset, CONFIG, workdir / CONFIG)
    extract_fat_file(disk, offset, CMDLINE, workdir / CMDLINE)
    config = parse_config((workdir / CONFIG).read_text())
    names = {
        "kernel": config.get("kernel", DEFAULT_KERNEL),
        "initrd": config.get("initramfs"),
        "dtb": config.get("device_tree"),
    }
    paths: dict[str, Path | None] = {}
    for role, name in names.items():
        if name is None:
            paths[role] = None
            continue
        extract_fat_file(disk, offset, name, workdir / f"{role}-{Path(name).name}")
        paths[role] = workdir / f"{role}-{Path(name).name}"
    if paths["dtb"] is not None:
        delete_dtb_properties(paths["dtb"], board.qemu.dtb_delete)
    append = " ".join([(workdir / CMDLINE).read_text().strip(), *board.qemu.append])
    return QemuBoot(kernel=paths["kernel"], initrd=paths["initrd"], dtb=paths["dtb"], append=append)


def delete_dtb_properties(dtb: Path, entries: tuple[str, ...]) -> None:
    """Delete "/node/path:property" entries from a flattened device tree (fdtput -d)."""
    for entry in entries:
        node, prop = entry.rsplit(":", 1)
        run(["fdtput", "-d", dtb, node, prop])  # host package device-tree-compiler
