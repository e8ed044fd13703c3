"""U-Boot's bootcount/bootlimit/altbootcmd for the two slots (uboot boot path), in a boot script.

Debian's u-boot-sunxi is built without CONFIG_BOOTCOUNT_LIMIT (the Cubieboard image of
2025.01 in trixie and of 2023.01 in bookworm hold none of the strings `bootcount`,
`bootlimit` or `altbootcmd`), so U-Boot itself counts nothing. Its environment lives in
`uboot.env` on the FAT partition (CONFIG_ENV_IS_IN_FAT: "Loading Environment from FAT").
The same semantics are therefore a boot script, `boot.scr` on the boot partition, which
U-Boot's distro boot runs (there is no extlinux/extlinux.conf at the top of the partition,
which it would prefer), written with U-Boot's own commands: `load` and `env import -t` read
the state, `setexpr` counts, `env export -t` and `fatwrite` save it, and `sysboot` boots the
chosen slot's `slot-X/extlinux.conf`. Both slots' files are the same bytes: paths are
relative (U-Boot resolves them against the file's directory), and the command line ends in
`ak.slot=${ak_slot}`, which U-Boot expands from the variable the script sets to the slot it
boots (sysboot expands variables in `append`). So the update agent writes a release's
files into either slot unchanged, and the slot the kernel is told is the loader's choice.

The state is `ak-bootcount.env` on the boot partition, `env import -t` text:

    slot=b               the slot to boot
    altslot=a            the slot altbootcmd boots
    upgrade_available=1  a trial is armed: count boots
    bootcount=1          boots since it was armed
    bootlimit=1          boots the trial gets

As with U-Boot's bootcount in the environment: while upgrade_available=1, every boot adds
one to bootcount (stopping at bootlimit+1, so it never leaves the range `itest` compares)
and saves it BEFORE booting; once bootcount > bootlimit, altbootcmd boots altslot. So a trial
that does not commit (crash, hang and watchdog reset, panic, failed health check) is followed
by a boot of the old slot, with no help. The update agent arms with slot=NEW altslot=OLD
upgrade_available=1 bootcount=0, commits with upgrade_available=0 bootcount=0 (what
`fw_setenv` does with U-Boot's own bootcount), and after a fallback writes slot=OLD back.
A missing or unreadable state file boots slot a with nothing armed; a slot whose files do
not load falls through to the other slot.

Why a file of its own rather than `saveenv`: saveenv writes the whole run-time environment
(the distro scan's variables included) into uboot.env; the script imports and exports only
these five names, and uboot.env stays what the build wrote.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from appliancekit.board import Board
from appliancekit.boot.ethaddr import uboot_script
from appliancekit.boot.slotswitch import Mechanism, SlotSwitch, Watchdog
from appliancekit.errors import UserError

SCRIPT = "boot.scr"
STATE = "ak-bootcount.env"
EXTLINUX = "extlinux.conf"  # inside each slot's directory
STATE_NAMES = ("slot", "altslot", "upgrade_available", "bootcount", "bootlimit")
# The legacy image header (U-Boot include/image.h): what `mkimage -T script` writes.
IH_MAGIC = 0x27051956
IH_OS_LINUX = 5
IH_TYPE_SCRIPT = 6
IH_COMP_NONE = 0
IH_ARCH = {"armhf": 2, "arm64": 22, "amd64": 24}
_HEADER = struct.Struct(">IIIIIIIBBBB32s")


@dataclass(frozen=True)
class BootCount:
    slot: str
    altslot: str
    upgrade_available: bool = False
    bootcount: int = 0
    bootlimit: int = 1

    def render(self) -> str:
        return (
            f"slot={self.slot}\n"
            f"altslot={self.altslot}\n"
            f"upgrade_available={int(self.upgrade_available)}\n"
            f"bootcount={self.bootcount:x}\n"  # setexpr writes hex
            f"bootlimit={self.bootlimit:x}\n"
        )

    def chosen(self) -> str:
        """The slot the script boots with this state (before it counts this boot)."""
        if self.upgrade_available and min(self.bootcount, self.bootlimit) + 1 > self.bootlimit:
            return self.altslot
        return self.slot


def parse_state(text: str) -> BootCount:
    """The state file as the script imports it: name=value lines (U-Boot's `env export -t`
    ends them with a NUL), hex numbers as `setexpr` writes them."""
    values: dict[str, str] = {}
    for line in text.replace("\0", "\n").splitlines():
        name, sep, value = line.partition("=")
        if sep and name in STATE_NAMES:
            values[name] = value.strip()
    try:
        return BootCount(
            slot=values.get("slot", "a"),
            altslot=values.get("altslot", "b"),
            upgrade_available=values.get("upgrade_available", "0") == "1",
            bootcount=int(values.get("bootcount", "0"), 16),
            bootlimit=int(values.get("bootlimit", "1"), 16),
        )
    except ValueError as e:
        raise UserError(f"{STATE}: bad number ({e})", field=STATE) from None


def render_script(ethaddr: str | None = None) -> str:
    """The boot script; `ethaddr`: the MAC address to set where U-Boot has none
    (boot/ethaddr.py)."""
    names = " ".join(STATE_NAMES)
    mac = uboot_script(ethaddr) if ethaddr else ""
    return f"""\
# appliancekit: U-Boot bootcount/bootlimit/altbootcmd for two slots (boot/ubootcount.py)
{mac}echo appliancekit: choosing a slot (bootcount, bootlimit, altbootcmd in {SCRIPT})
setenv ak_part ${{devtype}} ${{devnum}}:${{distro_bootpart}}
setenv slot a
setenv altslot b
setenv upgrade_available 0
setenv bootcount 0
setenv bootlimit 1
if load ${{ak_part}} ${{scriptaddr}} /{STATE}; then
  env import -t ${{scriptaddr}} ${{filesize}} {names}
fi
if test "${{upgrade_available}}" = "1"; then
  if itest ${{bootcount}} -le ${{bootlimit}}; then
    setexpr bootcount ${{bootcount}} + 1
    env export -t ${{scriptaddr}} {names}
    fatwrite ${{ak_part}} ${{scriptaddr}} /{STATE} ${{filesize}}
  fi
fi
setenv bootcmd_slot sysboot ${{ak_part}} any ${{pxefile_addr_r}} /slot-${{slot}}/{EXTLINUX}
setenv altbootcmd sysboot ${{ak_part}} any ${{pxefile_addr_r}} /slot-${{altslot}}/{EXTLINUX}
if test "${{upgrade_available}}" = "1" && itest ${{bootcount}} -gt ${{bootlimit}}; then
  echo appliancekit: bootcount ${{bootcount}} over bootlimit ${{bootlimit}}: altbootcmd, slot ${{altslot}}
  setenv ak_slot ${{altslot}}
  run altbootcmd
else
  echo appliancekit: slot ${{slot}} (upgrade_available ${{upgrade_available}}, bootcount ${{bootcount}})
  setenv ak_slot ${{slot}}
  run bootcmd_slot
  echo appliancekit: slot ${{slot}} did not boot: slot ${{altslot}}
  setenv ak_slot ${{altslot}}
  run altbootcmd
fi
"""


def script_image(text: str, arch: str, name: str = "appliancekit slot choice") -> bytes:
    """`text` as a legacy U-Boot script image (`mkimage -A ARCH -O linux -T script -C none`),
    with time 0 so it is reproducible."""
    if arch not in IH_ARCH:
        raise UserError(f"no U-Boot image architecture for {arch!r}", field="arch")
    script = text.encode()
    body = struct.pack(">II", len(script), 0) + script
    fields = [IH_MAGIC, 0, 0, len(body), 0, 0, zlib.crc32(body)]
    tail = [IH_OS_LINUX, IH_ARCH[arch], IH_TYPE_SCRIPT, IH_COMP_NONE, name.encode()[:32]]
    header = _HEADER.pack(*fields, *tail)
    fields[1] = zlib.crc32(header)
    return _HEADER.pack(*fields, *tail) + body


def read_script_image(data: bytes) -> str:
    """The script inside a legacy script image, after U-Boot's checks (magic, header and
    data CRC, type)."""
    if len(data) < _HEADER.size:
        raise UserError("U-Boot script image too short", field=SCRIPT)
    magic, hcrc, _time, size, _load, _ep, dcrc, _os, _arch, kind, _comp, _name = _HEADER.unpack(
        data[: _HEADER.size]
    )
    header = bytearray(data[: _HEADER.size])
    header[4:8] = bytes(4)
    body = data[_HEADER.size : _HEADER.size + size]
    if magic != IH_MAGIC or zlib.crc32(header) != hcrc or kind != IH_TYPE_SCRIPT:
        raise UserError("not a U-Boot script image (magic, header CRC or type)", field=SCRIPT)
    if len(body) != size or zlib.crc32(body) != dcrc:
        raise UserError("U-Boot script image data CRC mismatch", field=SCRIPT)
    (length,) = struct.unpack(">I", body[:4])
    return body[8 : 8 + length].decode()


def slot_append(cmdline: str) -> str:
    """The kernel command line for a slot's extlinux.conf: `ak.slot=` filled in by U-Boot
    with the slot it boots."""
    words = [w for w in cmdline.split() if not w.startswith("ak.slot=")]
    return " ".join([*words, "ak.slot=${ak_slot}"])


def boot_files(board: Board, workdir: Path, ethaddr: str | None = None) -> dict[str, Path]:
    """The files at the top of the boot partition: the script and the state of a new card
    (slot a, nothing armed)."""
    script = workdir / SCRIPT
    script.write_bytes(script_image(render_script(ethaddr), board.arch.value))
    state = workdir / STATE
    state.write_text(BootCount(slot="a", altslot="b").render())
    return {SCRIPT: script, STATE: state}


# The trial watchdog on the A10: sunxi_wdt's hardware counts at most 16 s and the driver
# declares that as its max_timeout (not max_hw_heartbeat_ms), so the kernel does not feed it
# on anyone's behalf and a watchdog started in the initramfs would have to be reopened within
# 16 s of the hand-over, which an emulated boot does not reliably do. The agent starts it when
# it begins a trial and feeds it often; a hang from then on, the agent's included, resets
# into the committed slot. Before the agent runs, a panic resets (panic=10) and a boot that
# never gets there stays up until a power cycle, which boots the old slot.
TRIAL_WATCHDOG = Watchdog("sunxi_wdt", "timeout", 16, armed_by="agent")


def slot_switch(board: Board) -> SlotSwitch:
    return SlotSwitch(
        mechanism=Mechanism.UBOOT_BOOTCOUNT,
        implemented=True,
        arm=(
            "write the release's boot files into slot-NEW/ unchanged, then"
            f" {STATE} (new file, then rename): slot=NEW altslot=OLD upgrade_available=1"
            " bootcount=0 bootlimit=1"
        ),
        commit=f"{STATE}: upgrade_available=0 bootcount=0 (what fw_setenv does for bootcount)",
        fallback=(
            f"{SCRIPT} adds one to bootcount and saves it before it boots; bootcount over"
            " bootlimit runs altbootcmd, which boots altslot"
        ),
        tries=1,
        state=f"boot:{STATE}",
        watchdog=TRIAL_WATCHDOG if TRIAL_WATCHDOG.module in board.kernel.modules else None,
        paths={"script": SCRIPT, "state": STATE, "extlinux": EXTLINUX},
    )
