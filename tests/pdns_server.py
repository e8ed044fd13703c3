"""A real PowerDNS Authoritative server (Debian's pdns-server, sqlite3 backend) on loopback,
started and stopped by the test that needs it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliancekit.hostcmd import stop

SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class HostPowerDNS:
    api_url: str
    api_key: str
    dns_port: int
    key_file: Path


def available() -> bool:
    return shutil.which("pdns_server") is not None and SCHEMA.exists()


@contextmanager
def powerdns(workdir: Path, api_key: str = "appliancekit-test-key") -> Iterator[HostPowerDNS]:
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "pdns.sqlite3"
    subprocess.run(["sqlite3", str(db)], input=SCHEMA.read_text(), text=True, check=True)
    api_port, dns_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    (workdir / "pdns.conf").write_text(
        f"""launch=gsqlite3
gsqlite3-database={db}
local-address=127.0.0.1
local-port={dns_port}
socket-dir={workdir}
guardian=no
daemon=no
setuid=
setgid=
disable-syslog=yes
write-pid=no
security-poll-suffix=
api=yes
api-key={api_key}
webserver=yes
webserver-address=127.0.0.1
webserver-port={api_port}
webserver-allow-from=127.0.0.0/8
default-soa-content=ns1.@ hostmaster.@ 0 10800 3600 604800 3600
"""
    )
    key_file = workdir / "api-key"
    key_file.write_text(api_key + "\n")
    log = (workdir / "pdns.log").open("wb")
    process = subprocess.Popen(
        ["pdns_server", f"--config-dir={workdir}"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", api_port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((workdir / "pdns.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield HostPowerDNS(f"http://127.0.0.1:{api_port}", api_key, dns_port, key_file)
    finally:
        stop(process)
        log.close()
