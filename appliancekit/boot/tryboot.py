"""The Raspberry Pi firmware's tryboot with autoboot.txt: how the rpi boot path chooses a slot.

A Pi 4's bootloader (in its EEPROM) reads `autoboot.txt` from the card's first FAT partition
before anything else. Its `boot_partition` names the FAT partition that holds everything
else the firmware loads: start4.elf and fixup4.dat, config.txt, the kernel, the initramfs,
the device trees and cmdline.txt. So each slot has a boot partition of its own, firmware
included, and the first partition holds only autoboot.txt (and the per-device settings):

    [all]
    tryboot_a_b=1
    boot_partition=2
    [tryboot]
    boot_partition=3

`[all]` is the committed slot. `[tryboot]` applies only when the tryboot flag is set, which
Linux asks the firmware for with `reboot "0 tryboot"` (reboot(2) with
LINUX_REBOOT_CMD_RESTART2 and the argument "0 tryboot"; the raspberrypi firmware driver
passes it on). The firmware clears the flag when it reads it, and any reset or power cut
clears it too: the trial partition gets exactly one boot, and whatever stops that boot
(crash, hang and watchdog reset, panic, failed health check) is followed by a boot of
`[all]`'s partition. `tryboot_a_b=1` makes the firmware read config.txt (not tryboot.txt)
in the tried partition, so both slots' partitions hold the same kind of files.

Linux sets the flag only through the `ak_tryboot` module this project builds (Debian's
kernel lacks Raspberry Pi OS's patch; see `KERNEL_LACKS_TRYBOOT`). The update agent arms by writing the new slot's partition, then `[tryboot]
boot_partition=NEW`, then rebooting with the flag; it commits by rewriting `[all]
boot_partition=NEW` (a new file, then a rename over autoboot.txt).

QEMU's raspi4b runs no Pi firmware (it starts the kernel itself), so the boot test's
firmware stand-in (`firmware_boot_partition`) reads this same autoboot.txt from the image,
applies `[tryboot]` only when the test sets the flag the agent's reboot would have set, and
then reads config.txt and cmdline.txt from the partition it names.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliancekit.board import Board
from appliancekit.boot.slotswitch import Mechanism, SlotSwitch, Watchdog
from appliancekit.errors import UserError

AUTOBOOT = "autoboot.txt"
CMDLINE = "cmdline.txt"  # in each slot's boot partition; the agent writes ak.slot=SLOT into it
# GPT: ak-boot (autoboot.txt, settings.env), then each slot's boot partition. The Pi 4's
# bootloader reads GPT cards; an MBR card has room for four partitions, not six.
SLOT_PARTITIONS = {"a": 2, "b": 3}
REBOOT_ARGUMENT = "0 tryboot"


def slot_partition(slot: str) -> int:
    return SLOT_PARTITIONS[slot]


def slot_partition_name(slot: str) -> str:
    return f"ak-boot-{slot}"


@dataclass(frozen=True)
class Autoboot:
    committed: int  # [all] boot_partition
    trial: int | None = None  # [tryboot] boot_partition; None: no [tryboot] section

    def render(self) -> str:
        lines = [
            "# written by appliancekit; read by the Raspberry Pi bootloader (boot/tryboot.py)",
            "[all]",
            "tryboot_a_b=1",
            f"boot_partition={self.committed}",
        ]
        if self.trial is not None:
            lines += ["[tryboot]", f"boot_partition={self.trial}"]
        return "\n".join(lines) + "\n"


def parse_sections(text: str) -> dict[str, dict[str, str]]:
    """autoboot.txt's `[section]` blocks of key=value lines ([all] before any header)."""
    sections: dict[str, dict[str, str]] = {"all": {}}
    current = "all"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip().lower()
            sections.setdefault(current, {})
        elif "=" in line:
            key, value = line.split("=", 1)
            sections[current][key.strip()] = value.strip()
        else:
            raise UserError(f"{AUTOBOOT} line {number}: not key=value: {raw!r}", field=AUTOBOOT)
    return sections


def parse_autoboot(text: str) -> Autoboot:
    sections = parse_sections(text)

    def partition(section: str) -> int | None:
        value = sections.get(section, {}).get("boot_partition")
        if value is None:
            return None
        try:
            return int(value, 0)
        except ValueError:
            raise UserError(
                f"{AUTOBOOT} [{section}] boot_partition={value!r} is not a number", field=AUTOBOOT
            ) from None

    committed = partition("all")
    if committed is None:
        raise UserError(f"{AUTOBOOT} has no [all] boot_partition", field=AUTOBOOT)
    return Autoboot(committed=committed, trial=partition("tryboot"))


def firmware_boot_partition(text: str, tryboot_flag: bool) -> int:
    """The partition the firmware boots with this autoboot.txt: [all]'s, or [tryboot]'s when
    the tryboot flag is set and the section names one."""
    autoboot = parse_autoboot(text)
    if tryboot_flag and autoboot.trial is not None:
        return autoboot.trial
    return autoboot.committed


# Debian's arm64 kernel cannot set the flag by itself. Raspberry Pi OS's kernel carries a
# patch to the raspberrypi firmware driver that turns reboot "0 tryboot" into the firmware's
# SET_REBOOT_FLAGS (tryboot) mailbox call; mainline, and so Debian, does not (the string
# "tryboot" is nowhere in its Image or modules), and it has no /dev/vcio for the agent to
# send it itself. The board builds that piece as a module (sources/kmods/ak_tryboot); a
# board without it would arm trials that boot [all]'s partition again, so it refuses.
TRYBOOT_MODULE = "ak_tryboot"
KERNEL_LACKS_TRYBOOT = (
    "the agent writes the slot's boot partition, [tryboot] and reboots with"
    f" {REBOOT_ARGUMENT!r}, but Debian's kernel does not pass the tryboot flag to the firmware"
    f" without the {TRYBOOT_MODULE} module ([kernel] built_modules), so the trial would"
    " never boot"
)


# The trial watchdog: the Pi's PM block watchdog. Its hardware counts at most ~16 s, but the
# driver declares that limit as max_hw_heartbeat_ms, so the watchdog core feeds the hardware
# itself until the longer timeout asked for runs out: a hang still resets within it.
TRIAL_WATCHDOG = Watchdog("bcm2835_wdt", "heartbeat", 180)


def slot_switch(board: Board) -> SlotSwitch:
    return SlotSwitch(
        mechanism=Mechanism.RPI_TRYBOOT,
        implemented=TRYBOOT_MODULE in board.kernel.built_modules,
        missing="" if TRYBOOT_MODULE in board.kernel.built_modules else KERNEL_LACKS_TRYBOOT,
        arm=(
            "write the release's boot files into the slot's boot partition (ak-boot-NEW; its"
            f" {CMDLINE} with ak.slot=NEW), then {AUTOBOOT} on ak-boot (new file, then rename)"
            " with [tryboot] boot_partition=NEW's number, then reboot(2) with"
            f" LINUX_REBOOT_CMD_RESTART2 and {REBOOT_ARGUMENT!r}"
        ),
        commit=f"{AUTOBOOT}: [all] boot_partition=the booted slot's number, no [tryboot]",
        fallback=(
            "the firmware applies [tryboot] only while the tryboot flag is set; it clears the"
            " flag when it reads it, and any reset or power cut clears it too"
        ),
        tries=1,
        state=f"boot:{AUTOBOOT}",
        watchdog=TRIAL_WATCHDOG if TRIAL_WATCHDOG.module in board.kernel.modules else None,
        paths={
            "autoboot": AUTOBOOT,
            "cmdline": CMDLINE,
            "reboot_argument": REBOOT_ARGUMENT,
            **{f"boot_partition_{slot}": slot_partition_name(slot) for slot in SLOT_PARTITIONS},
            **{f"boot_partition_number_{s}": str(n) for s, n in SLOT_PARTITIONS.items()},
        },
    )
