"""The backup status file: what the agent last did, for the console, the update agent and
any other reader on the appliance (docs/architecture.md, "Backups").

/data/.appliancekit/backup/status holds KEY=VALUE lines, replaced whole (written beside it,
then renamed) after every backup attempt:

    result=ok                     # ok | failed | off (no backup_repository set)
    time=2026-11-30T16:00:00Z     # UTC, when the attempt ended
    last_success=2026-11-30T16:00:00Z   # the last attempt that succeeded, or never
    snapshot=1a2b3c4d             # ok only: restic's short snapshot id
    bytes_total=123456            # ok only: bytes of /data the snapshot covers
    bytes_added=2345              # ok only: bytes restic sent to the repository (packed)

Readers must ignore keys they do not know.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliancekit.backup.section import STATE_DIR

STATUS_FILE = f"{STATE_DIR}/status"


@dataclass(frozen=True)
class BackupStatus:
    result: str
    time: str
    last_success: str
    snapshot: str = ""
    bytes_total: int | None = None
    bytes_added: int | None = None


def parse_status(text: str) -> BackupStatus:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key not in values:
            values[key.strip()] = value.strip()

    def number(key: str) -> int | None:
        value = values.get(key, "")
        return int(value) if value.isdigit() else None

    return BackupStatus(
        result=values.get("result", ""),
        time=values.get("time", ""),
        last_success=values.get("last_success") or "never",
        snapshot=values.get("snapshot", ""),
        bytes_total=number("bytes_total"),
        bytes_added=number("bytes_added"),
    )
