"""A boot test whose second boot is a restore (issue 15): where a recipe's boot test used to
reboot the same disk to show its state survives, the second machine here is a fresh copy of
the image that restores /data from the first machine's backup. That proves more than a
reboot (the backup holds the service's state, and a device flashed with restore=latest gets
it back before any service starts); reboot persistence itself stays proven by the boards'
boot tests (conftest.boot_twice_on_a_bigger_disk: the second boot finds the first one's
data).

- First machine: the image with the recipe's [test] settings and a backup repository on
  restic's REST server, run by the test on the host (backup/host.py). The recipe's
  first-boot probes run, then the test's own scenario (`on_first`: more state made through
  the service's API), then the test waits for a backup that started after all that, and
  pulls the power.
- Second machine: a fresh disk of the same image with restore=latest. The recipe's
  after-reboot probes run against it, suffixed " (after restore)", then `on_restored`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from appliancekit.backup.host import HostTools, rest_server
from appliancekit.backup.vm import SAVED, STARTING, Vm, boot
from appliancekit.board import find_board
from appliancekit.boottest import probes_from_manifest
from appliancekit.build import BuildResult
from appliancekit.manifest import Manifest
from appliancekit.probes import ProbeResult, forwards_for, wait_for_probes
from appliancekit.recipe import Probe, ProbePhase
from appliancekit.usernet import host_address

from .conftest import PROJECT

RESTIC_PASSWORD = "restic-secret-7d0e51"
RESTORED_LINE = "/data restored from snapshot latest: starting the services"
HANDOVER = "appliancekit: switching root"


@dataclass
class RestoreRun:
    probes: list[ProbeResult]  # the first machine's, then the second's ("... (after restore)")
    first_serial: str
    second_serial: str
    snapshot: str  # the short id of the snapshot the second machine restored
    first: Any = None  # what on_first returned
    restored: Any = None  # what on_restored returned
    failure: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failure is None

    def by_name(self) -> dict[str, ProbeResult]:
        return {p.name: p for p in self.probes}

    def before_restore(self) -> str:
        """The second machine's console up to the agent's line that starts the services."""
        return self.second_serial[: self.second_serial.index(RESTORED_LINE)]


def run_probes(vm: Vm, probes: list, timeout: float) -> list[ProbeResult]:  # type: ignore[type-arg]
    # each probe may take the whole `timeout`: this test is about the data, not boot speed
    # (a backup every 20 s under emulation slows a first start the recipe's timeouts allow for)
    probes = [replace(p, timeout=max(p.timeout, timeout)) for p in probes]
    return wait_for_probes(probes, vm.port_map(), timeout, vm.machine)  # type: ignore[arg-type]


def probe_ports(probes: list[Probe], ports: Iterable[int] = ()) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The guest TCP and UDP ports to forward for these probes (and `ports`)."""
    forwards = forwards_for(probes, ports)
    tcp = tuple(f.guest_port for f in forwards if f.protocol == "tcp")
    udp = tuple(f.guest_port for f in forwards if f.protocol == "udp")
    return tcp, udp


def phase_probes(manifest: Manifest, settings: dict[str, str]) -> tuple[list[Probe], list[Probe]]:
    """The recipe's probes for a first machine (every + first boot) and for the restored one
    (every + after reboot: what the data must still show), over these settings."""
    probes = probes_from_manifest(manifest, {**manifest.settings, **settings})
    first = [p for p in probes if p.phase in (ProbePhase.EVERY, ProbePhase.FIRST)]
    second = [p for p in probes if p.phase in (ProbePhase.EVERY, ProbePhase.REBOOT)]
    return first, second


def backup_then_restore(
    result: BuildResult,
    board_name: str,
    tools: HostTools,
    workdir: Path,
    *,
    on_first: Callable[[Vm], Any] | None = None,
    on_restored: Callable[[Vm], Any] | None = None,
    timeout: float = 900,
) -> RestoreRun:
    manifest = result.manifest
    board = find_board(board_name, PROJECT.boards_dir)
    settings = dict(manifest.extra.get("test_settings") or {})
    first_probes, second_probes = phase_probes(manifest, settings)
    tcp, udp = probe_ports(first_probes + second_probes, manifest.ports)
    with rest_server(tools, workdir / "rest") as port:
        repository = f"rest:http://{host_address(board)}:{port}/{manifest.name}/"
        backup = {"backup_repository": repository, "backup_password": RESTIC_PASSWORD}
        # a backup every 20 s: the one that starts after the probes holds their state
        first_settings = settings | backup | {"backup_interval": "20"}
        with boot(
            result.output_dir, manifest, board, workdir / "first", first_settings, tcp, udp=udp
        ) as vm:
            # as the boot test does: probes once the initramfs hands over (a probe's own
            # timeout counts from there)
            vm.wait(HANDOVER, timeout)
            results = run_probes(vm, first_probes, timeout)
            failed = next((r for r in results if not r.ok), None)
            if failed is not None:
                return RestoreRun(
                    results, vm.serial(), "", "", failure=f"probe {failed.name} failed: "
                    f"{failed.detail}\n{vm.machine.failure_tail(40)}",
                )  # fmt: skip
            made = on_first(vm) if on_first is not None else None
            started = vm.wait(STARTING, timeout, after=len(vm.serial()))
            vm.wait(SAVED, timeout, after=started)
            saved = SAVED.search(vm.serial(), started)
            assert saved is not None
            # the power is pulled as the next backup starts: the agent applies the retention
            # (restic forget, under an exclusive lock) between the two, and a lock it left
            # behind would hold the restore up; a backup's own lock does not
            vm.wait(STARTING, timeout, after=saved.end())
            vm.machine.kill()
            first_serial = vm.serial()
        second_settings = settings | backup | {"restore": "latest", "backup_interval": "3600"}
        with boot(
            result.output_dir, manifest, board, workdir / "second", second_settings, tcp, udp=udp
        ) as vm:
            vm.wait(RESTORED_LINE, timeout)
            after = run_probes(vm, second_probes, timeout)
            after = [replace(r, name=r.name + " (after restore)") for r in after]
            failed = next((r for r in after if not r.ok), None)
            run = RestoreRun(results + after, first_serial, "", saved.group(1), made)
            if failed is not None:
                run.failure = f"probe {failed.name} failed: {failed.detail}"
                run.failure += "\n" + vm.machine.failure_tail(40)
            elif on_restored is not None:
                run.restored = on_restored(vm)
            run.second_serial = vm.serial()
    return run
