"""TCP probes: a port answers (optionally with a banner), or nothing listens on it."""

from __future__ import annotations

import socket
import time

from appliancekit.probes._common import short
from appliancekit.probes.runner import ProbeFailed, probe_kind
from appliancekit.recipe import Probe


def _read_until(sock: socket.socket, marker: bytes, timeout: float, idle: float = 0.5) -> bytes:
    """Read until `marker` arrives, EOF, `timeout`, or `idle` seconds without more data."""
    deadline = time.monotonic() + timeout
    data = b""
    while marker not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(min(left, idle) if data else left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


@probe_kind("tcp")
def check_tcp(probe: Probe, host: str, port: int, timeout: float) -> str:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if probe.contains:
            banner = _read_until(sock, probe.contains.encode(), timeout)
            if probe.contains.encode() not in banner:
                got = repr(short(banner)) if banner else "nothing"
                raise ProbeFailed(f"banner does not contain {probe.contains!r} (got {got})")
            return f"banner {short(banner)!r}"
        # QEMU's user-mode forward accepts on the host even when nothing listens in the
        # guest, then closes at once; a real service keeps the connection open or talks.
        sock.settimeout(min(1.0, timeout))
        try:
            first = sock.recv(1)
        except TimeoutError:
            return "connected"
        except ConnectionResetError as e:
            raise ProbeFailed("connection reset right after connect") from e
        if not first:
            raise ProbeFailed("connection closed right after connect (nothing listening?)")
        return "connected"


def _closed_describe(probe: Probe) -> str:
    return "nothing listens"


@probe_kind("closed", describe=_closed_describe)
def check_closed(probe: Probe, host: str, port: int, timeout: float) -> str:
    """Nothing may listen on the guest port.

    QEMU's user-mode forward accepts the host-side connection whatever the guest does, then
    closes it when the guest refuses (RST). So: an immediate EOF/reset passes; a connection
    that stays open (a listener waiting for the client) or any byte received (a banner)
    fails, as does a guest that does not answer at all within the window.
    """
    window = max(0.2, min(timeout, 5.0))
    try:
        sock = socket.create_connection((host, port), timeout=window)
    except ConnectionRefusedError:
        return "connection refused"
    with sock:
        sock.settimeout(window)
        try:
            data = sock.recv(256)
        except ConnectionResetError:
            return "connection reset: nothing listens"
        except TimeoutError:
            raise ProbeFailed(
                f"port {probe.port} accepted a connection and kept it open for {window:.1f}s "
                "(something listens there)"
            ) from None
    if data:
        raise ProbeFailed(f"port {probe.port} answered {short(data)!r} (something listens there)")
    return "closed at once: nothing listens"
