"""How a board switches between its two slots: the typed "slot switch" of each boot path.

A slot switch says how a trial of the inactive slot is armed, how a boot commits, and how the
loader falls back to the old slot when the trial does not commit (crash, hang, panic, failed
health check). It is baked into every image as data, `/etc/appliancekit/slots.json`, which the
update agent reads: the agent holds one implementation per mechanism and refuses to update
when the image says its mechanism is not implemented (never pretends).

Each boot module (`boot/direct.py`, ...) has `slot_switch(board) -> SlotSwitch`.

Mechanisms:
- `initramfs` (direct): the loader always starts the same kernel and initramfs; the initramfs
  chooses the slot from a state file on the data partition (Bottlerocket-like: committed
  slot, trial slot, tries left), decrementing the tries BEFORE it boots the trial slot, so a
  crash, a hang (watchdog reset) or a panic (`panic=10`) lands on the committed slot.
- `systemd-boot`, `uboot-bootcount`, `rpi-tryboot`: the loader's own mechanism (systemd-boot
  boot counting, U-Boot bootcount/altbootcmd, the Pi firmware's tryboot); not implemented in
  this module yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from appliancekit import slots
from appliancekit.board import Board

SLOTS_JSON = "/etc/appliancekit/slots.json"
FORMAT = 1
# Where the `initramfs` mechanism keeps its state, relative to the data partition's root.
DIRECT_STATE = ".appliancekit/slots/state"


class Mechanism(StrEnum):
    INITRAMFS = "initramfs"
    SYSTEMD_BOOT = "systemd-boot"
    UBOOT_BOOTCOUNT = "uboot-bootcount"
    RPI_TRYBOOT = "rpi-tryboot"


@dataclass(frozen=True)
class Watchdog:
    """A hardware watchdog armed for a trial boot: the module, the module parameter that
    sets its timeout, the timeout, and the device the agent feeds until the boot commits."""

    module: str
    timeout_param: str
    timeout_seconds: int
    device: str = "/dev/watchdog"
    # who starts it in a trial: "initramfs" (it keeps running through the hand-over: its
    # timeout, or the watchdog core's feeding, outlasts the gap until the agent), or "agent"
    # (a hardware limit shorter than that gap: the agent starts it when it starts)
    armed_by: str = "initramfs"


@dataclass(frozen=True)
class SlotSwitch:
    mechanism: Mechanism
    implemented: bool
    arm: str  # how a trial of the inactive slot is armed
    commit: str  # how a trial boot becomes the committed slot
    fallback: str  # how the loader returns to the old slot when a trial does not commit
    tries: int = 1  # boots a new release gets before the loader falls back
    state: str = ""  # where the mechanism's state lives (partition and path)
    watchdog: Watchdog | None = None
    # mechanism-specific named paths or values (loader files, environment variables, ...)
    paths: dict[str, str] = field(default_factory=dict)
    missing: str = ""  # where not implemented: what is missing, for the refusal

    def refuse_reason(self) -> str | None:
        """Why the agent must refuse to update this board (None: it can update)."""
        if self.implemented:
            return None
        missing = f" ({self.missing})" if self.missing else ""
        return (
            f"slot switching through {self.mechanism} is not implemented yet{missing};"
            " updates are refused (reflash to change the release)"
        )


def slots_document(switch: SlotSwitch, board: Board) -> dict[str, object]:
    """What /etc/appliancekit/slots.json holds: the switch plus the layout the agent writes."""
    table = board.disk.table.value
    numbers = slots.PARTITION_NUMBERS
    return {
        "format": FORMAT,
        "board": board.name,
        "mechanism": str(switch.mechanism),
        "implemented": switch.implemented,
        "refuse_reason": switch.refuse_reason() or "",
        "arm": switch.arm,
        "commit": switch.commit,
        "fallback": switch.fallback,
        "tries": switch.tries,
        "state": switch.state,
        "watchdog": None
        if switch.watchdog is None
        else {
            "module": switch.watchdog.module,
            "timeout_param": switch.watchdog.timeout_param,
            "timeout_seconds": switch.watchdog.timeout_seconds,
            "device": switch.watchdog.device,
            "armed_by": switch.watchdog.armed_by,
        },
        "paths": dict(sorted(switch.paths.items())),
        "table": table,
        # MBR partitions are PREFIX + number (a glob on boards whose card moves)
        "device_prefix": board.disk.device_prefix if table == "mbr" else "",
        "boot_partition": {"name": "ak-boot", "number": numbers["boot"]},
        "data_partition": {"name": "ak-data", "number": numbers["data"]},
        "slots": {
            slot: {
                "partition": slots.partition_name(slot),
                "number": numbers[f"root_{slot}"],
                "boot_dir": slots.boot_dir(slot),
            }
            for slot in slots.SLOTS
        },
    }


def render_slots_json(switch: SlotSwitch, board: Board) -> str:
    return json.dumps(slots_document(switch, board), indent=2, sort_keys=True) + "\n"


def not_implemented(mechanism: Mechanism, arm: str, commit: str, fallback: str) -> SlotSwitch:
    """The switch of a board whose loader mechanism is not written yet: the image says so
    and the agent refuses to update it."""
    return SlotSwitch(mechanism, False, arm, commit, fallback)
