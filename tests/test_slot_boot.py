"""A trial boot through each board's own loader (slow): it falls back unless committed.

ec2-x86_64: systemd-boot under OVMF (with a persistent, writable UEFI variable store) counts
the trial in the entry's file name and falls back by its own entry order. cubieboard: the
real U-Boot from the SD card runs boot.scr, which counts boots in ak-bootcount.env and runs
altbootcmd past bootlimit. Between boots the host does what the update agent does on the
device: it writes slot B (the same release as slot A, so the test shows the loader's choice,
not a release's), arms the trial and, in the second round, commits it. Each boot is
stopped as soon as the initramfs says which slot's sealed root it mounted: a trial that is
stopped there never commits, like a crash before its health check.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.boot import rpi

from .conftest import PROJECT, ApplianceCache
from .slot_support import LOADERS, boot_fat, boot_to_slot, copy_root_slot, copy_slot_files

BOARDS = ["ec2-x86_64", "cubieboard"]


@pytest.mark.slow
@pytest.mark.parametrize("board_name", BOARDS)
def test_trial_boot_falls_back_unless_committed(
    board_name: str, appliances: ApplianceCache, tmp_path: Path
) -> None:
    result = appliances.build("homepage", board_name)
    manifest = result.manifest
    board = find_board(board_name, PROJECT.boards_dir)
    disk = tmp_path / "disk.img"
    subprocess.run(
        ["cp", "--sparse=always", str(result.output_dir / "disk.img"), str(disk)], check=True
    )
    fat = boot_fat(disk, manifest)
    loader = LOADERS[manifest.slot_switch](fat, manifest, board, tmp_path)
    boots: list[str] = []

    def boot(expected: str) -> str:
        number = len(boots) + 1
        slot, serial, seconds = boot_to_slot(board, disk, manifest, tmp_path / f"boot{number}")
        boots.append(
            f"boot {number}: slot {slot} in {seconds:.1f}s; loader state: {loader.state()}"
        )
        print(boots[-1])
        assert slot == expected, "\n".join(boots) + "\n" + serial[-3000:]
        return serial

    # the agent's update: slot B written, then one trial armed
    copy_root_slot(disk, manifest, "a", "b")
    copy_slot_files(fat, manifest, "a", "b", tmp_path)
    loader.arm("b")
    serial = boot("b")
    if board_name == "cubieboard":
        assert "appliancekit: slot b (upgrade_available 1, bootcount 1)" in serial
        assert loader.read().bootcount == 1
    else:
        assert "ak-slot-b+0-1.conf" in loader.entries()  # systemd-boot counted the try

    # the trial never committed: the loader returns to slot A by itself
    serial = boot("a")
    if board_name == "cubieboard":
        assert "bootcount 2 over bootlimit 1: altbootcmd, slot a" in serial
    else:
        assert loader.entries() == ["ak-slot-a.conf", "ak-slot-b+0-1.conf"]

    # armed again and committed after its trial boot: the committed slot stays
    loader.arm("b")
    boot("b")
    loader.commit("b")
    serial = boot("b")
    if board_name == "cubieboard":
        assert "appliancekit: slot b (upgrade_available 0, bootcount 0)" in serial
    else:
        assert loader.entries() == ["ak-slot-a.conf", "ak-slot-b.conf"]


@pytest.mark.slow
def test_rpi_tryboot_follows_autoboot_txt(appliances: ApplianceCache, tmp_path: Path) -> None:
    """Raspberry Pi 4: QEMU's raspi4b runs NO Pi firmware, so this test does not exercise the
    real bootloader. The boot test's firmware stand-in (boot/rpi.py) follows the same files
    the firmware reads: autoboot.txt on the first partition ([tryboot] only while the tryboot
    flag is set, which the agent's `reboot "0 tryboot"` sets and any reset clears), then
    config.txt and cmdline.txt on the boot partition it names. One boot (the trial) shows
    that partition's kernel mounting slot b's root; the choices without the flag, before and
    after the commit, are the stand-in's reading of autoboot.txt."""
    result = appliances.build("homepage", "rpi4")
    manifest = result.manifest
    board = find_board("rpi4", PROJECT.boards_dir)
    disk = tmp_path / "disk.img"
    subprocess.run(
        ["cp", "--sparse=always", str(result.output_dir / "disk.img"), str(disk)], check=True
    )
    loader = LOADERS["rpi-tryboot"](boot_fat(disk, manifest), manifest, board, tmp_path)
    print("rpi4: QEMU raspi4b runs no Pi firmware; the firmware stand-in follows autoboot.txt")

    copy_root_slot(disk, manifest, "a", "b")
    loader.write_slot("a", "b")
    loader.arm("b")
    chosen = {flag: rpi.boot_partition_name(disk, manifest, flag) for flag in (False, True)}
    assert chosen == {False: "ak-boot-a", True: "ak-boot-b"}, loader.state()

    slot, serial, seconds = boot_to_slot(
        board, disk, manifest, tmp_path / "trial", tryboot_flag=True
    )
    print(f"tryboot flag set: stand-in booted ak-boot-b, slot {slot} in {seconds:.1f}s")
    assert slot == "b", serial[-3000:]
    # the flag is gone after any reset: the next boot is [all]'s partition, slot a
    assert rpi.boot_partition_name(disk, manifest, tryboot_flag=False) == "ak-boot-a"

    loader.commit("b")
    assert rpi.boot_partition_name(disk, manifest, tryboot_flag=False) == "ak-boot-b"
    assert rpi.boot_partition_name(disk, manifest, tryboot_flag=True) == "ak-boot-b"
    print(f"committed: autoboot.txt is now {loader.state()!r}")
