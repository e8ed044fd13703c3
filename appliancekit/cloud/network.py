"""Several QEMU machines on one virtual L2 network, without root: the multi-VM harness.

Each machine keeps its board's own NIC on QEMU user-mode networking (first NIC: DHCP, and the
host's forwarded ports for probes) and gets a second NIC of the same model on a shared
network: `-netdev socket,mcast=GROUP:PORT,localaddr=127.0.0.1` (QEMU sends every frame to
a multicast group on loopback; measured here: three nodes, no loss). Every `Lan` picks its
own group and port, so parallel runs do not hear each other. MAC addresses come from the
machine's index on the network, as in the NixOS test driver.

Generic on purpose: give it `QemuConfig`s, get running `Machine`s; it knows nothing about
clouds (the People's Cloud swarm boots with it too).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from appliancekit.errors import UserError
from appliancekit.qemu import BootError, Machine, QemuConfig

# 239.0.0.0/8 is administratively scoped; with localaddr=127.0.0.1 nothing leaves the host.
MCAST_NET = ipaddress.IPv4Network("239.255.0.0/16")
MAC_PREFIX = "52:54:00:ac"  # QEMU's locally administered prefix; the last two bytes index


@dataclass(frozen=True)
class Lan:
    """One L2 network: a multicast group and port on loopback."""

    group: ipaddress.IPv4Address
    port: int
    netdev_id: str = "lan0"

    @classmethod
    def new(cls) -> Lan:
        """A group and port for this run only: the port was free a moment ago, the group is
        random, so two runs on one host share neither."""
        rng = random.Random(os.urandom(8))
        group = MCAST_NET.network_address + rng.randrange(1, MCAST_NET.num_addresses - 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return cls(group, port)

    def mac(self, index: int) -> str:
        if not 0 <= index < 0x10000:
            raise ValueError(f"machine index {index} out of range")
        return f"{MAC_PREFIX}:{index >> 8:02x}:{index & 0xFF:02x}"

    def nic_args(self, index: int, device: str) -> list[str]:
        netdev = f"{self.netdev_id}"
        return [
            "-netdev",
            f"socket,id={netdev},mcast={self.group}:{self.port},localaddr=127.0.0.1",
            "-device",
            f"{device},netdev={netdev},mac={self.mac(index)}",
        ]

    def attach(self, config: QemuConfig, index: int) -> QemuConfig:
        """`config` with a second NIC (the board's NIC model) on this network.

        The board's own NIC stays first, so it is the guest's first interface (DHCP, host
        forwards) and this one the second."""
        device = config.net_device
        if not device or device.startswith("nic:"):
            raise UserError(
                f"QEMU {config.machine}: its only NIC is built into the board "
                f"({device or 'none'}); a machine on a shared network needs a -device NIC",
                field="qemu.net_device",
            )
        return replace(config, extra_args=(*config.extra_args, *self.nic_args(index, device)))

    def to_json(self) -> dict[str, object]:
        return {"mcast": f"{self.group}:{self.port}", "localaddr": "127.0.0.1"}


class Cluster:
    """Named machines on one `Lan`, started together, all killed when the block ends."""

    def __init__(self, lan: Lan, workdir: Path) -> None:
        self.lan = lan
        self.workdir = Path(workdir)
        self.machines: dict[str, Machine] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def add(self, name: str, config: QemuConfig) -> Machine:
        """Attach `config` to the network as the next machine (not started yet)."""
        if name in self.machines:
            raise ValueError(f"machine {name!r} added twice")
        attached = self.lan.attach(config, len(self.machines) + 1)
        machine = Machine(attached, self.workdir / name)
        self.machines[name] = self._stack.enter_context(machine)
        return machine

    def start(self) -> float:
        """Start every machine (in the order added); returns the monotonic start time."""
        started = time.monotonic()
        for machine in self.machines.values():
            machine.start()
        return started

    def wait_for_serial(self, pattern: str, timeout: float) -> dict[str, float]:
        """Wait until every machine's console shows `pattern`; seconds since each start."""
        deadline = time.monotonic() + timeout
        seen: dict[str, float] = {}
        for name, machine in self.machines.items():
            remaining = max(1.0, deadline - time.monotonic())
            try:
                seen[name] = machine.wait_for_serial(pattern, remaining)
            except BootError as exc:
                raise BootError(f"{name}: {exc.message}", exc.serial_tail) from None
        return seen

    def running(self) -> Mapping[str, bool]:
        return {name: m.is_running() for name, m in self.machines.items()}

    def __iter__(self) -> Iterator[tuple[str, Machine]]:
        return iter(self.machines.items())
