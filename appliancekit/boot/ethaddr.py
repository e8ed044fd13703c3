"""A stable MAC address for boards whose boot loader may have none (uboot boot path).

On a Cubieboard U-Boot derives `ethaddr` from the A10's SID (its unique chip id) before it
runs boot.scr, and passes it to the kernel in the device tree (`local-mac-address` of the
node the `ethernet0` alias names). Where the SID is empty, as in QEMU's A10, U-Boot says "No
valid MAC address found", passes nothing, and the kernel's sun4i-emac picks a random address
on every boot: a DHCP server then hands each boot another lease, and whatever reached the
appliance at its old address (a port forward, a DNS record) misses it after the update
agent's reboot.

So boot.scr sets `ethaddr` only when U-Boot has none, to a locally administered unicast
address derived from the appliance (recipe) and board names at build time: the same on
every build and every release (the agent rewrites slot files, never boot.scr), and never
chosen over a real one. Devices that share a fallback address must not share a network
segment; a board with a SID never uses it.
"""

from __future__ import annotations

import hashlib


def fallback_ethaddr(appliance: str, board: str) -> str:
    """A locally administered (bit 1 of the first octet set), unicast (bit 0 clear) address."""
    digest = bytearray(
        hashlib.sha256(f"appliancekit ethaddr {appliance} {board}".encode()).digest()
    )
    digest[0] = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in digest[:6])


def uboot_script(address: str) -> str:
    """boot.scr lines: set `ethaddr` unless U-Boot already has one (from the SoC). U-Boot's
    bootm copies it into the device tree for the kernel (fdt_fixup_ethernet)."""
    return f"""\
if test -z "${{ethaddr}}"; then
  echo appliancekit: no MAC address from the SoC: ethaddr {address}
  setenv ethaddr {address}
fi
"""
