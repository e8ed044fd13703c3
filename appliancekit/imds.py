"""A small EC2 instance metadata service (IMDSv2) for boot tests: per-instance user-data.

EC2 hands an instance its user-data at http://169.254.169.254/latest/user-data, and with
IMDSv2 only to a caller holding a session token from `PUT /latest/api/token` (header
`X-aws-ec2-metadata-token-ttl-seconds`), sent back as `X-aws-ec2-metadata-token`. The
appliance's initramfs does exactly that (busybox nc) when its kernel command line carries
`ak.userdata=imds`, and reads the user-data as settings.env lines (NAME=VALUE), ahead of the
boot partition's settings. User-data for an image is made (and checked as `flash` checks
settings) by devsettings.render_user_data, behind `appliancekit user-data`.

The boot test runs `ImdsServer` on 127.0.0.1 and points QEMU's user-mode network at it:
libslirp forwards guest connections only to addresses inside the guest network, so the
guest network becomes 169.254.0.0/16 and each connection to 169.254.169.254:80 runs
`python -m appliancekit.imds relay 127.0.0.1 PORT`, which pipes it to the server.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDRESS = "169.254.169.254"
GUEST_NETWORK = "169.254.0.0/16"
TOKEN_PATH = "/latest/api/token"
USER_DATA_PATH = "/latest/user-data"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass  # requests are recorded in ImdsServer.requests instead

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.server.owner._record(Request(self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path != TOKEN_PATH:
            self._reply(404)
            return
        ttl = self.headers.get(TTL_HEADER, "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            self._reply(400)  # as EC2: the TTL header is mandatory, 1..21600 seconds
            return
        self._reply(200, self.server.owner.token.encode())

    def do_GET(self) -> None:  # noqa: N802
        if self.headers.get(TOKEN_HEADER) != self.server.owner.token:
            self._reply(401)  # IMDSv2 only: no token, no metadata
            return
        if self.path != USER_DATA_PATH or self.server.owner.user_data is None:
            self._reply(404)
            return
        self._reply(200, self.server.owner.user_data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ImdsServer


class ImdsServer:
    """IMDSv2 user-data on 127.0.0.1:PORT, in a thread. Use as a context manager."""

    def __init__(self, user_data: bytes | None) -> None:
        self.user_data = user_data
        self.token = secrets.token_urlsafe(24)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="appliancekit-imds", daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def served_user_data(self) -> bool:
        """True once a caller holding a token was given the user-data."""
        with self._lock:
            return any(r.path == USER_DATA_PATH and r.status == 200 for r in self.requests)

    def netdev_options(self, python: str = sys.executable) -> tuple[str, ...]:
        """QEMU `-netdev user` options that put this server at 169.254.169.254:80."""
        relay = f"{python} -m appliancekit.imds relay 127.0.0.1 {self.port}".replace(",", ",,")
        return (f"net={GUEST_NETWORK}", f"guestfwd=tcp:{ADDRESS}:80-cmd:{relay}")

    def __enter__(self) -> ImdsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def relay(host: str, port: int) -> int:
    """Pipe stdin/stdout (one guest connection, from QEMU's guestfwd) to host:port."""
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.settimeout(None)
        inputs = [0, conn.fileno()]
        while inputs:
            readable, _, _ = select.select(inputs, [], [], 30)
            if not readable:
                return 1
            if 0 in readable:
                data = os.read(0, 65536)
                if data:
                    conn.sendall(data)
                else:
                    conn.shutdown(socket.SHUT_WR)  # the guest finished its request
                    inputs.remove(0)
            if conn.fileno() in readable:
                data = conn.recv(65536)
                if not data:
                    return 0
                os.write(1, data)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "relay":
        # stderr is the guest's connection too: nothing may be printed there
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            return relay(argv[1], int(argv[2]))
        except OSError:
            return 1
    print("usage: python -m appliancekit.imds relay HOST PORT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
