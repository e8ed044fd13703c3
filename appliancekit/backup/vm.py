"""One appliance booted the way a user's device is, for backup tests and benchmarks: its
image on a writable disk of its own with per-device settings (on the boot partition, or as
EC2 user-data on EC2 boards), the console watched from an offset, probes run on demand."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from appliancekit.board import Board
from appliancekit.boottest import qemu_config
from appliancekit.devsettings import render_user_data
from appliancekit.flash import write_device_settings
from appliancekit.imds import ImdsServer
from appliancekit.manifest import Manifest
from appliancekit.probes import KINDS, probe_protocol, run_probe_once
from appliancekit.qemu import Machine, PortForward, free_port
from appliancekit.recipe import Probe, ProbeKind

SAVED = re.compile(r"appliancekit: backup: snapshot ([0-9a-f]{8}) of /data saved")
STARTING = "appliancekit: backup: starting a snapshot of /data"
RESTORED = "/data restored from snapshot"


@dataclass
class Vm:
    machine: Machine
    forwards: dict[int, int]  # guest port -> host port on 127.0.0.1
    udp_forwards: dict[int, int] = field(default_factory=dict)  # the same, for UDP

    def port_map(self) -> dict[tuple[int, str], int]:
        """(guest port, protocol) -> host port, as probes.wait_for_probes takes it."""
        tcp = {(port, "tcp"): host for port, host in self.forwards.items()}
        return tcp | {(port, "udp"): host for port, host in self.udp_forwards.items()}

    def serial(self) -> str:
        return self.machine.serial_text()

    def wait(self, pattern: str | re.Pattern[str], timeout: float, after: int = 0) -> int:
        """Wait for `pattern` on the console past offset `after`; returns where it ends."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.serial(), after)
            if match:
                return match.end()
            if not self.machine.is_running() or time.monotonic() > deadline:
                raise AssertionError(
                    f"no {regex.pattern!r} on the console\n{self.machine.failure_tail(40)}"
                )
            time.sleep(0.2)

    def probe(
        self,
        kind: ProbeKind,
        guest_port: int,
        timeout: float = 900,
        query: str = "",
        expect: str = "",
        **params: str,
    ) -> str:
        """Run a probe until it passes (its detail) or `timeout` ends (AssertionError)."""
        probe = Probe(
            kind=kind,
            port=guest_port,
            query=query,
            expect=expect,
            params=tuple(sorted(params.items())),
        )
        host_port = self.port_map()[(guest_port, probe_protocol(probe))]
        # one attempt gets 20 s, or longer where the kind says its request is slow work
        # (a Matrix login's password hash): a retry would only queue the same work again
        spec = KINDS.get(str(kind))
        each = max(20.0, spec.attempt_timeout if spec else 0.0)
        deadline = time.monotonic() + timeout
        while True:
            left = max(1.0, deadline - time.monotonic())
            result = run_probe_once(probe, "127.0.0.1", host_port, timeout=min(each, left))
            if result.ok:
                return result.detail
            if not self.machine.is_running() or time.monotonic() > deadline:
                raise AssertionError(f"{result.detail}\n{self.machine.failure_tail(40)}")
            time.sleep(2)


@contextlib.contextmanager
def boot(
    image_dir: Path,
    manifest: Manifest,
    board: Board,
    workdir: Path,
    settings: dict[str, str],
    ports: tuple[int, ...],
    *,
    size: int = 512 << 20,
    udp: tuple[int, ...] = (),
) -> Iterator[Vm]:
    """The image on a fresh `size`-byte copy of its disk, booted with `settings` as `flash`
    writes them (EC2 boards: as user-data over IMDSv2), guest TCP `ports` and UDP `udp`
    forwarded from 127.0.0.1. QEMU is killed when the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / "disk.img"
    subprocess.run(
        ["cp", "--sparse=always", str(image_dir / manifest.disk.path), str(disk)], check=True
    )
    os.truncate(disk, max(size, disk.stat().st_size))  # grown, never cut
    if not board.qemu.imds:
        write_device_settings(disk, manifest, settings)
    forwards = tuple(PortForward(port, free_port()) for port in ports)
    forwards += tuple(PortForward(port, free_port(), "udp") for port in udp)
    config = qemu_config(board, disk, manifest, workdir, forwards, snapshot=False)
    with contextlib.ExitStack() as stack:
        if board.qemu.imds:
            imds = stack.enter_context(ImdsServer(render_user_data(settings, manifest)))
            config = replace(config, net_options=imds.netdev_options())
        machine = stack.enter_context(Machine(config, workdir / "vm"))
        machine.start()
        yield Vm(
            machine,
            {f.guest_port: f.host_port for f in forwards if f.protocol == "tcp"},
            {f.guest_port: f.host_port for f in forwards if f.protocol == "udp"},
        )
