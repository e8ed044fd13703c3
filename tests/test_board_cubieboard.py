"""Cubieboard (Allwinner A10, armhf): U-Boot's SPL at 8 KiB on an MBR SD image, U-Boot's
distro boot reading uboot.env and boot.scr from the FAT partition; the script picks a slot
(bootcount, test_slot_boot.py) and boots its slot-X/extlinux.conf.

Fast tests: the board file, extlinux.conf, the U-Boot environment file (default environment
found in the boot loader image, changes, CRC). Slow tests build the homepage appliance
(layout: SPL at 8 KiB, first partition at 4 MiB, boot files) and boot it on QEMU's
cubieboard through the real SPL and U-Boot from the SD image, with the network probes over
the emulated EMAC; a bigger card grows its data partition and takes settings.env.

The board builds from trixie (boards/cubieboard.toml documents the bookworm fallback).
"""

from __future__ import annotations

import os
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from appliancekit.board import Architecture, BootPath, PartitionTable, find_board
from appliancekit.boot import ethaddr, uboot, ubootcount
from appliancekit.build import BuildPlan, BuildResult, build
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.disk import extract_fat_file
from appliancekit.errors import UserError
from appliancekit.output import Reporter
from appliancekit.recipe import find_recipe, resolve_settings

from .conftest import PROJECT, ApplianceCache, boot_twice_on_a_bigger_disk, sd_card_partitions

MIB = 1 << 20
BOARD = find_board("cubieboard", PROJECT.boards_dir)
BOOT_FILES = {
    "boot.scr",
    "ak-bootcount.env",
    "uboot.env",
    "slot-a/extlinux.conf",
    "slot-a/vmlinuz",
    "slot-a/initrd.img",
    "slot-a/sun4i-a10-cubieboard.dtb",
}
ENV_SIZE = int(dict(BOARD.firmware.config)["env_size"], 0)


def test_board_file() -> None:
    assert BOARD.arch == Architecture.ARMHF and BOARD.boot == BootPath.UBOOT
    assert BOARD.suite == "trixie"
    assert BOARD.disk.table == PartitionTable.MBR
    assert BOARD.firmware.packages == ("u-boot-sunxi",)
    config = dict(BOARD.firmware.config)
    assert config["spl"] == "/usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin"
    assert int(config["spl_offset"]) == 8192
    assert BOARD.qemu.machine == "cubieboard" and BOARD.qemu.disk_device == "sd"
    assert BOARD.qemu.net_device == "nic:allwinner-emac"
    assert {"sunxi_mmc", "sun4i_emac", "dm_verity", "erofs"} <= set(BOARD.kernel.modules)


def test_extlinux_conf() -> None:
    text = uboot.render_extlinux(BOARD, "vmlinuz", "sun4i-a10-cubieboard.dtb", "console=ttyS0 a=b")
    lines = [line.strip() for line in text.splitlines()]
    assert "default appliance" in lines and "label appliance" in lines
    assert "kernel /vmlinuz" in lines and "initrd /initrd.img" in lines
    assert "fdt /sun4i-a10-cubieboard.dtb" in lines
    assert "append console=ttyS0 a=b" in lines
    # a slot's: relative to its directory, which U-Boot's sysboot resolves them against
    text = uboot.render_extlinux(BOARD, "vmlinuz", "x.dtb", "a=b", relative=True)
    lines = [line.strip() for line in text.splitlines()]
    assert "kernel vmlinuz" in lines and "initrd initrd.img" in lines and "fdt x.dtb" in lines


def test_slot_switch_is_bootcount() -> None:
    switch = uboot.slot_switch(BOARD)
    assert switch.mechanism == "uboot-bootcount" and switch.implemented and switch.tries == 1
    assert switch.paths == {
        "script": "boot.scr",
        "state": "ak-bootcount.env",
        "extlinux": "extlinux.conf",
    }


def fake_boot_loader() -> bytes:
    env = [
        b"bootcmd=run distro_bootcmd",
        b"bootdelay=2",
        b"preboot=usb start",
        b"stdin=serial,usbkbd",
    ]
    return b"\x7fcode\x00\xffstrings\x00not an entry\x00" + b"\x00".join(env) + b"\x00\x00tail\x00"


def test_default_environment_is_found_in_the_boot_loader() -> None:
    assert uboot.default_environment(fake_boot_loader()) == [
        ("bootcmd", "run distro_bootcmd"),
        ("bootdelay", "2"),
        ("preboot", "usb start"),
        ("stdin", "serial,usbkbd"),
    ]


def test_environment_file() -> None:
    defaults = uboot.default_environment(fake_boot_loader())
    image = uboot.environment_image(
        defaults, {"bootdelay": "0", "preboot": "", "boot_targets": "mmc0"}, 0x10000
    )
    assert len(image) == 0x10000
    (crc,) = struct.unpack("<I", image[:4])
    assert crc == zlib.crc32(image[4:])
    entries = image[4:].split(b"\x00\x00", 1)[0].split(b"\x00")
    assert entries == [
        b"bootcmd=run distro_bootcmd",
        b"bootdelay=0",
        b"stdin=serial,usbkbd",
        b"boot_targets=mmc0",
    ]


# -- real images ------------------------------------------------------------------------------


@pytest.fixture()
def built(appliances: ApplianceCache) -> BuildResult:
    """homepage for cubieboard, built once per session."""
    return appliances.build("homepage", "cubieboard")


@pytest.mark.slow
def test_layout(built: BuildResult, tmp_path: Path) -> None:
    manifest = built.manifest
    disk = built.output_dir / "disk.img"
    sd_card_partitions(disk, 4 * MIB)  # U-Boot's SPL and U-Boot proper before it

    # U-Boot's SPL at 8 KiB: the Allwinner boot header ("eGON.BT0"), U-Boot proper behind it
    with open(disk, "rb") as f:
        f.seek(8192)
        head = f.read(4 * MIB - 8192)
    assert head[4:12] == b"eGON.BT0"
    assert b"U-Boot" in head and b"bootcmd=" in head
    spl = next(p for p in manifest.packages if p["name"] == "u-boot-sunxi")
    assert spl["role"] == "firmware"

    offset = manifest.partition("ak-boot").offset
    listing = subprocess.run(
        ["mdir", "-b", "-/", "-i", f"{disk}@@{offset}", "::/"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    ).stdout
    files = {line.strip().removeprefix("::/") for line in listing.splitlines()}
    assert {f for f in files if not f.endswith("/")} == BOOT_FILES

    extract_fat_file(disk, offset, "slot-a/extlinux.conf", tmp_path / "extlinux.conf")
    conf = (tmp_path / "extlinux.conf").read_text()
    append = manifest.kernel_cmdline.replace("ak.slot=a", "ak.slot=${ak_slot}")
    assert f"append {append}\n" in conf  # U-Boot fills in the slot it boots
    assert f"ak.roothash={manifest.verity.root_hash}" in conf
    assert "    kernel vmlinuz\n" in conf  # relative to slot-a/
    extract_fat_file(disk, offset, "boot.scr", tmp_path / "boot.scr")
    script = ubootcount.read_script_image((tmp_path / "boot.scr").read_bytes())
    mac = ethaddr.fallback_ethaddr(manifest.recipe, BOARD.name)
    assert script == ubootcount.render_script(mac)
    extract_fat_file(disk, offset, "ak-bootcount.env", tmp_path / "state")
    state = ubootcount.parse_state((tmp_path / "state").read_text())
    assert state == ubootcount.BootCount("a", "b") and state.chosen() == "a"
    extract_fat_file(disk, offset, "uboot.env", tmp_path / "uboot.env")
    env = (tmp_path / "uboot.env").read_bytes()
    assert len(env) == ENV_SIZE and struct.unpack("<I", env[:4])[0] == zlib.crc32(env[4:])
    assert b"\x00bootdelay=0\x00" in env and b"\x00preboot=" not in env
    extract_fat_file(disk, offset, "slot-a/vmlinuz", tmp_path / "vmlinuz")
    assert (tmp_path / "vmlinuz").stat().st_size == manifest.sizes.kernel_bytes
    assert {"sunxi_mmc", "sun4i_emac", "dm_verity"} <= set(manifest.initramfs_modules)


@pytest.mark.slow
def test_boots_through_spl_and_u_boot_card_grows_keeps_data_and_reads_settings(
    built: BuildResult, tmp_path: Path
) -> None:
    """One boot test, two boots on a bigger card: the real boot path (the SPL, U-Boot, our
    environment and boot script, slot a's extlinux.conf), the data partition grown and kept,
    and the per-device hostname read from the boot partition."""
    report, serial = boot_twice_on_a_bigger_disk(
        built.output_dir, "cubieboard", tmp_path, settings={"hostname": "cubie-attic"}
    )
    assert {p.name for p in report.probes if p.ok} >= {"homepage", "per-device hostname"}
    # the boot ROM stand-in ran the SPL from the card; U-Boot took our environment and
    # boot script from the FAT partition, and the script slot a's extlinux.conf
    assert "U-Boot SPL" in serial
    assert "Loading Environment from FAT... OK" in serial
    assert "Found U-Boot script /boot.scr" in serial
    assert "appliancekit: slot a (upgrade_available 0, bootcount 0)" in serial
    assert "Retrieving file: /slot-a/extlinux.conf" in serial
    assert "starting USB" not in serial
    assert "appliancekit: eth0: " in serial  # DHCP over the emulated EMAC
    assert "per-device settings read from the boot partition" in serial
    hostname = [p for p in report.probes if p.name.startswith("per-device hostname")]
    assert len(hostname) == 2 and all(p.ok for p in hostname)


@pytest.mark.slow
def test_missing_boot_loader_names_the_board_field(built: BuildResult, tmp_path: Path) -> None:
    """A board naming a U-Boot image its firmware package does not have: one error with the
    board file and field, and no image directory left behind."""
    board_file = tmp_path / "boards" / "cubieboard.toml"
    board_file.parent.mkdir()
    board_file.write_text(
        BOARD.source_file.read_text().replace("/Cubieboard/u-boot", "/NoSuchBoard/u-boot")
    )
    images = tmp_path / "images"
    recipe = find_recipe("homepage", PROJECT.recipes_dir)
    plan = BuildPlan(
        recipe, find_board("cubieboard", board_file.parent), resolve_settings(recipe, {}), images
    )
    with pytest.raises(UserError, match=r"no file matches '/usr/lib/u-boot/NoSuchBoard/") as exc:
        build(plan, Cache(default_cache_dir()), Reporter())
    assert exc.value.file == str(board_file) and exc.value.field == "firmware.config.spl"
    spl_line = next(
        n for n, text in enumerate(board_file.read_text().splitlines(), 1) if "NoSuchBoard" in text
    )
    assert exc.value.line == spl_line
    assert not images.exists()  # no image, no images/.tmp, not even the images/ it made
