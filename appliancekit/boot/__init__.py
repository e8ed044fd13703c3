"""Boot paths: how a board's firmware finds the kernel, initramfs and command line.

Each boot path is one module with three functions:
- `layout(inputs: BootInputs) -> BootLayout`: the boot partition's files and what the disk
  needs around them (a gap for U-Boot's SPL, a power-of-two size for the Pi model, ...);
- `qemu_boot(disk, manifest, board, workdir) -> QemuBoot`: how the boot test starts the
  very files in the built image the way the board's firmware would;
- `slot_switch(board) -> SlotSwitch` (boot/slotswitch.py): how the board's loader tries the
  other slot once and falls back, baked into the image for the update agent.
A new board with an existing boot path is only a boards/NAME.toml.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from appliancekit.board import Board, BootPath
from appliancekit.boot.kmod import KernelTree
from appliancekit.disk import PartitionRole
from appliancekit.errors import UserError
from appliancekit.sources.unpack import UnpackedPackage
from appliancekit.tomlsource import KeyPath, source_error

MIB = 1 << 20
_MODULES = {
    BootPath.DIRECT: "appliancekit.boot.direct",
    BootPath.RPI: "appliancekit.boot.rpi",
    BootPath.UBOOT: "appliancekit.boot.uboot",
    BootPath.UKI: "appliancekit.boot.uki",
}


@dataclass(frozen=True)
class BootInputs:
    board: Board
    kernel: KernelTree
    kernel_package: UnpackedPackage  # device trees live in the kernel package too
    initramfs: Path
    cmdline: str
    firmware: tuple[UnpackedPackage, ...]  # the board's [firmware] packages
    workdir: Path  # scratch space for generated boot files
    seed: str  # for anything that must be reproducible
    appliance: str  # the recipe's name: for what must stay the same across its releases


@dataclass(frozen=True)
class BootLayout:
    files: dict[str, Path]  # boot partition path -> host file (shared by both slots)
    # The slot's own boot files (kernel, initramfs, command line, device trees, firmware where
    # the loader allows): name inside the slot's directory (slots.boot_dir) -> host file. The
    # build puts them in slot A's directory and reserves as much room for slot B's.
    slot_files: dict[str, Path] = field(default_factory=dict)
    # True: each slot's files fill a FAT partition of its own (ak-boot-a, ak-boot-b, right
    # after ak-boot) instead of a directory on it: the Pi's autoboot.txt picks partitions
    slot_partitions: bool = False
    role: PartitionRole = PartitionRole.BOOT  # ESP on UEFI boards
    first_offset: int = MIB
    reserved_head: tuple[tuple[int, Path], ...] = ()  # raw writes before the first partition
    round_to_power_of_two: bool = False


@dataclass(frozen=True)
class QemuBoot:
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    dtb: Path | None = None
    firmware: Path | None = None  # overrides the board's QEMU firmware (e.g. a U-Boot image)


def boot_path(board: Board) -> ModuleType:
    name = _MODULES.get(board.boot)
    if name is None:
        raise UserError(
            f"boot path {board.boot.value!r} is not implemented yet",
            file=board.source_file,
            field="board.boot",
        )
    return importlib.import_module(name)


def package_files(
    packages: Sequence[UnpackedPackage], pattern: str, board: Board, field: KeyPath
) -> list[tuple[str, Path]]:
    """(path in the package, path on the host) of every file matching the glob `pattern` in
    `packages`, sorted; a UserError naming the board file, line and `field` if none does."""
    matches = sorted(
        {
            (item.path, unpacked.host_path(item.path))
            for unpacked in packages
            for item in unpacked.files
            if item.kind == "file" and fnmatch.fnmatchcase(item.path, pattern)
        }
    )
    if not matches:
        names = ", ".join(p.package.name for p in packages) or "no packages"
        raise source_error(board.source_file, field, f"no file matches {pattern!r} in {names}")
    return matches


def firmware_files(inputs: BootInputs) -> dict[str, Path]:
    """The board's [firmware] files table resolved against the firmware and kernel packages."""
    packages: Sequence[UnpackedPackage] = (*inputs.firmware, inputs.kernel_package)
    files: dict[str, Path] = {}
    for destination, pattern in inputs.board.firmware.files:
        key = ("firmware", "files", destination)
        matches = package_files(packages, pattern, inputs.board, key)
        if destination.endswith("/"):
            for path, host in matches:
                files[destination + path.rsplit("/", 1)[-1]] = host
        elif len(matches) > 1:
            raise source_error(
                inputs.board.source_file,
                key,
                f"{pattern!r} matches {len(matches)} files; end the destination with / to take all",
            )
        else:
            files[destination] = matches[0][1]
    return files
