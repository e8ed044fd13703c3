"""Direct kernel boot: QEMU (or a bootloader reading a FAT partition) loads `Image`,
`initrd.img` and `cmdline.txt` from the image's boot partition.

The boot test always takes these files out of the built disk image, never from the build
directory, so what is tested is what ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliancekit.disk import extract_fat_file

KERNEL = "Image"
INITRD = "initrd.img"
CMDLINE = "cmdline.txt"


@dataclass(frozen=True)
class QemuBoot:
    kernel: Path | None
    initrd: Path | None
    append: str | None
    dtb: Path | None = None


def boot_files(kernel_image: Path, initramfs: Path, cmdline: str, workdir: Path) -> dict[str, Path]:
    cmdline_file = workdir / CMDLINE
    cmdline_file.write_text(cmdline + "\n")
    return {KERNEL: kernel_image, INITRD: initramfs, CMDLINE: cmdline_file}


def qemu_boot(disk: Path, boot_offset: int, workdir: Path) -> QemuBoot:
    for name in (KERNEL, INITRD, CMDLINE):
        extract_fat_file(disk, boot_offset, name, workdir / name)
    return QemuBoot(
        kernel=workdir / KERNEL,
        initrd=workdir / INITRD,
        append=(workdir / CMDLINE).read_text().strip(),
    )
