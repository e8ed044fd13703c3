"""Boot times under QEMU: the appliance's boot to healthy, and the floor it is compared with,
the same kernel on the same QEMU model reaching a trivial initramfs's marker. Each is the
best of `runs` boots (the least disturbed by the other work on the machine)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from appliancekit.board import Board, BootPath
from appliancekit.boot.initramfs import build_marker_initramfs
from appliancekit.boot.kmod import find_kernel
from appliancekit.boot.rpi import delete_dtb_properties
from appliancekit.boottest import boot_test, qemu_config
from appliancekit.cache import Cache
from appliancekit.manifest import Manifest
from appliancekit.qemu import Machine, QemuConfig
from appliancekit.sources.debian import AptSource
from appliancekit.sources.unpack import unpack

# What a boot path's emulated firmware / boot loader prints when it hands over: UEFI (edk2)
# when it starts the image's boot file, U-Boot when it jumps to the kernel it loaded from
# the card. The bare-kernel marker run has neither (QEMU loads kernel and initramfs itself).
LOADER_HANDOVER = {BootPath.UKI: "BdsDxe: starting", BootPath.UBOOT: "Starting kernel ..."}


@dataclass(frozen=True)
class HealthyTimes:
    seconds: float  # best boot to healthy: QEMU start until every probe passed
    probes: dict[str, float]  # each probe's best time (its own run, after the boot)


class BootFailed(Exception):
    pass


def healthy_time(image_dir: Path, manifest: Manifest, board: Board, runs: int) -> HealthyTimes:
    best: float | None = None
    probes: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-boot.") as tmp:
        for _ in range(runs):
            report = boot_test(image_dir, manifest, board, log_dir=Path(tmp))
            if not report.passed:
                raise BootFailed(f"boot test failed: {report.failure}")
            seconds = report.boot_to_healthy or 0.0
            best = seconds if best is None else min(best, seconds)
            for probe in report.probes:
                probes[probe.name] = min(probes.get(probe.name, probe.seconds), probe.seconds)
    return HealthyTimes(best or 0.0, probes)


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


def loader_time(board: Board, image_dir: Path, manifest: Manifest, runs: int) -> float | None:
    """QEMU start -> the board's firmware or boot loader handing over (LOADER_HANDOVER);
    None for boot paths where QEMU loads the kernel itself."""
    if board.boot not in LOADER_HANDOVER:
        return None
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            disk = image_dir / manifest.disk.path
            config = qemu_config(board, disk, manifest, Path(tmp), ())
            with Machine(config, Path(tmp)) as machine:
                machine.start()
                times.append(machine.wait_for_serial(LOADER_HANDOVER[board.boot], 120))
    return min(times)
