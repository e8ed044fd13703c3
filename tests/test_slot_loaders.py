"""The files the boards' own loaders read to choose a slot, checked by parsing them.

systemd-boot (uki boards): entry file names with boot counters, the entries, the loader's
choice. U-Boot (uboot boards): the boot script image and its bootcount state. Raspberry Pi
(rpi boards): autoboot.txt with [all]/[tryboot]. The slow tests in test_slot_boot.py let the
real loaders (systemd-boot under OVMF, U-Boot on QEMU's cubieboard) act on these files.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import replace

import pytest

from appliancekit.board import find_board
from appliancekit.boot import ethaddr, sdboot, tryboot, ubootcount
from appliancekit.errors import UserError
from tests.conftest import PROJECT

CMDLINE = "console=ttyS0 quiet panic=10 ak.roothash=ab ak.salt=cd ak.datablocks=7 ak.slot=a"


# -- systemd-boot ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "entry_id", "left", "done"),
    [
        ("ak-slot-a.conf", "ak-slot-a", None, 0),
        ("ak-slot-b+1.conf", "ak-slot-b", 1, 0),
        ("ak-slot-b+0-1.conf", "ak-slot-b", 0, 1),
        ("ak-slot-b+2-13.conf", "ak-slot-b", 2, 13),
    ],
)
def test_entry_names_round_trip(name: str, entry_id: str, left: int | None, done: int) -> None:
    parsed = sdboot.parse_entry_name(name)
    assert (parsed.entry_id, parsed.tries_left, parsed.tries_done) == (entry_id, left, done)
    assert parsed.file_name == name
    assert parsed.slot == entry_id[-1]


def test_counter_follows_the_loader_and_bless_boot() -> None:
    armed = sdboot.parse_entry_name("ak-slot-b+1.conf")
    tried = armed.after_boot()
    assert tried.file_name == "ak-slot-b+0-1.conf" and tried.bad
    assert tried.after_boot() == tried  # no tries left: the loader renames nothing
    assert tried.blessed().file_name == "ak-slot-b.conf" and not tried.blessed().bad
    assert sdboot.parse_entry_name("ak-slot-a.conf").after_boot().file_name == "ak-slot-a.conf"


@pytest.mark.parametrize("name", ["ak-slot-b+x.conf", "ak-slot-b.efi", "dir/ak.conf", ".conf"])
def test_bad_entry_names_are_refused(name: str) -> None:
    with pytest.raises(UserError):
        sdboot.parse_entry_name(name)


def test_entry_carries_the_slots_command_line() -> None:
    text = sdboot.render_entry("b", 2, CMDLINE, "appliancekit homepage", "appliance.efi")
    entry = sdboot.parse_entry(text)
    assert entry == {
        "title": "appliancekit homepage (slot b)",
        "sort-key": sdboot.SORT_KEY,
        "version": "2",
        "efi": "/slot-b/appliance.efi",
        "options": CMDLINE.replace("ak.slot=a", "ak.slot=b"),
    }
    assert entry["options"].split().count("ak.slot=b") == 1
    assert sdboot.slot_cmdline("a=1", "b") == "a=1 ak.slot=b"


def test_loader_conf_has_no_default_pattern() -> None:
    """systemd-boot matches a `default` pattern even against an entry with no tries left."""
    conf = sdboot.render_loader_conf()
    keys = [line.split()[0] for line in conf.splitlines() if line and not line.startswith("#")]
    assert keys == ["timeout", "editor", "auto-entries", "auto-firmware"]
    assert "timeout 0" in conf.splitlines()


def test_loader_choice_by_counter_and_version() -> None:
    def entries(*names_versions: tuple[str, int]) -> dict[str, str]:
        return {
            name: sdboot.render_entry(name[8], version, CMDLINE, "t", "u.efi")
            for name, version in names_versions
        }

    committed = ("ak-slot-a.conf", 1)
    assert sdboot.default_entry(entries(committed)) == "ak-slot-a.conf"
    # armed: the newer generation boots first
    assert sdboot.default_entry(entries(committed, ("ak-slot-b+1.conf", 2))) == "ak-slot-b+1.conf"
    # tried once and not committed: last, the committed slot boots
    assert sdboot.default_entry(entries(committed, ("ak-slot-b+0-1.conf", 2))) == "ak-slot-a.conf"
    # committed (blessed): stays first
    assert sdboot.default_entry(entries(committed, ("ak-slot-b.conf", 2))) == "ak-slot-b.conf"
    # a downgrade is just a newer generation
    assert sdboot.default_entry(entries(("ak-slot-a+1.conf", 3), ("ak-slot-b.conf", 2))) == (
        "ak-slot-a+1.conf"
    )
    assert sdboot.default_entry({}) is None


# -- U-Boot bootcount --------------------------------------------------------------------------


def test_script_image_is_what_mkimage_writes() -> None:
    script = ubootcount.render_script()
    image = ubootcount.script_image(script, "armhf")
    header = image[:64]
    magic, hcrc, time, size, load, ep, dcrc, os_, arch, kind, comp, name = struct.unpack(
        ">IIIIIIIBBBB32s", header
    )
    assert magic == 0x27051956 and time == 0 and (load, ep) == (0, 0)
    assert hcrc == zlib.crc32(header[:4] + bytes(4) + header[8:])
    assert dcrc == zlib.crc32(image[64:]) and size == len(image) - 64
    assert (os_, arch, kind, comp) == (5, 2, 6, 0)  # linux, arm, script, none
    assert name.rstrip(b"\0") == b"appliancekit slot choice"
    # a script image: the length of each part, a zero, then the script
    assert struct.unpack(">II", image[64:72]) == (len(script.encode()), 0)
    assert ubootcount.read_script_image(image) == script
    assert ubootcount.script_image(script, "armhf") == image  # reproducible


def test_script_image_checks_are_u_boots() -> None:
    image = bytearray(ubootcount.script_image("echo hi\n", "armhf"))
    image[-1] ^= 1
    with pytest.raises(UserError, match="data CRC"):
        ubootcount.read_script_image(bytes(image))
    with pytest.raises(UserError, match="magic"):
        ubootcount.read_script_image(b"\0" * 80)
    with pytest.raises(UserError):
        ubootcount.script_image("x", "riscv64")


def test_script_counts_before_it_boots_and_imports_only_its_names() -> None:
    script = ubootcount.render_script()
    lines = [line.strip() for line in script.splitlines()]
    names = " ".join(ubootcount.STATE_NAMES)
    assert f"env import -t ${{scriptaddr}} ${{filesize}} {names}" in lines
    count = lines.index("setexpr bootcount ${bootcount} + 1")
    save = lines.index(f"fatwrite ${{ak_part}} ${{scriptaddr}} /{ubootcount.STATE} ${{filesize}}")
    first_boot = min(i for i, line in enumerate(lines) if line.startswith("run "))
    assert count < save < first_boot
    assert "itest ${bootcount} -le ${bootlimit}; then" in script  # count stays in range
    assert "/slot-${altslot}/extlinux.conf" in script and "/slot-${slot}/extlinux.conf" in script
    # ak_slot (which a slot's extlinux.conf passes as ak.slot) is set before each boot
    runs = [i for i, line in enumerate(lines) if line.startswith("run ")]
    assert all(lines[i - 1].startswith("setenv ak_slot ${") for i in runs)
    assert lines[runs[0] - 1] == "setenv ak_slot ${altslot}"  # before altbootcmd
    assert lines[runs[1] - 1] == "setenv ak_slot ${slot}"


def test_slot_append_leaves_the_slot_to_u_boot() -> None:
    assert ubootcount.slot_append(CMDLINE) == CMDLINE.replace("ak.slot=a", "ak.slot=${ak_slot}")


@pytest.mark.parametrize(
    ("state", "boots"),
    [
        (ubootcount.BootCount("a", "b"), "a"),
        (ubootcount.BootCount("b", "a", True, 0, 1), "b"),  # the one trial
        (ubootcount.BootCount("b", "a", True, 1, 1), "a"),  # not committed: altbootcmd
        (ubootcount.BootCount("b", "a", True, 2, 1), "a"),
        (ubootcount.BootCount("b", "a", False, 1, 1), "b"),  # committed
    ],
)
def test_state_round_trip_and_choice(state: ubootcount.BootCount, boots: str) -> None:
    assert ubootcount.parse_state(state.render()) == state
    assert state.chosen() == boots


def test_state_as_u_boot_exports_it() -> None:
    exported = "altslot=a\nbootcount=2\nbootlimit=1\nslot=b\nupgrade_available=1\n\0"
    assert ubootcount.parse_state(exported) == ubootcount.BootCount("b", "a", True, 2, 1)
    assert ubootcount.parse_state("") == ubootcount.BootCount("a", "b")
    assert ubootcount.parse_state("bootcmd=evil\nslot=b\n").slot == "b"
    with pytest.raises(UserError, match="bad number"):
        ubootcount.parse_state("bootcount=zz\n")


# -- Raspberry Pi tryboot ----------------------------------------------------------------------


def test_autoboot_txt() -> None:
    text = tryboot.Autoboot(committed=2, trial=3).render()
    assert tryboot.parse_sections(text) == {
        "all": {"tryboot_a_b": "1", "boot_partition": "2"},
        "tryboot": {"boot_partition": "3"},
    }
    assert tryboot.parse_autoboot(text) == tryboot.Autoboot(2, 3)
    assert tryboot.firmware_boot_partition(text, tryboot_flag=False) == 2
    assert tryboot.firmware_boot_partition(text, tryboot_flag=True) == 3
    committed = tryboot.Autoboot(committed=3).render()
    assert "[tryboot]" not in committed
    assert tryboot.firmware_boot_partition(committed, tryboot_flag=True) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tryboot]\nboot_partition=3\n", "no \\[all\\] boot_partition"),
        ("[all]\nboot_partition=two\n", "not a number"),
        ("[all]\nboot_partition\n", "line 2"),
    ],
)
def test_bad_autoboot_txt(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        tryboot.parse_autoboot(text)


def test_script_sets_a_stable_mac_only_where_u_boot_has_none() -> None:
    mac = ethaddr.fallback_ethaddr("homepage", "cubieboard")
    assert mac == ethaddr.fallback_ethaddr("homepage", "cubieboard")  # every build, every release
    assert mac != ethaddr.fallback_ethaddr("mailserver", "cubieboard")
    octets = [int(o, 16) for o in mac.split(":")]
    assert len(octets) == 6 and octets[0] & 0x03 == 0x02  # locally administered, unicast
    lines = [line.strip() for line in ubootcount.render_script(mac).splitlines()]
    guard = lines.index('if test -z "${ethaddr}"; then')  # U-Boot's own (the SID's) wins
    assert lines[guard + 2] == f"setenv ethaddr {mac}" and lines[guard + 3] == "fi"
    first_boot = min(i for i, line in enumerate(lines) if line.startswith("run "))
    assert guard < first_boot  # bootm copies ethaddr into the kernel's device tree
    assert "ethaddr" not in ubootcount.render_script()


def test_tryboot_names_what_the_agent_needs_and_refuses_without_its_module() -> None:
    board = find_board("rpi4", PROJECT.boards_dir)
    switch = tryboot.slot_switch(board)
    # what the agent's tryboot switch reads (agent/updater/loaderswitch.go)
    assert switch.paths["cmdline"] == "cmdline.txt" and switch.paths["autoboot"] == "autoboot.txt"
    assert switch.paths["reboot_argument"] == "0 tryboot"
    assert switch.paths["boot_partition_b"] == "ak-boot-b"
    assert switch.paths["boot_partition_number_b"] == "3"
    # a trial gets the PM block's watchdog, with a timeout the core keeps above its 16 s
    assert switch.watchdog == tryboot.TRIAL_WATCHDOG and switch.watchdog.module == "bcm2835_wdt"
    # the board builds the module that sets the flag, so its agent updates
    assert tryboot.TRYBOOT_MODULE in board.kernel.built_modules
    assert switch.implemented and switch.refuse_reason() is None
    # without it, Debian's kernel does not pass the tryboot flag to the firmware: refused
    bare = replace(board, kernel=replace(board.kernel, built_modules=()))
    reason = tryboot.slot_switch(bare).refuse_reason()
    assert reason is not None and "tryboot flag" in reason and "refused" in reason


def test_cubieboard_trials_get_the_a10_watchdog_from_the_agent() -> None:
    """sunxi_wdt counts at most 16 s and the kernel does not feed it for anyone, so the agent
    starts it when a trial begins; the initramfs only loads the module with that timeout."""
    from appliancekit.boot.initramfs import render_init
    from appliancekit.boot.slotswitch import render_slots_json

    board = find_board("cubieboard", PROJECT.boards_dir)
    switch = ubootcount.slot_switch(board)
    assert switch.watchdog == ubootcount.TRIAL_WATCHDOG
    assert (switch.watchdog.module, switch.watchdog.armed_by) == ("sunxi_wdt", "agent")
    assert json.loads(render_slots_json(switch, board))["watchdog"]["armed_by"] == "agent"
    init = render_init(board, "6.12.118+deb13-armmp", {"boot": 1, "root_a": 2, "root_b": 3, "data": 4})
    assert 'params="timeout=16"' in init
    assert "watchdog armed for the trial" not in init and "echo watchdog=0" in init
