"""The monitoring agent's update, backup and certificate metrics (monitoring/agent/state.go):
the real agent, built for this host, run against a state directory laid out like a device's
and scraped over HTTP. The state files are made by their real writers where those run here
(slots.json by boot/slotswitch.py, the backup status by the backup agent's own printf lines
from backup.j2), and in the update agent's exact format otherwise (its Status struct's JSON
keys are read from state.go, so a renamed field fails here). Missing files give no metric;
a corrupt one gives appliancekit_state_read_errors 1 and nothing made up.

Fast once the agent is cached; its first build compiles Go's standard library for the host
(about 40 s of CPU)."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliancekit.backup import agent as backup_agent
from appliancekit.board import find_board
from appliancekit.boot import boot_path
from appliancekit.boot.slotswitch import Mechanism, not_implemented, render_slots_json

from .conftest import PROJECT, REPO
from .monitoring_support import needs_go, running_agent

pytestmark = needs_go
TOKEN = "scrape-token-state"
UPDATER_STATE_GO = REPO / "appliancekit" / "agent" / "updater" / "state.go"
BACKUP_TEMPLATE = Path(backup_agent.__file__).parent / "templates" / "backup.j2"
NOT_AFTER = datetime.datetime(2031, 5, 17, 12, 30, 0, tzinfo=datetime.UTC)


def unix(stamp: str) -> float:
    """Unix time of an RFC 3339 UTC stamp, what the agent exports."""
    return datetime.datetime.fromisoformat(stamp).timestamp()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """The exposition format's samples, keyed by name and label set."""
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        assert match, f"not a sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        samples[(match[1], labels)] = float(match[3])
    return samples


def named(samples: Samples, prefix: str) -> dict[str, float]:
    """name{k=v,...} -> value, for the samples whose name starts with `prefix`."""
    return {
        name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels)) + "}" if labels else ""): v
        for (name, labels), v in samples.items()
        if name.startswith(prefix)
    }


@pytest.fixture()
def device(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(metrics URL, device root) of a running agent."""
    with running_agent(tmp_path, TOKEN) as (url, _, root):
        yield url, root


def scrape(url: str) -> Samples:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return parse(response.read().decode())


def write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def update_status(**fields: object) -> str:
    """status.json as the update agent writes it (WriteJSON: json.MarshalIndent, 2 spaces,
    every field of its Status struct, the optional pending one left out when nil)."""
    struct = re.search(r"type Status struct \{(.*?)\n\}", UPDATER_STATE_GO.read_text(), re.S)
    assert struct, "no Status struct in the update agent's state.go"
    keys = re.findall(r'json:"(\w+)', struct[1])
    status: dict[str, object] = {
        "slot": "a", "version": 0, "root_hash": "", "trial": False, "last_check": "",
        "last_result": "", "last_update": "", "failed": None, "pending": None,
        "last_download_bytes": 0, "last_release_bytes": 0,
    }  # fmt: skip
    assert sorted(status) == sorted(keys), "the update agent's status.json changed: follow it"
    status.update(fields)
    if status["pending"] is None:
        del status["pending"]  # omitempty
    return json.dumps(status, indent=2) + "\n"


def backup_status(path: Path, result: str, *args: str) -> None:
    """The backup agent's status file, written by its own printf line for `result` in
    backup.j2 (run with /usr/bin/printf, as execline runs it)."""
    formats = re.findall(r'printf "(result=(\w+)\\n[^"]*)"', BACKUP_TEMPLATE.read_text())
    (fmt,) = [f for f, r in formats if r == result]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        subprocess.run(["printf", fmt, *args], stdout=out, check=True)


def certificate(not_after: datetime.datetime, cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - datetime.timedelta(days=90))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_missing_state_gives_no_metric(device: tuple[str, Path]) -> None:
    url, root = device
    samples = scrape(url)
    for prefix in ("appliancekit_update_", "appliancekit_backup_", "appliancekit_certificate_"):
        assert not named(samples, prefix), named(samples, prefix)
    errors = named(samples, "appliancekit_state_read_errors")
    assert len(errors) == 4 and set(errors.values()) == {0.0}, errors  # status, slots, backup, cert


def test_update_backup_and_certificate_state(device: tuple[str, Path]) -> None:
    url, root = device
    board = find_board("qemu-virt-arm64", PROJECT.boards_dir)
    write(
        root / "etc/appliancekit/slots.json",
        render_slots_json(boot_path(board).slot_switch(board), board),
    )
    status = root / "data/.appliancekit/update/status.json"
    write(status, update_status(
        slot="b", version=1764500000, trial=True, last_check="2026-11-30T16:00:00Z",
        last_result="trial of release 1764500000 running", last_update="2026-11-01T08:00:00Z",
        failed=[{"version": 1764400000, "root_hash": "ab" * 32, "reason": "x", "at": "2026-11-02T00:00:00Z"}],
    ))  # fmt: skip
    backup = root / "data/.appliancekit/backup/status"
    backup_status(
        backup, "ok", "2026-11-30T17:00:00Z", "2026-11-30T17:00:00Z", "1a2b3c4d", "123456", "2345"
    )
    write(root / "var/lib/tls/cert.pem", certificate(NOT_AFTER, "example.net"))
    got = named(scrape(url), "appliancekit_")
    tls = f"certificate=tls,path={root}/var/lib/tls/cert.pem"
    want = {
        "appliancekit_update_info{release=1764500000,slot=b}": 1,
        "appliancekit_update_trial": 1,
        "appliancekit_update_failed_releases": 1,
        "appliancekit_update_last_check_timestamp_seconds": unix("2026-11-30T16:00:00Z"),
        "appliancekit_update_enabled": 1,
        "appliancekit_update_last_result_ok": 1,
        "appliancekit_update_last_success_timestamp_seconds": unix("2026-11-01T08:00:00Z"),
        "appliancekit_update_supported{mechanism=initramfs,reason=}": 1,
        "appliancekit_backup_enabled{target=data}": 1,
        "appliancekit_backup_last_attempt_timestamp_seconds{target=data}": unix(
            "2026-11-30T17:00:00Z"
        ),
        "appliancekit_backup_last_result_ok{target=data}": 1,
        "appliancekit_backup_last_success_timestamp_seconds{target=data}": unix(
            "2026-11-30T17:00:00Z"
        ),
        "appliancekit_backup_last_size_bytes{target=data}": 123456,
        "appliancekit_backup_last_added_bytes{target=data}": 2345,
        f"appliancekit_certificate_expiry_timestamp_seconds{{{tls}}}": NOT_AFTER.timestamp(),
    }
    assert {
        k: v
        for k, v in got.items()
        if not k.startswith(("appliancekit_state", "appliancekit_service"))
    } == want
    assert set(named(scrape(url), "appliancekit_state_read_errors").values()) == {0.0}

    # a chain expires with its first certificate to expire, whatever its order
    write(
        root / "var/lib/tls/cert.pem",
        certificate(NOT_AFTER, "example.net")
        + certificate(datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC), "ca"),
    )
    got = named(scrape(url), "appliancekit_certificate")
    assert got == {
        f"appliancekit_certificate_expiry_timestamp_seconds{{{tls}}}": unix("2030-01-01T00:00:00Z")
    }

    # failures: a refused check, a backup that failed after the last success, a board
    # whose slot switch is not written
    write(
        status,
        update_status(
            slot="a",
            version=1764500000,
            last_check="2026-11-30T18:00:00Z",
            last_result="refused: release 5 is older than the running 7 (downgrade not allowed)",
        ),
    )
    backup_status(backup, "failed", "2026-11-30T19:00:00Z", "2026-11-30T17:00:00Z")
    switch = not_implemented(Mechanism.UBOOT_BOOTCOUNT, "arm", "commit", "fallback")
    write(root / "etc/appliancekit/slots.json", render_slots_json(switch, board))
    got = named(scrape(url), "appliancekit_")
    assert got["appliancekit_update_last_result_ok"] == 0
    assert got["appliancekit_update_trial"] == 0
    assert "appliancekit_update_last_success_timestamp_seconds" not in got  # never updated here
    assert got["appliancekit_backup_last_result_ok{target=data}"] == 0
    assert got["appliancekit_backup_last_attempt_timestamp_seconds{target=data}"] == unix(
        "2026-11-30T19:00:00Z"
    )
    assert got["appliancekit_backup_last_success_timestamp_seconds{target=data}"] == unix(
        "2026-11-30T17:00:00Z"
    )
    assert "appliancekit_backup_last_size_bytes{target=data}" not in got
    (supported,) = [k for k in got if k.startswith("appliancekit_update_supported")]
    assert (
        got[supported] == 0
        and "mechanism=uboot-bootcount" in supported
        and "not implemented" in supported
    )

    # a backup that failed before any success: an attempt, and no success time made up
    backup_status(backup, "failed", "2026-11-30T19:00:00Z", "never")
    got = named(scrape(url), "appliancekit_backup")
    assert got["appliancekit_backup_last_result_ok{target=data}"] == 0
    assert "appliancekit_backup_last_success_timestamp_seconds{target=data}" not in got

    # off: neither agent was given a repository; nothing to alert on
    write(
        status,
        update_status(
            slot="a",
            version=1764500000,
            last_check="2026-11-30T18:00:00Z",
            last_result="no update_url set: not checking",
        ),
    )
    backup_status(backup, "off", "2026-11-30T19:00:00Z")
    got = named(scrape(url), "appliancekit_")
    assert (
        got["appliancekit_update_enabled"] == 0 and "appliancekit_update_last_result_ok" not in got
    )
    assert {k: v for k, v in got.items() if k.startswith("appliancekit_backup")} == {
        "appliancekit_backup_enabled{target=data}": 0
    }


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("data/.appliancekit/update/status.json", '{"slot": "a", "version": 17'),  # cut short
        ("data/.appliancekit/update/status.json", '{"slot": "z", "version": 17}'),
        (
            "data/.appliancekit/update/status.json",
            '{"slot": "a", "version": 1, "last_check": "yesterday"}',
        ),
        ("etc/appliancekit/slots.json", "{}"),
        ("data/.appliancekit/backup/status", "result=maybe\n"),
        ("data/.appliancekit/backup/status", "result=ok\ntime=\nlast_success=never\n"),
        ("var/lib/tls/cert.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        ("var/lib/tls/cert.pem", "not a certificate\n"),
        ("var/lib/tls/cert.pem", b"\x00\xff" * 100),
    ],
)
def test_a_corrupt_file_is_an_error_not_a_value(
    device: tuple[str, Path], path: str, data: str
) -> None:
    url, root = device
    write(root / path, data)
    samples = scrape(url)  # the agent still answers, the other metrics with it
    errors = named(samples, "appliancekit_state_read_errors")
    assert errors.pop(next(k for k in errors if f"path={root}/{path}" in k)) == 1
    assert set(errors.values()) == {0.0}
    values = {
        **named(samples, "appliancekit_update"),
        **named(samples, "appliancekit_backup"),
        **named(samples, "appliancekit_certificate"),
    }
    assert values == {}, values
    (root / path).unlink()
    assert set(named(scrape(url), "appliancekit_state_read_errors").values()) == {0.0}


# Every result sentence the update agent can leave in status.json, as its source spells it
# (%d, %s, %v filled in below), and what the monitoring agent must make of it.
UPDATE_RESULTS = {
    "rolled back: ": "failed",
    "trial of release %d running": "ok",
    "committed release %d in slot %s": "ok",
    "trial of release %d failed (%s): rebooting into slot %s": "failed",
    "no update_url set: not checking": "off",
    # a publish fell between two requests of one check: nothing failed, the next poll reads it
    "the release changed while it was read (a publish under way): checking again at the next poll": "ok",
    "no release published": "ok",
    "repository unreachable": "failed",
    "refused: %v": "failed",
    "refused: %s": "failed",
    "refused: the release is not signed (no SHA256SUMS.minisig)": "failed",
    "refused: the signed release lists no %s (publish it with a two-slot appliancekit)": "failed",
    "refused: %s does not match the signed SHA256SUMS": "failed",
    "release %d not written (will resume): %v": "failed",
    "release %d is in slot %s; switching in the maintenance window": "ok",
    "refused: the release's %s differs from the loader's; switching kernels on this board needs kexec, which is not implemented": "failed",
    "cannot arm the trial: %v": "failed",
    "rebooting into slot %s for one trial boot of release %d": "ok",
    "up to date": "ok",
}


def test_every_update_result_is_classified() -> None:
    """The update agent says how a check went in a sentence; the monitoring agent tells
    failures by how they begin (state.go, updateFailed). A sentence added or reworded in the
    update agent fails here until it is classified."""
    updater = REPO / "appliancekit" / "agent" / "updater"
    agent_go = (updater / "agent.go").read_text()
    found = set(re.findall(r'setResult\((?:fmt\.Sprintf\()?"([^"]*)"', agent_go))
    found |= set(re.findall(r'Errorf\("([^"%][^"]*)"', agent_go))
    found |= set(re.findall(r'return (?:fmt\.Sprintf\()?"([^"]+)"[^\n]*, nil\n', agent_go))
    found |= set(re.findall(r'errors\.New\("([^"]*)"\)', agent_go))
    found |= set(re.findall(r'Note: "([^"]*)"', (updater / "release.go").read_text()))
    assert found == set(UPDATE_RESULTS)
    state_go = (REPO / "appliancekit" / "monitoring" / "agent" / "state.go").read_text()
    failed = re.compile(re.search(r"updateFailed = regexp\.MustCompile\(`([^`]*)`\)", state_go)[1])  # type: ignore[index]
    off = re.search(r'const updateOff = "([^"]*)"', state_go)[1]  # type: ignore[index]
    for sentence, want in UPDATE_RESULTS.items():
        filled = sentence.replace("%d", "17").replace("%s", "x").replace("%v", "x")
        got = "off" if filled.startswith(off) else "failed" if failed.match(filled) else "ok"
        assert got == want, sentence
