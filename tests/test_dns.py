"""The dns appliance (PowerDNS + sqlite + HTTP API): settings, its probe kinds, its first-boot
SQL, and one boot test whose second boot is a restore on a fresh disk (zones and records made
through the API come back from the first machine's backup)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jinja2
import pytest

from appliancekit.backup.host import host_tools
from appliancekit.backup.vm import Vm
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.errors import UserError
from appliancekit.probes import KINDS, forwards_for, run_probe_once
from appliancekit.recipe import Probe, ProbeKind, ProbePhase, find_recipe, resolve_settings
from appliancekit.seal import list_erofs_paths

from .conftest import PROJECT, run_cli
from .restore_support import backup_then_restore
from .test_homepage import FORBIDDEN, extract_partition

RECIPE_DIR = PROJECT.recipes_dir / "dns"
BOARD = "qemu-virt-arm64"


def dns_recipe():
    return find_recipe("dns", PROJECT.recipes_dir)


# --------------------------------------------------------------------------- settings


def test_zones_setting_is_validated_and_normalised() -> None:
    values = resolve_settings(dns_recipe(), {"zones": "Example.org., example.net"}).as_dict()
    assert values["zones"] == "example.org,example.net"
    with pytest.raises(UserError) as err:
        resolve_settings(dns_recipe(), {"zones": "example.org,bad_zone"})
    message = str(err.value)
    assert "settings.zones" in message and "'bad_zone' is not a domain name" in message
    assert "\n" not in message


def test_empty_api_key_is_refused() -> None:
    with pytest.raises(UserError) as err:
        resolve_settings(dns_recipe(), {"api_key": ""})
    assert "settings.api_key" in str(err.value) and "\n" not in str(err.value)


def test_bad_zone_fails_build_with_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "build", "dns", "--board", BOARD, "-s", "zones=example..org", "--images", str(tmp_path)
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "settings.zones" in lines[0], result.stderr


# --------------------------------------------------------------------------- probe kinds


def test_probe_kinds_and_forwards() -> None:
    probes = [p for p in dns_recipe().probes]
    assert {p.kind for p in probes} == {"pdns-api", "dns", "dns-tcp", "closed"}
    assert {"pdns-api", "dns-tcp", "closed"} <= set(KINDS)
    forwards = {(f.guest_port, f.protocol) for f in forwards_for(probes, dns_recipe().ports)}
    # DNS over UDP and over TCP on the same guest port: two forwards
    assert {(53, "udp"), (53, "tcp"), (8081, "tcp"), (22, "tcp")} <= forwards
    api = next(p for p in probes if p.kind == ProbeKind.PDNS_API)
    assert api.phase == ProbePhase.FIRST  # made on the first boot, resolved after the reboot


@contextlib.contextmanager
def _serve(handler) -> Iterator[int]:  # type: ignore[no-untyped-def]
    """Accept on a local port and run handler(conn) for each connection in a thread."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def loop() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handler, args=(conn, stop), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


def _closed(port: int) -> tuple[bool, str]:
    result = run_probe_once(Probe(ProbeKind.CLOSED, port=22), "127.0.0.1", port, timeout=1.0)
    return result.ok, result.detail


def test_closed_passes_when_the_connection_is_dropped() -> None:
    # what QEMU's user-mode forward does when the guest refuses: accept, then close
    def drop(conn: socket.socket, stop: threading.Event) -> None:
        conn.close()

    with _serve(drop) as port:
        assert _closed(port)[0]
    spare = socket.create_server(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    assert _closed(port) == (True, "connection refused")


def test_closed_fails_when_something_listens() -> None:
    def hold(conn: socket.socket, stop: threading.Event) -> None:
        stop.wait(5)
        conn.close()

    def banner(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_9.9\r\n")
        stop.wait(5)
        conn.close()

    with _serve(hold) as port:
        ok, detail = _closed(port)
        assert not ok and "kept it open" in detail
    with _serve(banner) as port:
        ok, detail = _closed(port)
        assert not ok and "SSH-2.0" in detail


class _FakePdns(BaseHTTPRequestHandler):
    """Enough of the PowerDNS API for the probe: zones + rrsets behind X-API-Key."""

    key = "k3y"
    require_key = True
    zones: dict[str, list[dict]] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: object = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        if self.require_key and self.headers.get("X-API-Key") != self.key:
            self._reply(401, {"error": "Unauthorized"})
            return False
        return True

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_GET(self) -> None:
        if not self._authorised():
            return
        name = self.path.rsplit("/", 1)[-1]
        if name == "zones":
            self._reply(200, [{"name": z} for z in self.zones])
        elif name in self.zones:
            self._reply(200, {"name": name, "rrsets": self.zones[name]})
        else:
            self._reply(404, {"error": "Not Found"})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        zone = self._body()["name"]
        if zone in self.zones:
            self._reply(409, {"error": "Conflict"})
            return
        self.zones[zone] = []
        self._reply(201, {"name": zone})

    def do_PATCH(self) -> None:
        if not self._authorised():
            return
        zone = self.path.rsplit("/", 1)[-1]
        for rrset in self._body()["rrsets"]:
            kept = [r for r in self.zones[zone] if (r["name"], r["type"]) != (rrset["name"], "A")]
            self.zones[zone] = kept + [rrset]
        self._reply(204)


@pytest.fixture()
def fake_pdns() -> Iterator[tuple[int, type[_FakePdns]]]:
    handler = type("Handler", (_FakePdns,), {"zones": {}, "require_key": True})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def _api_probe(key: str) -> Probe:
    params = {
        "api_key": key,
        "zone": "probe.test",
        "name": "www.probe.test",
        "address": "192.0.2.1",
    }
    return Probe(ProbeKind.PDNS_API, port=8081, params=tuple(params.items()))


def test_pdns_api_probe_creates_zone_and_record(fake_pdns) -> None:  # type: ignore[no-untyped-def]
    port, handler = fake_pdns
    first = run_probe_once(_api_probe("k3y"), "127.0.0.1", port, timeout=5)
    assert first.ok, first.detail
    assert "created" in first.detail
    records = handler.zones["probe.test."][0]["records"]
    assert records == [{"content": "192.0.2.1", "disabled": False}]
    again = run_probe_once(_api_probe("k3y"), "127.0.0.1", port, timeout=5)  # a retry
    assert again.ok and "existed" in again.detail
    wrong = run_probe_once(_api_probe("nope"), "127.0.0.1", port, timeout=5)
    assert not wrong.ok and "401" in wrong.detail


def test_pdns_api_probe_fails_when_the_api_needs_no_key(fake_pdns) -> None:  # type: ignore[no-untyped-def]
    port, handler = fake_pdns
    handler.require_key = False
    result = run_probe_once(_api_probe("k3y"), "127.0.0.1", port, timeout=5)
    assert not result.ok and "without X-API-Key answered 200" in result.detail


# --------------------------------------------------------------------------- first-boot SQL


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="needs the sqlite3 CLI")
def test_init_sql_creates_schema_and_zones_once(tmp_path: Path) -> None:
    """The recipe's init.sql, pointed at temp paths, run as the appliance runs it."""
    schema = tmp_path / "schema.sql"
    schema.write_text(
        "CREATE TABLE domains (id INTEGER PRIMARY KEY, name VARCHAR(255) NOT NULL,"
        " type VARCHAR(8) NOT NULL);\nCREATE UNIQUE INDEX name_index ON domains(name);\n"
        "CREATE TABLE records (id INTEGER PRIMARY KEY, domain_id INTEGER, name VARCHAR(255),"
        " type VARCHAR(10), content VARCHAR(65535), ttl INTEGER, prio INTEGER,"
        " disabled BOOLEAN DEFAULT 0, ordername VARCHAR(255), auth BOOL DEFAULT 1);\n"
    )
    text = (RECIPE_DIR / "init.sql.j2").read_text()
    text = (
        text.replace("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql", str(schema))
        .replace("/run/pdns/schema-step.sql", str(tmp_path / "step.sql"))
        .replace("/etc/powerdns/zones.list", str(tmp_path / "zones.list"))
    )
    init = tmp_path / "init.sql"
    init.write_text(jinja2.Template(text).render())
    db = tmp_path / "pdns.sqlite3"

    def run(zones: str) -> str:
        (tmp_path / "zones.list").write_text(zones)
        done = subprocess.run(
            ["sqlite3", "-batch", str(db), f".read {init}"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = run("Example.org., example.net  x'y.org\n")
    assert "creating zone example.org" in out and "creating zone example.net" in out
    assert "ignoring malformed zone name 'x''y.org'" in out  # read as data, not as SQL
    assert "2 zone(s)" in run("example.org\n")  # again: schema not re-read, nothing doubled
    out = run("example.org,new.test\n")
    assert "creating zone new.test" in out and "creating zone example.org" not in out
    rows = subprocess.run(
        ["sqlite3", str(db), "SELECT name, type FROM records ORDER BY name, type"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert rows == [
        f"{z}|{t}" for z in ("example.net", "example.org", "new.test") for t in ("NS", "SOA")
    ]


# --------------------------------------------------------------------------- build + boot


@pytest.mark.slow
def test_dns_image_is_sealed_and_small(appliances, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = appliances.build("dns", BOARD)
    paths = list_erofs_paths(extract_partition(result.output_dir, "ak-root-a", tmp_path / "r"))
    basenames = {p.rsplit("/", 1)[-1] for p in paths}
    assert not (FORBIDDEN & basenames), FORBIDDEN & basenames
    assert {"/usr/sbin/pdns_server", "/usr/bin/sqlite3"} <= set(paths)
    assert any(p.endswith("/pdns/libgsqlite3backend.so") for p in paths)
    assert not any(p.endswith(("/pdnsutil", "/zone2sql", "/pdns_control")) for p in paths)
    report = json.loads((result.output_dir / "size-report.json").read_text())
    # PowerDNS with sqlite, the update agent and, for [backup], restic (one static Go binary:
    # about 11 MiB of the sealed root): docs/measurements.md, "What [backup] adds".
    assert report["sealed_root_bytes"] < 40 * 2**20


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_dns_boot_zones_restored_on_a_fresh_disk(appliances, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The boot test with its second boot a restore (tests/restore_support.py): zones and
    records made through the API on the first machine, backed up to restic's REST server on
    the host; a fresh disk with restore=latest answers them over UDP and TCP, and pdns only
    started once /data was back (its setup found the zones: none was made anew)."""
    result = appliances.build("dns", BOARD)
    key = dict(result.manifest.extra["test_settings"])["api_key"]
    tools = host_tools(PROJECT.recipes_dir, Cache(default_cache_dir()))
    records = {"mail.probe.test.": "192.0.2.25", "ns.moved.test.": "198.51.100.53"}

    def make_more(vm: Vm) -> None:  # a second record in the probe's zone, and a new zone
        for name, address in records.items():
            zone = name.split(".", 1)[1]
            vm.probe(ProbeKind.PDNS_API, 8081, api_key=key, zone=zone, name=name, address=address)

    def resolve(vm: Vm) -> dict[tuple[str, str], str]:
        return {
            (name, kind): vm.probe(kind, 53, timeout=120, query=f"{name} A", expect=address)
            for name, address in records.items()
            for kind in (ProbeKind.DNS, ProbeKind.DNS_TCP)
        }

    run = backup_then_restore(
        result, BOARD, tools, tmp_path, on_first=make_more, on_restored=resolve
    )
    failed = [f"{p.name}: {p.detail}" for p in run.probes if not p.ok]
    assert run.passed, f"{run.failure}\n{failed}"
    by_name = run.by_name()
    assert "created" in by_name["api: create zone + A record"].detail
    for name in ("record over TCP", "record over UDP"):
        for suffix in ("", " (after restore)"):
            assert "192.0.2.53" in by_name[name + suffix].detail, name + suffix
    assert by_name["zone from settings (after restore)"].ok
    assert by_name["port 22 closed (after restore)"].ok
    assert "pdns-init: creating zone example.test" in run.first_serial
    # every backup succeeded, the first too, taken while the service was making its database
    assert "appliancekit: backup: FAILED" not in run.first_serial
    # pdns and its setup ran on the restored database only: the zones were there already
    head = run.before_restore()
    assert f"restoring snapshot {run.snapshot} of" in head, head[-2000:]
    assert "pdns-init" not in head and "PowerDNS Authoritative Server" not in head
    after = run.second_serial[len(head) :]
    assert "pdns-init: creating zone" not in after
    assert "pdns-init: 3 zone(s) in the database" in after  # example.test, probe.test, moved.test
    print(f"dns: backed up in snapshot {run.snapshot}; restored: {run.restored}")
