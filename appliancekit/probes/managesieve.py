"""ManageSieve probe (RFC 5804): STARTTLS, AUTHENTICATE PLAIN, upload and activate a script."""

from __future__ import annotations

import contextlib
import socket

from appliancekit.probes._common import credentials, short, tls_context
from appliancekit.probes.runner import ProbeFailed, probe_kind
from appliancekit.recipe import Probe


class _ManageSieve:
    """Just enough of ManageSieve (RFC 5804) for a probe: line responses, literals."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.buffer = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ProbeFailed("ManageSieve server closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def response(self) -> tuple[str, str]:
        """Read up to the tagless OK/NO/BYE line; return (status, all text read)."""
        lines = []
        while True:
            line = self._line()
            if line.endswith(b"}") and b"{" in line:  # a literal {N} follows
                size = int(line.rsplit(b"{", 1)[1].rstrip(b"+}"))
                while len(self.buffer) < size:
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        raise ProbeFailed("ManageSieve server closed the connection")
                    self.buffer += chunk
                line += self.buffer[:size]
                self.buffer = self.buffer[size:]
            lines.append(line.decode("utf-8", errors="replace"))
            status = lines[-1].split(" ", 1)[0].upper()
            if status in ("OK", "NO", "BYE"):
                return status, "\n".join(lines)

    def command(self, text: str, payload: bytes = b"") -> str:
        self.sock.sendall(text.encode() + b"\r\n" + payload)
        status, answer = self.response()
        if status != "OK":
            raise ProbeFailed(f"ManageSieve {text.split(' ', 1)[0]}: {short(answer)}")
        return answer


def _managesieve_describe(probe: Probe) -> str:
    return f"script {probe.param('script_name') or 'appliancekit'!r}"


@probe_kind("managesieve", describe=_managesieve_describe)
def check_managesieve(probe: Probe, host: str, port: int, timeout: float) -> str:
    """ManageSieve: STARTTLS, AUTHENTICATE PLAIN as params.user, upload params.script as
    params.script_name, make it the active script and see it listed ACTIVE."""
    import base64

    user, password = credentials(probe)
    name, script = probe.param("script_name") or "appliancekit", probe.param("script")
    if not script:
        raise ProbeFailed("a managesieve probe needs params.script")
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.settimeout(timeout)
        conn = _ManageSieve(raw)
        status, greeting = conn.response()
        if status != "OK":
            raise ProbeFailed(f"ManageSieve greeting: {short(greeting)}")
        if '"STARTTLS"' not in greeting.upper():
            raise ProbeFailed(f"ManageSieve offers no STARTTLS: {short(greeting)}")
        conn.command("STARTTLS")
        conn.sock = tls_context().wrap_socket(raw)
        conn.buffer = b""
        status, capabilities = conn.response()
        if status != "OK" or "PLAIN" not in capabilities.upper():
            raise ProbeFailed(f"no SASL PLAIN after STARTTLS: {short(capabilities)}")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        try:
            conn.command(f'AUTHENTICATE "PLAIN" "{token}"')
        except ProbeFailed as e:
            raise ProbeFailed(f"ManageSieve login as {user} refused: {e}") from None
        body = script.replace("\r\n", "\n").replace("\n", "\r\n").encode()
        conn.command(f'PUTSCRIPT "{name}" {{{len(body)}+}}', body + b"\r\n")
        conn.command(f'SETACTIVE "{name}"')
        listing = conn.command("LISTSCRIPTS")
        with contextlib.suppress(ProbeFailed, OSError):
            conn.command("LOGOUT")
    if not any(line.startswith(f'"{name}"') and "ACTIVE" in line for line in listing.splitlines()):
        raise ProbeFailed(f"script {name!r} is not listed ACTIVE: {short(listing)}")
    return f"script {name!r} uploaded and active for {user}"
