"""Update figures (issue 12 §6), measured in one run on one board (qemu-virt-arm64 unless
--board says otherwise):

- bytes the agent downloads for an update (v1 -> v2, changed homepage content), against the
  compressed image a reflash would download and against the bytes that really changed;
- service downtime during the update (the last v1 answer to the first v2 answer, HTTP
  polled every 0.2 s), against a cold boot to healthy of the same appliance;
- publish to served (v2 committed to the deploy repository to the first v2 answer),
  against the poll interval.

    .venv/bin/python -m bench.update [--board qemu-virt-arm64] [--interval 5] [--json]

Builds (warm cache) are not timed. The machine's other load falls on figure and baseline
alike only roughly: both boots are in the same run, minutes apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from appliancekit.board import find_board  # noqa: E402
from appliancekit.project import Project  # noqa: E402
from bench.figures import Figure, Unit, table  # noqa: E402
from tests.update_helpers import (  # noqa: E402
    V2_MARKER,
    DeployServer,
    UpdateMachine,
    homepage_v1_v2,
    make_deploy_repo,
    new_key,
    publish,
)

DEFAULT_BOARD = "qemu-virt-arm64"
V1, V2 = "Served by appliancekit", V2_MARKER


def changed_bytes(a: Path, b: Path) -> int:
    """Bytes that differ between two files (a longer file's tail counts as changed)."""
    changed = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if not x and not y:
                return changed
            changed += abs(len(x) - len(y)) + sum(1 for i, j in zip(x, y, strict=False) if i != j)


def run(interval: int, work: Path, board: str = DEFAULT_BOARD) -> list[Figure]:
    project = Project(REPO)
    key = new_key(work / "key")
    v1, v2 = homepage_v1_v2(project, board, work, key, time.time())
    repo = make_deploy_repo(work / "deploy")
    # what changed, measured on the published artefacts of both releases
    old = publish(v1.output_dir, make_deploy_repo(work / "old"), key)
    with DeployServer(repo) as server:
        machine = UpdateMachine(
            v1.output_dir,
            find_board(board, project.boards_dir),
            work / "machine",
            {"update_url": server.guest_url, "update_interval": str(interval)},
        )
        machine.start()
        started = time.monotonic()
        try:
            cold = machine.wait_serving(V1, 900) - started
            machine.wait_for(r"ak-update: status: [^\n]*no release published", 0, 900)
            published = time.monotonic()
            release = publish(v2.output_dir, repo, key)
            last_v1 = published
            while True:
                try:
                    body = machine.http_get("/", timeout=2)
                except OSError:
                    body = ""
                now = time.monotonic()
                if V2 in body:
                    first_v2 = now
                    break
                if V1 in body:
                    last_v1 = now
                if now - published > 1800:
                    raise SystemExit("v2 never served")
                time.sleep(0.2)
            downloaded = server.sent
        finally:
            machine.kill()
    compressed = json.loads((release / "release.json").read_text())["compressed_size"]
    image_bytes = v2.manifest.disk.size
    changed = changed_bytes(old / "update" / "root.img", release / "update" / "root.img")
    for boot in (release / "update" / "boot").iterdir():
        if boot.suffix != ".chunks":
            changed += changed_bytes(old / "update" / "boot" / boot.name, boot)
    figures = [
        Figure("update download (v1→v2)", downloaded, Unit.BYTES, "disk image", image_bytes),
    ]
    figures.append(
        Figure(
            "update download (v1→v2)",
            downloaded,
            Unit.BYTES,
            "compressed image (reflash)",
            compressed,
        )
    )
    figures += [
        Figure("update download (v1→v2)", downloaded, Unit.BYTES, "changed bytes", max(changed, 1)),
        Figure(
            "downtime, last v1 to first v2",
            first_v2 - last_v1,
            Unit.SECONDS,
            "cold boot to healthy",
            cold,
        ),
        Figure("publish to served", first_v2 - published, Unit.SECONDS, "poll interval", interval),
    ]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default=DEFAULT_BOARD)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-update-") as tmp:
        figures = run(args.interval, Path(tmp), args.board)
    if args.json:
        print(json.dumps([f.to_json() for f in figures], indent=2))
    else:
        print(table(figures))


if __name__ == "__main__":
    main()
