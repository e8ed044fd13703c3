"""What the panel shows about a member, each fact from one small typed function.

Each function reads one source and returns None when that source does not exist (yet): the
page shows "—" then. The sources today:

| fact | source |
|---|---|
| version | the member's image: images/RECIPE-BOARD/manifest.json (disk sha256, source date) |
| health | the last boot test: images/RECIPE-BOARD/boot-test.json (written by the panel and by `release`) |
| update state | the member's monitoring agent: appliancekit_update_info{release,slot}, _last_check_timestamp_seconds, _last_result_ok, _trial, _enabled; the panel's own approval (cloud/updates.py) |
| certificate expiry | the member's monitoring agent: the earliest appliancekit_certificate_expiry_timestamp_seconds{certificate,path} |
| last backup | the member's monitoring agent: appliancekit_backup_last_success_timestamp_seconds (and _last_result_ok) |
| serial log | the newest serial.log of a boot test of the member's image or of `cloud test` |

A new source replaces the body of one function; the page and its tests do not change.

The agent's facts come from one scrape per member per page (`agent_report`): over HTTP to the
member's cloud address on its recipe's monitoring port (9100 unless declared), with the
cloud's monitoring token (images/clouds/NAME/secrets.json) or the member's own
`monitoring_token` setting, and a short timeout (AGENT_TIMEOUT): a member that does not
answer shows "unreachable" instead of holding the page. Members without monitoring: "—".
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from appliancekit.cloud.model import Cloud, Member
from appliancekit.cloud.secrets import load as load_secrets
from appliancekit.cloud.updates import UpdateGate, gate_of, load_gates
from appliancekit.errors import UserError
from appliancekit.manifest import Manifest, read_manifest
from appliancekit.monitoring import TOKEN_SETTING
from appliancekit.monitoring.exposition import Sample, first, scrape

BOOT_TEST_RECORD = "boot-test.json"  # the same record release/run.py writes and reads
SERIAL_TAIL_LINES = 400
AGENT_TIMEOUT = 2.0  # seconds for one scrape of a member's agent (connect and read)
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Version:
    sha256: str  # of the disk image
    source_date: datetime  # the build's SOURCE_DATE_EPOCH
    suite: str

    def describe(self) -> str:
        return f"{self.sha256[:12]} ({self.suite}, {self.source_date:%Y-%m-%d})"


@dataclass(frozen=True)
class Health:
    passed: bool
    image_sha256: str
    current: bool  # the record is for the image as it is now
    tested_at: datetime | None
    boot_to_healthy: float | None

    def describe(self) -> str:
        if not self.current:
            return "not tested since the image changed"
        word = "boot test passed" if self.passed else "boot test FAILED"
        when = f" {self.tested_at:%Y-%m-%d %H:%M} UTC" if self.tested_at else ""
        speed = (
            f", healthy in {self.boot_to_healthy:.0f}s"
            if self.passed and self.boot_to_healthy
            else ""
        )
        return f"{word}{when}{speed}"


@dataclass(frozen=True)
class UpdateState:
    """What the member's update agent reports (slot, version, last check and result), as its
    monitoring agent exports it."""

    running: str  # the running release (its version number), "" when not known
    last_check: datetime | None
    last_result: str  # "ok", "failed", "off (no update_url)" or "not checked yet"
    slot: str = ""
    trial: bool = False

    def describe(self) -> str:
        running = f"release {self.running}" if self.running else "release unknown"
        where = ", ".join(
            x
            for x in (f"slot {self.slot}" if self.slot else "", "trial boot" if self.trial else "")
            if x
        )
        checked = f" at {self.last_check:%Y-%m-%d %H:%M} UTC" if self.last_check else ""
        return f"{running}{f' ({where})' if where else ''}: last check {self.last_result}{checked}"


@dataclass(frozen=True)
class AgentReport:
    """One scrape of a member's monitoring agent: its appliancekit_* samples, or why not."""

    url: str
    samples: tuple[Sample, ...] = ()
    error: str | None = None  # set: the agent did not answer (the page says "unreachable")

    @property
    def reachable(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class SerialLog:
    path: Path
    modified: datetime
    tail: str


@dataclass(frozen=True)
class MemberStatus:
    member: Member
    image_dir: Path
    version: Version | None
    health: Health | None
    update: UpdateState | None
    gate: UpdateGate
    certificate_expiry: date | None
    last_backup: datetime | None
    agent: AgentReport | None = None  # None: the member has no monitoring agent

    @property
    def built(self) -> bool:
        return self.version is not None

    @property
    def missing(self) -> str:
        """What the page shows for an agent's fact it does not have."""
        return UNREACHABLE if self.agent is not None and not self.agent.reachable else "—"


def image_dir_of(member: Member, images_dir: Path) -> Path:
    return Path(images_dir) / f"{member.recipe.name}-{member.board.name}"


def cloud_state_dir(cloud: Cloud, images_dir: Path) -> Path:
    """images/clouds/NAME/, as `appliancekit cloud` keeps it."""
    return Path(images_dir) / "clouds" / cloud.name


def member_manifest(image_dir: Path) -> Manifest | None:
    try:
        return read_manifest(image_dir)
    except Exception:  # noqa: BLE001 - an unreadable manifest shows as "not built"
        return None


def image_version(manifest: Manifest | None) -> Version | None:
    if manifest is None:
        return None
    return Version(
        sha256=str(manifest.disk.sha256),
        source_date=datetime.fromtimestamp(manifest.source_date_epoch, UTC),
        suite=manifest.suite,
    )


def boot_health(image_dir: Path, manifest: Manifest | None) -> Health | None:
    try:
        record = json.loads((Path(image_dir) / BOOT_TEST_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    sha = str(record.get("image_sha256") or "")
    tested = record.get("tested_at")
    return Health(
        passed=record.get("passed") is True,
        image_sha256=sha,
        current=manifest is not None and sha == manifest.disk.sha256,
        tested_at=datetime.fromtimestamp(tested, UTC) if isinstance(tested, int | float) else None,
        boot_to_healthy=record.get("boot_to_healthy"),
    )


def write_boot_record(
    image_dir: Path, sha256: str, passed: bool, boot_to_healthy: float | None, serial_log: str
) -> None:
    """The record `boot_health` reads; `release` skips its own boot test on a passed one."""
    record = {
        "image_sha256": sha256,
        "passed": passed,
        "boot_to_healthy": boot_to_healthy,
        "tested_at": int(time.time()),
        "serial_log": serial_log,
    }
    (Path(image_dir) / BOOT_TEST_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def agent_url(member: Member) -> str | None:
    """Where the member's monitoring agent serves its metrics; None without monitoring."""
    if member.recipe.monitoring is None:
        return None
    return f"http://{member.address}:{member.recipe.monitoring.port}/metrics"


def agent_token(cloud: Cloud, member: Member, images_dir: Path) -> str | None:
    """The bearer token the member's agent takes: the cloud's (a cloud with [monitoring]),
    else the member's own `monitoring_token` setting from the cloud file. Read, never made:
    without a secrets file no card carries a token yet."""
    if cloud.monitoring is not None:
        try:
            secrets = load_secrets(cloud_state_dir(cloud, images_dir))
        except (OSError, UserError):  # unreadable: the page shows the member unreachable
            return None
        if secrets is None:
            return None
        return secrets.monitoring_token or None
    return dict(member.settings).get(TOKEN_SETTING) or None


def agent_report(
    cloud: Cloud, member: Member, images_dir: Path, timeout: float = AGENT_TIMEOUT
) -> AgentReport | None:
    """One scrape of the member's agent (its appliancekit_* samples); None without one."""
    url = agent_url(member)
    if url is None:
        return None
    try:
        samples = scrape(url, agent_token(cloud, member, images_dir), timeout, "appliancekit_")
    except (OSError, ValueError) as exc:  # refused, timed out, no route, HTTP 401, not metrics
        return AgentReport(url, error=str(exc) or type(exc).__name__)
    return AgentReport(url, tuple(samples))


def _time(sample: Sample | None) -> datetime | None:
    if sample is None or not math.isfinite(sample.value) or sample.value <= 0:
        return None
    return datetime.fromtimestamp(sample.value, UTC)


def update_state(samples: Sequence[Sample]) -> UpdateState | None:
    """The update agent's report, from the appliancekit_update_* samples; None without any."""
    info = first(samples, "appliancekit_update_info")
    enabled = first(samples, "appliancekit_update_enabled")
    result = first(samples, "appliancekit_update_last_result_ok")
    check = first(samples, "appliancekit_update_last_check_timestamp_seconds")
    trial = first(samples, "appliancekit_update_trial")
    if info is None and enabled is None and result is None and check is None:
        return None
    if enabled is not None and enabled.value == 0:
        word = "off (no update_url)"
    elif result is not None:
        word = "ok" if result.value == 1 else "failed"
    else:
        word = "not checked yet"
    return UpdateState(
        running=info.labels.get("release", "") if info else "",
        last_check=_time(check),
        last_result=word,
        slot=info.labels.get("slot", "") if info else "",
        trial=trial is not None and trial.value == 1,
    )


def certificate_expiry(samples: Sequence[Sample]) -> date | None:
    """When the first of the member's served certificates expires (UTC day); None without."""
    times = [
        t
        for s in samples
        if s.name == "appliancekit_certificate_expiry_timestamp_seconds"
        and (t := _time(s)) is not None
    ]
    return min(times).date() if times else None


def last_backup(samples: Sequence[Sample]) -> datetime | None:
    """When the member's /data was last backed up successfully; None: never, or no backups."""
    times = [
        t
        for s in samples
        if s.name == "appliancekit_backup_last_success_timestamp_seconds"
        and (t := _time(s)) is not None
    ]
    return max(times) if times else None


def latest_serial_log(cloud: Cloud, member: Member, images_dir: Path) -> SerialLog | None:
    """The newest serial log of a boot of this member: its image's boot test or `cloud test`."""
    candidates = [
        image_dir_of(member, images_dir) / "serial.log",
        cloud_state_dir(cloud, images_dir) / "test" / member.name / "serial.log",
    ]
    found = [p for p in candidates if p.is_file()]
    if not found:
        return None
    path = max(found, key=lambda p: p.stat().st_mtime)
    lines = path.read_text(errors="replace").splitlines()
    return SerialLog(
        path=path,
        modified=datetime.fromtimestamp(path.stat().st_mtime, UTC),
        tail="\n".join(lines[-SERIAL_TAIL_LINES:]),
    )


def member_status(cloud: Cloud, member: Member, images_dir: Path) -> MemberStatus:
    image_dir = image_dir_of(member, images_dir)
    manifest = member_manifest(image_dir)
    gates = load_gates(cloud_state_dir(cloud, images_dir))
    agent = agent_report(cloud, member, images_dir)
    samples = agent.samples if agent is not None else ()
    return MemberStatus(
        member=member,
        image_dir=image_dir,
        version=image_version(manifest),
        health=boot_health(image_dir, manifest),
        update=update_state(samples),
        gate=gate_of(gates, member.name),
        certificate_expiry=certificate_expiry(samples),
        last_backup=last_backup(samples),
        agent=agent,
    )


def cloud_statuses(cloud: Cloud, images_dir: Path) -> list[MemberStatus]:
    """Every member's status, their agents scraped at the same time: a cloud page waits at
    most one AGENT_TIMEOUT however many members do not answer."""
    if not any(agent_url(m) for m in cloud.members):
        return [member_status(cloud, m, images_dir) for m in cloud.members]
    with ThreadPoolExecutor(max_workers=min(16, len(cloud.members))) as pool:
        return list(pool.map(lambda m: member_status(cloud, m, images_dir), cloud.members))
