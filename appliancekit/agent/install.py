"""The update agent in a root: its binary, what the image tells it (agent.json), its
per-device settings file, its s6 service, and what minimise must keep for it.

The agent runs as root (it writes partitions, arms the trial boot and reboots) and says so
with a root_reason, which `appliancekit audit` checks like any service's. It runs nothing
but minisign, fsck.fat (on the boot partition, before writing it), s6-svstat and s6-svc;
the services themselves keep their own users.
"""

from __future__ import annotations

import json
from pathlib import Path

from appliancekit import supervisor
from appliancekit.agent.gobuild import GoBinary
from appliancekit.agent.packages import FSCK_FAT, MINISIGN
from appliancekit.board import Board
from appliancekit.minimise import ClosureRequest
from appliancekit.recipe import Recipe, Service
from appliancekit.rootfs import (
    DATA_MOUNT,
    PER_DEVICE_FILES,
    PER_DEVICE_SOURCE,
    PER_DEVICE_TARGET,
    ROOT_USER,
    SAVED_CLOCK,
)
from appliancekit.tree import RootTree

UPDATER = Path(__file__).resolve().parent / "updater"  # the Go source
AGENT_BINARY = "/usr/lib/appliancekit/ak-update"
AGENT_JSON = "/etc/appliancekit/agent.json"
UPDATE_ENV = "/etc/appliancekit/update.env"
STATE_DIR = f"{DATA_MOUNT}/.appliancekit/update"
SVSTAT = "/usr/bin/s6-svstat"
SVC = "/usr/bin/s6-svc"
# `s6-svc -wD` (stop and wait) execs s6-svlisten1 to wait, which listens through libs6's
# fifo trigger daemon (its path is built into libs6). Without them s6-svc fails and sends
# nothing: the services went on running while /data was copied for a rollback and put back.
SVC_WAIT = ("/usr/bin/s6-svlisten1", "/usr/bin/s6-ftrigrd")
SERVICE_NAME = "ak-update"
ROOT_REASON = (
    "the update agent writes the inactive slot's partition and boot files, arms the trial"
    " boot, stops the services for a snapshot of /data and reboots"
)
# A trial commits when every service has been up this long and the health checks pass;
# it fails when that has not happened this long after the agent started.
COMMIT_AFTER_SECONDS = 15
SNAPSHOT_BUDGET_PERCENT = 50
# The per-device settings the agent reads (recipe.UNIVERSAL_SETTINGS declares them).
SETTINGS = (
    "update_url",
    "update_interval",
    "update_window",
    "update_allow_downgrade",
    "update_status_port",
)


def agent_service() -> Service:
    return Service(name=SERVICE_NAME, exec=(AGENT_BINARY,), user="root", root_reason=ROOT_REASON)


def health_checks(recipe: Recipe) -> list[dict[str, object]]:
    """The recipe's probes that the agent can run against itself: http and tcp, every boot."""
    checks: list[dict[str, object]] = []
    for probe in recipe.probes:
        if str(probe.kind) in ("http", "tcp") and str(probe.phase) == "every":
            checks.append(
                {
                    "name": probe.name or f"{probe.kind}:{probe.port}",
                    "kind": str(probe.kind),
                    "port": probe.port,
                    "path": probe.path,
                    "status": probe.status,
                }
            )
    return checks


def trial_timeout(recipe: Recipe) -> int:
    """How long a trial may take to become healthy: as long as the recipe's slowest probe
    may wait for its service, plus the time services must stay up."""
    slowest = max((p.timeout for p in recipe.probes), default=60.0)
    return int(max(slowest, 60.0)) + COMMIT_AFTER_SECONDS + 30


# the agent.json keys that name a program the agent runs: minimise keeps each of them
TOOL_KEYS = ("minisign", "fsck_fat", "s6_svstat", "s6_svc")


def agent_config(
    recipe: Recipe, board: Board, update_key: str | None, epoch: int
) -> dict[str, object]:
    return {
        "recipe": recipe.name,
        "board": board.name,
        "version": epoch,
        "public_key": update_key or "",
        "services": [s.name for s in recipe.services],
        "service_dir": supervisor.SCAN_DIR,
        "health": health_checks(recipe),
        "commit_after_seconds": COMMIT_AFTER_SECONDS,
        "trial_timeout_seconds": trial_timeout(recipe),
        "data_dir": DATA_MOUNT,
        "state_dir": STATE_DIR,
        "saved_clock": f"{DATA_MOUNT}/{SAVED_CLOCK}",
        "settings_file": UPDATE_ENV,
        "ports": sorted(recipe.ports),
        "minisign": MINISIGN,
        "fsck_fat": FSCK_FAT,
        "s6_svstat": SVSTAT,
        "s6_svc": SVC,
        "snapshot_budget_percent": SNAPSHOT_BUDGET_PERCENT,
    }


def install_agent(
    tree: RootTree,
    recipe: Recipe,
    board: Board,
    binary: GoBinary,
    update_key: str | None,
    epoch: int,
) -> ClosureRequest:
    """Add the agent to `tree`; returns what minimise must keep for it."""
    tree.add_file(AGENT_BINARY, binary.path.read_bytes(), mode=0o755)
    config = agent_config(recipe, board, update_key, epoch)
    tree.add_file(AGENT_JSON, json.dumps(config, indent=2, sort_keys=True) + "\n")
    # per-device: rendered by the initramfs from settings.env like a recipe's files
    env = "".join(f"{name}=@@AK:{name}@@\n" for name in SETTINGS)
    tree.add_file(PER_DEVICE_SOURCE + UPDATE_ENV, env, mode=0o644)
    tree.add_symlink(UPDATE_ENV, PER_DEVICE_TARGET + UPDATE_ENV)
    listed = tree.entries[PER_DEVICE_FILES].content or b""
    tree.add_file(PER_DEVICE_FILES, listed + f"{UPDATE_ENV} 0 0 0600\n".encode())
    request = supervisor.install(tree, [agent_service()], {"root": ROOT_USER})
    return ClosureRequest(
        executables=(
            *request.executables,
            *(str(config[key]) for key in TOOL_KEYS),
            *SVC_WAIT,
        ),
        origin="update agent",
    )
