"""appliancekit.probes against real servers on 127.0.0.1 started by the tests."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import shutil
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest

from appliancekit.errors import UserError
from appliancekit.probes import (
    KINDS,
    ProbeResult,
    forward_map,
    forwards_for,
    probe_name,
    probe_protocol,
    run_probe_once,
    wait_for_probes,
)
from appliancekit.qemu import Machine, PortForward, QemuConfig, free_port
from appliancekit.recipe import Probe, ProbeKind, load_recipe

from .conftest import REPO

HOST = "127.0.0.1"
MARKER = "appliance-marker-42"


def serve(server: socketserver.BaseServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class _Threading(socketserver.ThreadingMixIn):
    daemon_threads = True
    allow_reuse_address = True


class TCPServer(_Threading, socketserver.TCPServer):
    pass


class UDPServer(_Threading, socketserver.UDPServer):
    pass


# -- servers -----------------------------------------------------------------------------------


class WebHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/":
            body, status = f"<h1>{MARKER}</h1>".encode(), 200
        elif self.path == "/plain":
            body, status = b"nothing to see", 200
        else:
            body, status = b"not here", 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def web_server(port: int = 0) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer((HOST, port), WebHandler)
    server.daemon_threads = True
    return server


@pytest.fixture
def web() -> Iterator[int]:
    yield from serve(web_server())


class BannerHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(f"SSH-2.0-{MARKER}\r\n".encode())
        self.rfile.readline()  # hold the connection until the client goes


class SilentHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()  # a server that waits for the client to speak first


class HangUpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        pass  # accept, then close at once: what QEMU's user-mode forward does with no listener


class SMTPHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"220 mail.test ESMTP " + MARKER.encode() + b"\r\n")
        for line in self.rfile:
            verb = line.split(b" ")[0].strip().upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250-mail.test greets you\r\n250 8BITMIME\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"502 not implemented\r\n")


class IMAPHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"* OK [CAPABILITY IMAP4rev1] " + MARKER.encode() + b" ready\r\n")
        for line in self.rfile:
            tag, _, rest = line.strip().partition(b" ")
            command = rest.split(b" ")[0].upper()
            if command == b"CAPABILITY":
                self.wfile.write(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
            elif command == b"LOGOUT":
                self.wfile.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
                return
            else:
                self.wfile.write(tag + b" BAD unknown\r\n")


class DNSHandler(socketserver.BaseRequestHandler):
    """Answers example.test. SOA and www.example.test. A; NXDOMAIN for anything else."""

    RECORDS = {
        ("example.test.", "SOA"): "example.test. 300 IN SOA ns1.example.test. "
        "hostmaster.example.test. 2024010101 3600 600 86400 300",
        ("www.example.test.", "A"): "www.example.test. 300 IN A 192.0.2.10",
    }

    def handle(self) -> None:
        data, sock = self.request
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        key = (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        if key in self.RECORDS:
            response.answer.append(dns.rrset.from_text(*self.RECORDS[key].split(" ", 4)))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(response.to_wire(), self.client_address)


def tcp_fixture(handler: type[socketserver.BaseRequestHandler]):
    @pytest.fixture
    def fixture() -> Iterator[int]:
        yield from serve(TCPServer((HOST, 0), handler))

    return fixture


banner = tcp_fixture(BannerHandler)
silent = tcp_fixture(SilentHandler)
hangup = tcp_fixture(HangUpHandler)
smtp = tcp_fixture(SMTPHandler)
imap = tcp_fixture(IMAPHandler)


@pytest.fixture
def dns_server() -> Iterator[int]:
    yield from serve(UDPServer((HOST, 0), DNSHandler))


@pytest.fixture
def closed_port() -> int:
    return free_port()


def once(probe: Probe, port: int) -> ProbeResult:
    result = run_probe_once(probe, HOST, port, timeout=3)
    assert result.attempts == 1 and result.kind == str(probe.kind)
    return result


# -- registry and names ------------------------------------------------------------------------


def test_every_recipe_kind_is_registered() -> None:
    assert {str(k) for k in ProbeKind} <= set(KINDS)


def test_probe_names() -> None:
    assert probe_name(Probe(kind=ProbeKind.HTTP, port=80)) == "http :80 GET /"
    assert probe_name(Probe(kind=ProbeKind.HTTP, port=8080, path="/x")) == "http :8080 GET /x"
    assert probe_name(Probe(kind=ProbeKind.TCP, port=22)) == "tcp :22"
    assert probe_name(Probe(kind=ProbeKind.DNS, port=53, query="a.test. A")) == "dns :53 a.test. A"
    assert probe_name(Probe(kind=ProbeKind.SMTP, port=25, name="mail up")) == "mail up"


def test_protocols_and_forwards() -> None:
    probes = [
        Probe(kind=ProbeKind.HTTP, port=80),
        Probe(kind=ProbeKind.HTTP, port=80, path="/other"),
        Probe(kind=ProbeKind.DNS, port=53, query="x. A"),
    ]
    assert [probe_protocol(p) for p in probes] == ["tcp", "tcp", "udp"]
    forwards = forwards_for(probes, ports=[443])
    assert [(f.guest_port, f.protocol) for f in forwards] == [
        (53, "udp"),
        (80, "tcp"),
        (443, "tcp"),
    ]
    assert len({f.host_port for f in forwards}) == 3
    assert forward_map(forwards)[(80, "tcp")] == forwards[1].host_port


# -- http --------------------------------------------------------------------------------------


def test_http_ok(web: int) -> None:
    result = once(Probe(kind=ProbeKind.HTTP, port=80, contains=MARKER), web)
    assert result.ok, result.detail
    assert result.detail.startswith("HTTP 200")
    assert result.name == "http :80 GET /"


def test_http_ignores_proxy_environment(web: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(var, f"http://{HOST}:{free_port()}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert once(Probe(kind=ProbeKind.HTTP, port=80, contains=MARKER), web).ok


def test_http_expected_other_status(web: int) -> None:
    assert once(Probe(kind=ProbeKind.HTTP, port=80, path="/gone", status=404), web).ok


def test_http_wrong_status(web: int) -> None:
    result = once(Probe(kind=ProbeKind.HTTP, port=80, path="/missing"), web)
    assert not result.ok
    assert "expected HTTP 200, got 404" in result.detail


def test_http_missing_marker(web: int) -> None:
    result = once(Probe(kind=ProbeKind.HTTP, port=80, path="/plain", contains=MARKER), web)
    assert not result.ok
    assert f"does not contain {MARKER!r}" in result.detail
    assert "nothing to see" in result.detail


def test_http_closed_port(closed_port: int) -> None:
    result = once(Probe(kind=ProbeKind.HTTP, port=80), closed_port)
    assert not result.ok
    assert result.detail == f"connection refused on {HOST}:{closed_port}"


def test_http_hangup_is_not_ok(hangup: int) -> None:
    result = once(Probe(kind=ProbeKind.HTTP, port=80), hangup)
    assert not result.ok
    assert "closed without an answer" in result.detail


# -- tcp ---------------------------------------------------------------------------------------


def test_tcp_banner_ok(banner: int) -> None:
    result = once(Probe(kind=ProbeKind.TCP, port=22, contains=MARKER), banner)
    assert result.ok, result.detail
    assert MARKER in result.detail


def test_tcp_banner_mismatch(banner: int) -> None:
    result = once(Probe(kind=ProbeKind.TCP, port=22, contains="OpenSSH"), banner)
    assert not result.ok
    assert "banner does not contain 'OpenSSH'" in result.detail
    assert MARKER in result.detail


def test_tcp_connect_only(silent: int) -> None:
    assert once(Probe(kind=ProbeKind.TCP, port=5432), silent).ok


def test_tcp_no_banner_when_one_is_expected(silent: int) -> None:
    result = run_probe_once(
        Probe(kind=ProbeKind.TCP, port=22, contains="SSH"), HOST, silent, timeout=0.5
    )
    assert not result.ok
    assert "got nothing" in result.detail


def test_tcp_accept_then_close_is_not_ok(hangup: int) -> None:
    result = once(Probe(kind=ProbeKind.TCP, port=5432), hangup)
    assert not result.ok
    assert "closed right after connect" in result.detail or "reset" in result.detail


def test_tcp_closed_port(closed_port: int) -> None:
    result = once(Probe(kind=ProbeKind.TCP, port=22), closed_port)
    assert not result.ok and "connection refused" in result.detail


# -- dns ---------------------------------------------------------------------------------------


def test_dns_soa(dns_server: int) -> None:
    probe = Probe(kind=ProbeKind.DNS, port=53, query="example.test. SOA", expect="ns1.example.test")
    result = once(probe, dns_server)
    assert result.ok, result.detail
    assert result.detail.startswith("NOERROR") and "hostmaster.example.test." in result.detail


def test_dns_a_without_expectation(dns_server: int) -> None:
    assert once(Probe(kind=ProbeKind.DNS, port=53, query="www.example.test A"), dns_server).ok


def test_dns_wrong_answer(dns_server: int) -> None:
    probe = Probe(kind=ProbeKind.DNS, port=53, query="www.example.test. A", expect="192.0.2.99")
    result = once(probe, dns_server)
    assert not result.ok
    assert "answer lacks '192.0.2.99'" in result.detail and "192.0.2.10" in result.detail


def test_dns_nxdomain(dns_server: int) -> None:
    result = once(Probe(kind=ProbeKind.DNS, port=53, query="nope.test. A"), dns_server)
    assert not result.ok and result.detail == "nope.test. A: NXDOMAIN"


def test_dns_no_server(closed_port: int) -> None:
    result = run_probe_once(
        Probe(kind=ProbeKind.DNS, port=53, query="example.test. SOA"),
        HOST,
        closed_port,
        timeout=0.5,
    )
    assert not result.ok
    assert "no DNS answer" in result.detail or "refused" in result.detail


def test_dns_bad_query() -> None:
    result = once(Probe(kind=ProbeKind.DNS, port=53, query="a b c"), 9)
    assert not result.ok and "must be 'NAME TYPE'" in result.detail


# -- smtp / imap -------------------------------------------------------------------------------


def test_smtp_ok(smtp: int) -> None:
    result = once(Probe(kind=ProbeKind.SMTP, port=25, contains=MARKER), smtp)
    assert result.ok, result.detail
    assert result.detail.startswith("220 mail.test ESMTP")


def test_smtp_contains_checks_ehlo_too(smtp: int) -> None:
    assert once(Probe(kind=ProbeKind.SMTP, port=25, contains="8BITMIME"), smtp).ok


def test_smtp_missing_marker(smtp: int) -> None:
    result = once(Probe(kind=ProbeKind.SMTP, port=25, contains="Postfix"), smtp)
    assert not result.ok and "lacks 'Postfix'" in result.detail


def test_smtp_against_non_smtp_server(banner: int) -> None:
    result = once(Probe(kind=ProbeKind.SMTP, port=25), banner)
    assert not result.ok


def test_imap_ok(imap: int) -> None:
    result = once(Probe(kind=ProbeKind.IMAP, port=143, contains=MARKER), imap)
    assert result.ok, result.detail
    assert result.detail.startswith("* OK")


def test_imap_missing_marker(imap: int) -> None:
    result = once(Probe(kind=ProbeKind.IMAP, port=143, contains="Dovecot"), imap)
    assert not result.ok and "lacks 'Dovecot'" in result.detail


def test_imap_closed_port(closed_port: int) -> None:
    result = once(Probe(kind=ProbeKind.IMAP, port=143), closed_port)
    assert not result.ok and "connection refused" in result.detail


# -- wait_for_probes ---------------------------------------------------------------------------


def test_wait_for_probes_until_a_late_server_comes_up() -> None:
    port = free_port()
    servers: list[http.server.ThreadingHTTPServer] = []

    def start_late() -> None:
        time.sleep(1.5)
        server = web_server(port)
        servers.append(server)
        server.serve_forever(poll_interval=0.05)

    threading.Thread(target=start_late, daemon=True).start()
    try:
        start = time.monotonic()
        probe = Probe(kind=ProbeKind.HTTP, port=80, contains=MARKER, timeout=20)
        (result,) = wait_for_probes([probe], {(80, "tcp"): port}, 30, None, interval=0.1)
        assert result.ok, result.detail
        assert result.attempts > 3
        assert 1.4 < result.seconds < 10
        assert time.monotonic() - start < 10
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_wait_for_probes_gives_up_at_the_probe_timeout(closed_port: int, web: int) -> None:
    probes = [
        Probe(kind=ProbeKind.HTTP, port=8080, timeout=1.0),  # nothing there
        Probe(kind=ProbeKind.HTTP, port=80, contains=MARKER),
        Probe(kind=ProbeKind.TCP, port=9999),  # not forwarded
    ]
    start = time.monotonic()
    results = wait_for_probes(
        probes, {(8080, "tcp"): closed_port, (80, "tcp"): web}, 30, None, interval=0.2
    )
    assert time.monotonic() - start < 5
    first, second, third = results
    assert not first.ok and first.attempts >= 3
    assert "connection refused" in first.detail and "gave up after" in first.detail
    assert second.ok and second.attempts == 1
    assert not third.ok and third.attempts == 0
    assert "no host port forwarded for guest port 9999/tcp" in third.detail


def test_wait_for_probes_honours_the_overall_deadline(closed_port: int) -> None:
    probes = [Probe(kind=ProbeKind.TCP, port=1, timeout=60), Probe(kind=ProbeKind.TCP, port=2)]
    start = time.monotonic()
    results = wait_for_probes(
        probes, {(1, "tcp"): closed_port, (2, "tcp"): closed_port}, 1.0, None, interval=0.1
    )
    assert time.monotonic() - start < 4
    assert [r.ok for r in results] == [False, False]


def test_a_kind_that_makes_the_service_work_waits_longer_per_attempt(closed_port: int) -> None:
    """A kind registered with its own attempt timeout (the matrix probe: Synapse's bcrypt
    under TCG) gets it for each attempt, up to what is left of the probe's timeout; the
    others keep the runner's 10 s."""
    from appliancekit.probes.runner import ATTEMPT_TIMEOUT, probe_kind

    given: list[float] = []

    @probe_kind("slow-hash-test", attempt_timeout=45.0)
    def check(probe: Probe, host: str, port: int, timeout: float) -> str:
        given.append(timeout)
        return "hashed"

    try:
        probe = Probe(kind="slow-hash-test", port=8008, timeout=300)  # type: ignore[arg-type]
        (result,) = wait_for_probes([probe], {(8008, "tcp"): closed_port}, 300, None)
        assert result.ok and given[-1] == pytest.approx(45.0, abs=0.5)
        short = Probe(kind="slow-hash-test", port=8008, timeout=5)  # type: ignore[arg-type]
        wait_for_probes([short], {(8008, "tcp"): closed_port}, 300, None)
        assert given[-1] <= 5.0
        assert KINDS["matrix"].attempt_timeout > ATTEMPT_TIMEOUT
        assert KINDS["http"].attempt_timeout == ATTEMPT_TIMEOUT
    finally:
        KINDS.pop("slow-hash-test", None)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU")
def test_wait_for_probes_stops_when_the_machine_died(tmp_path: Path, closed_port: int) -> None:
    cfg = QemuConfig(binary="qemu-system-x86_64", machine="none", memory="16M")
    probes = [Probe(kind=ProbeKind.HTTP, port=80), Probe(kind=ProbeKind.TCP, port=22)]
    fw = forward_map([PortForward(80, closed_port), PortForward(22, closed_port)])
    with Machine(cfg, tmp_path) as m:
        m.start()
        threading.Timer(0.5, lambda: m.qmp("quit")).start()
        start = time.monotonic()
        results = wait_for_probes(probes, fw, 60, m, interval=0.1)
        assert time.monotonic() - start < 10
    assert [r.ok for r in results] == [False, False]
    assert "machine stopped: QEMU exited" in results[0].detail
    assert results[0].attempts >= 1
    assert results[1].attempts == 0 and "machine stopped" in results[1].detail


def test_unknown_kind_is_reported_not_raised() -> None:
    result = run_probe_once(Probe(kind="gopher", port=70), HOST, 70)  # type: ignore[arg-type]
    assert not result.ok and "unknown probe kind 'gopher'" in result.detail


def test_new_kind_is_one_registered_function(banner: int) -> None:
    from appliancekit.probes import probe_kind

    try:

        @probe_kind("ssh", describe=lambda p: "banner")
        def check_ssh(probe: Probe, host: str, port: int, timeout: float) -> str:
            with socket.create_connection((host, port), timeout=timeout) as s:
                return s.recv(100).decode().strip()

        probe = Probe(kind="ssh", port=22)  # type: ignore[arg-type]
        assert probe_name(probe) == "ssh :22 banner"
        result = run_probe_once(probe, HOST, banner)
        assert result.ok and result.detail == f"SSH-2.0-{MARKER}"
    finally:
        KINDS.pop("ssh", None)


def test_each_protocol_module_registers_its_kinds() -> None:
    """The package is one module per protocol; each registers the kinds it defines."""
    import pkgutil

    import appliancekit.probes as package

    modules = {
        m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")
    } - {"runner"}
    owners = {spec.check.__module__.rsplit(".", 1)[1] for spec in KINDS.values()}
    assert {"http", "dns", "smtp", "imap", "managesieve", "matrix"} <= modules
    assert modules <= owners, f"modules that register no kind: {modules - owners}"


def test_a_new_module_is_a_new_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, banner: int
) -> None:
    """Dropping a protocol module into the package is all it takes: no list to extend."""
    import sys

    import appliancekit.probes as package

    (tmp_path / "gophertest.py").write_text(
        "from appliancekit.probes.runner import probe_kind\n"
        "@probe_kind('gopher-test')\n"
        "def check(probe, host, port, timeout):\n"
        "    return 'gopher answered'\n"
    )
    recipe_dir = tmp_path / "homepage"
    shutil.copytree(REPO / "recipes" / "homepage", recipe_dir)
    text = (recipe_dir / "recipe.toml").read_text()
    (recipe_dir / "recipe.toml").write_text(text + '\n[[probe]]\nkind = "gopher-test"\nport = 70\n')
    with pytest.raises(UserError, match="unknown probe kind 'gopher-test'"):
        load_recipe(recipe_dir)
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    try:
        package._load_kinds()
        assert "gopher-test" in KINDS
        assert load_recipe(recipe_dir).probes[-1].kind == "gopher-test"  # recipes may use it
        result = run_probe_once(Probe(kind="gopher-test", port=70), HOST, banner)  # type: ignore[arg-type]
        assert result.ok and result.detail == "gopher answered"
    finally:
        KINDS.pop("gopher-test", None)
        sys.modules.pop("appliancekit.probes.gophertest", None)


class FakeSynapse(http.server.BaseHTTPRequestHandler):
    """The slice of Synapse's client and admin API the matrix probe uses: shared-secret
    registration (HMAC checked), password login, room aliases, send and history."""

    secret = b"s3cret"
    users: dict[str, str]
    rooms: dict[str, list[dict[str, object]]]  # room id -> events
    aliases: dict[str, str]

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, object]:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != "Bearer token-alice":
            self._reply(401, {"errcode": "M_UNKNOWN_TOKEN", "error": "bad token"})
            return False
        return True

    def do_GET(self) -> None:
        path = urllib.parse.unquote(self.path)
        if path == "/_synapse/admin/v1/register":
            self._reply(200, {"nonce": "n0nce"})
        elif path.startswith("/_matrix/client/v3/directory/room/"):
            alias = path.rsplit("/", 1)[1]
            if alias in self.aliases:
                self._reply(200, {"room_id": self.aliases[alias]})
            else:
                self._reply(404, {"errcode": "M_NOT_FOUND", "error": "no such alias"})
        elif path.endswith("/messages?dir=b&limit=50") and self._authorised():
            room = path.split("/rooms/", 1)[1].split("/", 1)[0]
            self._reply(200, {"chunk": list(reversed(self.rooms.get(room, [])))})

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/_synapse/admin/v1/register":
            mac = hmac.new(self.secret, digestmod=hashlib.sha1)
            mac.update(b"\x00".join(str(body[k]).encode() for k in ("nonce", "username")))
            mac.update(b"\x00" + str(body["password"]).encode() + b"\x00notadmin")
            if body["mac"] != mac.hexdigest():
                self._reply(403, {"errcode": "M_FORBIDDEN", "error": "HMAC incorrect"})
            elif body["username"] in self.users:
                self._reply(400, {"errcode": "M_USER_IN_USE", "error": "taken"})
            else:
                self.users[str(body["username"])] = str(body["password"])
                self._reply(200, {"user_id": f"@{body['username']}:chat.test"})
        elif self.path == "/_matrix/client/v3/login":
            user = body["identifier"]["user"]  # type: ignore[index]
            if self.users.get(user) != body["password"]:
                self._reply(403, {"errcode": "M_FORBIDDEN", "error": "Invalid password"})
            else:
                self._reply(200, {"access_token": f"token-{user}", "user_id": f"@{user}:chat.test"})
        elif self.path == "/_matrix/client/v3/createRoom" and self._authorised():
            room = f"!r{len(self.rooms)}:chat.test"
            self.rooms[room] = []
            self.aliases[f"#{body['room_alias_name']}:chat.test"] = room
            self._reply(200, {"room_id": room})

    def do_PUT(self) -> None:
        body = self._body()
        if self._authorised():
            room = urllib.parse.unquote(self.path).split("/rooms/", 1)[1].split("/", 1)[0]
            event = {"type": "m.room.message", "content": body}
            self.rooms[room].append(event)
            self._reply(200, {"event_id": f"$e{len(self.rooms[room])}"})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def synapse() -> Iterator[tuple[int, type[FakeSynapse]]]:
    handler = type("Handler", (FakeSynapse,), {"users": {}, "rooms": {}, "aliases": {}})
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    for port in serve(server):
        yield port, handler


def _matrix_probe(action: str, **extra: str) -> Probe:
    params = {"user": "alice", "password": "pw", "secret": "s3cret", "room": "lobby"}
    params |= {"message": "hello from the probe", "action": action} | extra
    return Probe(kind=ProbeKind.MATRIX, port=8008, params=tuple(sorted(params.items())))


def test_matrix_probe_posts_then_reads_back(synapse: tuple[int, type[FakeSynapse]]) -> None:
    port, handler = synapse
    posted = run_probe_once(_matrix_probe("post"), HOST, port, timeout=5)
    assert posted.ok, posted.detail
    assert "@alice:chat.test posted $e1 in #lobby:chat.test" in posted.detail
    assert list(handler.users) == ["alice"]
    again = run_probe_once(_matrix_probe("post"), HOST, port, timeout=5)  # user + room exist
    assert again.ok and "$e2" in again.detail and len(handler.rooms) == 1
    read = run_probe_once(_matrix_probe("read"), HOST, port, timeout=5)
    assert read.ok and "read 'hello from the probe' back" in read.detail
    missing = run_probe_once(_matrix_probe("read", message="never sent"), HOST, port, timeout=5)
    assert not missing.ok and "has no message 'never sent'" in missing.detail


def test_matrix_probe_reports_the_servers_error(synapse: tuple[int, type[FakeSynapse]]) -> None:
    port, _ = synapse
    wrong = run_probe_once(_matrix_probe("post", secret="wrong"), HOST, port, timeout=5)
    assert not wrong.ok
    assert "registering alice with the shared secret: HTTP 403 M_FORBIDDEN" in wrong.detail
    lost = run_probe_once(_matrix_probe("read"), HOST, port, timeout=5)
    assert not lost.ok and "logging in as alice: HTTP 403 M_FORBIDDEN" in lost.detail
