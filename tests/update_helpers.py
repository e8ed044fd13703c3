"""Helpers for update tests on any board (issue 12): releases built and published into a
signed deploy repository, an HTTP server for that repository on the test's QEMU network
(with byte ranges, throttling, a kill switch and an "unreachable" switch), and a machine
that reboots like hardware and can be killed at a chosen point.

The guest reaches the host's loopback as 10.0.2.2 (QEMU user networking), so the server
listens on 127.0.0.1 and the appliances get update_url=http://10.0.2.2:PORT.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from appliancekit.board import Board, BootPath, find_board
from appliancekit.boottest import qemu_config, with_test_settings
from appliancekit.build import BuildPlan, BuildResult, build
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.digest import sha256_file
from appliancekit.flash import write_device_settings
from appliancekit.manifest import Manifest, load_manifest
from appliancekit.output import Reporter
from appliancekit.project import Project
from appliancekit.publish.git import publish_git
from appliancekit.publish.image import read_sha256sums, sha256sums_text
from appliancekit.publish.update import UPDATE_JSON
from appliancekit.qemu import Machine, PortForward, free_port
from appliancekit.recipe import find_recipe, resolve_settings
from appliancekit.release.signing import KeyPair, keygen, public_key_line, sign
from appliancekit.usernet import DEFAULT_HOST_ADDRESS
from tests import pi_firmware

GUEST_HOST = DEFAULT_HOST_ADDRESS  # the update tests boot every board without IMDS


# --- releases -------------------------------------------------------------------------


def build_release(
    project: Project,
    recipe: str,
    board: str,
    images: Path,
    key: KeyPair,
    settings: dict[str, str] | None = None,
    recipes_dir: Path | None = None,
) -> BuildResult:
    """A release of `recipe` for `board` that trusts `key` for its updates."""
    found = find_recipe(recipe, recipes_dir or project.recipes_dir)
    plan = BuildPlan(
        found,
        find_board(board, project.boards_dir),
        resolve_settings(found, settings or {}),
        images,
        update_key=public_key_line(key.public),
    )
    return build(plan, Cache(default_cache_dir()), Reporter())


def site_copy(source: Path, dest: Path, marker: str, mtime: float) -> Path:
    """A copy of a static site whose index.html says `marker`, every file stamped `mtime`
    (the source date, hence the release version, follows the newest file)."""
    shutil.copytree(source, dest)
    index = dest / "index.html"
    index.write_text(index.read_text().replace("</body>", f"<p>{marker}</p></body>"))
    for path in [dest, *dest.rglob("*")]:
        os.utime(path, (mtime, mtime))
    return dest


def recipe_copy(project: Project, recipe: str, dest_root: Path, edit: Callable[[str], str]) -> Path:
    """recipes/RECIPE copied under dest_root (same name) with recipe.toml edited: a release
    that differs in behaviour, e.g. a service that crashes at start."""
    dest = dest_root / recipe
    shutil.copytree(project.recipes_dir / recipe, dest)
    toml = dest / "recipe.toml"
    toml.write_text(edit(toml.read_text()))
    return dest_root


V2_MARKER = "release-two"  # what v2's page says


def homepage_v1_v2(
    project: Project, board: str, work: Path, key: KeyPair, now: float
) -> tuple[BuildResult, BuildResult]:
    """The first two homepage releases: v1 (the stock site) and v2 (its page says
    V2_MARKER), built under `work`. The update tests and bench/update.py publish them."""
    site = project.recipes_dir / "homepage" / "site"
    v1 = build_release(project, "homepage", board, work / "images" / "v1", key)
    v2 = build_release(
        project,
        "homepage",
        board,
        work / "images" / "v2",
        key,
        {"site": str(site_copy(site, work / "site2", V2_MARKER, now))},
    )
    return v1, v2


def homepage_releases(
    project: Project, board: str, work: Path, key: KeyPair
) -> tuple[BuildResult, BuildResult, BuildResult]:
    """The three homepage releases the update tests publish, each newer than the last: v1 and
    v2 (homepage_v1_v2), and v3 (says "release-three", but nginx refuses its configuration,
    so its service crashes at start)."""
    images = work / "images"
    now = time.time()
    site = project.recipes_dir / "homepage" / "site"
    v1, v2 = homepage_v1_v2(project, board, work, key, now)
    broken = recipe_copy(
        project,
        "homepage",
        work / "recipes3",
        lambda text: text.replace('"daemon off;"', '"daemon off; no_such_directive on;"'),
    )
    v3 = build_release(
        project,
        "homepage",
        board,
        images / "v3",
        key,
        {"site": str(site_copy(site, work / "site3", "release-three", now + 60))},
        recipes_dir=broken,
    )
    return v1, v2, v3


def make_deploy_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def publish(image_dir: Path, repo: Path, key: KeyPair) -> Path:
    """`publish --to git --sign`: the release directory RECIPE/BOARD in the repository."""
    result = publish_git(image_dir, repo, sign_key=key.secret, max_artifact_bytes=0)
    return repo / result.directory


def resign(release_dir: Path, key: Path) -> None:
    """SHA256SUMS recomputed for every file it lists, then signed with `key`."""
    sums_file = release_dir / "SHA256SUMS"
    sums = read_sha256sums(sums_file)
    sums = {name: sha256_file(release_dir / name) for name in sums if (release_dir / name).exists()}
    sums_file.write_text(sha256sums_text(sums))
    sign(sums_file, key)


def make_unsigned(release_dir: Path) -> None:
    (release_dir / "SHA256SUMS.minisig").unlink()


def make_wrongly_signed(release_dir: Path, other: KeyPair) -> None:
    sign(release_dir / "SHA256SUMS", other.secret)


def make_wrong_board(release_dir: Path, key: KeyPair, board: str) -> None:
    """A correctly signed release that names another board."""
    doc = release_dir / UPDATE_JSON
    doc.write_text(re.sub(r'"board": "[^"]*"', f'"board": "{board}"', doc.read_text()))
    resign(release_dir, key.secret)


def make_truncated(release_dir: Path) -> None:
    """The root artefact cut short behind a signature that still names the full one."""
    root = release_dir / "update" / "root.img"
    os.truncate(root, root.stat().st_size // 3)


def new_key(directory: Path) -> KeyPair:
    return keygen(directory)


# What the agent's status line says of each damaged release (issue 12 §5's list).
TAMPER_REFUSALS = {
    "unsigned": "refused: the release is not signed",
    "wrongly signed": "refused: signature does not verify",
    "wrong board": 'refused: release is for board "{board}"',
    "truncated": r"release \d+ not written \(will resume\)",
}


def publish_tampered(
    image_dir: Path, repo: Path, key: KeyPair, other_key: KeyPair, tamper: str, board: str
) -> str:
    """Publish `image_dir` signed, damage it as `tamper` (a TAMPER_REFUSALS key; "wrong
    board" names `board`), and return the refusal the agent must report."""
    release = publish(image_dir, repo, key)
    if tamper == "unsigned":
        make_unsigned(release)
    elif tamper == "wrongly signed":
        make_wrongly_signed(release, other_key)
    elif tamper == "wrong board":
        make_wrong_board(release, key, board)
    else:
        make_truncated(release)
    return TAMPER_REFUSALS[tamper].format(board=board)


# --- the deploy repository over HTTP ----------------------------------------------------


class DeployServer:
    """Serves a directory over HTTP/1.1 with byte ranges on 127.0.0.1. `throttle` slows
    range answers (bytes per second) so a test can kill a machine mid-download; `on_range`
    is called with (path, bytes sent so far) while a range streams; `reachable = False`
    answers nothing (connections are reset)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.throttle: float | None = None
        self.on_range: Callable[[str, int], None] | None = None
        self.reachable = True
        self.sent = 0  # body bytes sent
        self.requests: list[tuple[str, str]] = []  # (path, Range header)
        self.port = free_port()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if not server.reachable:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                rel = self.path.split("?", 1)[0].lstrip("/")
                path = (server.root / rel).resolve()
                if server.root.resolve() not in path.parents or not path.is_file():
                    self.send_error(404)
                    return
                size = path.stat().st_size
                header = self.headers.get("Range", "")
                server.requests.append((rel, header))
                start, end = 0, size
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", header)
                if match:
                    start = int(match.group(1))
                    end = min(size, int(match.group(2)) + 1) if match.group(2) else size
                    if start >= size:
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end - start))
                self.end_headers()
                with open(path, "rb") as f:
                    f.seek(start)
                    left = end - start
                    sent = 0
                    while left:
                        if match and server.on_range is not None:
                            server.on_range(rel, sent)  # before each piece: 0 = none yet
                        piece = f.read(min(left, 16 << 10))
                        try:
                            self.wfile.write(piece)
                        except OSError:
                            return
                        left -= len(piece)
                        sent += len(piece)
                        server.sent += len(piece)
                        if match and server.throttle:
                            time.sleep(len(piece) / server.throttle)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def guest_url(self) -> str:
        return f"http://{GUEST_HOST}:{self.port}"

    def __enter__(self) -> DeployServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- power cuts at chosen points of an update ---------------------------------------------

# A boot file's `.new` is held open this long before the cut, so the guest's writeback
# (dirty_expire 30 s, the flusher every 5 s) has put the half-written file on the FAT.
BOOT_FILE_HOLD = 36.0


class PowerCut:
    """Pulls the machine's power from inside the deploy server's answer to a range request:
    "downloading" before the root's first byte is sent, "writing the root" once part of it
    has been sent and written into the inactive slot, "writing a boot file" while a boot
    file's NAME.new is open on the boot partition (held BOOT_FILE_HOLD first)."""

    STAGES = ("downloading", "writing the root", "writing a boot file")

    def __init__(self, machine: UpdateMachine, server: DeployServer) -> None:
        self.machine = machine
        self.server = server
        self.done: list[str] = []

    def arm(self, stage: str) -> None:
        assert stage in self.STAGES, stage
        self.server.on_range = lambda path, sent: self._maybe_cut(stage, path, sent)

    def _maybe_cut(self, stage: str, path: str, sent: int) -> None:
        if stage in self.done or self.machine.machine is None:
            return
        if stage == "writing a boot file":
            if "/update/boot/" not in path:
                return
            self.done.append(stage)
            time.sleep(BOOT_FILE_HOLD)
        else:
            if not path.endswith("/update/root.img") or sent < (stage == "writing the root"):
                return
            self.done.append(stage)
            if stage == "writing the root":
                time.sleep(1.0)  # what was sent is being written to the slot
        self.machine.kill()

    def wait(self, stage: str, timeout: float) -> None:
        """Until the cut at `stage` has happened and QEMU is gone."""
        deadline = time.monotonic() + timeout
        while stage not in self.done and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stage in self.done, f"never cut while {stage}:\n{self.machine.serial()[-3000:]}"
        while self.machine.machine is not None:
            time.sleep(0.1)
        self.server.on_range = None


def cut_power_at_every_stage(
    m: UpdateMachine,
    server: DeployServer,
    publish_v3: Callable[[], None],
    slot_a_boot_files: Callable[[], list[str]],
    lap: Callable[[str], None],
    boot_timeout: float,
) -> None:
    """With v2 serving from slot b: v3 is published (`publish_v3`) and the power is cut at
    each PowerCut stage in turn; after each, the machine is started again and must boot
    slot b and serve v2. After the boot-file cut, `slot_a_boot_files()` (the names on slot
    a's boot directory or partition, read from the disk) must show the half-written
    NAME.new. v3 is left to be written at last by the next boot's agent."""
    cut = PowerCut(m, server)
    server.throttle = 64 << 10  # slow enough to be caught in the act
    for stage in PowerCut.STAGES:
        cut.arm(stage)
        if stage == "downloading":
            publish_v3()
        elif stage == "writing a boot file":
            server.throttle = None  # the cut waits in the boot file's range answer
        cut.wait(stage, 2 * boot_timeout)
        if stage == "writing a boot file":
            left = slot_a_boot_files()
            assert any(n.endswith(".new") for n in left), left
        since = m.mark()
        m.start()
        m.wait_for(r"appliancekit: slot b \(root hash", since, boot_timeout)
        m.wait_serving(V2_MARKER, boot_timeout)
        lap(f"cut while {stage}, v2 serving again")
    server.throttle = None


class Laps:
    """Seconds since a scenario started, printed as each step ends (pytest -s)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.laps: list[str] = []

    def __call__(self, what: str) -> None:
        self.laps.append(f"{what}: {time.monotonic() - self.started:.0f} s")
        print(f"{self.label}: {self.laps[-1]}")

    def summary(self) -> str:
        return f"{self.label}: " + "; ".join(self.laps)


# --- a machine that reboots like hardware ------------------------------------------------


class UpdateMachine:
    """One appliance on a writable copy of its disk: QEMU restarts the guest on reboot and
    watchdog resets (no -no-reboot), the serial log accumulates over every boot and every
    QEMU process (kill() and start() again = a power cut), and port 80 (or others, and UDP
    ones: `udp_ports`) is forwarded to the host. On rpi4 each boot is a QEMU process of its
    own, started by the Pi firmware stand-in (tests/pi_firmware.py) when the last one ends."""

    def __init__(
        self,
        image_dir: Path,
        board: Board,
        workdir: Path,
        settings: dict[str, str],
        guest_ports: tuple[int, ...] = (80, 443),
        udp_ports: tuple[int, ...] = (),
    ) -> None:
        self.manifest: Manifest = load_manifest(image_dir)
        self.board = board
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.disk = workdir / "disk.img"
        subprocess.run(
            ["cp", "--sparse=always", str(image_dir / self.manifest.disk.path), str(self.disk)],
            check=True,
        )
        os.truncate(self.disk, max(self.disk.stat().st_size, 512 << 20))
        with_test_settings(self.disk, self.manifest, workdir, in_place=True)
        write_device_settings(self.disk, self.manifest, settings)
        self.ports = {port: free_port() for port in guest_ports}
        self.udp_ports = {port: free_port() for port in udp_ports}
        self.log = workdir / "serial-all.log"
        self.log.write_text("")
        self.machine: Machine | None = None
        self.runs = 0
        self.firmware_reboots = board.boot == BootPath.RPI
        self.tryboots = 0  # rpi: boots the firmware stand-in started with the tryboot flag
        self._power = threading.Lock()
        self._powered = False
        if self.firmware_reboots:
            threading.Thread(target=self._follow_reboots, daemon=True).start()

    def start(self, *, tryboot_flag: bool = False) -> None:
        with self._power:
            self._start(tryboot_flag)
            self._powered = True

    def _start(self, tryboot_flag: bool) -> None:
        forwards = tuple(PortForward(g, h) for g, h in self.ports.items()) + tuple(
            PortForward(g, h, "udp") for g, h in self.udp_ports.items()
        )
        (self.workdir / "boot").mkdir(exist_ok=True)
        self.runs += 1
        run_dir = self.workdir / f"run{self.runs}"
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.firmware_reboots:
            config = pi_firmware.boot_config(
                self.board,
                self.disk,
                self.manifest,
                self.workdir / "boot",
                run_dir,
                forwards,
                tryboot_flag=tryboot_flag,
            )
            self.tryboots += tryboot_flag
        else:
            config = qemu_config(
                self.board, self.disk, self.manifest, self.workdir / "boot", forwards,
                snapshot=False,
            )
            config = replace(config, guest_reboots=True)
        self.machine = Machine(config, run_dir)
        self.machine.start()

    def _follow_reboots(self) -> None:
        """rpi: when a boot ends by itself (a reboot, a panic's reset), start the next the
        way the firmware would, with the flag only if that boot asked for it."""
        while True:
            time.sleep(0.2)
            with self._power:
                machine = self.machine
                if not self._powered or machine is None or machine.is_running():
                    continue
                with self.log.open("a") as out:
                    out.write(machine.serial_text())
                self.machine = None
                self._start(pi_firmware.tryboot_requested(machine.workdir))

    def serial(self) -> str:
        """Everything every QEMU run of this machine printed, in order."""
        with self._power:  # not while a finished boot's output moves into the log
            current = self.machine.serial_text() if self.machine else ""
            return self.log.read_text(errors="replace") + current

    def mark(self) -> int:
        return len(self.serial())

    def agent_result(self, pattern: str, since: int, timeout: float) -> str:
        """The agent's console status line (after `since`) whose last result matches.

        Only a whole line counts: the serial log is read while the guest writes it, and a
        line matched before its newline arrived would be cut short.
        """
        found = self.wait_for(
            rf"ak-update: status: [^\n]*?: ({pattern})[^\r\n]*\r?\n", since, timeout
        )
        return found.group(0).rstrip()

    def wait_for(self, pattern: str, since: int, timeout: float) -> re.Match[str]:
        """Wait for a regex on the serial console after offset `since`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.serial(), since)
            if found:
                return found
            if (
                self.machine is not None
                and not self.machine.is_running()
                and not self.firmware_reboots
            ):
                raise AssertionError(
                    f"QEMU exited waiting for {pattern!r}:\n{self.serial()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in {timeout:.0f} s:\n{self.serial()[-4000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """Pull the power: SIGKILL QEMU, keep its serial output."""
        with self._power:
            self._powered = False
            if self.machine is not None:
                self.machine.kill()
                with self.log.open("a") as out:
                    out.write(self.machine.serial_text())
                self.machine = None

    def http_get(self, path: str = "/", port: int = 443, timeout: float = 10.0) -> str:
        """GET path; port 443 over HTTPS (the homepage redirects port 80 there), unverified:
        its certificate is self-signed, and the update is under test, not TLS."""
        import ssl
        import urllib.request

        scheme = "https" if port == 443 else "http"
        url = f"{scheme}://127.0.0.1:{self.ports[port]}{path}"
        context = ssl._create_unverified_context() if scheme == "https" else None
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.read().decode(errors="replace")

    def wait_serving(self, marker: str, timeout: float, path: str = "/") -> float:
        """Poll HTTP until the page holds `marker`; returns when (monotonic)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                body = self.http_get(path, timeout=5)
                if marker in body:
                    return time.monotonic()
                last = body[-200:]
            except OSError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise AssertionError(
            f"not serving {marker!r} after {timeout:.0f} s ({last})\n{self.serial()[-3000:]}"
        )
