"""Rich tables of a swarm: members and their state, deployments and their replicas. Plain
text where there is no terminal (rich drops the colours), so it reads over any SSH."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from appliancekit.swarm.client import Deployment, Member

MIB = 1024 * 1024
STATUS_STYLE = {"alive": "green", "failed": "red", "left": "yellow", "leaving": "yellow"}


def size_text(size: int) -> str:
    if size >= MIB:
        return f"{size / MIB:.1f} MiB"
    if size >= 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size} B"


def members_table(members: Sequence[Member]) -> Table:
    table = Table(title="members", title_justify="left", expand=False)
    table.add_column("node")
    table.add_column("address")
    table.add_column("state")
    table.add_column("free", justify="right")
    for m in members:
        table.add_row(
            m.name,
            m.address,
            Text(m.status, style=STATUS_STYLE.get(m.status, "")),
            size_text(m.free),
        )
    return table


def replicas_text(d: Deployment) -> Text:
    style = "green" if d.replicas >= d.r else "yellow" if d.replicas else "red"
    return Text(f"{d.replicas}/{d.r}", style=style)


def deployments_table(deployments: Sequence[Deployment]) -> Table:
    table = Table(title="deployments", title_justify="left", expand=False)
    table.add_column("name")
    table.add_column("cid", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("replicas", justify="right")
    table.add_column("held by")
    for d in deployments:
        table.add_row(
            d.name, d.cid, size_text(d.size), replicas_text(d), ", ".join(d.holders) or "-"
        )
    return table


def status_line(status: dict[str, Any], node: str) -> Text:
    return Text.assemble(
        ("People's Cloud ", "bold"),
        f"swarm {status.get('swarm', '?')} via {status.get('node', '?')} ({node}): ",
        (f"{status.get('alive', 0)} alive", "green"),
        f" of {status.get('members', 0)} members; R={status.get('replication', '?')}; "
        f"this node holds {status.get('holding', 0)}, "
        f"{size_text(int(status.get('free', 0)))} free",
    )


def screen(
    status: dict[str, Any],
    members: Sequence[Member],
    deployments: Sequence[Deployment],
    node: str,
    note: str = "",
) -> Group:
    parts: list[Any] = [status_line(status, node), members_table(members)]
    parts.append(deployments_table(deployments))
    if note:
        parts.append(Text(note, style="dim"))
    return Group(*parts)
