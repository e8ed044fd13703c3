"""A release that migrates its service's data at start and then fails its trial must not strand
the rollback (issue 12 §3), proven with a stateful service: PowerDNS and its sqlite database
on /data (the `dns` recipe), on qemu-virt-arm64 with the real update agent.

v1 boots; a zone and its records are made through the HTTP API and answer over UDP and TCP.
v2 is what a PowerDNS upgrade looks like when it goes wrong: its service's setup migrates
the database to a new schema at start (the records move into a new table, `records` is
dropped, user_version 5: v1's setup and v1's pdns can no longer use the file), then its
pdns_server refuses its configuration (a setting this PowerDNS does not know) and exits, so
the service crash-loops. The agent keeps /data before the trial, tries v2 once, the
initramfs returns to v1, the agent puts /data back, and v1 serves the zone and every record
exactly as before, over UDP, TCP and the API; v2 is reported failed and not taken again.
The agent's console lines give what keeping /data cost (bytes and seconds, beside /data's
use and the slot write's seconds in the same run) and how long putting it back took; the
test prints them (docs/measurements.md, "Updates").
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from appliancekit.board import find_board
from appliancekit.probes._common import json_request
from tests.conftest import PROJECT
from tests.update_helpers import (
    DeployServer,
    UpdateMachine,
    build_release,
    make_deploy_repo,
    new_key,
    publish,
    recipe_copy,
)

pytestmark = pytest.mark.slow
BOARD = "qemu-virt-arm64"
BOOT = 600.0  # generous: TCG on a shared, loaded machine
ZONE = "rollback.test."
API = "/api/v1/servers/localhost/zones"

# v2's schema upgrade, run by its service's setup after v1's init.sql, before every start of
# pdns_server; once (the step is written only while `records` exists), in one transaction.
UPGRADE_SQL = """\
.bail on
.headers off
.mode list
BEGIN IMMEDIATE;
.output /run/pdns/upgrade-step.sql
SELECT '.read /etc/powerdns/upgrade-records.sql'
 WHERE EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records');
.output stdout
.read /run/pdns/upgrade-step.sql
COMMIT;
"""
UPGRADE_RECORDS_SQL = """\
SELECT 'pdns-upgrade: moving ' || count(*) || ' records to schema 5' FROM records;
CREATE TABLE rrs (id INTEGER PRIMARY KEY,
                  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
                  owner TEXT NOT NULL, rtype TEXT NOT NULL, rdata TEXT NOT NULL,
                  ttl INTEGER, flags INTEGER NOT NULL DEFAULT 0);
INSERT INTO rrs SELECT id, domain_id, name, type, content, ttl, disabled | (auth << 1)
  FROM records;
DROP TABLE records;
PRAGMA user_version = 5;
"""
# a setting of a newer PowerDNS: this pdns_server does not know it and exits at start
UNKNOWN_SETTING = "gsqlite3-schema-version=5"

# the zone made through the API on v1: (name, type) -> records
RRSETS = {
    ("www.rollback.test.", "A"): ["192.0.2.80"],
    ("www.rollback.test.", "AAAA"): ["2001:db8::80"],
    ("mail.rollback.test.", "A"): ["192.0.2.25", "192.0.2.26"],
    ("rollback.test.", "MX"): ["10 mail.rollback.test."],
    ("rollback.test.", "TXT"): ['"v=spf1 mx -all"'],
    ("ftp.rollback.test.", "CNAME"): ["www.rollback.test."],
}


def v2_recipes(dest: Path, mtime: float) -> Path:
    """The dns recipe as a release that migrates the database and then fails to start."""
    setup = (
        '["/usr/bin/sqlite3", "-batch", "/var/lib/powerdns/pdns.sqlite3", '
        '".read /etc/powerdns/upgrade.sql"]'
    )

    def edit(text: str) -> str:
        old = '".read /etc/powerdns/init.sql"]]'
        assert old in text
        text = text.replace(old, f'".read /etc/powerdns/init.sql"], {setup}]')
        return text + "".join(
            f'\n[[file]]\npath = "/etc/powerdns/{name}"\ntemplate = "{name}"\n'
            for name in ("upgrade.sql", "upgrade-records.sql")
        )

    root = recipe_copy(PROJECT, "dns", dest, edit)
    recipe = root / "dns"
    (recipe / "upgrade.sql").write_text(UPGRADE_SQL)
    (recipe / "upgrade-records.sql").write_text(UPGRADE_RECORDS_SQL)
    conf = recipe / "pdns.conf.j2"
    conf.write_text(conf.read_text() + UNKNOWN_SETTING + "\n")
    for path in [recipe, *recipe.rglob("*")]:
        os.utime(path, (mtime, mtime))  # newer than v1: the release version is the source date
    return root


def api(m: UpdateMachine, key: str, method: str, path: str, body: object = None) -> object:
    status, answer = json_request(
        "127.0.0.1", m.ports[8081], method, path, 20, {"X-API-Key": key}, body
    )
    assert status in (200, 201, 204), f"{method} {path}: HTTP {status} {answer}"
    return answer


def api_zone(m: UpdateMachine, key: str) -> list[tuple[str, str, int, list[str]]]:
    """The zone as the API holds it: every rrset with its TTL and records, SOA included."""
    zone = api(m, key, "GET", f"{API}/{ZONE}")
    assert isinstance(zone, dict)
    return sorted(
        (r["name"], r["type"], r["ttl"], sorted(x["content"] for x in r["records"]))
        for r in zone["rrsets"]
    )


def answers(m: UpdateMachine, names: list[tuple[str, str]], tcp: bool) -> dict[str, list[str]]:
    """What `dig NAME TYPE` (+tcp) answers for each name: rcode and the answer section."""
    out = {}
    for name, rdtype in names:
        query = dns.message.make_query(name, rdtype)
        if tcp:
            response = dns.query.tcp(query, "127.0.0.1", port=m.ports[53], timeout=20)
        else:
            response = dns.query.udp(query, "127.0.0.1", port=m.udp_ports[53], timeout=20)
        rcode = dns.rcode.to_text(response.rcode())
        # one line per record, sorted: pdns may order an rrset's records differently each time
        lines = (line for rrset in response.answer for line in rrset.to_text().splitlines())
        out[f"{name} {rdtype}"] = [rcode, *sorted(lines)]
    return out


def wait_until(what: str, check, timeout: float, m: UpdateMachine):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (OSError, AssertionError, dns.exception.DNSException) as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {e}\n{m.serial()[-3000:]}") from e
        time.sleep(2)


@pytest.mark.timeout(3600)
def test_v2_migrates_the_database_fails_its_trial_and_v1_gets_its_data_back(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    key = new_key(tmp_path / "key")
    v1 = build_release(PROJECT, "dns", BOARD, tmp_path / "images" / "v1", key)
    v2 = build_release(
        PROJECT,
        "dns",
        BOARD,
        tmp_path / "images" / "v2",
        key,
        recipes_dir=v2_recipes(tmp_path / "recipes2", time.time() + 60),
    )
    assert v1.manifest.source_date_epoch < v2.manifest.source_date_epoch
    api_key = dict(v1.manifest.extra["test_settings"])["api_key"]
    repo = make_deploy_repo(tmp_path / "deploy")
    with DeployServer(repo) as server:
        m = UpdateMachine(
            v1.output_dir,
            find_board(BOARD, PROJECT.boards_dir),
            tmp_path / "machine",
            {"update_url": server.guest_url, "update_interval": "3"},
            guest_ports=(53, 8081),
            udp_ports=(53,),
        )
        m.start()
        try:
            run(m, api_key, repo, key, v2, started)
        finally:
            m.kill()


def run(m: UpdateMachine, api_key: str, repo: Path, key, v2, started: float) -> None:  # type: ignore[no-untyped-def]
    booted = time.monotonic()
    # --- v1: a zone and its records through the API; they answer over UDP and TCP
    m.agent_result("no release published", 0, BOOT)
    wait_until("the API", lambda: api(m, api_key, "GET", API), BOOT, m)
    api(m, api_key, "POST", API, {"name": ZONE, "kind": "Native", "nameservers": [f"ns1.{ZONE}"]})
    rrsets = [
        {
            "name": name,
            "type": rdtype,
            "ttl": 300,
            "changetype": "REPLACE",
            "records": [{"content": c, "disabled": False} for c in contents],
        }
        for (name, rdtype), contents in RRSETS.items()
    ]
    api(m, api_key, "PATCH", f"{API}/{ZONE}", {"rrsets": rrsets})
    before = api_zone(m, api_key)
    assert {(n, t): c for n, t, _, c in before if (n, t) in RRSETS} == RRSETS
    names = [(n, t) for n, t, _, _ in before] + [("example.test.", "SOA")]
    udp = answers(m, names, tcp=False)
    assert answers(m, names, tcp=True) == udp
    assert all(a[0] == "NOERROR" and len(a) > 1 for a in udp.values()), udp
    assert "192.0.2.26" in " ".join(udp["mail.rollback.test. A"])

    # --- v2: written, /data kept, one trial that migrates the database and fails
    since = m.mark()
    publish(v2.output_dir, repo, key)
    written = m.wait_for(
        r"ak-update: release \d+ written to slot b and verified "
        r"\((\d+) bytes downloaded, ([\d.]+) s\)",
        since,
        BOOT,
    )
    kept = m.wait_for(
        r"ak-update: /data kept for a rollback: (\d+) bytes in ([\d.]+) s "
        r"\(/data: (\d+) bytes used, (\d+) free; budget (\d+)% of free\)",
        since,
        BOOT,
    )
    m.wait_for(r"appliancekit: slot b: trial boot", since, BOOT)
    moved = m.wait_for(r"pdns-upgrade: moving (\d+) records to schema 5", since, BOOT)
    m.wait_for(r"ak-update: [^\n]*trial of release \d+ failed", since, 2 * BOOT)
    fell_back = m.wait_for(r"slot b did not commit: back to slot a", since, BOOT)
    fell_back_at = time.monotonic()
    restore = m.wait_for(
        r"ak-update: /data put back from before the trial in ([\d.]+) s", fell_back.end(), BOOT
    )
    line = m.agent_result(r"rolled back: release \d+ in slot b did not commit", since, BOOT)
    assert "/data restored from before the trial" in line
    v2m = v2.manifest
    assert f"failed releases: {v2m.source_date_epoch} ({v2m.verity.root_hash[:12]})" in line
    trial = m.serial()[since : fell_back.start()]
    assert len(re.findall(r"appliancekit: slot b: trial boot", trial)) == 1
    assert "Fatal error: Trying to set unknown setting" in trial  # v2's pdns_server exits
    # every record of v1 (SOA and NS of two zones, and ours) went into v2's new table
    assert int(moved.group(1)) >= sum(len(c) for _, _, _, c in before) + 2

    # --- v1 again: the zone and every record exactly as before, over UDP, TCP and the API
    wait_until("v1 answering as before", lambda: _same(answers(m, names, tcp=False), udp), BOOT, m)
    answered = time.monotonic()
    assert answers(m, names, tcp=True) == udp
    assert api_zone(m, api_key) == before
    # v1's pdns ran its setup and started on the database put back: its last start (the
    # setup's count of zones) comes after the restore, and v1 never ran v2's upgrade
    rollback = m.serial()[fell_back.end() :]
    counts = [x.start() for x in re.finditer(r"pdns-init: \d+ zone\(s\) in the database", rollback)]
    assert counts and counts[-1] > restore.end() - fell_back.end(), rollback[-3000:]
    assert "pdns-upgrade" not in rollback
    after_restore = rollback[restore.end() - fell_back.end() :]
    assert "no such table" not in after_restore, after_restore[-3000:]
    # the agent stopped the services (it says when it cannot) before each copy and restore
    assert "ak-update: stopping service" not in m.serial()
    # any start of v1's pdns before the restore met the migrated file
    early = rollback[: restore.start() - fell_back.end()]
    raced = "no such table: records" in early
    m.agent_result(r"refused: release \d+ failed here before", fell_back.end(), 90)

    print(
        f"dns /data rollback: snapshot {kept.group(1)} bytes in {kept.group(2)} s "
        f"(/data {kept.group(3)} bytes used, {kept.group(4)} free, budget {kept.group(5)}%); "
        f"slot write {written.group(2)} s ({written.group(1)} bytes downloaded); "
        f"put back in {restore.group(1)} s; v1's pdns started on the trial's data before the "
        f"restore: {'yes' if raced else 'no'}; back on slot a to answering as before "
        f"{answered - fell_back_at:.0f} s; {len(udp)} names compared; "
        f"test {time.monotonic() - started:.0f} s (builds {booted - started:.0f} s)"
    )


def _same(got: dict[str, list[str]], want: dict[str, list[str]]) -> bool:
    assert got == want, got
    return True
