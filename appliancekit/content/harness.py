"""One booted appliance whose content comes from a git server on the host: what the content
boot test and the content benchmark share. QEMU's user network puts the host's loopback at
10.0.2.2 for the guest, so a GitHttpServer on 127.0.0.1 is the repository the device pulls.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from appliancekit.board import Board
from appliancekit.boottest import FATAL, HANDOVER, qemu_config
from appliancekit.flash import write_device_settings
from appliancekit.manifest import Manifest
from appliancekit.probes.runner import forwards_for
from appliancekit.qemu import Machine
from appliancekit.usernet import DEFAULT_HOST_ADDRESS

GUEST_HOST_ADDRESS = DEFAULT_HOST_ADDRESS  # the host, as QEMU's user network shows it


class ContentMachine:
    """`image_dir` copied, `settings` written into its settings.env, booted (the web port
    forwarded: 443, as the homepage serves its site over HTTPS and redirects port 80 there).
    Use as a context manager; QEMU is killed on exit."""

    def __init__(
        self,
        image_dir: Path,
        manifest: Manifest,
        board: Board,
        settings: dict[str, str],
        workdir: Path,
        port: int = 443,
        tls: bool = True,
    ) -> None:
        self.scheme = "https" if tls else "http"
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        disk = self.workdir / "disk.img"
        subprocess.run(
            ["cp", "--sparse=always", str(image_dir / manifest.disk.path), str(disk)], check=True
        )
        write_device_settings(disk, manifest, settings)
        forwards = forwards_for((), (port,))
        self.host_port = forwards[0].host_port
        config = qemu_config(board, disk, manifest, self.workdir, forwards, snapshot=False)
        self.machine = Machine(config, self.workdir / "qemu")
        self._stack = ExitStack()

    def __enter__(self) -> ContentMachine:
        self._stack.enter_context(self.machine)
        self.machine.start()
        self.machine.wait_for_serial(HANDOVER, 600)  # cubieboard under TCG on a loaded machine
        if FATAL.search(self.machine.serial_text()):
            raise AssertionError("boot failed:\n" + self.machine.failure_tail())
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def get(self, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
        """(status, body) of GET path on the guest's port; (0, error) if no answer."""
        url = f"{self.scheme}://127.0.0.1:{self.host_port}{path}"
        # the content is under test here, not the certificate (self-signed until ACME)
        context = ssl._create_unverified_context() if self.scheme == "https" else None
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except (OSError, urllib.error.URLError) as exc:
            return 0, str(exc)

    def wait_for_body(self, needle: str, timeout: float, path: str = "/") -> float:
        """Poll until GET path answers 200 with `needle` in it; the time it took."""
        start = time.monotonic()
        deadline = start + timeout
        last: tuple[int, str] = (0, "")
        while time.monotonic() < deadline:
            last = self.get(path)
            if last[0] == 200 and needle in last[1]:
                return time.monotonic() - start
            if not self.machine.is_running():
                break
            time.sleep(0.2)
        raise AssertionError(
            f"GET {path} never showed {needle!r} in {timeout:.0f}s (last: {last[0]}"
            f" {last[1][:80]!r})\n{self.machine.tail(20)}"
        )

    def serial(self) -> str:
        return self.machine.serial_text()

    def wait_for_serial(self, pattern: str, timeout: float) -> str:
        """Wait for a console line matching `pattern` (a regex); return the line."""
        regex = re.compile(pattern)
        self.machine.wait_for_serial(regex, timeout)
        match = regex.search(self.serial())
        assert match is not None
        line_start = self.serial().rfind("\n", 0, match.start()) + 1
        line_end = self.serial().find("\n", match.end())
        return self.serial()[line_start : line_end if line_end >= 0 else None]
