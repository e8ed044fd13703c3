"""Shared fixtures. Built images are session-scoped: each appliance is built and booted once
per test run and every slow test reads from that, which keeps CI within its time budget."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from appliancekit.board import find_board
from appliancekit.boottest import BootTestReport, boot_test
from appliancekit.build import BuildPlan, BuildResult, build
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.output import Reporter
from appliancekit.project import Project
from appliancekit.recipe import find_recipe, resolve_settings

# longest test files first, for xdist (tests/ordering.py says why)
pytest_plugins = ["tests.ordering"]

# Property tests check what holds, never how fast: a 2-core machine running QEMU beside them
# makes Hypothesis' per-example deadline and its too-slow health check fail at random.
settings.register_profile(
    "appliancekit", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("appliancekit")

REPO = Path(__file__).resolve().parent.parent
PROJECT = Project(REPO)


@pytest.fixture(scope="session")
def project() -> Project:
    return PROJECT


@pytest.fixture(scope="session")
def session_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images built by the test session (never the user's images/). Under pytest-xdist the
    workers share one directory, so an image is built once per run, not once per worker."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = base.parent / "images"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("images")


@contextlib.contextmanager
def build_lock(images: Path) -> Iterator[None]:
    """One build at a time across xdist workers: the second worker to want an image waits,
    then finds it built (a no-op rebuild), and the package caches never see two builds."""
    with open(images / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_appliance(
    recipe: str,
    board: str,
    images: Path,
    settings: dict[str, str] | None = None,
    force: bool = False,
) -> BuildResult:
    plan = BuildPlan(
        find_recipe(recipe, PROJECT.recipes_dir),
        find_board(board, PROJECT.boards_dir),
        resolve_settings(find_recipe(recipe, PROJECT.recipes_dir), settings or {}),
        images,
    )
    return build(plan, Cache(default_cache_dir()), Reporter(), force=force)


class ApplianceCache:
    """Builds and boot tests, each done at most once per session."""

    def __init__(self, images: Path) -> None:
        self.images = images
        self.builds: dict[tuple[str, str], BuildResult] = {}
        self.boots: dict[tuple[str, str], BootTestReport] = {}

    def build(self, recipe: str, board: str) -> BuildResult:
        key = (recipe, board)
        if key not in self.builds:
            with build_lock(self.images):
                self.builds[key] = build_appliance(recipe, board, self.images)
        return self.builds[key]

    def boot(self, recipe: str, board: str) -> BootTestReport:
        key = (recipe, board)
        if key not in self.boots:
            result = self.build(recipe, board)
            self.boots[key] = boot_test(
                result.output_dir, result.manifest, find_board(board, PROJECT.boards_dir)
            )
        return self.boots[key]


@pytest.fixture(scope="session")
def appliances(session_images: Path) -> ApplianceCache:
    return ApplianceCache(session_images)


@pytest.fixture(scope="session")
def homepage_image(appliances: ApplianceCache) -> Path:
    """The homepage appliance for qemu-virt-arm64, built once per session."""
    return appliances.build("homepage", "qemu-virt-arm64").output_dir


@pytest.fixture(scope="session")
def homepage_cli_test(homepage_image: Path, session_images: Path) -> dict[str, object]:
    """`appliancekit test homepage --board qemu-virt-arm64 --json` on the session's image:
    one boot through the real command line, its report shared by the tests that read it."""
    result = run_cli(
        "test",
        "homepage",
        "--board",
        "qemu-virt-arm64",
        "--json",
        env={"APPLIANCEKIT_IMAGES": str(session_images)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def checkout(source: Path, dest: Path, umask: int) -> Path:
    """`source` written out afresh as a checkout under `umask` would be (git creates files
    0666 or 0777 minus the umask), keeping the mtimes."""
    old = os.umask(umask)
    try:
        for dirpath, _dirnames, filenames in os.walk(source):
            rel = Path(dirpath).relative_to(source)
            (dest / rel).mkdir(parents=True, exist_ok=True)
            for name in filenames:
                src = Path(dirpath) / name
                executable = os.stat(src).st_mode & 0o100
                mode = 0o777 if executable else 0o666
                fd = os.open(dest / rel / name, os.O_WRONLY | os.O_CREAT, mode)
                with os.fdopen(fd, "wb") as out:
                    out.write(src.read_bytes())
                os.utime(dest / rel / name, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns))
    finally:
        os.umask(old)
    return dest


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it."""
    full_env = dict(os.environ)
    full_env.pop("CI", None)
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "appliancekit", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"appliancekit {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture()
def cli() -> Iterator[object]:
    yield run_cli


def boot_twice_on_a_bigger_disk(
    image_dir: Path,
    board_name: str,
    tmp_path: Path,
    *,
    settings: dict[str, str] | None = None,
    size: int = 512 << 20,
) -> tuple[BootTestReport, str]:
    """The image copied onto a bigger (sparse) card or volume, per-device settings written the
    way `flash -s` writes them, booted twice. Checks what every board must show: the first
    boot grows the data partition to the end of the disk, the second finds the first one's
    data on the grown filesystem. Returns the report and the serial log for board specifics."""
    from appliancekit.flash import write_device_settings
    from appliancekit.manifest import read_manifest

    manifest = read_manifest(image_dir)
    assert manifest is not None
    disk = tmp_path / "bigger.img"
    subprocess.run(["cp", "--sparse=always", str(image_dir / "disk.img"), str(disk)], check=True)
    os.truncate(disk, size)
    if settings:
        write_device_settings(disk, manifest, settings)
    board = find_board(board_name, PROJECT.boards_dir)
    report = boot_test(
        image_dir, manifest, board, disk=disk, reboot=True, writable=True, log_dir=tmp_path
    )
    assert report.passed, f"{report.failure}\n{report.serial_tail}"
    serial = Path(report.serial_log).read_text(errors="replace")
    # what the data partition can grow into: the disk after its start (the boot partition
    # and both root slots come before it, so this is not a fixed share of the disk)
    room = (size - manifest.partition("ak-data").offset) >> 20
    grown = re.findall(r"data partition grown to (\d+) MiB", serial)
    assert len(grown) == 1 and int(grown[0]) > room * 9 // 10, (room, serial[-3000:])
    counts = re.findall(r"boot number (\d+), data (\d+) MiB", serial)
    assert [c[0] for c in counts] == ["1", "2"], counts
    assert all(int(mib) > room * 4 // 5 for _, mib in counts), (room, counts)
    table = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    data = table["partitions"][-1]
    assert (data["start"] + data["size"]) * 512 > size - (2 << 20)
    return report, serial


def sd_card_partitions(disk: Path, first_partition_offset: int) -> list[dict[str, object]]:
    """The MBR layout every SD board shares, checked: a power-of-two card (QEMU's SD models
    take nothing else), FAT boot partition first and bootable, then root, verity and data,
    data ending where the card ends. Returns sfdisk's partitions."""
    from appliancekit.disk import read_partition_table

    size = disk.stat().st_size
    assert size & (size - 1) == 0, "QEMU's SD card models need a power-of-two card"
    table = read_partition_table(disk)
    assert table["label"] == "dos"
    parts = table["partitions"]
    assert [p["type"] for p in parts] == ["c", "83", "83", "83"]
    assert parts[0]["start"] * 512 == first_partition_offset and parts[0].get("bootable")
    # the power-of-two padding belongs to the data partition, not grown into at first boot
    assert (parts[-1]["start"] + parts[-1]["size"]) * 512 == size
    return parts
