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
import ssl
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


# -- dns-tcp, closed, pdns-api (recipe dns) ---------------------------------------------------


@probe_kind("dns-tcp", describe=_dns_describe)
def check_dns_tcp(probe: Probe, host: str, port: int, timeout: float) -> str:
    """The dns probe over TCP (zone transfers, large answers and truncated UDP use it)."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    name, rdtype = _dns_query(probe)
    try:
        response = dns.query.tcp(
            dns.message.make_query(name, rdtype), host, port=port, timeout=timeout
        )
    except dns.exception.Timeout as e:
        raise ProbeFailed(f"no DNS answer over TCP from {host}:{port} within {timeout:.1f}s") from e
    except EOFError as e:  # QEMU accepted, nothing in the guest answered
        raise ProbeFailed(f"DNS over TCP: {host}:{port} closed the connection") from e
    rcode = dns.rcode.to_text(response.rcode())
    answer = " | ".join(rrset.to_text() for rrset in response.answer)
    if response.rcode() != dns.rcode.NOERROR:
        raise ProbeFailed(f"{name} {rdtype} over TCP: {rcode}")
    expect = probe.expect or probe.contains
    if not response.answer or (expect and expect not in answer):
        raise ProbeFailed(
            f"{name} {rdtype} over TCP: answer lacks {expect or 'records'!r} "
            f"(answer: {_short(answer) or 'none'})"
        )
    return f"{rcode} over TCP: {_short(answer)}"


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
        raise ProbeFailed(f"port {probe.port} answered {_short(data)!r} (something listens there)")
    return "closed at once: nothing listens"


def _pdns_api_describe(probe: Probe) -> str:
    return f"{probe.param('name') or probe.param('zone')} via the API"


def _json_request(
    host: str,
    port: int,
    method: str,
    path: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    body: object = None,
) -> tuple[int, object]:
    import json

    data = None if body is None else json.dumps(body).encode()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            method,
            path,
            body=data,
            headers={"Connection": "close", "Content-Type": "application/json", **(headers or {})},
        )
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw.decode("utf-8", errors="replace")


@probe_kind("pdns-api", describe=_pdns_api_describe)
def check_pdns_api(probe: Probe, host: str, port: int, timeout: float) -> str:
    """PowerDNS HTTP API: a request without the key is refused; with params.api_key, zone
    params.zone is created (an existing one is fine: retries and re-runs) and the A record
    params.name -> params.address is set, then read back."""
    key, zone, address = probe.param("api_key"), probe.param("zone"), probe.param("address")
    if not (key and zone and address):
        raise ProbeFailed("a pdns-api probe needs params api_key, zone and address")
    zone = zone if zone.endswith(".") else zone + "."
    name = probe.param("name") or zone
    name = name if name.endswith(".") else name + "."
    zones = f"/api/v1/servers/{probe.param('server') or 'localhost'}/zones"
    auth = {"X-API-Key": key}

    status, body = _json_request(host, port, "GET", zones, timeout)
    if status != 401:
        raise ProbeFailed(f"GET {zones} without X-API-Key answered {status}, expected 401")

    new = {"name": zone, "kind": "Native", "nameservers": [f"ns1.{zone}"]}
    status, body = _json_request(host, port, "POST", zones, timeout, auth, new)
    if status not in (201, 409):  # 409: it exists already (an earlier attempt made it)
        raise ProbeFailed(f"creating zone {zone}: HTTP {status} {_short(str(body))}")
    created = status == 201

    rrset = {
        "name": name,
        "type": "A",
        "ttl": 60,
        "changetype": "REPLACE",
        "records": [{"content": address, "disabled": False}],
    }
    status, body = _json_request(
        host, port, "PATCH", f"{zones}/{zone}", timeout, auth, {"rrsets": [rrset]}
    )
    if status != 204:
        raise ProbeFailed(f"setting {name} A {address}: HTTP {status} {_short(str(body))}")

    status, body = _json_request(host, port, "GET", f"{zones}/{zone}", timeout, auth)
    if status != 200 or not isinstance(body, dict):
        raise ProbeFailed(f"reading zone {zone} back: HTTP {status} {_short(str(body))}")
    contents = [
        record.get("content")
        for found in body.get("rrsets", [])
        if found.get("name") == name and found.get("type") == "A"
        for record in found.get("records", [])
    ]
    if address not in contents:
        raise ProbeFailed(f"zone {zone} read back without {name} A {address} (got {contents})")
    return f"zone {zone} {'created' if created else 'existed'}; {name} A {address} set"


# -- matrix ------------------------------------------------------------------------------------


def _matrix_describe(probe: Probe) -> str:
    return f"@{probe.param('user')} in #{probe.param('room')}"


def _matrix_call(
    host: str,
    port: int,
    method: str,
    path: str,
    timeout: float,
    body: object = None,
    token: str = "",
) -> tuple[int, dict[str, object]]:
    import json
    import urllib.parse

    headers = {"Connection": "close", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            method,
            urllib.parse.quote(path, safe="/?=&%:"),
            body=None if body is None else json.dumps(body),
            headers=headers,
        )
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {"error": _short(raw)}
    return response.status, data if isinstance(data, dict) else {"value": data}


def _matrix_fail(what: str, status: int, data: Mapping[str, object]) -> ProbeFailed:
    reason = data.get("errcode") or "", data.get("error") or _short(str(data))
    return ProbeFailed(f"{what}: HTTP {status} {reason[0]} {reason[1]}".replace("  ", " "))


@probe_kind("matrix", describe=_matrix_describe)
def check_matrix(probe: Probe, host: str, port: int, timeout: float) -> str:
    """Matrix client-server API, as a user would.

    params: user, password, secret (registration shared secret), room (alias localpart),
    message, action ("post": register with the shared secret — an existing user is fine —,
    log in, create the room — or find it —, send the message; "read": log in and find the
    message in the room's history; default: post on the first boot, read after the reboot,
    both otherwise)."""
    import hashlib
    import hmac

    user, password = probe.param("user"), probe.param("password")
    room, message = probe.param("room"), probe.param("message")
    if not (user and password and room and message):
        raise ProbeFailed("a matrix probe needs params user, password, room and message")
    phase = str(probe.phase)
    action = probe.param("action") or {"first": "post", "reboot": "read"}.get(phase, "both")
    if action in ("post", "both"):
        secret = probe.param("secret")
        if not secret:
            raise ProbeFailed("posting needs params.secret (the registration shared secret)")
        status, data = _matrix_call(host, port, "GET", "/_synapse/admin/v1/register", timeout)
        if status != 200 or "nonce" not in data:
            raise _matrix_fail("registration nonce", status, data)
        nonce = str(data["nonce"])
        mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join(x.encode() for x in (nonce, user, password, "notadmin")))
        register = {"nonce": nonce, "username": user, "password": password, "admin": False}
        status, data = _matrix_call(
            host,
            port,
            "POST",
            "/_synapse/admin/v1/register",
            timeout,
            register | {"mac": mac.hexdigest()},
        )
        if status != 200 and data.get("errcode") != "M_USER_IN_USE":
            raise _matrix_fail(f"registering {user} with the shared secret", status, data)
    status, data = _matrix_call(
        host,
        port,
        "POST",
        "/_matrix/client/v3/login",
        timeout,
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}}
        | {"password": password},
    )
    if status != 200 or "access_token" not in data:
        raise _matrix_fail(f"logging in as {user}", status, data)
    token, user_id = str(data["access_token"]), str(data.get("user_id", ""))
    server = user_id.split(":", 1)[1] if ":" in user_id else ""
    alias = f"#{room}:{server}"
    status, data = _matrix_call(
        host, port, "GET", f"/_matrix/client/v3/directory/room/{alias.replace('#', '%23')}", timeout
    )
    room_id = str(data.get("room_id", "")) if status == 200 else ""
    if action in ("post", "both"):
        if not room_id:
            status, data = _matrix_call(
                host,
                port,
                "POST",
                "/_matrix/client/v3/createRoom",
                timeout,
                {"room_alias_name": room, "preset": "private_chat", "name": room},
                token,
            )
            if status != 200 or "room_id" not in data:
                raise _matrix_fail(f"creating room {alias}", status, data)
            room_id = str(data["room_id"])
        txn = hashlib.sha256(f"{room_id}\0{message}".encode()).hexdigest()[:16]
        status, data = _matrix_call(
            host,
            port,
            "PUT",
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}",
            timeout,
            {"msgtype": "m.text", "body": message},
            token,
        )
        if status != 200 or "event_id" not in data:
            raise _matrix_fail(f"sending to {alias}", status, data)
        if action == "post":
            return f"{user_id} posted {data['event_id']} in {alias} ({room_id})"
    if not room_id:
        raise ProbeFailed(f"room {alias} does not exist (state lost?)")
    status, data = _matrix_call(
        host,
        port,
        "GET",
        f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50",
        timeout,
        token=token,
    )
    if status != 200:
        raise _matrix_fail(f"reading {alias}", status, data)
    events = data.get("chunk") or []
    bodies = [
        e.get("content", {}).get("body")
        for e in events  # type: ignore[union-attr]
        if isinstance(e, dict) and e.get("type") == "m.room.message"
    ]
    if message not in bodies:
        raise ProbeFailed(f"{alias} has no message {message!r} (messages: {bodies[:5]})")
    return f"{user_id} read {message!r} back from {alias}"


# -- smtp-send, imap-message, managesieve (recipe mailserver) ---------------------------------


def _tls_context() -> ssl.SSLContext:
    """TLS without certificate checks: appliances start with a self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _credentials(probe: Probe) -> tuple[str, str]:
    user, password = probe.param("user"), probe.param("password")
    if not (user and password):
        raise ProbeFailed(f"a {_kind(probe)} probe needs params user and password")
    return user, password


def _smtp_send_describe(probe: Probe) -> str:
    return f"{probe.param('subject') or 'a message'!r} to {probe.param('to')}"


@probe_kind("smtp-send", describe=_smtp_send_describe)
def check_smtp_send(probe: Probe, host: str, port: int, timeout: float) -> str:
    """Send params.subject (plus the "Name: value" lines of params.headers) from params.from
    to params.to over SMTP, after STARTTLS (unless params.tls = "none"). With params.user,
    AUTH is required -- and must not be offered before STARTTLS -- as on a submission port;
    without, the message arrives as from the Internet (port 25)."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    user = probe.param("user")
    if user:
        user, password = _credentials(probe)
    sender, recipient = probe.param("from") or user, probe.param("to")
    if not (sender and recipient):
        raise ProbeFailed("an smtp-send probe needs params.from (or user) and params.to")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = probe.param("subject") or "appliancekit probe"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    for line in probe.param("headers").splitlines():  # extra "Name: value" header lines
        name, colon, value = line.partition(":")
        if colon and name.strip():
            message[name.strip()] = value.strip()
    message.set_content(probe.param("body") or "Sent by the appliancekit boot test.\n")
    client = smtplib.SMTP(timeout=timeout)
    try:
        code, greeting = client.connect(host, port)
        if code != 220:
            raise ProbeFailed(f"SMTP greeting {code} {_short(greeting)!r}, expected 220")
        client._host = host  # connect() does not record it; starttls() sends it as SNI
        client.ehlo("appliancekit.probe")
        if user and client.has_extn("auth"):
            raise ProbeFailed("AUTH is offered before STARTTLS (passwords would travel in clear)")
        if probe.param("tls") != "none":
            if not client.has_extn("starttls"):
                raise ProbeFailed("STARTTLS is not offered")
            client.starttls(context=_tls_context())
            client.ehlo("appliancekit.probe")
        if user:
            if not client.has_extn("auth"):
                raise ProbeFailed("AUTH is not offered after STARTTLS")
            try:
                client.login(user, password)
            except smtplib.SMTPAuthenticationError as e:
                raise ProbeFailed(
                    f"AUTH as {user} refused: {e.smtp_code} {_short(e.smtp_error)}"
                ) from e
        code, answer = client.mail(sender)
        if code != 250:
            raise ProbeFailed(f"MAIL FROM:<{sender}> answered {code} {_short(answer)}")
        code, answer = client.rcpt(recipient)
        if code not in (250, 251):
            raise ProbeFailed(f"RCPT TO:<{recipient}> answered {code} {_short(answer)}")
        code, answer = client.data(message.as_bytes())
        if code != 250:
            raise ProbeFailed(f"DATA answered {code} {_short(answer)}")
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        return f"sent{f' as {user}' if user else ''}: {code} {_short(answer)}"
    except smtplib.SMTPServerDisconnected as e:
        raise ProbeFailed(f"SMTP server at {host}:{port} closed the connection: {e}") from e
    finally:
        client.close()


def _imap_message_describe(probe: Probe) -> str:
    return f"{probe.param('subject')!r} in {probe.param('mailbox') or 'INBOX'}"


def _imap_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@probe_kind("imap-message", describe=_imap_message_describe)
def check_imap_message(probe: Probe, host: str, port: int, timeout: float) -> str:
    """IMAP (params.tls: starttls (default), implicit or none): log in, find the newest
    message with params.subject in params.mailbox; if params.header is set, that header must
    be there, and one of its instances must contain every comma-separated string of
    params.header_contains."""
    from email import message_from_bytes

    user, password = _credentials(probe)
    mailbox, subject = probe.param("mailbox") or "INBOX", probe.param("subject")
    if not subject:
        raise ProbeFailed("an imap-message probe needs params.subject")
    tls = probe.param("tls") or "starttls"
    try:
        if tls == "implicit":
            client = imaplib.IMAP4_SSL(host, port, ssl_context=_tls_context(), timeout=timeout)
        else:
            client = imaplib.IMAP4(host, port, timeout=timeout)
            if tls == "starttls":
                client.starttls(ssl_context=_tls_context())
    except imaplib.IMAP4.abort as e:
        raise ProbeFailed(f"IMAP server at {host}:{port} hung up: {e}") from e
    try:
        try:
            client.login(user, password)
        except imaplib.IMAP4.error as e:
            raise ProbeFailed(f"IMAP LOGIN as {user} refused: {e}") from e
        status, data = client.select(_imap_quote(mailbox), readonly=True)
        if status != "OK":
            raise ProbeFailed(f"cannot select mailbox {mailbox!r}: {_short(data[0] or b'')}")
        total = int(data[0] or 0)
        status, data = client.search(None, "SUBJECT", _imap_quote(subject))
        found = data[0].split() if status == "OK" and data and data[0] else []
        if not found:
            raise ProbeFailed(f"no message {subject!r} in {mailbox} ({total} messages there)")
        status, data = client.fetch(found[-1], "(BODY.PEEK[HEADER])")
        raw = next((part[1] for part in data if isinstance(part, tuple)), b"")
        detail = f"{mailbox}: {len(found)} message(s) {subject!r}"
        header = probe.param("header")
        if header:
            values = [" ".join(str(v).split()) for v in message_from_bytes(raw).get_all(header, [])]
            if not values:
                raise ProbeFailed(f"message {subject!r} in {mailbox} has no {header} header")
            wanted = [w.strip() for w in probe.param("header_contains").split(",") if w.strip()]
            if not any(all(w in value for w in wanted) for value in values):
                raise ProbeFailed(f"{header} lacks {wanted}: {_short(' | '.join(values))}")
            detail += f"; {header}: {_short(values[0], 80)}"
        return detail
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()


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
            raise ProbeFailed(f"ManageSieve {text.split(' ', 1)[0]}: {_short(answer)}")
        return answer


def _managesieve_describe(probe: Probe) -> str:
    return f"script {probe.param('script_name') or 'appliancekit'!r}"


@probe_kind("managesieve", describe=_managesieve_describe)
def check_managesieve(probe: Probe, host: str, port: int, timeout: float) -> str:
    """ManageSieve: STARTTLS, AUTHENTICATE PLAIN as params.user, upload params.script as
    params.script_name, make it the active script and see it listed ACTIVE."""
    import base64

    user, password = _credentials(probe)
    name, script = probe.param("script_name") or "appliancekit", probe.param("script")
    if not script:
        raise ProbeFailed("a managesieve probe needs params.script")
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.settimeout(timeout)
        conn = _ManageSieve(raw)
        status, greeting = conn.response()
        if status != "OK":
            raise ProbeFailed(f"ManageSieve greeting: {_short(greeting)}")
        if '"STARTTLS"' not in greeting.upper():
            raise ProbeFailed(f"ManageSieve offers no STARTTLS: {_short(greeting)}")
        conn.command("STARTTLS")
        conn.sock = _tls_context().wrap_socket(raw)
        conn.buffer = b""
        status, capabilities = conn.response()
        if status != "OK" or "PLAIN" not in capabilities.upper():
            raise ProbeFailed(f"no SASL PLAIN after STARTTLS: {_short(capabilities)}")
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
        raise ProbeFailed(f"script {name!r} is not listed ACTIVE: {_short(listing)}")
    return f"script {name!r} uploaded and active for {user}"
