"""Raspberry Pi firmware boot: the bootloader reads `autoboot.txt` from the card's first FAT
partition, which names the slot's boot partition (boot/tryboot.py: the firmware's tryboot
chooses the slot); there the GPU firmware (start4.elf + fixup4.dat on a Pi 4) reads
`config.txt`, loads the kernel, the device tree and the initramfs it names and starts the
kernel with `cmdline.txt`.

The board's `[firmware].files` put the firmware and device trees on the partition; its
`[firmware].config` entries become `config.txt` lines (``arm_64bit=1``, ``device_tree=...``).
This module adds the kernel (named by the `kernel` entry, ``kernel8.img`` by default), the
initramfs (``initramfs initrd.img followkernel``) and `cmdline.txt`.

QEMU's raspi models run no Pi firmware, so the boot test does its job: it reads
`autoboot.txt` (applying `[tryboot]` only when told the tryboot flag is set, as the agent's
`reboot "0 tryboot"` would have), then `config.txt` and `cmdline.txt` from the boot partition
that names, and hands QEMU the very kernel, device tree and initramfs files they name. Like the real firmware, which edits the device
tree and adds its own words to the command line, the stand-in applies the board's
`[qemu] dtb_delete` and `append` entries: only for what the QEMU model lacks (raspi4b answers
no firmware GPIO requests and maps nothing at the HDMI block), and only on the copies handed
to QEMU; the image keeps Debian's files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from appliancekit.board import Board
from appliancekit.boot import BootInputs, BootLayout, QemuBoot, firmware_files, tryboot
from appliancekit.boot.slotswitch import SlotSwitch
from appliancekit.disk import PartitionRole, extract_fat_file
from appliancekit.errors import ToolError, UserError
from appliancekit.hostcmd import run
from appliancekit.manifest import Manifest

CONFIG = "config.txt"
CMDLINE = tryboot.CMDLINE
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
    # A slot is a boot partition of its own, holding everything the firmware reads after
    # autoboot.txt: start4.elf and fixup4.dat included (boot/tryboot.py). The first partition
    # holds autoboot.txt, naming slot a's.
    autoboot = inputs.workdir / tryboot.AUTOBOOT
    autoboot.write_text(tryboot.Autoboot(committed=tryboot.slot_partition("a")).render())
    # QEMU's raspi models want an SD card whose size is a power of two.
    # On GPT the Pi's bootloader takes FAT partitions typed as EFI system partitions.
    return BootLayout(
        files={tryboot.AUTOBOOT: autoboot},
        slot_files=files,
        slot_partitions=True,
        role=PartitionRole.ESP,
        round_to_power_of_two=True,
    )


def slot_switch(board: Board) -> SlotSwitch:
    return tryboot.slot_switch(board)


def qemu_boot(
    disk: Path, manifest: Manifest, board: Board, workdir: Path, *, tryboot_flag: bool = False
) -> QemuBoot:
    """The firmware's part: autoboot.txt names the boot partition (its [tryboot] section
    only with `tryboot_flag`, which the agent's reboot would have set), then config.txt and
    cmdline.txt in that partition name the files handed to QEMU."""
    offset = manifest.partition(boot_partition_name(disk, manifest, tryboot_flag)).offset
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


def boot_partition_name(disk: Path, manifest: Manifest, tryboot_flag: bool) -> str:
    """The partition the firmware boots from: the one autoboot.txt on the first partition
    names, or that first partition itself on a card without autoboot.txt."""
    first = manifest.partition("ak-boot")
    text = read_fat_text(disk, first.offset, tryboot.AUTOBOOT)
    if text is None:
        return first.name
    number = tryboot.firmware_boot_partition(text, tryboot_flag)
    for part in manifest.disk.partitions:
        if part.number == number:
            return part.name
    raise UserError(f"{tryboot.AUTOBOOT} names boot partition {number}, which the card lacks")


def read_fat_text(disk: Path, offset: int, name: str) -> str | None:
    with tempfile.TemporaryDirectory(prefix="ak-fat.") as tmp:
        try:
            extract_fat_file(disk, offset, name, Path(tmp) / "file")
        except ToolError:
            return None
        return (Path(tmp) / "file").read_text()


def delete_dtb_properties(dtb: Path, entries: tuple[str, ...]) -> None:
    """Delete "/node/path:property" entries from a flattened device tree (fdtput -d)."""
    for entry in entries:
        node, prop = entry.rsplit(":", 1)
        run(["fdtput", "-d", dtb, node, prop])  # host package device-tree-compiler
