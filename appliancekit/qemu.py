"""Run an image under QEMU: build the command line, control the VM over QMP, watch the serial log.

`build_command` is pure (unit-tested). `Machine` starts QEMU, connects QMP (qemu.qmp, whose
asyncio client runs on a private event-loop thread, see `_LoopThread`), captures the serial
console to a file and offers `wait_for_serial`, `powerdown` and `kill`. QEMU is always killed
when the `with Machine(...)` block ends, whatever ended it. `retry` is the one polling
primitive; it gives up early if the machine has died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from appliancekit.errors import ToolError

if TYPE_CHECKING:
    from appliancekit.board import QemuSpec

T = TypeVar("T")
log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-~])")
# Lines worth showing even when a stack dump has pushed them out of the serial tail.
_NOTABLE = re.compile(
    r"Kernel panic - not syncing|Oops|BUG: |Unable to mount root|verity: .*corrupted"
)


class BootError(ToolError):
    """The machine did not come up (QEMU exited, or a wait timed out); carries the serial tail."""

    def __init__(self, message: str, serial_tail: str = "") -> None:
        self.message = message
        self.serial_tail = serial_tail
        text = message
        if serial_tail:
            text += f"\n--- last serial lines ---\n{serial_tail}"
        super().__init__(text)


@dataclass(frozen=True)
class PortForward:
    guest_port: int
    host_port: int
    protocol: str = "tcp"  # "tcp" | "udp"


@dataclass(frozen=True)
class Drive:
    path: Path
    device: str = "virtio-blk-pci"  # any -device name; "nvme" adds serial=; "sd" uses if=sd
    snapshot: bool = True  # writes go to a temporary overlay, the image stays untouched
    format: str = "raw"
    serial: str | None = None  # the disk's serial number (default: its drive id for NVMe)


@dataclass(frozen=True)
class QemuConfig:
    binary: str
    machine: str
    cpu: str | None = None
    memory: str = "512M"
    smp: int = 1
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    dtb: Path | None = None
    firmware: Path | None = None  # passed as -bios (OVMF.fd / QEMU_EFI.fd combined images)
    drives: tuple[Drive, ...] = ()
    # "-device" name of the NIC (e.g. virtio-net-pci, usb-net); "nic:MODEL" for NICs built
    # into the board (e.g. "nic:allwinner-emac" → -nic user,model=...); None = no network.
    net_device: str | None = None
    forwards: tuple[PortForward, ...] = ()
    extra_args: tuple[str, ...] = ()
    # more `-netdev user` options, e.g. net=... and guestfwd=... (the EC2 metadata service)
    net_options: tuple[str, ...] = ()
    # False: a guest reboot (or a watchdog reset) ends QEMU (-no-reboot), as boot tests
    # want; True: the machine restarts the way hardware does (update tests).
    guest_reboots: bool = False

    @classmethod
    def from_spec(
        cls,
        spec: QemuSpec,
        *,
        kernel: Path | None = None,
        initrd: Path | None = None,
        append: str | None = None,
        dtb: Path | None = None,
        drives: tuple[Drive, ...] = (),
        forwards: tuple[PortForward, ...] = (),
    ) -> QemuConfig:
        """A config for a board's QEMU model; the caller supplies the boot artefacts."""
        return cls(
            binary=spec.binary,
            machine=spec.machine,
            cpu=spec.cpu,
            memory=spec.memory,
            smp=spec.smp,
            kernel=kernel,
            initrd=initrd,
            append=append,
            dtb=dtb,
            firmware=Path(spec.firmware) if spec.firmware else None,
            drives=drives,
            net_device=spec.net_device,
            forwards=forwards,
            extra_args=spec.extra_args,
        )


def _opt(value: object) -> str:
    """Escape a value for a QEMU -opt list (commas are doubled)."""
    return str(value).replace(",", ",,")


def _drive_args(index: int, drive: Drive) -> list[str]:
    common = f"file={_opt(drive.path)},format={drive.format}"
    if drive.snapshot:
        common += ",snapshot=on"
    if drive.device == "sd":
        return ["-drive", f"{common},if=sd"]  # the board's SD slots, in order
    drive_id = f"drive{index}"
    device = f"{drive.device},drive={drive_id}"
    controller: list[str] = []
    if drive.serial or drive.device == "nvme":
        device += f",serial={_opt(drive.serial or drive_id)}"
    elif drive.device == "scsi-hd":
        # one virtio-scsi controller per disk (Proxmox's virtio-scsi-single); QEMU needs the
        # bus before the disk on its command line
        controller = ["-device", f"virtio-scsi-pci,id=scsi{index}"]
        device += f",bus=scsi{index}.0"
    return [*controller, "-drive", f"{common},if=none,id={drive_id}", "-device", device]


def _net_args(
    net_device: str, forwards: tuple[PortForward, ...], options: tuple[str, ...] = ()
) -> list[str]:
    user = "".join(f",{option}" for option in options) + "".join(
        f",hostfwd={fw.protocol}:127.0.0.1:{fw.host_port}-:{fw.guest_port}" for fw in forwards
    )
    if net_device.startswith("nic:"):
        return ["-nic", f"user,model={net_device[4:]}{user}"]
    return ["-netdev", f"user,id=net0{user}", "-device", f"{net_device},netdev=net0"]


def build_command(
    config: QemuConfig, *, qmp_socket: Path, serial_log: Path, interactive: bool = False
) -> list[str]:
    """The full QEMU argv. -nodefaults: only the devices we ask for (no stray NIC or VGA)."""
    for fw in config.forwards:
        if fw.protocol not in ("tcp", "udp"):
            raise ValueError(f"port forward protocol must be tcp or udp, not {fw.protocol!r}")
    cmd = [config.binary, "-machine", config.machine]
    if config.cpu:
        cmd += ["-cpu", config.cpu]
    cmd += ["-m", config.memory, "-smp", str(config.smp)]
    cmd += ["-nodefaults", "-nographic"]
    if not config.guest_reboots:
        cmd.append("-no-reboot")
    cmd += ["-qmp", f"unix:{_opt(qmp_socket)},server=on,wait=off"]
    if interactive:
        cmd += ["-serial", "mon:stdio"]
    else:
        cmd += ["-chardev", f"file,id=serial0,path={_opt(serial_log)}"]
        cmd += ["-serial", "chardev:serial0"]
    if config.firmware:
        cmd += ["-bios", str(config.firmware)]
    if config.kernel:
        cmd += ["-kernel", str(config.kernel)]
    if config.initrd:
        cmd += ["-initrd", str(config.initrd)]
    if config.append:
        cmd += ["-append", config.append]
    if config.dtb:
        cmd += ["-dtb", str(config.dtb)]
    for index, drive in enumerate(config.drives):
        cmd += _drive_args(index, drive)
    if config.net_device:
        cmd += _net_args(config.net_device, config.forwards, config.net_options)
    elif config.forwards:
        raise ValueError("port forwards need a network device (net_device is None)")
    cmd += list(config.extra_args)
    return cmd


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _LoopThread:
    """A private asyncio event loop on a daemon thread, so callers stay synchronous.

    The loop keeps running between calls, so qemu.qmp's reader task sees events and
    disconnects as they happen rather than only during the next command.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="appliancekit-qmp", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


class Machine:
    """One QEMU process. Use as a context manager: QEMU never outlives the `with` block."""

    def __init__(self, config: QemuConfig, workdir: Path, interactive: bool = False) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.interactive = interactive
        self.serial_log = self.workdir / "serial.log"
        self.qemu_log = self.workdir / "qemu.log"  # QEMU's own stdout/stderr
        self.started_at = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._loop: _LoopThread | None = None
        self._qmp: Any = None
        self._sockdir: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def command(self) -> list[str]:
        return build_command(
            self.config,
            qmp_socket=self._qmp_socket(),
            serial_log=self.serial_log,
            interactive=self.interactive,
        )

    def _qmp_socket(self) -> Path:
        sock = self.workdir / "qmp.sock"
        if len(os.fsencode(sock)) < 100:  # sun_path holds 108 bytes
            return sock
        if self._sockdir is None:
            self._sockdir = Path(tempfile.mkdtemp(prefix="ak-qmp-"))
        return self._sockdir / "qmp.sock"

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("machine already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        sock = self._qmp_socket()
        sock.unlink(missing_ok=True)
        self.serial_log.write_bytes(b"")
        command = self.command
        log.debug("starting %s", " ".join(command))
        try:
            if self.interactive:
                self._process = subprocess.Popen(command)
            else:
                with self.qemu_log.open("wb") as out:
                    self._process = subprocess.Popen(
                        command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                    )
        except FileNotFoundError as e:
            raise ToolError(f"{self.config.binary}: not found (install QEMU)") from e
        self.started_at = time.monotonic()
        try:
            self._connect_qmp(sock)
        except BaseException:
            self.kill()
            raise

    def _connect_qmp(self, sock: Path, timeout: float = 30.0) -> None:
        from qemu.qmp import QMPClient

        self._loop = _LoopThread()

        async def connect() -> Any:
            client = QMPClient("appliancekit")
            await client.connect(str(sock))
            return client

        def attempt() -> Any:
            if not sock.exists():
                raise FileNotFoundError(sock)
            return self._loop.run(connect(), timeout=10)

        try:
            self._qmp = retry(attempt, timeout=timeout, interval=0.05, machine=self)
        except BootError as e:
            msg = f"QEMU exited during start-up: {self._qemu_stderr()}"
            raise BootError(msg, e.serial_tail) from None
        except Exception as e:
            raise BootError(f"no QMP connection on {sock} after {timeout:.0f}s: {e}") from e

    def _qemu_stderr(self) -> str:
        try:
            text = self.qemu_log.read_text(errors="replace").strip()
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-5:])

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """QEMU's process id while it runs (bench: its memory on the host)."""
        return self._process.pid if self.is_running() and self._process else None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for QEMU to exit (interactive runs); returns its exit status."""
        if self._process is None:
            raise RuntimeError("machine not started")
        return self._process.wait(timeout)

    def kill(self) -> None:
        """Stop QEMU now (SIGKILL) and release QMP, the loop thread and the socket directory."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        if self._loop is not None:
            if self._qmp is not None:
                with contextlib.suppress(Exception):
                    self._loop.run(self._qmp.disconnect(), timeout=5)
                self._qmp = None
            self._loop.close()
            self._loop = None
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    # -- QMP -----------------------------------------------------------------------------------

    def qmp(self, command: str, **args: object) -> object:
        """Run one QMP command and return its result (qemu.qmp.ExecuteError on QMP errors)."""
        if self._qmp is None or self._loop is None:
            raise RuntimeError("QMP is not connected")
        return self._loop.run(self._qmp.execute(command, args or None), timeout=30)

    def powerdown(self, timeout: float = 10.0) -> bool:
        """ACPI/PSCI power button; wait for the guest to power off, else quit / kill QEMU.

        Returns True if the guest shut down by itself within `timeout`.
        """
        if not self.is_running():
            return True
        with contextlib.suppress(Exception):
            self.qmp("system_powerdown")
        assert self._process is not None
        try:
            self._process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(Exception):
            self.qmp("quit")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(5)
        self.kill()
        return False

    # -- serial console ------------------------------------------------------------------------

    def serial_text(self) -> str:
        try:
            return self.serial_log.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _lines(self) -> list[str]:
        text = _ANSI.sub("", self.serial_text()).replace("\r", "")
        return text.rstrip("\n").splitlines()

    def tail(self, lines: int = 30) -> str:
        """The last lines of the serial log, without terminal escape codes."""
        return "\n".join(self._lines()[-lines:])

    def failure_tail(self, lines: int = 30) -> str:
        """The tail, preceded by any panic/oops lines a stack dump pushed out of it."""
        all_lines = self._lines()
        notable = [line for line in all_lines[:-lines] if _NOTABLE.search(line)][-3:]
        if notable:
            notable.append("[...]")
        return "\n".join(notable + all_lines[-lines:])

    def wait_for_serial(self, pattern: str | re.Pattern[str], timeout: float) -> float:
        """Wait until `pattern` shows up on the serial console; seconds since start.

        A str matches as a plain substring anywhere (firmware interleaves escape codes,
        so nothing is anchored to line starts); a compiled pattern is searched as a regex.
        """
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            if regex.search(self.serial_text()):
                return time.monotonic() - self.started_at
            if not self.is_running():
                # QEMU may have flushed the last lines just before exiting.
                if regex.search(self.serial_text()):
                    return time.monotonic() - self.started_at
                raise BootError(
                    f"QEMU exited (status {self.returncode}) before the serial console "
                    f"showed {regex.pattern!r}",
                    self.failure_tail(),
                )
            if time.monotonic() >= deadline:
                raise BootError(
                    f"timed out after {timeout:.0f}s waiting for {regex.pattern!r} "
                    "on the serial console",
                    self.failure_tail(),
                )
            time.sleep(0.05)


def retry(
    fn: Callable[[], T],
    timeout: float,
    interval: float = 0.5,
    machine: Machine | None = None,
) -> T:
    """Call `fn` until it returns without raising; return its value.

    `fn` signals "not yet" by raising any Exception. After `timeout` seconds the last
    exception is raised again (always at least one attempt). If `machine` is given and its
    QEMU has exited, BootError is raised at once with the serial tail.
    """
    deadline = time.monotonic() + timeout
    while True:
        if machine is not None and not machine.is_running():
            raise BootError(f"QEMU exited (status {machine.returncode})", machine.failure_tail())
        try:
            return fn()
        except BootError:
            raise
        except Exception:
            if time.monotonic() + interval > deadline:
                raise
        time.sleep(interval)
