"""Is it safe to write an image to this target? Block devices are looked up in sysfs and the
mount table; regular files are always fine (that is how images are copied to files).

Everything read from the running system goes through `HostView` (paths of the mount table,
/proc/swaps and the sysfs root), so tests can point it at a fake mount table and a fake
sysfs tree. Refusals, in the order they are checked:

1. not a block device or regular file, or a /dev/ path that does not exist (a typo would
   otherwise create a file under /dev);
2. a partition rather than a whole disk;
3. the disk holds the running system's root, /boot, /efi or /boot/efi (also through
   device-mapper / md layers: sysfs `slaves`); --force does not override this;
4. the disk, one of its partitions or anything stacked on them (sysfs `holders`) is mounted
   or used as swap; --force does not override this either;
5. read-only;
6. not removable (/sys/block/DEV/removable is 0; SD slots named mmcblk* count as
   removable) -- unless --force;
7. smaller than the image.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from appliancekit.errors import UserError

SYSTEM_MOUNTPOINTS = ("/", "/boot", "/boot/efi", "/efi", "/boot/firmware", "/usr")
DevNo = tuple[int, int]


@dataclass(frozen=True)
class HostView:
    mountinfo: Path = Path("/proc/self/mountinfo")
    swaps: Path = Path("/proc/swaps")
    sysfs: Path = Path("/sys")


@dataclass(frozen=True)
class Mount:
    devno: DevNo
    mountpoint: str
    fstype: str
    source: str


@dataclass(frozen=True)
class BlockTarget:
    path: Path
    name: str
    devno: DevNo
    size: int
    removable: bool
    readonly: bool
    model: str
    partitions: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        size = f"{self.size / 1e9:.1f} GB"
        return f"{self.path} ({self.model or self.name}, {size})"


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _stat_devno(path: str) -> DevNo | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def read_mounts(view: HostView) -> list[Mount]:
    """The mount table: /proc/self/mountinfo format, or /proc/mounts format."""
    try:
        text = view.mountinfo.read_text()
    except OSError as exc:
        raise UserError(
            f"cannot read the mount table: {exc.strerror}", file=view.mountinfo
        ) from None
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if " - " in line and len(fields) >= 7:  # mountinfo
            sep = fields.index("-", 6)
            major, _, minor = fields[2].partition(":")
            devno = (int(major), int(minor))
            source = _unescape(fields[sep + 2]) if len(fields) > sep + 2 else ""
            mount = Mount(devno, _unescape(fields[4]), fields[sep + 1], source)
        elif len(fields) >= 3:  # /proc/mounts
            source = _unescape(fields[0])
            devno = _stat_devno(source) or (0, 0)
            mount = Mount(devno, _unescape(fields[1]), fields[2], source)
        else:
            continue
        if mount.devno[0] == 0 and mount.source.startswith("/dev/"):
            # btrfs and friends report an anonymous device number: use the source device
            real = _stat_devno(mount.source)
            if real is not None:
                mount = Mount(real, mount.mountpoint, mount.fstype, mount.source)
        mounts.append(mount)
    return mounts


def read_swaps(view: HostView) -> list[str]:
    try:
        lines = view.swaps.read_text().splitlines()[1:]
    except OSError:
        return []
    return [_unescape(line.split()[0]) for line in lines if line.split()]


class Sysfs:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def by_devno(self, devno: DevNo) -> Path | None:
        link = self.root / "dev" / "block" / f"{devno[0]}:{devno[1]}"
        return link.resolve() if link.exists() else None

    def by_name(self, name: str) -> Path | None:
        for base in ("class/block", "block"):
            p = self.root / base / name
            if p.exists():
                return p.resolve()
        return None

    @staticmethod
    def read(directory: Path, name: str, default: str = "") -> str:
        try:
            return (directory / name).read_text().strip()
        except OSError:
            return default

    def devno_of(self, directory: Path) -> DevNo | None:
        major, _, minor = self.read(directory, "dev").partition(":")
        return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None

    @staticmethod
    def is_partition(directory: Path) -> bool:
        return (directory / "partition").exists()

    def partitions(self, disk: Path) -> list[Path]:
        return sorted(p for p in disk.iterdir() if p.is_dir() and self.is_partition(p))

    def _links(self, directory: Path, kind: str) -> list[Path]:
        d = directory / kind
        if not d.is_dir():
            return []
        out = []
        for entry in sorted(d.iterdir()):
            resolved = self.by_name(entry.name) or (entry.resolve() if entry.exists() else None)
            if resolved is not None:
                out.append(resolved)
        return out

    def stacked_on(self, directory: Path) -> set[Path]:
        """`directory`, its partitions and everything stacked on them (holders), recursively."""
        seen: set[Path] = set()
        todo = [directory]
        while todo:
            d = todo.pop()
            if d in seen:
                continue
            seen.add(d)
            if not self.is_partition(d):
                todo.extend(self.partitions(d))
            todo.extend(self._links(d, "holders"))
        return seen

    def disks_under(self, directory: Path) -> set[Path]:
        """The whole disks a device lives on (partition -> disk; dm/md -> slaves' disks)."""
        disks: set[Path] = set()
        seen: set[Path] = set()
        todo = [directory]
        while todo:
            d = todo.pop()
            if d in seen:
                continue
            seen.add(d)
            slaves = self._links(d, "slaves")
            if slaves:
                todo.extend(slaves)
            elif self.is_partition(d):
                disks.add(d.parent)
            else:
                disks.add(d)
        return disks


def system_disks(view: HostView, mounts: Iterable[Mount] | None = None) -> dict[Path, str]:
    """Whole-disk sysfs dirs holding the running system's root or boot -> mountpoint."""
    sysfs = Sysfs(view.sysfs)
    out: dict[Path, str] = {}
    for mount in mounts if mounts is not None else read_mounts(view):
        if mount.mountpoint not in SYSTEM_MOUNTPOINTS:
            continue
        directory = sysfs.by_devno(mount.devno)
        if directory is None:
            continue
        for disk in sysfs.disks_under(directory):
            out.setdefault(disk, mount.mountpoint)
    return out


def check_block_device(
    path: Path, devno: DevNo, image_size: int, *, view: HostView | None = None, force: bool = False
) -> BlockTarget:
    view = view or HostView()
    """Apply rules 2-7 to the block device `devno` (opened as `path`)."""
    sysfs = Sysfs(view.sysfs)
    directory = sysfs.by_devno(devno)
    if directory is None:
        raise UserError(
            f"{path}: block device {devno[0]}:{devno[1]} is not in {view.sysfs}/dev/block"
        )
    name = directory.name
    if sysfs.is_partition(directory):
        raise UserError(
            f"{path} is partition {name} of {directory.parent.name}: flash the whole disk"
            f" (/dev/{directory.parent.name})"
        )
    mounts = read_mounts(view)
    holding = system_disks(view, mounts).get(directory)
    if holding is not None:
        raise UserError(
            f"{path} ({name}) holds the running system's {holding}: refusing to overwrite it"
        )
    stacked = sysfs.stacked_on(directory)
    by_devno = {sysfs.devno_of(d): d for d in stacked}
    for mount in mounts:
        if mount.devno in by_devno:
            part = by_devno[mount.devno].name
            raise UserError(f"{path}: {part} is mounted at {mount.mountpoint}: unmount it first")
    names = {d.name for d in stacked}
    for swap in read_swaps(view):
        if os.path.basename(os.path.realpath(swap)) in names or os.path.basename(swap) in names:
            raise UserError(f"{path}: {swap} is in use as swap: swapoff it first")
    if sysfs.read(directory, "ro", "0") == "1":
        raise UserError(f"{path} ({name}) is read-only (write-protect switch?)")
    removable = sysfs.read(directory, "removable", "0") == "1" or name.startswith("mmcblk")
    model = " ".join(
        x
        for x in (
            sysfs.read(directory / "device", "vendor"),
            sysfs.read(directory / "device", "model"),
        )
        if x
    )
    if not removable and not force:
        raise UserError(
            f"{path} ({name}{', ' + model if model else ''}) is not a removable device:"
            " pass --force if you are sure it is the card you mean"
        )
    sectors = sysfs.read(directory, "size", "")
    size = int(sectors) * 512 if sectors.isdigit() else 0
    if size < image_size:
        raise UserError(
            f"{path} ({name}) holds {size} bytes, the image needs {image_size}: use a larger card"
        )
    return BlockTarget(
        path=Path(path),
        name=name,
        devno=devno,
        size=size,
        removable=removable,
        readonly=False,
        model=model,
        partitions=tuple(p.name for p in sysfs.partitions(directory)),
    )


@dataclass(frozen=True)
class Target:
    path: Path
    kind: str  # "file" or "block"
    block: BlockTarget | None = None
    exists: bool = True


def check_target(
    path: Path, image_size: int, *, view: HostView | None = None, force: bool = False
) -> Target:
    """Rule 1, then rules 2-7 for block devices. Regular files (existing or not) pass."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.normpath(os.path.abspath(path)).startswith("/dev/"):
            raise UserError(f"{path} does not exist (is the card plugged in?)") from None
        if not path.parent.is_dir():
            raise UserError(f"{path.parent} is not a directory", file=path) from None
        return Target(path, "file", exists=False)
    except OSError as exc:
        raise UserError(f"cannot stat {path}: {exc.strerror}") from None
    if stat.S_ISREG(st.st_mode):
        return Target(path, "file")
    if stat.S_ISBLK(st.st_mode):
        devno = (os.major(st.st_rdev), os.minor(st.st_rdev))
        return Target(
            path, "block", check_block_device(path, devno, image_size, view=view, force=force)
        )
    kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a block device or regular file"
    raise UserError(
        f"{path} is {kind}: give a block device (/dev/sdX, /dev/mmcblkN) or an image file"
    )
