"""`appliancekit swarm`: the People's Cloud client (any node's swarm API, port 8000)."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live

from appliancekit.commands._common import handle_errors, json_option
from appliancekit.errors import UserError
from appliancekit.output import emit_json
from appliancekit.swarm import tui
from appliancekit.swarm.client import SwarmClient
from appliancekit.swarm.upload import upload_of
from appliancekit.swarm.view import deployments_table, members_table, size_text

node_option = click.option(
    "--node",
    "-n",
    envvar="APPLIANCEKIT_SWARM_NODE",
    required=True,
    help="Any node of the swarm: HOST[:PORT] of its swarm API (or APPLIANCEKIT_SWARM_NODE).",
)
token_option = click.option(
    "--token",
    envvar="APPLIANCEKIT_SWARM_TOKEN",
    default="",
    help="The swarm's user token (or APPLIANCEKIT_SWARM_TOKEN); adding and removing need it.",
)


@click.group("swarm")
def swarm_group() -> None:
    """People's Cloud: members, deployments and replicas of a swarm, through any node."""


@swarm_group.command("members")
@node_option
@json_option
@handle_errors
def members_command(node: str, json_mode: bool) -> None:
    """The swarm's members and their state (alive, failed, left) as the node sees them."""
    members = SwarmClient(node).members()
    if json_mode:
        emit_json({"members": [m.to_json() for m in members]})
        return
    Console().print(members_table(members))


@swarm_group.command("ls")
@node_option
@json_option
@handle_errors
def list_command(node: str, json_mode: bool) -> None:
    """Deployments and the nodes that hold each (the node asks the swarm)."""
    deployments = SwarmClient(node).deployments()
    if json_mode:
        emit_json({"deployments": [d.to_json() for d in deployments]})
        return
    Console().print(deployments_table(deployments))


@swarm_group.command("deploy")
@click.argument("path", type=click.Path(path_type=Path))
@node_option
@token_option
@click.option("--name", default="", help="The deployment's name (default: the file's).")
@click.option("--wait/--no-wait", default=True, help="Wait until R nodes hold it.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for R.")
@json_option
@handle_errors
def deploy_command(
    path: Path, node: str, token: str, name: str, wait: bool, timeout: float, json_mode: bool
) -> None:
    """Add a file or directory through NODE; the swarm pins it until R nodes hold it.
    Shows the replicas as they appear."""
    upload = upload_of(path)
    client = SwarmClient(node, token)
    console = Console(stderr=True)
    if not json_mode:
        console.print(f"uploading {path} ({size_text(upload.total_bytes())}) to {node}")
    added = client.deploy(upload, name or path.resolve().name)
    cid = added["cid"]
    seen: list[tuple[float, list[str]]] = []
    started = time.monotonic()
    deployment = None
    if wait:
        live = Live(console=console, auto_refresh=False, transient=True) if not json_mode else None
        if live is not None:
            live.start()
        try:
            while time.monotonic() - started < timeout:
                deployment = next((d for d in client.deployments() if d.cid == cid), None)
                holders = list(deployment.holders) if deployment else []
                if not seen or seen[-1][1] != holders:
                    seen.append((time.monotonic() - started, holders))
                    if not json_mode:
                        console.print(
                            f"  {len(holders)}/{added['r']} replicas: {', '.join(holders)}"
                        )
                if live is not None and deployment is not None:
                    live.update(deployments_table([deployment]), refresh=True)
                if deployment is not None and deployment.replicas >= deployment.r:
                    break
                time.sleep(1.0)
        finally:
            if live is not None:
                live.stop()
        if deployment is None or deployment.replicas < deployment.r:
            raise UserError(
                f"{cid}: {deployment.replicas if deployment else 0} of {added['r']} replicas "
                f"after {timeout:.0f} s (too few nodes with free quota?)",
                field="--timeout",
            )
    if json_mode:
        emit_json(
            {
                **added,
                "holders": list(deployment.holders) if deployment else [],
                "replicas_seen": [{"seconds": round(t, 1), "holders": h} for t, h in seen],
            }
        )
        return
    click.echo(cid)


@swarm_group.command("unpin")
@click.argument("cid")
@node_option
@token_option
@json_option
@handle_errors
def unpin_command(cid: str, node: str, token: str, json_mode: bool) -> None:
    """Remove a deployment from every node of the swarm."""
    result = SwarmClient(node, token).unpin(cid)
    if json_mode:
        emit_json(result)
        return
    click.echo(f"unpinned {cid} everywhere")


@swarm_group.command("tui")
@node_option
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one screen and exit (no live view).")
@json_option
@handle_errors
def tui_command(node: str, interval: float, once: bool, json_mode: bool) -> None:
    """The terminal UI: members, deployments and replicas, live (q quits)."""
    client = SwarmClient(node)
    if json_mode:
        emit_json(
            {
                "status": client.status(),
                "members": [m.to_json() for m in client.members()],
                "deployments": [d.to_json() for d in client.deployments()],
            }
        )
        return
    tui.run(client, interval, once)


COMMANDS = [swarm_group]
