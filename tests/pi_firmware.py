"""The Raspberry Pi firmware's part of a reboot, for QEMU's raspi4b, which runs no firmware.

On a Pi 4, `reboot "0 tryboot"` makes Linux send the firmware a SET_REBOOT_FLAGS mailbox
call with the tryboot bit (Debian's kernel through appliancekit's ak_tryboot module); at the
reset the firmware reads the flag, clears it, and boots autoboot.txt's [tryboot] partition
once instead of [all]'s. QEMU does not restart a raspi4b guest the way the firmware would, so
each boot is one QEMU process with -no-reboot, and this stand-in starts the next: it reads
which property tags the guest sent to QEMU's emulated VideoCore mailbox (QEMU logs tags it
does not implement under `-d unimp`, and SET_REBOOT_FLAGS is one), sets the flag only when
the boot that ended sent SET_REBOOT_FLAGS, and hands the firmware's choice of files to QEMU
(boot/rpi.py `qemu_boot`, which follows autoboot.txt, config.txt and cmdline.txt).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from appliancekit.board import Board
from appliancekit.boot import rpi
from appliancekit.manifest import Manifest
from appliancekit.qemu import Drive, PortForward, QemuConfig

SET_REBOOT_FLAGS = 0x00038064  # the tag ak_tryboot sends, as Raspberry Pi OS's kernel does
MAILBOX_LOG = "mailbox.log"
UNHANDLED_TAG = re.compile(r"bcm2835_property: unhandled tag (0x[0-9a-fA-F]+)")


def mailbox_tags(run_dir: Path) -> set[int]:
    """Every property tag the boot in `run_dir` sent that QEMU's mailbox does not implement."""
    path = run_dir / MAILBOX_LOG
    text = path.read_text(errors="replace") if path.exists() else ""
    return {int(tag, 16) for tag in UNHANDLED_TAG.findall(text)}


def tryboot_requested(run_dir: Path) -> bool:
    return SET_REBOOT_FLAGS in mailbox_tags(run_dir)


def boot_config(
    board: Board,
    disk: Path,
    manifest: Manifest,
    workdir: Path,
    run_dir: Path,
    forwards: tuple[PortForward, ...],
    *,
    tryboot_flag: bool,
) -> QemuConfig:
    """One boot as the firmware would start it: its files, and the mailbox log to read after."""
    boot = rpi.qemu_boot(disk, manifest, board, workdir, tryboot_flag=tryboot_flag)
    config = QemuConfig.from_spec(
        board.qemu,
        kernel=boot.kernel,
        initrd=boot.initrd,
        append=boot.append,
        dtb=boot.dtb,
        drives=(Drive(disk, device=board.qemu.disk_device, snapshot=False),),
        forwards=forwards,
    )
    log = ("-d", "unimp", "-D", str(run_dir / MAILBOX_LOG))
    return replace(config, extra_args=(*config.extra_args, *log), guest_reboots=False)
