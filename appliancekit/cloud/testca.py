"""A test ACME CA for `cloud test`: Debian's pebble on the host, reached by the members.

The members' first NIC is QEMU user-mode networking, where the host's loopback answers as
10.0.2.2 (169.254.2.2 on EC2 boards, whose guest network is the metadata service's:
`usernet.py`), so pebble listens on 127.0.0.1 and each member's acme_url is
https://HOST:PORT/dir with its board's HOST. Pebble's HTTPS certificate names every such
address; it is made here by a throw-away CA whose root is the members' acme_ca (the
per-device root they trust for the ACME server). Pebble checks DNS-01 challenges at the
cloud's DNS member (-dnsserver: the DNS member's forwarded port), so every certificate it
issues was proven through the cloud's own PowerDNS.

Certificates live `lifetime` seconds: one day and RENEW_AFTER seconds, and members renew
when less than one day is left (acme_renew_days = 1), so the renewal comes RENEW_AFTER
seconds after each issue, decided by the appliance's own expiry check as in production (30
days before a 90-day certificate ends), only sooner. Pebble forgets its state when stopped.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliancekit.board import Board
from appliancekit.errors import ToolError
from appliancekit.hostcmd import run, stop
from appliancekit.usernet import HOST_ADDRESSES, host_address

DAY = 86400
RENEW_AFTER = 90  # seconds from an issue to the renewal the members' expiry check makes
CHECK_EVERY = 15  # the members' acme_check_every: how late after RENEW_AFTER they notice


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TestCA:
    """Pebble's addresses and roots, fixed before the members boot."""

    workdir: Path
    acme_port: int
    management_port: int
    listener_root_pem: str  # the root of pebble's own HTTPS certificate
    lifetime: int = DAY + RENEW_AFTER

    def directory(self, board: Board) -> str:
        """The ACME directory as a member on `board` reaches it."""
        return f"https://{host_address(board)}:{self.acme_port}/dir"

    def member_settings(self, board: Board) -> dict[str, str]:
        """Per-device settings for an ACME member on `board`: this CA instead of Let's
        Encrypt."""
        body = "".join(
            line for line in self.listener_root_pem.splitlines() if not line.startswith("-----")
        )
        return {
            "acme_url": self.directory(board),
            "acme_ca": body,
            "acme_renew_days": "1",
            "acme_check_every": str(CHECK_EVERY),
        }

    def issuing_roots(self) -> str:
        """Pebble's issuing root (PEM), from its management interface: a chain a member
        serves must verify against this (made anew each time pebble starts)."""
        context = ssl.create_default_context(cadata=self.listener_root_pem)
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return response.read().decode()


def _listener_certificate(directory: Path) -> str:
    """A root and pebble's HTTPS certificate (for every address a guest may reach the host
    at, and 127.0.0.1) signed by it."""
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "pebble.key", directory / "pebble.csr", directory / "pebble.pem"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(
        ["openssl", "req", "-x509", *ec, "-days", "7", "-subj", "/CN=appliancekit test ACME root"]
        + ["-keyout", str(ca_key), "-out", str(ca)]
        + ["-addext", "basicConstraints=critical,CA:TRUE"]
        + ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    )
    run(["openssl", "req", *ec, "-subj", "/CN=pebble", "-keyout", str(key), "-out", str(csr)])
    ext = directory / "san.ext"
    guests = "".join(f"IP:{address}," for address in HOST_ADDRESSES)
    ext.write_text(f"subjectAltName={guests}IP:127.0.0.1,DNS:localhost\n")
    run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key)]
        + ["-CAcreateserial", "-days", "7", "-out", str(cert), "-extfile", str(ext)]
    )
    return ca.read_text()


def prepare(workdir: Path) -> TestCA:
    """Ports and certificates, before the members' cards are written."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = _listener_certificate(workdir)
    return TestCA(workdir, free_port(), free_port(), root)


@contextmanager
def pebble(ca: TestCA, dns_port: int, *, timeout: float = 180.0) -> Iterator[TestCA]:
    """Run pebble for `ca`, validating at 127.0.0.1:dns_port; stopped when the block ends."""
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{ca.acme_port}",
            "managementListenAddress": f"127.0.0.1:{ca.management_port}",
            "certificate": str(ca.workdir / "pebble.pem"),
            "privateKey": str(ca.workdir / "pebble.key"),
            # http-01 and tls-alpn-01 are not offered to members here: DNS-01 only
            "httpPort": free_port(),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": ca.lifetime,
        }
    }
    path = ca.workdir / "pebble.json"
    path.write_text(json.dumps(config))
    env = {
        **os.environ,
        "PEBBLE_VA_NOSLEEP": "1",  # validate at once, not after 0-15 s
        "PEBBLE_AUTHZREUSE": "0",  # a renewal proves control again
        "PEBBLE_WFE_NONCEREJECT": "0",
    }
    log = open(ca.workdir / "pebble.log", "wb")  # noqa: SIM115 - closed below
    try:
        process = subprocess.Popen(
            ["pebble", "-config", str(path), "-dnsserver", f"127.0.0.1:{dns_port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    except FileNotFoundError:
        log.close()
        raise ToolError("pebble is not installed (scripts/setup-host.sh installs it)") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                ca.issuing_roots()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (ca.workdir / "pebble.log").read_text(errors="replace")[-500:]
                    raise ToolError(f"pebble did not start: {tail}") from None
                time.sleep(0.2)
        yield ca
    finally:
        stop(process)
        log.close()
