"""Direct kernel boot: QEMU (or any loader reading a FAT partition) starts `Image`,
`initrd.img` and `cmdline.txt` from the image's boot partition.

Two slots: the loader's files at the top of the boot partition never change after flashing
(like a boot ROM's); each slot's own kernel, initramfs and command line are in `slot-a/` and
`slot-b/`. The loader cannot choose, so the initramfs does (slot switch `initramfs`): it reads
the trial state on the data partition, picks the slot, and opens that slot's root with the
verity parameters from the slot's `cmdline.txt`. A release whose kernel or initramfs differs
from the loader's would need kexec, which is not implemented: the agent refuses such a release
on this boot path.

The boot test always takes these files out of the built disk image, never from the build
directory, so what is tested is what ships.
"""

from __future__ import annotations

from pathlib import Path

from appliancekit.board import Board
from appliancekit.boot import BootInputs, BootLayout, QemuBoot, firmware_files
from appliancekit.boot.slotswitch import DIRECT_STATE, Mechanism, SlotSwitch, Watchdog
from appliancekit.disk import extract_fat_file
from appliancekit.manifest import Manifest

KERNEL = "Image"
INITRD = "initrd.img"
CMDLINE = "cmdline.txt"
# Watchdogs the initramfs can arm for a trial boot: module -> its timeout parameter.
# QEMU's i6300esb (a PCI device, so it works on `virt` too) takes heartbeat=1..2046 s.
WATCHDOGS = {"i6300esb": "heartbeat"}
TRIAL_WATCHDOG_SECONDS = 180


def layout(inputs: BootInputs) -> BootLayout:
    cmdline_file = inputs.workdir / CMDLINE
    cmdline_file.write_text(inputs.cmdline + "\n")
    files = {KERNEL: inputs.kernel.image, INITRD: inputs.initramfs, CMDLINE: cmdline_file}
    return BootLayout(files={**firmware_files(inputs), **files}, slot_files=dict(files))


def qemu_boot(disk: Path, manifest: Manifest, board: Board, workdir: Path) -> QemuBoot:
    offset = manifest.partition("ak-boot").offset
    for name in (KERNEL, INITRD, CMDLINE):
        extract_fat_file(disk, offset, name, workdir / name)
    return QemuBoot(
        kernel=workdir / KERNEL,
        initrd=workdir / INITRD,
        append=(workdir / CMDLINE).read_text().strip(),
    )


def board_watchdog(board: Board) -> Watchdog | None:
    for module, param in WATCHDOGS.items():
        if module in board.kernel.modules:
            return Watchdog(module, param, TRIAL_WATCHDOG_SECONDS)
    return None


def slot_switch(board: Board) -> SlotSwitch:
    return SlotSwitch(
        mechanism=Mechanism.INITRAMFS,
        implemented=True,
        arm="state file on the data partition: trial=SLOT, tries=1 (new file, fsync, rename)",
        commit="state file: committed=SLOT, no trial (new file, fsync, rename)",
        fallback=(
            "the initramfs takes one try off before it boots the trial slot; with none left it"
            " boots the committed slot (after a crash, a watchdog reset, panic=10 or a failed"
            " health check alike)"
        ),
        tries=1,
        state=f"data:{DIRECT_STATE}",
        watchdog=board_watchdog(board),
        paths={"loader_kernel": KERNEL, "loader_initrd": INITRD, "cmdline": CMDLINE},
    )
