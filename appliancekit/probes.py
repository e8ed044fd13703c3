"""Probes: check that a booted appliance does its job (HTTP, TCP banner, DNS, SMTP, IMAP).

Each kind is one function registered with `@probe_kind(...)` in `KINDS`; the function gets
the probe, the host/port to talk to and a per-attempt timeout, and returns a one-line detail
on success or raises `ProbeFailed` (or any OSError & co.) with a clear reason. Everything
else (retries, deadlines, names, results) is shared.
"""

from __future__ import annotations

import contextlib
import http.client
import imaplib
import smtplib
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from appliancekit.qemu import BootError, Machine, PortForward, free_port, retry
from appliancekit.recipe import Probe

ATTEMPT_TIMEOUT = 10.0  # seconds for one connection attempt
RETRY_INTERVAL = 0.5


class ProbeFailed(Exception):
    """The service answered, but not as the probe expects."""


@dataclass(frozen=True)
class ProbeResult:
    name: str
    kind: str
    ok: bool
    detail: str
    seconds: float
    attempts: int


Check = Callable[[Probe, str, int, float], str]


@dataclass(frozen=True)
class ProbeKindSpec:
    check: Check  # (probe, host, port, timeout) -> detail; raises on failure
    protocol: str = "tcp"  # transport of the forwarded port
    describe: Callable[[Probe], str] | None = None  # default name beyond "KIND :PORT"


KINDS: dict[str, ProbeKindSpec] = {}


def probe_kind(
    kind: str, *, protocol: str = "tcp", describe: Callable[[Probe], str] | None = None
) -> Callable[[Check], Check]:
    """Register a probe kind: `@probe_kind("http", describe=...)` over its check function."""

    def register(check: Check) -> Check:
        KINDS[kind] = ProbeKindSpec(check, protocol, describe)
        return check

    return register


def _kind(probe: Probe) -> str:
    return str(probe.kind)


def probe_protocol(probe: Probe) -> str:
    """Transport ("tcp" or "udp") of the guest port this probe needs forwarded."""
    spec = KINDS.get(_kind(probe))
    return spec.protocol if spec else "tcp"


def probe_name(probe: Probe) -> str:
    if probe.name:
        return probe.name
    spec = KINDS.get(_kind(probe))
    name = f"{_kind(probe)} :{probe.port}"
    if spec and spec.describe:
        name += f" {spec.describe(probe)}"
    return name


def forwards_for(probes: Iterable[Probe], ports: Iterable[int] = ()) -> tuple[PortForward, ...]:
    """One host port on 127.0.0.1 per (guest port, protocol) the probes (and `ports`) need."""
    wanted = {(p.port, probe_protocol(p)) for p in probes} | {(p, "tcp") for p in ports}
    return tuple(PortForward(g, free_port(), proto) for g, proto in sorted(wanted))


def forward_map(forwards: Iterable[PortForward]) -> dict[tuple[int, str], int]:
    return {(fw.guest_port, fw.protocol): fw.host_port for fw in forwards}


def _short(data: bytes | str, limit: int = 120) -> str:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_error(e: BaseException, host: str, port: int) -> str:
    if isinstance(e, ProbeFailed):
        return str(e)
    if isinstance(e, ConnectionRefusedError):
        return f"connection refused on {host}:{port}"
    if isinstance(e, ConnectionResetError | http.client.RemoteDisconnected):
        return f"connection to {host}:{port} closed without an answer (service not up yet?)"
    if isinstance(e, TimeoutError | socket.timeout):
        return f"no answer from {host}:{port} in time"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def run_probe_once(
    probe: Probe, host: str, port: int, *, timeout: float | None = None
) -> ProbeResult:
    """One attempt; never raises. `timeout` bounds each network operation."""
    kind = _kind(probe)
    name = probe_name(probe)
    t = min(probe.timeout, ATTEMPT_TIMEOUT) if timeout is None else timeout
    start = time.monotonic()
    spec = KINDS.get(kind)
    if spec is None:
        return ProbeResult(name, kind, False, f"unknown probe kind {kind!r}", 0.0, 1)
    try:
        detail = spec.check(probe, host, port, max(t, 0.1))
        ok = True
    except Exception as e:  # a probe reports, it never raises
        detail, ok = _describe_error(e, host, port), False
    return ProbeResult(name, kind, ok, detail, time.monotonic() - start, 1)


def wait_for_probes(
    probes: Iterable[Probe],
    port_map: Mapping[tuple[int, str], int],
    deadline_seconds: float,
    machine: Machine | None,
    *,
    host: str = "127.0.0.1",
    interval: float = RETRY_INTERVAL,
) -> list[ProbeResult]:
    """Retry each probe in turn until it passes, its own timeout or the overall deadline.

    Stops early if the machine died: the remaining probes are reported as failed.
    """
    overall = time.monotonic() + deadline_seconds
    results: list[ProbeResult] = []
    dead: str | None = None
    for probe in probes:
        kind, name = _kind(probe), probe_name(probe)
        proto = probe_protocol(probe)
        host_port = port_map.get((probe.port, proto))
        if host_port is None:
            detail = f"no host port forwarded for guest port {probe.port}/{proto}"
            results.append(ProbeResult(name, kind, False, detail, 0.0, 0))
            continue
        if dead is not None:
            results.append(ProbeResult(name, kind, False, dead, 0.0, 0))
            continue
        start = time.monotonic()
        stop = min(overall, start + probe.timeout)
        last: list[ProbeResult] = []

        def attempt(
            probe: Probe = probe,
            host_port: int = host_port,
            stop: float = stop,
            last: list[ProbeResult] = last,
        ) -> None:
            left = stop - time.monotonic()
            result = run_probe_once(
                probe, host, host_port, timeout=max(0.2, min(ATTEMPT_TIMEOUT, left))
            )
            last.append(result)
            if not result.ok:
                raise ProbeFailed(result.detail)

        try:
            retry(attempt, timeout=max(0.0, stop - start), interval=interval, machine=machine)
            ok, detail = True, last[-1].detail
        except BootError as e:
            dead = f"machine stopped: {e.message}"
            ok = False
            detail = dead + (f" (last attempt: {last[-1].detail})" if last else "")
        except ProbeFailed as e:
            ok, detail = False, f"{e} (gave up after {time.monotonic() - start:.1f}s)"
        results.append(ProbeResult(name, kind, ok, detail, time.monotonic() - start, len(last)))
    return results


# -- kinds -------------------------------------------------------------------------------------


def _http_describe(probe: Probe) -> str:
    return f"GET {probe.path}"


@probe_kind("http", describe=_http_describe)
def check_http(probe: Probe, host: str, port: int, timeout: float) -> str:
    # http.client talks to host:port directly: no proxy from the environment applies.
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", probe.path or "/", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != probe.status:
        raise ProbeFailed(
            f"expected HTTP {probe.status}, got {response.status} {response.reason} "
            f"(body: {_short(body)!r})"
        )
    text = body.decode("utf-8", errors="replace")
    if probe.contains and probe.contains not in text:
        raise ProbeFailed(
            f"HTTP {response.status} but the body does not contain {probe.contains!r} "
            f"(body: {_short(body)!r})"
        )
    return f"HTTP {response.status}, {len(body)} bytes"


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
                got = repr(_short(banner)) if banner else "nothing"
                raise ProbeFailed(f"banner does not contain {probe.contains!r} (got {got})")
            return f"banner {_short(banner)!r}"
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


def _dns_query(probe: Probe) -> tuple[str, str]:
    words = probe.query.split()
    if not words or len(words) > 2:
        raise ProbeFailed(f"dns probe query must be 'NAME TYPE', not {probe.query!r}")
    return words[0], (words[1] if len(words) == 2 else "A")


def _dns_describe(probe: Probe) -> str:
    return probe.query


@probe_kind("dns", protocol="udp", describe=_dns_describe)
def check_dns(probe: Probe, host: str, port: int, timeout: float) -> str:
    try:
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode
    except ImportError as e:  # pragma: no cover - dnspython is a declared dependency
        raise ProbeFailed("dns probes need dnspython (pip install dnspython)") from e
    name, rdtype = _dns_query(probe)
    query = dns.message.make_query(name, rdtype)
    try:
        response = dns.query.udp(query, host, port=port, timeout=timeout)
    except dns.exception.Timeout as e:
        raise ProbeFailed(f"no DNS answer from {host}:{port} within {timeout:.1f}s") from e
    rcode = dns.rcode.to_text(response.rcode())
    answer = " | ".join(rrset.to_text() for rrset in response.answer)
    if response.rcode() != dns.rcode.NOERROR:
        raise ProbeFailed(f"{name} {rdtype}: {rcode}")
    if not response.answer:
        raise ProbeFailed(f"{name} {rdtype}: NOERROR but no answer records")
    expect = probe.expect or probe.contains
    if expect and expect not in answer:
        raise ProbeFailed(f"{name} {rdtype}: answer lacks {expect!r} (answer: {_short(answer)})")
    return f"{rcode}: {_short(answer)}"


@probe_kind("smtp")
def check_smtp(probe: Probe, host: str, port: int, timeout: float) -> str:
    client = smtplib.SMTP(timeout=timeout)
    try:
        code, greeting = client.connect(host, port)
        if code != 220:
            raise ProbeFailed(f"SMTP greeting {code} {_short(greeting)!r}, expected 220")
        ehlo_code, ehlo = client.ehlo("appliancekit.probe")
        if ehlo_code != 250:
            raise ProbeFailed(f"EHLO answered {ehlo_code} {_short(ehlo)!r}")
        seen = greeting + b"\n" + ehlo
        if probe.contains and probe.contains.encode() not in seen:
            raise ProbeFailed(
                f"SMTP greeting/EHLO lacks {probe.contains!r} (greeting: {_short(greeting)!r})"
            )
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        return f"220 {_short(greeting)}"
    except smtplib.SMTPServerDisconnected as e:
        raise ProbeFailed(f"SMTP server at {host}:{port} closed the connection: {e}") from e
    finally:
        client.close()


@probe_kind("imap")
def check_imap(probe: Probe, host: str, port: int, timeout: float) -> str:
    try:
        client = imaplib.IMAP4(host, port, timeout=timeout)
    except imaplib.IMAP4.abort as e:
        raise ProbeFailed(f"IMAP server at {host}:{port} hung up: {e}") from e
    except imaplib.IMAP4.error as e:
        raise ProbeFailed(f"IMAP greeting rejected: {e}") from e
    try:
        greeting = client.welcome
        if probe.contains and probe.contains.encode() not in greeting:
            raise ProbeFailed(f"IMAP greeting lacks {probe.contains!r} (got {_short(greeting)!r})")
        return _short(greeting)
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()
