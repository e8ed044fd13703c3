"""The panel's update state, certificate expiry and last backup, read from a member's
monitoring agent: the real agent (tests/monitoring_support.py) on a device-like tree, a cloud
member pointed at it, and member_status() as the pages get it. Plus a member that does not
answer (refused, and one that accepts and never replies: bounded by the timeout), a member
without monitoring ("—"), and the exposition parser."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
import math
import socket
import time
from pathlib import Path

import pytest

from appliancekit.cloud.model import Cloud, CloudMonitoring, find_cloud
from appliancekit.cloud.secrets import CloudSecrets
from appliancekit.monitoring.exposition import parse
from appliancekit.panel import status as panel_status
from appliancekit.panel.status import agent_report, cloud_state_dir, member_status
from appliancekit.recipe import MonitoringSection

from .conftest import PROJECT
from .monitoring_support import free_port, needs_go, running_agent
from .test_monitoring_state import NOT_AFTER, backup_status, certificate, update_status, write

TOKEN = "panel-scrape-token"
UTC = datetime.UTC


def monitored(cloud: Cloud, port: int, images: Path, token: str = TOKEN) -> Cloud:
    """The example cloud with [monitoring], its `web` member's agent at 127.0.0.1:`port`,
    and the cloud's scrape token in its secrets file (as load_or_create keeps it)."""
    members = tuple(
        dataclasses.replace(
            m,
            address=ipaddress.IPv4Address("127.0.0.1"),
            recipe=dataclasses.replace(m.recipe, monitoring=MonitoringSection(port=port)),
        )
        if m.name == "web"
        else m
        for m in cloud.members
    )
    cloud = dataclasses.replace(cloud, members=members, monitoring=CloudMonitoring())
    state = cloud_state_dir(cloud, images)
    state.mkdir(parents=True, exist_ok=True)
    write_secrets(state, token)
    return cloud


def write_secrets(state: Path, token: str) -> None:
    """A secrets file in the shape load_or_create writes (the other keys do not matter here)."""
    secrets = CloudSecrets("pdns-key", "dkim-pem", monitoring_token=token)
    (state / "secrets.json").write_text(json.dumps(dataclasses.asdict(secrets)))


@needs_go
def test_member_status_reads_the_agent(tmp_path: Path) -> None:
    images = tmp_path / "images"
    with running_agent(tmp_path, TOKEN) as (_, port, root):
        cloud = monitored(find_cloud("example", PROJECT), port, images)
        web = cloud.member("web")

        # the agent answers, nothing written yet: every fact a dash, not "unreachable"
        info = member_status(cloud, web, images)
        assert info.agent is not None and info.agent.reachable, info.agent
        assert (info.update, info.certificate_expiry, info.last_backup) == (None, None, None)
        assert info.missing == "—"

        write(
            root / "data/.appliancekit/update/status.json",
            update_status(
                slot="b",
                version=1764500000,
                trial=True,
                last_check="2026-11-30T16:00:00Z",
                last_result="trial of release 1764500000 running",
            ),
        )
        backup_status(
            root / "data/.appliancekit/backup/status",
            "ok",
            "2026-11-30T17:00:00Z",
            "2026-11-30T17:00:00Z",
            "1a2b3c4d",
            "123456",
            "2345",
        )
        write(root / "var/lib/tls/cert.pem", certificate(NOT_AFTER, "web.example.org"))
        info = member_status(cloud, web, images)
        assert info.update is not None
        assert (info.update.running, info.update.slot, info.update.trial) == (
            "1764500000",
            "b",
            True,
        )
        assert info.update.last_result == "ok"
        assert info.update.last_check == datetime.datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
        assert info.update.describe() == (
            "release 1764500000 (slot b, trial boot): last check ok at 2026-11-30 16:00 UTC"
        )
        assert info.last_backup == datetime.datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
        assert info.certificate_expiry == NOT_AFTER.date()

        # a refused check and a failed backup: the failure shows, the last success stays
        write(
            root / "data/.appliancekit/update/status.json",
            update_status(
                slot="a",
                version=1764500000,
                last_check="2026-11-30T18:00:00Z",
                last_result="repository unreachable",
            ),
        )
        backup_status(
            root / "data/.appliancekit/backup/status",
            "failed",
            "2026-11-30T19:00:00Z",
            "2026-11-30T17:00:00Z",
        )
        info = member_status(cloud, web, images)
        assert info.update is not None and info.update.last_result == "failed"
        assert not info.update.trial and info.update.slot == "a"
        assert info.last_backup == datetime.datetime(2026, 11, 30, 17, 0, tzinfo=UTC)

        # a wrong token: the agent refuses, the page says so rather than a dash
        state = cloud_state_dir(cloud, images)
        write_secrets(state, "wrong")
        info = member_status(cloud, web, images)
        assert info.agent is not None and not info.agent.reachable
        assert info.update is None and info.missing == "unreachable"

        # the members without monitoring keep their dashes, and nobody is scraped for them
        ns = member_status(cloud, cloud.member("ns"), images)
        assert ns.agent is None and ns.missing == "—"


def test_an_unreachable_member_does_not_hold_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images"
    # nothing listens: refused at once
    cloud = monitored(find_cloud("example", PROJECT), free_port(), images)
    info = member_status(cloud, cloud.member("web"), images)
    assert info.agent is not None and not info.agent.reachable
    assert (info.update, info.certificate_expiry, info.last_backup) == (None, None, None)
    assert info.missing == "unreachable"

    # accepts the connection and never answers: the timeout ends it
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        cloud = monitored(find_cloud("example", PROJECT), silent.getsockname()[1], images)
        monkeypatch.setattr(panel_status, "AGENT_TIMEOUT", 0.5)
        start = time.monotonic()
        statuses = panel_status.cloud_statuses(cloud, images)
        assert time.monotonic() - start < 5
        (web,) = [s for s in statuses if s.member.name == "web"]
        assert web.missing == "unreachable" and "timed out" in str(web.agent.error)  # type: ignore[union-attr]
        report = agent_report(cloud, cloud.member("web"), images, timeout=0.3)
        assert report is not None and not report.reachable


def test_exposition_parser() -> None:
    text = (
        "# HELP appliancekit_update_info The running release.\n"
        "# TYPE appliancekit_update_info gauge\n"
        'appliancekit_update_info{release="17",slot="b"} 1\n'
        'appliancekit_certificate_expiry_timestamp_seconds{certificate="tls",path="/a \\"b\\"\\\\c"} 1.9e9\n'
        "appliancekit_update_trial 0 1700000000000\n"
        "node_load1{} NaN\n"
        "x_inf +Inf\n"
        "\n"
    )
    samples = parse(text)
    assert [s.name for s in samples] == [
        "appliancekit_update_info",
        "appliancekit_certificate_expiry_timestamp_seconds",
        "appliancekit_update_trial",
        "node_load1",
        "x_inf",
    ]
    assert dict(samples[0].labels) == {"release": "17", "slot": "b"} and samples[0].value == 1
    assert samples[1].labels["path"] == '/a "b"\\c' and samples[1].value == 1.9e9
    assert samples[2].value == 0 and math.isnan(samples[3].value) and samples[4].value == math.inf
    assert [s.name for s in parse(text, "appliancekit_update")] == [
        "appliancekit_update_info",
        "appliancekit_update_trial",
    ]
    for bad in ("appliancekit_x", "appliancekit_x{a=1} 2", "appliancekit_x one", "<html>"):
        with pytest.raises(ValueError):
            parse(bad)
