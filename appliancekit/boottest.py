"""Boot an image under QEMU through its board's boot path and run the recipe's probes.

Everything the test needs comes from the image directory (disk image + manifest); the board
file only says which QEMU model stands in for the hardware.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from appliancekit.board import Board
from appliancekit.boot import boot_path
from appliancekit.devsettings import render_user_data
from appliancekit.flash import read_device_settings, write_device_settings
from appliancekit.imds import ImdsServer
from appliancekit.manifest import MANIFEST, Manifest
from appliancekit.probes import ProbeResult, forward_map, forwards_for, wait_for_probes
from appliancekit.qemu import BootError, Drive, Machine, QemuConfig
from appliancekit.recipe import Probe, ProbePhase, probe_kind_of
from appliancekit.templating import render_string

# Serial console lines that mean the boot cannot succeed: stop at once instead of waiting
# for probe timeouts.
FATAL = re.compile(
    r"appliancekit: FATAL|Kernel panic|verity: .*(?:corrupted|error)|"
    r"Attempted to kill init|Unable to mount root"
)
EXT4_COMMIT_SECONDS = 5.5
HANDOVER = re.compile(r"appliancekit: switching root|" + FATAL.pattern)
MARKERS = {
    "initramfs": "appliancekit: initramfs started",
    "root_mounted": "appliancekit: sealed root verified and mounted",
    "switch_root": "appliancekit: switching root",
}
# What boot tests of boards with [qemu] imds = true serve as EC2 user-data: a value the
# image does not have, so the hostname probe shows the user-data took effect.
USER_DATA = {"hostname": "from-user-data"}


@dataclass(frozen=True)
class BootTestReport:
    name: str
    board: str
    passed: bool
    boot_to_healthy: float | None  # seconds from QEMU start until every probe passed
    markers: dict[str, float]  # seconds from QEMU start to each boot marker seen
    probes: list[ProbeResult]
    serial_log: str
    failure: str | None = None
    serial_tail: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["probes"] = [asdict(p) for p in self.probes]
        return data


class _WatchedMachine:
    """The machine as the probe loop sees it: it 'stops running' once the console shows a
    fatal error, so a corrupted root fails in seconds rather than at the probe timeout."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.fatal: str | None = None

    def is_running(self) -> bool:
        match = FATAL.search(self.machine.serial_text())
        if match:
            self.fatal = match.group(0)
            return False
        return self.machine.is_running()

    @property
    def returncode(self) -> int | None:
        return self.machine.returncode

    def failure_tail(self, lines: int = 30) -> str:
        return self.machine.failure_tail(lines)


def device_settings(disk: Path, manifest: Manifest) -> dict[str, str]:
    """Build-time settings overlaid with the disk's own settings.env, as the initramfs sees
    them."""
    return {**manifest.settings, **(read_device_settings(disk, manifest) or {})}


def with_test_settings(disk: Path, manifest: Manifest, workdir: Path, *, in_place: bool) -> Path:
    """`disk` (or a copy of it) carrying the recipe's [test] settings in settings.env, under
    any settings the disk already has (a flashed card's own values win)."""
    wanted = manifest.extra.get("test_settings") or {}
    if not wanted:
        return disk
    target = disk if in_place else workdir / "disk.img"
    if not in_place:
        subprocess.run(["cp", "--sparse=always", str(disk), str(target)], check=True)
    existing = read_device_settings(target, manifest) or {}
    write_device_settings(target, manifest, {k: v for k, v in wanted.items() if k not in existing})
    return target


def probes_from_manifest(manifest: Manifest, settings: dict[str, str] | None = None) -> list[Probe]:
    """The recipe's probes; their text fields are templates over the device's settings."""
    context: dict[str, object] = {
        "settings": settings if settings is not None else dict(manifest.settings)
    }

    def render(value: object, field: str) -> object:
        if not isinstance(value, str):
            return value
        return render_string(value, context, file=MANIFEST, field=field)

    probes = []
    for i, raw in enumerate(manifest.probes):
        values = {
            key: render(value, f"probe[{i}].{key}") for key, value in raw.items() if key != "params"
        }
        values["kind"] = probe_kind_of(str(values["kind"]))
        values["phase"] = ProbePhase(values.get("phase", ProbePhase.EVERY))
        values["params"] = tuple(
            (str(k), str(render(v, f"probe[{i}].params.{k}"))) for k, v in raw.get("params", ())
        )
        probes.append(Probe(**values))
    return probes


def qemu_config(
    board: Board,
    disk: Path,
    manifest: Manifest,
    workdir: Path,
    forwards: tuple,
    *,
    snapshot: bool = True,
) -> QemuConfig:
    boot = boot_path(board).qemu_boot(disk, manifest, board, workdir)
    config = QemuConfig.from_spec(
        board.qemu,
        kernel=boot.kernel,
        initrd=boot.initrd,
        append=boot.append,
        dtb=boot.dtb,
        drives=(Drive(disk, device=board.qemu.disk_device, snapshot=snapshot),),
        forwards=forwards,
    )
    return replace(config, firmware=boot.firmware) if boot.firmware else config


def boot_test(
    image_dir: Path,
    manifest: Manifest,
    board: Board,
    *,
    disk: Path | None = None,
    timeout: float = 240.0,
    log_dir: Path | None = None,
    reboot: bool | None = None,
    writable: bool = False,
    user_data: dict[str, str] | None = None,
    on_start: Callable[[Path], None] | None = None,
) -> BootTestReport:
    """Boot, wait for the hand-over, run the probes.

    Recipes with first-boot/after-reboot probes (or `reboot=True`) are booted twice on a
    writable copy, so their state must survive a power-off. `writable=True` boots `disk`
    itself without an overlay (it is changed: the data partition grows, state is kept).
    On boards with [qemu] imds = true, `user_data` (default USER_DATA) is served as EC2
    user-data over IMDSv2 and overrides the device's settings in the probes. `on_start` is
    called with each boot's live serial log as QEMU starts (the panel follows it)."""
    # The serial log goes beside what was booted: a copy's log never overwrites the log of
    # the image directory's own boot test.
    if log_dir is not None:
        log_path = log_dir / "serial.log"
    elif disk is not None:
        log_path = Path(disk).parent / f"{Path(disk).name}.serial.log"
    else:
        log_path = image_dir / "serial.log"
    disk = disk or image_dir / manifest.disk.path
    with tempfile.TemporaryDirectory(prefix="boottest.") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        original = disk
        disk = with_test_settings(disk, manifest, workdir, in_place=writable)
        settings = device_settings(disk, manifest)
        imds = None
        if board.qemu.imds:
            user_data = dict(USER_DATA if user_data is None else user_data)
            imds = stack.enter_context(ImdsServer(render_user_data(user_data, manifest)))
            settings.update(user_data)
        probes = probes_from_manifest(manifest, settings)
        forwards = forwards_for(probes, manifest.ports)
        if reboot is None:
            reboot = any(p.phase != ProbePhase.EVERY for p in probes)
        if reboot and not writable and disk == original:
            copy = workdir / "disk.img"
            subprocess.run(["cp", "--sparse=always", str(disk), str(copy)], check=True)
            disk = copy
        phases = [ProbePhase.FIRST, ProbePhase.REBOOT] if reboot else [ProbePhase.EVERY]
        boots = []
        for number, phase in enumerate(phases, start=1):
            selected = [p for p in probes if p.phase in (ProbePhase.EVERY, phase)]
            config = qemu_config(
                board, disk, manifest, workdir, forwards, snapshot=not (reboot or writable)
            )
            if imds is not None:
                config = replace(config, net_options=imds.netdev_options())
            # The guest has no power-button handler yet, so power-off is a power pull: let
            # ext4 commit its journal (5 s) first, as a device left running would have.
            settle = EXT4_COMMIT_SECONDS if number < len(phases) else 0.0
            boots.append(
                boot_once(
                    config, workdir / f"boot{number}", selected, timeout, settle, on_start=on_start
                )
            )
            if not boots[-1].passed:
                break
        serial = "\n".join(b.serial for b in boots)
        try:
            log_path.write_text(serial)
        except OSError:
            log_path = workdir / "serial.log"
    first = boots[0]
    failed = next((b for b in boots if not b.passed), None)
    results = []
    for number, boot in enumerate(boots, start=1):
        suffix = " (after reboot)" if number > 1 else ""
        results += [replace(r, name=r.name + suffix) for r in boot.results]
    notes = []
    if board.qemu.append or board.qemu.dtb_delete:
        # the firmware stand-in's edits for what the QEMU model lacks (the image is unchanged)
        edits = [*board.qemu.append, *(f"device tree -{e}" for e in board.qemu.dtb_delete)]
        notes.append(f"QEMU {board.qemu.machine} gaps bridged: {', '.join(edits)}")
    if imds is not None:
        fetched = "fetched with an IMDSv2 token" if imds.served_user_data() else "never fetched"
        notes.append(f"user-data served at 169.254.169.254: {sorted(user_data)}, {fetched}")
    if reboot:
        notes.append(
            "booted twice on a writable copy: state from the first boot was checked after a power-off"
        )
        if len(boots) > 1 and boots[1].healthy is not None:
            notes.append(f"second boot healthy after {boots[1].healthy:.1f}s")
    return BootTestReport(
        name=manifest.name,
        board=board.name,
        passed=failed is None,
        boot_to_healthy=first.healthy,
        markers=first.markers,
        probes=results,
        serial_log=str(log_path),
        failure=None if failed is None else failed.failure,
        serial_tail="" if failed is None else failed.tail,
        notes=notes,
    )


@dataclass
class SingleBoot:
    results: list[ProbeResult]
    markers: dict[str, float]
    healthy: float | None
    failure: str | None
    tail: str
    serial: str

    @property
    def passed(self) -> bool:
        return self.failure is None


def boot_once(
    config: QemuConfig,
    workdir: Path,
    probes: list[Probe],
    timeout: float,
    settle: float = 0.0,
    *,
    on_start: Callable[[Path], None] | None = None,
) -> SingleBoot:
    """One boot of `config`: wait for the hand-over, run `probes`, power off. Callers with
    a machine no board describes (a Proxmox VM from its `qm` configuration) use it directly."""
    workdir.mkdir(parents=True, exist_ok=True)
    machine = Machine(config, workdir)
    watched = _WatchedMachine(machine)
    results: list[ProbeResult] = []
    markers: dict[str, float] = {}
    failure: str | None = None
    healthy: float | None = None
    try:
        with machine:
            machine.start()
            if on_start is not None:
                on_start(machine.serial_log)
            # Probing before the guest has a network only leaves connections hanging in
            # QEMU's user-mode stack; the hand-over marker says services are starting.
            seen = machine.wait_for_serial(HANDOVER, timeout)
            if FATAL.search(machine.serial_text()):
                raise BootError(f"boot failed after {seen:.1f}s", machine.failure_tail())
            forwards = forward_map(config.forwards)
            # a probe the recipe lets wait longer than the boot's budget (a service whose
            # first start is known to be slow) gets its own timeout: the recipe knows best
            deadline = max([timeout, *(p.timeout for p in probes)])
            results = wait_for_probes(probes, forwards, deadline, watched)  # type: ignore[arg-type]
            if all(r.ok for r in results):
                healthy = time.monotonic() - machine.started_at
            else:
                failed = next(r for r in results if not r.ok)
                failure = f"probe {failed.name} failed: {failed.detail}"
                if watched.fatal:
                    failure = f"boot failed ({watched.fatal}); {failure}"
            markers = _markers(machine)
            if failure is None and settle:
                time.sleep(settle)
            machine.powerdown(timeout=5)
    except BootError as exc:
        failure = str(exc)
    tail = "" if failure is None else machine.failure_tail(30)
    return SingleBoot(results, markers, healthy, failure, tail, machine.serial_text())


_MARKER_TIME = re.compile(r"appliancekit: (.+?) \[uptime ([0-9.]+)s\]")


def _markers(machine: Machine) -> dict[str, float]:
    """Guest uptime (seconds since the kernel started) at each initramfs marker."""
    found = {}
    for message, uptime in _MARKER_TIME.findall(machine.serial_text()):
        for name, marker in MARKERS.items():
            if marker.endswith(message):
                found[name] = float(uptime)
    return found
