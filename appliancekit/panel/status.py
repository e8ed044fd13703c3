"""What the panel shows about a member, each fact from one small typed function.

Each function reads one source and returns None when that source does not exist (yet): the
page shows "—" then. The sources today:

| fact | source |
|---|---|
| version | the member's image: images/RECIPE-BOARD/manifest.json (disk sha256, source date) |
| health | the last boot test: images/RECIPE-BOARD/boot-test.json (written by the panel and by `release`) |
| update state | the update agent's report, once it exists; the panel's own approval (cloud/updates.py) |
| certificate expiry | the member's certificate, once TLS lands (nothing yet) |
| last backup | the backup appliance's report, once backups land (nothing yet) |
| serial log | the newest serial.log of a boot test of the member's image or of `cloud test` |

A new source replaces the body of one function; the page and its tests do not change.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from appliancekit.cloud.model import Cloud, Member
from appliancekit.cloud.updates import UpdateGate, gate_of, load_gates
from appliancekit.manifest import Manifest, read_manifest

BOOT_TEST_RECORD = "boot-test.json"  # the same record release/run.py writes and reads
SERIAL_TAIL_LINES = 400


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
    """What the member's update agent reports (slot, version, last check and result)."""

    running: str
    last_check: datetime | None
    last_result: str

    def describe(self) -> str:
        return f"{self.running[:12]}: {self.last_result}"


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

    @property
    def built(self) -> bool:
        return self.version is not None


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


def update_state(member: Member, image_dir: Path) -> UpdateState | None:
    """The update agent's report for this member. No agent reports yet: None."""
    del member, image_dir
    return None


def certificate_expiry(member: Member, image_dir: Path) -> date | None:
    """When the member's TLS certificate expires. No member has one yet: None."""
    del member, image_dir
    return None


def last_backup(member: Member, image_dir: Path) -> datetime | None:
    """When the member's /data was last backed up. No backups yet: None."""
    del member, image_dir
    return None


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
    return MemberStatus(
        member=member,
        image_dir=image_dir,
        version=image_version(manifest),
        health=boot_health(image_dir, manifest),
        update=update_state(member, image_dir),
        gate=gate_of(gates, member.name),
        certificate_expiry=certificate_expiry(member, image_dir),
        last_backup=last_backup(member, image_dir),
    )
