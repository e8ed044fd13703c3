"""The terminal UI: a live screen of the swarm (members, deployments, replicas), refreshed
every few seconds, with single-key commands. Plain ANSI through rich, so it works in any
terminal over SSH (no mouse, no special fonts)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator

from rich.console import Console
from rich.live import Live
from rich.text import Text

from appliancekit.errors import ToolError, UserError
from appliancekit.swarm.client import SwarmClient
from appliancekit.swarm.view import screen

KEYS = "q quit · r refresh now · unpin with `appliancekit swarm unpin CID`"


@contextlib.contextmanager
def _keys() -> Iterator[object]:
    """Single keypresses from the terminal (cbreak mode), restored on exit."""
    if not sys.stdin.isatty():
        yield None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _read_key(fd: object, timeout: float) -> str:
    if fd is None:
        time.sleep(timeout)
        return ""
    ready, _w, _x = select.select([fd], [], [], timeout)
    return os.read(fd, 1).decode(errors="ignore") if ready else ""  # type: ignore[arg-type]


def run(client: SwarmClient, interval: float = 2.0, once: bool = False) -> None:
    console = Console()
    note = KEYS

    def render() -> object:
        try:
            return screen(
                client.status(), client.members(), client.deployments(), client.node, note
            )
        except (ToolError, UserError) as exc:
            return Text(f"{exc} (retrying)\n{KEYS}", style="red")

    if once:
        console.print(render())
        return
    with _keys() as fd, Live(render(), console=console, screen=True, auto_refresh=False) as live:
        while True:
            key = _read_key(fd, interval)
            if key == "q":
                return
            live.update(render(), refresh=True)
