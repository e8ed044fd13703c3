"""Refusal rules for block devices, against a fake sysfs tree and fake mount tables; plus
the real host's root disk, and the confirmation rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliancekit.blockdev import (
    BlockTarget,
    HostView,
    Target,
    check_block_device,
    check_target,
    read_mounts,
)
from appliancekit.errors import UserError
from appliancekit.flash import confirm_block_write

GB = 10**9


class FakeHost:
    """A sysfs tree (block/, class/block/, dev/block/) plus mountinfo and swaps files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sysfs = root / "sys"
        for d in ("block", "class/block", "dev/block", "devices/virtual/block"):
            (self.sysfs / d).mkdir(parents=True)
        self.mountinfo = root / "mountinfo"
        self.swaps = root / "swaps"
        self.mountinfo.write_text(
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
            "27 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw\n"
            "28 27 8:1 / /boot/efi rw,relatime - vfat /dev/sda1 rw\n"
        )
        self.swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n")
        self.disk(
            "sda", (8, 0), size=500 * GB, removable=False, parts={"sda1": (8, 1), "sda2": (8, 2)}
        )

    @property
    def view(self) -> HostView:
        return HostView(mountinfo=self.mountinfo, swaps=self.swaps, sysfs=self.sysfs)

    def _node(self, directory: Path, name: str, devno: tuple[int, int]) -> None:
        directory.mkdir(parents=True)
        (directory / "dev").write_text(f"{devno[0]}:{devno[1]}\n")
        (directory / "holders").mkdir()
        (directory / "slaves").mkdir()
        rel = os.path.relpath(directory, self.sysfs / "class/block")
        (self.sysfs / "class/block" / name).symlink_to(rel)
        (self.sysfs / "dev/block" / f"{devno[0]}:{devno[1]}").symlink_to(
            os.path.relpath(directory, self.sysfs / "dev/block")
        )

    def disk(
        self,
        name: str,
        devno: tuple[int, int],
        *,
        size: int,
        removable: bool = True,
        ro: bool = False,
        parts: dict[str, tuple[int, int]] | None = None,
        model: str = "",
    ) -> None:
        directory = self.sysfs / "devices/pci0/usb1" / name
        self._node(directory, name, devno)
        (self.sysfs / "block" / name).symlink_to(os.path.relpath(directory, self.sysfs / "block"))
        (directory / "size").write_text(f"{size // 512}\n")
        (directory / "removable").write_text("1\n" if removable else "0\n")
        (directory / "ro").write_text("1\n" if ro else "0\n")
        (directory / "device").mkdir()
        (directory / "device" / "model").write_text(model + "\n")
        for i, (pname, pdevno) in enumerate((parts or {}).items(), 1):
            self._node(directory / pname, pname, pdevno)
            (directory / pname / "partition").write_text(f"{i}\n")

    def mapper(self, name: str, devno: tuple[int, int], on: str) -> None:
        """A device-mapper device stacked on `on` (holders/slaves links both ways)."""
        directory = self.sysfs / "devices/virtual/block" / name
        self._node(directory, name, devno)
        under = (self.sysfs / "class/block" / on).resolve()
        (under / "holders" / name).symlink_to(os.path.relpath(directory, under / "holders"))
        (directory / "slaves" / on).symlink_to(os.path.relpath(under, directory / "slaves"))

    def mount(self, devno: tuple[int, int], mountpoint: str, source: str = "/dev/x") -> None:
        with self.mountinfo.open("a") as f:
            f.write(f"40 27 {devno[0]}:{devno[1]} / {mountpoint} rw - ext4 {source} rw\n")


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    h = FakeHost(tmp_path)
    h.disk(
        "sdb", (8, 16), size=32 * GB, parts={"sdb1": (8, 17), "sdb2": (8, 18)}, model="SD Reader"
    )
    return h


def check(
    host: FakeHost, devno: tuple[int, int], size: int = 1 * GB, force: bool = False
) -> BlockTarget:
    return check_block_device(Path("/dev/x"), devno, size, view=host.view, force=force)


def test_a_removable_unmounted_large_enough_card_passes(host: FakeHost) -> None:
    target = check(host, (8, 16))
    assert target.name == "sdb" and target.removable and target.size == 32 * GB
    assert target.partitions == ("sdb1", "sdb2")
    assert "SD Reader" in target.describe()


def test_refuses_a_mounted_partition(host: FakeHost) -> None:
    host.mount((8, 17), "/media/user/boot")
    with pytest.raises(UserError, match="sdb1 is mounted at /media/user/boot"):
        check(host, (8, 16), force=True)


def test_refuses_a_mount_through_a_holder(host: FakeHost) -> None:
    host.mapper("dm-3", (253, 3), on="sdb2")
    host.mount((253, 3), "/mnt/crypt")
    with pytest.raises(UserError, match="dm-3 is mounted at /mnt/crypt"):
        check(host, (8, 16), force=True)


def test_refuses_a_partition_used_as_swap(host: FakeHost) -> None:
    host.swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n/dev/sdb2 partition 1024 0 -2\n")
    with pytest.raises(UserError, match="swap"):
        check(host, (8, 16))


def test_refuses_the_disk_holding_the_running_root_even_with_force(host: FakeHost) -> None:
    host.disk("sdc", (8, 32), size=64 * GB, removable=True, parts={"sdc1": (8, 33)})
    host.mountinfo.write_text("27 1 8:33 / / rw - ext4 /dev/sdc1 rw\n")
    with pytest.raises(UserError, match="holds the running system's /"):
        check(host, (8, 32), force=True)


def test_refuses_the_disk_holding_boot(host: FakeHost) -> None:
    host.mount((8, 18), "/boot")
    with pytest.raises(UserError, match="running system's /boot"):
        check(host, (8, 16), force=True)


def test_refuses_root_on_device_mapper_over_the_disk(host: FakeHost) -> None:
    """/ on dm-0 (LUKS / LVM) whose slave is sdb2: sdb holds the root."""
    host.mapper("dm-0", (253, 0), on="sdb2")
    host.mountinfo.write_text("27 1 253:0 / / rw - ext4 /dev/mapper/root rw\n")
    with pytest.raises(UserError, match="holds the running system's /"):
        check(host, (8, 16), force=True)


def test_refuses_a_non_removable_disk_unless_forced(host: FakeHost) -> None:
    host.disk("sdd", (8, 48), size=64 * GB, removable=False)
    with pytest.raises(UserError, match="not a removable device.*--force"):
        check(host, (8, 48))
    assert check(host, (8, 48), force=True).name == "sdd"


def test_sd_slots_count_as_removable(host: FakeHost) -> None:
    host.disk("mmcblk0", (179, 0), size=16 * GB, removable=False)
    assert check(host, (179, 0)).removable


def test_refuses_a_device_smaller_than_the_image(host: FakeHost) -> None:
    with pytest.raises(UserError, match="use a larger card"):
        check(host, (8, 16), size=64 * GB)


def test_refuses_a_partition_instead_of_the_disk(host: FakeHost) -> None:
    with pytest.raises(UserError, match="partition sdb1 of sdb"):
        check(host, (8, 17))


def test_refuses_a_read_only_device(host: FakeHost) -> None:
    host.disk("sde", (8, 64), size=8 * GB, ro=True)
    with pytest.raises(UserError, match="read-only"):
        check(host, (8, 64))


def test_refuses_an_unknown_device(host: FakeHost) -> None:
    with pytest.raises(UserError, match="not in"):
        check(host, (8, 99))


def test_the_system_disk_is_refused_before_anything_else(host: FakeHost) -> None:
    with pytest.raises(UserError, match="running system's /"):
        check(host, (8, 0), force=True)


def test_proc_mounts_format_is_read_too(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n/dev/odd\\040name /mnt/a\\040b ext4 rw 0 0\n")
    table = read_mounts(HostView(mountinfo=mounts, sysfs=tmp_path))
    assert [m.mountpoint for m in table] == ["/proc", "/mnt/a b"]


def test_the_real_root_disk_of_this_host_is_refused() -> None:
    view = HostView()
    root = next((m for m in read_mounts(view) if m.mountpoint == "/"), None)
    if root is None or not (Path("/sys/dev/block") / f"{root.devno[0]}:{root.devno[1]}").exists():
        pytest.skip("the root file system is not on a block device here")
    directory = (Path("/sys/dev/block") / f"{root.devno[0]}:{root.devno[1]}").resolve()
    disk = directory.parent if (directory / "partition").exists() else directory
    devno = tuple(int(x) for x in (disk / "dev").read_text().split(":"))
    with pytest.raises(UserError, match="running system's /|mounted"):
        check_block_device(Path(f"/dev/{disk.name}"), devno, 1, view=view, force=True)  # type: ignore[arg-type]


def test_regular_files_and_missing_paths(tmp_path: Path) -> None:
    assert check_target(tmp_path / "new.img", 10).kind == "file"
    (tmp_path / "old.img").write_bytes(b"x")
    assert check_target(tmp_path / "old.img", 10).exists
    with pytest.raises(UserError, match="plugged in"):
        check_target(Path("/dev/sdzz-not-there"), 10)
    with pytest.raises(UserError, match="is a directory"):
        check_target(tmp_path, 10)
    with pytest.raises(UserError, match="not a block device or regular file"):
        check_target(Path("/dev/null"), 10)


def _block_target() -> Target:
    return Target(
        Path("/dev/sdb"),
        "block",
        BlockTarget(Path("/dev/sdb"), "sdb", (8, 16), GB, True, False, "SD"),
    )


class _M:
    name = "demo"


def test_block_devices_need_yes_without_a_terminal() -> None:
    with pytest.raises(UserError, match="pass --yes"):
        confirm_block_write(_block_target(), _M(), yes=False, interactive=False, ask=lambda q: True)  # type: ignore[arg-type]
    confirm_block_write(_block_target(), _M(), yes=True, interactive=False, ask=lambda q: False)  # type: ignore[arg-type]


def test_a_terminal_user_is_asked_and_no_means_no() -> None:
    asked: list[str] = []

    def no(question: str) -> bool:
        asked.append(question)
        return False

    with pytest.raises(UserError, match="not confirmed"):
        confirm_block_write(_block_target(), _M(), yes=False, interactive=True, ask=no)  # type: ignore[arg-type]
    assert "/dev/sdb" in asked[0] and "lost" in asked[0]
    confirm_block_write(_block_target(), _M(), yes=False, interactive=True, ask=lambda q: True)  # type: ignore[arg-type]


def test_files_never_need_confirmation(tmp_path: Path) -> None:
    confirm_block_write(
        Target(tmp_path / "x", "file"), _M(), yes=False, interactive=False, ask=lambda q: False
    )  # type: ignore[arg-type]
