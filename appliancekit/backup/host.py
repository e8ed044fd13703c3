"""restic and restic's REST server on the build host, for tests and benchmarks: the same
Debian packages the appliances run (trixie's, for the host's architecture), taken from the
recipes' locks, fetched and verified like any build input, never the host's own (bookworm's
restic is older and has no REST server package)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.errors import ToolError, UserError
from appliancekit.hostcmd import stop
from appliancekit.qemu import free_port
from appliancekit.sources.debian import FetchedDeb
from appliancekit.sources.debian_lock import LockedSource, read_lock
from appliancekit.sources.unpack import unpack

SUITE = "trixie"


@dataclass(frozen=True)
class HostTools:
    restic: Path
    rest_server: Path

    def run_restic(
        self, repository: str, password: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """restic ARGS against `repository`; the secrets go by environment, never argv."""
        full = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "RESTIC_REPOSITORY": repository,
            "RESTIC_PASSWORD": password,
            "RESTIC_CACHE_DIR": str(self.restic.parent.parent / "restic-cache-unused"),
            **(env or {}),
        }
        return subprocess.run(
            [str(self.restic), "--no-cache", *args],
            capture_output=True,
            text=True,
            env=full,
            check=False,
        )


def host_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def host_tools(recipes_dir: Path, cache: Cache) -> HostTools:
    arch = host_arch()
    found: dict[str, Path] = {}
    wanted = {"restic": "/usr/bin/restic", "restic-rest-server": "/usr/bin/restic-rest-server"}
    for lock_file in sorted(recipes_dir.glob(f"*/debian-{SUITE}-{arch}.lock")):
        lock = read_lock(lock_file)
        source = LockedSource(lock, lock_file, cache, arch)
        for (name, _), package in lock.by_key().items():
            if name in wanted and name not in found:
                (fetched,) = source.fetch([package])
                unpacked = unpack(cache, FetchedDeb(package, fetched.path))
                found[name] = unpacked.host_path(wanted[name])
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise UserError(f"no recipe lock for {SUITE}/{arch} holds {', '.join(missing)}")
    return HostTools(found["restic"], found["restic-rest-server"])


@contextlib.contextmanager
def rest_server(
    tools: HostTools,
    data: Path,
    *,
    htpasswd: str | None = None,
    port: int | None = None,
    metrics: bool = False,
) -> Iterator[int]:
    """restic-rest-server on 127.0.0.1:`port` (default: a free one) serving `data`: without
    authentication, or with `htpasswd` (NAME:BCRYPT lines) and private repositories; with
    `metrics`, its Prometheus counters on /metrics (`bytes_written`). Yields the port; a
    guest under QEMU's user network reaches it at 10.0.2.2:PORT."""
    data.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [str(tools.rest_server), "--path", str(data), "--listen", f"127.0.0.1:{port}"]
    if metrics:
        args += ["--prometheus", "--prometheus-no-auth"]
    if htpasswd is None:
        args.append("--no-auth")
    else:
        (data / ".htpasswd").write_text(htpasswd)
        args.append("--private-repos")
    log = open(data.parent / f"rest-server-{port}.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise ToolError(f"restic-rest-server did not start (see {log.name})")
            time.sleep(0.1)
        yield port
    finally:
        stop(process)
        log.close()


def bytes_written(port: int) -> int:
    """Bytes of files the REST server on `port` has been sent so far (all repositories): its
    rest_server_blob_write_bytes_total counters (a server started with metrics=True)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("rest_server_blob_write_bytes_total"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)
