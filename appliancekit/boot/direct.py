"""Direct kernel boot: QEMU (or any loader reading a FAT partition) starts `Image`,
`initrd.img` and `cmdline.txt` from the image's boot partition.

The boot test always takes these files out of the built disk image, never from the build
directory, so what is tested is what ships.
"""

from __future__ import annotations

from pathlib import Path

from appliancekit.board import Board
from appliancekit.boot import BootInputs, BootLayout, QemuBoot, firmware_files
from appliancekit.disk import extract_fat_file
from appliancekit.manifest import Manifest

KERNEL = "Image"
INITRD = "initrd.img"
CMDLINE = "cmdline.txt"


def layout(inputs: BootInputs) -> BootLayout:
    cmdline_file = inputs.workdir / CMDLINE
    cmdline_file.write_text(inputs.cmdline + "\n")
    files = {KERNEL: inputs.kernel.image, INITRD: inputs.initramfs, CMDLINE: cmdline_file}
    return BootLayout(files={**firmware_files(inputs), **files})


def qemu_boot(disk: Path, manifest: Manifest, board: Board, workdir: Path) -> QemuBoot:
    offset = manifest.partition("ak-boot").offset
    for name in (KERNEL, INITRD, CMDLINE):
        extract_fat_file(disk, offset, name, workdir / name)
    return QemuBoot(
        kernel=workdir / KERNEL,
        initrd=workdir / INITRD,
        append=(workdir / CMDLINE).read_text().strip(),
    )
