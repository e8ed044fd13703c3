"""The probe runner: the kind registry, names, port forwards, retries and deadlines.

Each kind is one function registered with `@probe_kind(...)` in `KINDS`, in its own module
of this package (one module per protocol); the function gets the probe, the host/port to
talk to and a per-attempt timeout, and returns a one-line detail on success or raises
`ProbeFailed` (or any OSError & co.) with a clear reason. Everything else (retries,
deadlines, names, results) is shared and lives here.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from appliancekit.qemu import BootError, Machine, PortForward, free_port, retry
from appliancekit.recipe import Probe

ATTEMPT_TIMEOUT = 10.0  # seconds for one connection attempt
RETRY_INTERVAL = 0.25


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
    # how long one attempt may take: a kind whose request makes the service do seconds of
    # work (a password hash) waits for it, since a retry would only queue the same work again
    attempt_timeout: float = ATTEMPT_TIMEOUT


KINDS: dict[str, ProbeKindSpec] = {}


def probe_kind(
    kind: str,
    *,
    protocol: str = "tcp",
    describe: Callable[[Probe], str] | None = None,
    attempt_timeout: float = ATTEMPT_TIMEOUT,
) -> Callable[[Check], Check]:
    """Register a probe kind: `@probe_kind("http", describe=...)` over its check function."""

    def register(check: Check) -> Check:
        KINDS[kind] = ProbeKindSpec(check, protocol, describe, attempt_timeout)
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
    spec = KINDS.get(kind)
    each = spec.attempt_timeout if spec else ATTEMPT_TIMEOUT
    t = min(probe.timeout, each) if timeout is None else timeout
    start = time.monotonic()
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
        spec = KINDS.get(kind)
        each = spec.attempt_timeout if spec else ATTEMPT_TIMEOUT
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
            each: float = each,
            last: list[ProbeResult] = last,
        ) -> None:
            left = stop - time.monotonic()
            result = run_probe_once(probe, host, host_port, timeout=max(0.2, min(each, left)))
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
