"""appliancekit benchmarks: each figure beside a baseline measured in the same run on the same
machine, their ratio, and the target the issues set (printed, never divided by). Nothing
here is asserted; regressions show as ratios.

    make bench BENCH_ARGS='--recipe dns --board qemu-virt-arm64 --runs 3 --save dns.json'
    .venv/bin/python -m bench.run [--recipe homepage] [--board qemu-virt-arm64] [--runs 3]
                                  [--json] [--save FILE] [--show FILE]

In one run: the cold build (empty cache directory), a forced build with that cache warm and a
no-op build (bench/builds.py); the same service installed the plain Debian way by mmdebstrap,
cold and with a warm package cache (bench/debian_install.py); boot to healthy, the bare
kernel's initramfs marker and the boot loader's hand-over (bench/boots.py); the supervisor's
share of the sealed root against systemd's (bench/init_size.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/run.py` as well as `python -m bench.run`
    sys.path.insert(0, str(REPO))

from appliancekit.board import find_board  # noqa: E402
from appliancekit.cache import Cache  # noqa: E402
from appliancekit.manifest import read_manifest  # noqa: E402
from appliancekit.recipe import find_recipe  # noqa: E402
from appliancekit.sources.debian import AptSource  # noqa: E402
from bench import targets  # noqa: E402
from bench.boots import BootFailed, healthy_time, loader_time, marker_time  # noqa: E402
from bench.builds import BuildTimes, build_times  # noqa: E402
from bench.debian_install import DebianInstall, archive_sources, install  # noqa: E402
from bench.figures import Figure, Unit, table  # noqa: E402
from bench.init_size import s6_bytes, systemd_installed_bytes  # noqa: E402


def build_figures(
    recipe: str, builds: BuildTimes, cold: DebianInstall, warm: DebianInstall | None
) -> list[Figure]:
    sizes = builds.warm.sizes
    sealed_targets = (targets.SEALED_VS_INSTALLED,)
    if recipe in targets.SEALED_ROOT:
        sealed_targets = (targets.SEALED_ROOT[recipe], *sealed_targets)
    S, B = Unit.SECONDS, Unit.BYTES
    warm_figures = [] if warm is None else [
        Figure("build, warm package cache", builds.warm.seconds, S,
               "Debian install, warm package cache", warm.seconds, (targets.WARM_BUILD,)),
    ]
    return [
        Figure("cold build, empty cache", builds.cold.seconds, S,
               "Debian install, empty cache", cold.seconds),
        *warm_figures,
        Figure("no-op rebuild", builds.noop.seconds, S,
               "build, warm package cache", builds.warm.seconds, (targets.NOOP_BUILD,)),
        Figure("sealed root (erofs)", sizes["sealed_root_bytes"], B,
               "Debian install, files", cold.tree_bytes, sealed_targets),
        Figure("minimised tree, files", sizes["minimised_root_bytes"], B,
               "Debian install, files", cold.tree_bytes),
    ]  # fmt: skip


def note(message: str) -> None:
    """Each raw measurement as it is made (a run takes long; a late failure keeps these)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def measure(
    recipe_name: str, board_name: str, runs: int, warm_install: bool = True
) -> dict[str, Any]:
    """One run of every figure and its baseline; JSON-ready. Without `warm_install` the
    second plain Debian install is skipped, and with it the warm build's figure."""
    recipe = find_recipe(recipe_name, REPO / "recipes")
    board = find_board(board_name, REPO / "boards")
    suite, arch = recipe.debian.suite or board.suite, board.arch.value
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench.", dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        builds = build_times(recipe_name, board_name, work)
        note(f"builds: cold {builds.cold.seconds:.1f} s, warm {builds.warm.seconds:.1f} s,"
             f" no-op {builds.noop.seconds:.2f} s; sizes {builds.warm.sizes}")  # fmt: skip
        cache = Cache(work / "cache")
        # the archive lines the build read, so both installs see the same packages
        sources = archive_sources(AptSource(cache, suite, arch))
        packages = list(recipe.debian.packages)
        debs = work / "debs"
        cold = install(suite, arch, packages, sources, work / "debian-cold", debs)
        note(f"Debian install, empty cache: {cold}")
        warm = None
        if warm_install:
            warm = install(suite, arch, packages, sources, work / "debian-warm", debs)
            note(f"Debian install, warm package cache: {warm}")
        figures = build_figures(recipe_name, builds, cold, warm)
        figures.append(
            Figure("s6 + execline in the sealed root", s6_bytes(builds.warm.image_dir), Unit.BYTES,
                   "systemd + udev, Installed-Size", systemd_installed_bytes(AptSource(cache, suite, arch)))
        )  # fmt: skip

        manifest = read_manifest(builds.warm.image_dir)
        assert manifest is not None
        healthy = healthy_time(builds.warm.image_dir, manifest, board, runs)
        note(f"boot to healthy: {healthy.seconds:.2f} s")
        marker = marker_time(board, cache, work, runs)
        note(f"bare kernel to initramfs marker: {marker:.2f} s")
        loader = loader_time(board, builds.warm.image_dir, manifest, runs)
        figures.append(
            Figure("boot to healthy", healthy.seconds, Unit.SECONDS,
                   "bare kernel to initramfs marker", marker, (targets.HEALTHY_VS_MARKER,))
        )  # fmt: skip
        if loader is not None:
            figures.append(
                Figure("boot to healthy after the boot loader", healthy.seconds - loader,
                       Unit.SECONDS, "bare kernel to initramfs marker", marker,
                       (targets.HEALTHY_VS_MARKER,))
            )  # fmt: skip
    load_after = os.getloadavg()
    return {
        "recipe": recipe_name,
        "board": board_name,
        "suite": suite,
        "arch": arch,
        "started": started,
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": load_before[0], "after": load_after[0]},
        "boot_runs": runs,
        "warm_build_s": round(builds.warm.seconds, 3),  # a figure only with a warm install
        "debian_install": {"packages": packages, "installed": cold.packages},
        "unminimised_root_bytes": builds.warm.sizes["unminimised_root_bytes"],
        "boot_loader_s": None if loader is None else round(loader, 3),
        "probe_s": {name: round(s, 3) for name, s in healthy.probes.items()},
        "figures": [f.to_json() for f in figures],
    }


def show(result: dict[str, Any]) -> str:
    load = result["load_average_1min"]
    debian = result["debian_install"]
    lines = [
        f"{result['recipe']} on {result['board']} ({result['suite']}/{result['arch']}),"
        f" {result['started']}, {result['cpus']} CPUs, 1-min load average"
        f" {load['before']:.1f} before, {load['after']:.1f} after; boots: best of"
        f" {result['boot_runs']}",
        "",
        table([Figure.from_json(f) for f in result["figures"]]),
        "",
        f"Debian install: mmdebstrap --variant=minbase --include={','.join(debian['packages'])}"
        f" ({debian['installed']} packages installed)",
    ]
    if not any(f["name"] == "build, warm package cache" for f in result["figures"]):
        lines.append(
            f"build, warm package cache: {result['warm_build_s']:.2f} s (target"
            f" {targets.WARM_BUILD.show(Unit.SECONDS)}); no baseline: --no-warm-install"
        )
    if result["boot_loader_s"] is not None:
        lines.append(f"boot loader hand-over: {result['boot_loader_s']:.2f} s after QEMU start")
    lines += [f"probe {name}: {s:.2f} s" for name, s in result["probe_s"].items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="homepage")
    parser.add_argument("--board", default="qemu-virt-arm64")
    parser.add_argument("--runs", type=int, default=3, help="boots per boot figure (best taken)")
    parser.add_argument(
        "--no-warm-install",
        action="store_true",
        help="skip the second mmdebstrap run (it takes as long as the first under emulation)"
        " and the warm build's figure, whose baseline it is",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--save", type=Path, metavar="FILE", help="also write the JSON here")
    parser.add_argument("--show", type=Path, metavar="FILE", help="print a saved run's table")
    args = parser.parse_args()

    if args.show:
        result = json.loads(args.show.read_text())
    else:
        try:
            result = measure(args.recipe, args.board, args.runs, not args.no_warm_install)
        except BootFailed as failed:
            print(f"bench: {failed}", file=sys.stderr)
            return 1
    if args.save:
        args.save.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else show(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
