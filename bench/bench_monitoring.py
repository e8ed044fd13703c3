"""What monitoring adds to an image: the same recipe built with and without `[monitoring]`
in one run, on the same code, cache and lock.

    .venv/bin/python bench/bench_monitoring.py [--recipe dns] [--board qemu-virt-arm64] [--keep DIR]

Prints the minimised and sealed root and the disk image of both builds, the ratio of each
(with / without), and the bytes of the two packages monitoring brings into the minimised root
(prometheus-node-exporter and the ak-monitor agent), from each build's size report.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliancekit.board import find_board  # noqa: E402
from appliancekit.build import BuildPlan, build  # noqa: E402
from appliancekit.cache import Cache, default_cache_dir  # noqa: E402
from appliancekit.monitoring import augment  # noqa: E402
from appliancekit.output import Reporter  # noqa: E402
from appliancekit.project import Project  # noqa: E402
from appliancekit.recipe import find_recipe, resolve_settings  # noqa: E402

MIB = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="dns")
    parser.add_argument("--board", default="qemu-virt-arm64")
    parser.add_argument("--keep", type=Path, help="build here (kept) instead of a temp dir")
    args = parser.parse_args()
    project = Project(ROOT)
    plain = find_recipe(args.recipe, project.recipes_dir)
    board = find_board(args.board, project.boards_dir)
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
        base = args.keep or Path(tmp)
        rows = {}
        for label, recipe in (("without", plain), ("with", augment(plain))):
            plan = BuildPlan(recipe, board, resolve_settings(recipe, {}), base / label)
            result = build(plan, Cache(default_cache_dir()), Reporter())
            sizes = result.manifest.sizes
            report = json.loads((result.output_dir / "size-report.json").read_text())
            rows[label] = {
                "minimised_root_bytes": sizes.minimised_root_bytes,
                "sealed_root_bytes": sizes.sealed_root_bytes,
                "disk_bytes": sizes.disk_bytes,
                "report": report,
            }
    print(f"{args.recipe} on {args.board}: without [monitoring] (baseline) vs with")
    for key in ("minimised_root_bytes", "sealed_root_bytes", "disk_bytes"):
        a, b = rows["without"][key], rows["with"][key]
        print(f"  {key:22} {a / MIB:8.1f} MiB  {b / MIB:8.1f} MiB  x{b / a:.2f}")
    packages = {p["package"]: p for p in rows["with"]["report"]["packages"]}
    for name in ("prometheus-node-exporter", "ak-monitor"):
        if name in packages:
            kept = packages[name]["bytes_after"]
            print(f"  {name:24} {kept / MIB:8.1f} MiB in the minimised root")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
