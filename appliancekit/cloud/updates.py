"""Update approvals: which release each member of a cloud may move to.

An administrator approves or holds updates (in `appliancekit panel`, or by editing the file);
what moves a member to a new release reads the decision before it does: `deploy` today, the
update agent's publisher as it lands. The file is `images/clouds/NAME/updates.json`:

    {
      "format": 1,
      "members": {
        "web":  {"decision": "approve", "release": "<disk sha256>", "at": "2026-11-30T15:50:00Z"},
        "mail": {"decision": "hold", "release": "<disk sha256 it is held at, or empty>", "at": "..."}
      }
    }

- no entry (or no file): `auto`, the member follows the newest release (what happens without
  any approval step);
- `approve`: the member may move to exactly the release with that disk sha256, and to no
  other until the next decision;
- `hold`: the member stays on the release it runs; nothing new is installed.

`may_update(gates, member, sha256)` is the one question a consumer asks. Written with a
rename, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from appliancekit.errors import UserError

UPDATES_FILE = "updates.json"
FORMAT = 1


class Decision(StrEnum):
    AUTO = "auto"
    APPROVE = "approve"
    HOLD = "hold"


@dataclass(frozen=True)
class UpdateGate:
    member: str
    decision: Decision
    release: str = ""  # disk sha256: the approved release, or the one held at
    at: str = ""  # when it was decided (UTC, ISO 8601)

    def allows(self, sha256: str) -> bool:
        if self.decision == Decision.AUTO:
            return True
        if self.decision == Decision.APPROVE:
            return sha256 == self.release
        return False

    def describe(self) -> str:
        if self.decision == Decision.AUTO:
            return "automatic"
        if self.decision == Decision.APPROVE:
            return f"approved {self.release[:12]}"
        return "held" + (f" at {self.release[:12]}" if self.release else "")


def gates_path(cloud_state: Path) -> Path:
    return Path(cloud_state) / UPDATES_FILE


def load_gates(cloud_state: Path) -> dict[str, UpdateGate]:
    """The decisions in images/clouds/NAME/updates.json (empty: every member automatic)."""
    path = gates_path(cloud_state)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise UserError(f"unreadable update approvals: {exc}", file=path) from None
    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(members, dict):
        raise UserError('expected {"members": {...}}', file=path, field="members")
    gates = {}
    for name, entry in members.items():
        try:
            decision = Decision(entry.get("decision"))
            release = str(entry.get("release") or "")
            at = str(entry.get("at") or "")
        except (AttributeError, ValueError):
            raise UserError(
                "expected decision approve|hold|auto and a release sha256",
                file=path,
                field=f"members.{name}",
            ) from None
        if decision == Decision.APPROVE and len(release) != 64:
            raise UserError(
                "an approval names a release by its disk sha256", file=path, field=f"members.{name}"
            )
        gates[name] = UpdateGate(name, decision, release, at)
    return gates


def gate_of(gates: Mapping[str, UpdateGate], member: str) -> UpdateGate:
    return gates.get(member) or UpdateGate(member, Decision.AUTO)


def may_update(gates: Mapping[str, UpdateGate], member: str, sha256: str) -> bool:
    """May `member` be moved to the release whose disk sha256 is `sha256`?"""
    return gate_of(gates, member).allows(sha256)


def set_gate(cloud_state: Path, member: str, decision: Decision, release: str = "") -> UpdateGate:
    """Record a decision for `member` (AUTO removes its entry)."""
    cloud_state = Path(cloud_state)
    gates = load_gates(cloud_state)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    gate = UpdateGate(member, decision, release, at)
    if decision == Decision.AUTO:
        gates.pop(member, None)
    else:
        gates[member] = gate
    payload = {
        "format": FORMAT,
        "members": {
            g.member: {"decision": g.decision.value, "release": g.release, "at": g.at}
            for g in sorted(gates.values(), key=lambda g: g.member)
        },
    }
    cloud_state.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".updates.", dir=cloud_state)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, gates_path(cloud_state))
    return gate
