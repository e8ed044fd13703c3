"""appliancekit benchmarks: every target is printed as a ratio against a baseline measured in
the same run on the same machine. Nothing here is asserted; regressions show as ratios.

    .venv/bin/python bench/run.py [--recipe homepage] [--board qemu-virt-arm64] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliancekit.board import Board, BootPath, find_board  # noqa: E402
from appliancekit.boot.initramfs import build_marker_initramfs  # noqa: E402
from appliancekit.boot.kmod import find_kernel  # noqa: E402
from appliancekit.boot.rpi import delete_dtb_properties  # noqa: E402
from appliancekit.boottest import boot_test, qemu_config  # noqa: E402
from appliancekit.build import BuildPlan, build  # noqa: E402
from appliancekit.cache import Cache, default_cache_dir  # noqa: E402
from appliancekit.manifest import Manifest  # noqa: E402
from appliancekit.output import Reporter  # noqa: E402
from appliancekit.qemu import Machine, QemuConfig  # noqa: E402
from appliancekit.recipe import find_recipe, resolve_settings  # noqa: E402
from appliancekit.sources.debian import AptSource  # noqa: E402
from appliancekit.sources.unpack import unpack  # noqa: E402

MIB = 1 << 20
SEALED_ROOT_TARGET = 16 * MIB
# A normal installation: Debian's required-priority base system (what mmdebstrap's minbase
# installs) plus the recipe's packages, sized by the archive's Installed-Size fields.
MINBASE_SELECTOR = "?priority(required)"


def installed_baseline(apt: AptSource, packages: list[str]) -> int:
    """Installed size of minbase + packages as apt resolves them (apt patterns work here)."""
    return sum(p.installed_size for p in apt.resolve([MINBASE_SELECTOR, *packages]))


def marker_time(board: Board, cache: Cache, workdir: Path, runs: int) -> float:
    """QEMU start -> a trivial initramfs's marker on the console, same kernel and model."""
    apt = AptSource(cache, board.suite, board.arch.value)
    kernel_pkgs = [
        p for p in apt.resolve([board.kernel.package]) if p.name.startswith("linux-image-")
    ]
    fetched = apt.fetch(kernel_pkgs)
    kernel_root = next(
        u.root for u in (unpack(cache, f) for f in fetched) if (u.root / "boot").is_dir()
    )
    kernel = find_kernel(kernel_root)
    busybox = [unpack(cache, f) for f in apt.fetch(apt.resolve(["busybox-static"]))]
    initrd = build_marker_initramfs(busybox, board, workdir / "marker.img")
    # the consoles of the image's own command line, in its order: the kernel's preferred
    # console is the last one that exists on this model (ttyS0 of EC2 is absent on virt)
    consoles = [board.kernel.console, *(w[8:] for w in board.kernel.cmdline if w[:8] == "console=")]
    append = " ".join(
        [*(f"console={c}" for c in consoles), "quiet", "panic=-1", *board.qemu.append]
    )
    times = []
    for _ in range(runs):
        config = QemuConfig.from_spec(
            board.qemu,
            kernel=kernel.image,
            initrd=initrd,
            append=append,
            dtb=board_device_tree(board, kernel_root, workdir),
        )
        if board.boot == BootPath.UKI:
            # the bare kernel: UEFI firmware (-bios / pflash arguments) is timed on its own
            config = replace(config, firmware=None, extra_args=())
        with tempfile.TemporaryDirectory() as tmp, Machine(config, Path(tmp)) as machine:
            machine.start()
            times.append(machine.wait_for_serial("appliancekit-marker", 120))
    return min(times)


def board_device_tree(board: Board, kernel_root: Path, workdir: Path) -> Path | None:
    """The board's device tree (its [firmware.config] device_tree) from the kernel package,
    edited as its boot test edits it for the QEMU model; None for boards without one."""
    name = dict(board.firmware.config).get("device_tree")
    if name is None:
        return None
    source = next(kernel_root.glob(f"usr/lib/linux-image-*/**/{name}"))
    dtb = workdir / name
    dtb.write_bytes(source.read_bytes())
    delete_dtb_properties(dtb, board.qemu.dtb_delete)
    return dtb


# What a boot path's emulated firmware / boot loader prints when it hands over: UEFI (edk2)
# when it starts the image's boot file, U-Boot when it jumps to the kernel it loaded from
# the card. The bare-kernel marker run has neither (QEMU loads kernel and initramfs itself).
LOADER_HANDOVER = {BootPath.UKI: "BdsDxe: starting", BootPath.UBOOT: "Starting kernel ..."}


def loader_time(board: Board, image_dir: Path, manifest: Manifest, runs: int) -> float:
    """QEMU start -> the board's firmware or boot loader handing over (LOADER_HANDOVER)."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            disk = image_dir / manifest.disk.path
            config = qemu_config(board, disk, manifest, Path(tmp), ())
            with Machine(config, Path(tmp)) as machine:
                machine.start()
                times.append(machine.wait_for_serial(LOADER_HANDOVER[board.boot], 120))
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="homepage")
    parser.add_argument("--board", default="qemu-virt-arm64")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    cache = Cache(default_cache_dir())
    recipe = find_recipe(args.recipe, REPO / "recipes")
    board = find_board(args.board, REPO / "boards")
    results: dict[str, object] = {"recipe": args.recipe, "board": args.board}
    with tempfile.TemporaryDirectory(prefix="bench.") as tmp:
        images = Path(tmp) / "images"
        plan = BuildPlan(recipe, board, resolve_settings(recipe, {}), images)
        reporter = Reporter()

        start = time.monotonic()
        first = build(plan, cache, reporter, force=True)
        cold = time.monotonic() - start
        start = time.monotonic()
        again = build(plan, cache, reporter)
        noop = time.monotonic() - start
        assert not again.rebuilt
        results["cold_build_s"] = round(cold, 2)
        results["noop_build_s"] = round(noop, 2)
        results["cold_build_vs_60s"] = round(cold / 60, 3)
        results["noop_build_vs_3s"] = round(noop / 3, 3)

        sizes = first.manifest.sizes
        apt = AptSource(cache, plan.suite, board.arch.value)
        baseline = installed_baseline(apt, list(recipe.debian.packages))
        results["sealed_root_bytes"] = sizes.sealed_root_bytes
        results["unminimised_root_bytes"] = sizes.unminimised_root_bytes
        results["installed_normally_bytes"] = baseline
        results["sealed_vs_16MiB_target"] = round(
            sizes.sealed_root_bytes / SEALED_ROOT_TARGET, 3
        )
        results["sealed_vs_installed_normally"] = round(sizes.sealed_root_bytes / baseline, 4)

        healthy = []
        for _ in range(args.runs):
            report = boot_test(first.output_dir, first.manifest, board, log_dir=Path(tmp))
            if not report.passed:
                print(f"boot test failed: {report.failure}", file=sys.stderr)
                return 1
            healthy.append(report.boot_to_healthy or 0.0)
        marker = marker_time(board, cache, Path(tmp), args.runs)
        results["boot_to_healthy_s"] = round(min(healthy), 2)
        results["kernel_to_marker_s"] = round(marker, 2)
        results["healthy_vs_marker"] = round(min(healthy) / marker, 2)
        results["healthy_vs_marker_target"] = 2.0
        if board.boot in LOADER_HANDOVER:
            loader = loader_time(board, first.output_dir, first.manifest, args.runs)
            results["boot_loader_s"] = round(loader, 2)
            results["healthy_after_boot_loader_vs_marker"] = round(
                (min(healthy) - loader) / marker, 2
            )

    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        width = max(len(k) for k in results)
        for key, value in results.items():
            print(f"{key:{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
