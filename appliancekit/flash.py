"""`appliancekit flash`: write an image to a card (or a file), the way bmaptool does, safely.

Order of work, so that nothing is written unless everything checks out:

1. per-device settings are checked against the image's manifest: each must be a per-device
   setting of its recipe, and its value pass its kind's conversion (devsettings);
2. the target is checked (blockdev.check_target: mounted, system disk, removable, size);
3. the user confirms (block devices on a TTY; --yes for scripts; no TTY and no --yes on a
   block device = refusal);
4. the source is verified: an image directory against its SHA256SUMS (or its listed
   disk.img.bmap), a release directory by the sha256 of NAME.img.zst and NAME.img.bmap
   plus the block map's own checksum;
5. only the mapped ranges are written (4 MiB writes at 4 KiB-aligned offsets), each range's
   sha256 checked against the map as it streams past, then fsync;
6. every range is read back from the target (page cache dropped first) and checked again;
7. settings.env is written into the FAT boot partition of the target with mtools (the root
   and verity partitions are never touched, so the verity root hash still matches), fsync.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from appliancekit.blockdev import HostView, Target, check_target
from appliancekit.devsettings import (
    SETTINGS_FILE,
    check_device_settings,
    masked,
    parse_settings_env,
    render_settings_env,
)
from appliancekit.digest import sha256_file
from appliancekit.errors import ToolError, UserError
from appliancekit.hostcmd import require_tools, run
from appliancekit.manifest import Manifest, PartitionRecord, load_manifest
from appliancekit.publish.bmap import Bmap, parse_bmap
from appliancekit.publish.image import SHA256SUMS, open_image_dir, read_sha256sums

WRITE_CHUNK = 4 << 20
SYNC_EVERY = 64 << 20  # block devices: fdatasync this often while writing
BLKRRPART = 0x125F
_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}


@dataclass(frozen=True)
class FlashSource:
    kind: str  # "image" (image directory) or "release" (publish --to sdcard output)
    directory: Path
    manifest: Manifest
    data: Path  # disk.img, or NAME.img.zst
    bmap: Bmap | None  # None until verified
    sha256: str | None  # of the uncompressed image, when known

    @property
    def size(self) -> int:
        return self.manifest.disk.size


@dataclass
class FlashResult:
    source: str
    source_kind: str
    target: str
    target_kind: str
    image_size: int
    image_sha256: str | None
    mapped_bytes: int
    written_bytes: int
    ranges: int
    dry_run: bool
    verified: bool
    settings: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    write_seconds: float = 0.0
    plan: list[tuple[int, int]] = field(default_factory=list)

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out["plan"] = [list(r) for r in self.plan]
        return out


# --- sources ---------------------------------------------------------------------------


def find_source(path: Path) -> FlashSource:
    """Recognise an image directory or a release directory (cheap: no hashing yet)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(
            f"{path} is not an image directory (images/NAME/) or a release directory"
            " (publish --to sdcard output)",
            file=path,
        )
    manifest = load_manifest(path)
    disk = path / manifest.disk.path
    if disk.is_file():
        return FlashSource("image", path, manifest, disk, None, None)
    zst = path / f"{manifest.name}.img.zst"
    bmap = path / f"{manifest.name}.img.bmap"
    if zst.is_file() and bmap.is_file():
        return FlashSource("release", path, manifest, zst, None, None)
    raise UserError(f"{path} holds neither {disk.name} nor {zst.name} + {bmap.name}", file=path)


def verify_source(source: FlashSource, *, progress: object | None = None) -> FlashSource:
    """Check the source against its SHA256SUMS; return it with its block map."""
    if source.kind == "image":
        image = open_image_dir(source.directory, progress=progress)
        return FlashSource(
            "image", source.directory, image.manifest, image.disk, image.bmap, image.sha256
        )
    sums = read_sha256sums(source.directory / SHA256SUMS)
    bmap_path = source.directory / f"{source.manifest.name}.img.bmap"
    for item in (source.data, bmap_path, source.directory / "manifest.json"):
        expected = sums.get(item.name)
        if expected is None:
            raise UserError(
                f"{item.name} is not listed in SHA256SUMS", file=source.directory / SHA256SUMS
            )
        actual = sha256_file(item)
        if actual != expected:
            raise UserError(
                f"checksum mismatch: {item.name} is {actual}, SHA256SUMS says {expected}", file=item
            )
    bmap = parse_bmap(bmap_path)
    if bmap.image_size != source.size:
        raise UserError(
            f"block map is for {bmap.image_size} bytes, the manifest says {source.size}",
            file=bmap_path,
        )
    if progress is not None:
        progress.advance(source.size)  # type: ignore[attr-defined]
    return FlashSource(
        "release",
        source.directory,
        source.manifest,
        source.data,
        bmap,
        sums.get(f"{source.manifest.name}.img"),
    )


def _image_chunks(source: FlashSource, bmap: Bmap) -> Iterator[tuple[int, int, bytes | None]]:
    """(range index, offset, data) for the mapped bytes in order, at most WRITE_CHUNK each;
    a final (index, end, None) closes each range."""
    ranges = list(bmap.byte_ranges())
    if source.kind == "image":
        with open(source.data, "rb", buffering=0) as f:
            fd = f.fileno()
            for index, (start, end) in enumerate(ranges):
                pos = start
                while pos < end:
                    data = os.pread(fd, min(WRITE_CHUNK, end - pos), pos)
                    if not data:
                        raise UserError(
                            f"{source.data} is shorter than its block map", file=source.data
                        )
                    yield index, pos, data
                    pos += len(data)
                yield index, end, None
        return
    dctx = zstandard.ZstdDecompressor()
    with open(source.data, "rb") as f, dctx.stream_reader(f, read_size=1 << 20) as reader:
        pos = 0
        for index, (start, end) in enumerate(ranges):
            while pos < start:  # unmapped: decompress and drop
                skipped = reader.read(min(WRITE_CHUNK, start - pos))
                if not skipped:
                    raise UserError(f"{source.data} ends before offset {start}", file=source.data)
                pos += len(skipped)
            while pos < end:
                data = _read_exact(reader, min(WRITE_CHUNK, end - pos))
                if not data:
                    raise UserError(f"{source.data} ends before offset {end}", file=source.data)
                yield index, pos, data
                pos += len(data)
            yield index, end, None


def _read_exact(reader: object, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        piece = reader.read(size - got)  # type: ignore[attr-defined]
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


# --- writing ---------------------------------------------------------------------------


def _open_target(target: Target, size: int) -> int:
    if target.kind == "file":
        fd = os.open(target.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        os.ftruncate(fd, size)
        return fd
    try:
        # O_EXCL on a block device: the kernel refuses if it is mounted or held open
        return os.open(target.path, os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise UserError(f"{target.path} is busy (mounted or in use)") from None
        raise UserError(f"cannot open {target.path}: {exc.strerror}") from None


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class _Rate:
    """Progress with throughput in the description (the Reporter's bar shows bytes)."""

    def __init__(self, task: object, label: str) -> None:
        self.task, self.label, self.start, self.done, self.last = (
            task,
            label,
            time.monotonic(),
            0,
            0.0,
        )

    def advance(self, n: int) -> None:
        self.done += n
        self.task.advance(n)  # type: ignore[attr-defined]
        now = time.monotonic()
        if now - self.last > 0.25:
            self.last = now
            rate = self.done / max(now - self.start, 1e-6) / (1 << 20)
            self.task.update(description=f"{self.label} {rate:6.1f} MiB/s")  # type: ignore[attr-defined]


def write_ranges(
    source: FlashSource, fd: int, *, progress: object | None = None, sync_every: int = 0
) -> int:
    """Write the mapped ranges to fd, checking each range against the map; return bytes.

    With sync_every, fdatasync after that many bytes, so that a slow card's progress shows
    its real speed instead of the page cache's followed by a long final sync.
    """
    bmap = source.bmap
    assert bmap is not None
    written = 0
    unsynced = 0
    digest = hashlib.new(bmap.checksum_type)
    for index, offset, data in _image_chunks(source, bmap):
        if data is None:
            want = bmap.ranges[index]
            if digest.hexdigest() != want.sha256:
                raise UserError(
                    f"blocks {want.first}-{want.last} of {source.data.name} do not match the block"
                    " map: the target is incomplete, flash again from a good image",
                    file=source.data,
                )
            digest = hashlib.new(bmap.checksum_type)
            continue
        digest.update(data)
        _pwrite_all(fd, data, offset)
        written += len(data)
        unsynced += len(data)
        if sync_every and unsynced >= sync_every:
            os.fdatasync(fd)
            unsynced = 0
        if progress is not None:
            progress.advance(len(data))  # type: ignore[attr-defined]
    return written


def read_back(path: Path, bmap: Bmap, *, progress: object | None = None) -> None:
    """Read every mapped range from the target (not from the page cache) and check it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for (start, end), r in zip(bmap.byte_ranges(), bmap.ranges, strict=True):
            digest = hashlib.new(bmap.checksum_type)
            pos = start
            while pos < end:
                data = os.pread(fd, min(WRITE_CHUNK, end - pos), pos)
                if not data:
                    break
                digest.update(data)
                pos += len(data)
                if progress is not None:
                    progress.advance(len(data))  # type: ignore[attr-defined]
            if digest.hexdigest() != r.sha256:
                raise ToolError(
                    f"read-back of {path} differs from the image in blocks {r.first}-{r.last}:"
                    " the card may be faulty or counterfeit"
                )
    finally:
        os.close(fd)


# --- settings.env ----------------------------------------------------------------------


def boot_partition(manifest: Manifest) -> PartitionRecord:
    part = manifest.disk.by_role("boot", "esp")
    if part is not None:
        return part
    raise UserError(
        f"image {manifest.name} has no FAT boot partition to hold per-device settings",
        field="disk.partitions",
    )


def read_device_settings(target: Path, manifest: Manifest) -> dict[str, str] | None:
    """settings.env from the boot partition of a flashed target (None if absent)."""
    part = boot_partition(manifest)
    image = f"{target}@@{part.offset}"
    listing = run(["mdir", "-b", "-i", image, "::/"], env=_MTOOLS_ENV, input="").stdout
    if not any(line.strip().lower().endswith("/" + SETTINGS_FILE) for line in listing.splitlines()):
        return None
    text = run(["mtype", "-i", image, f"::/{SETTINGS_FILE}"], env=_MTOOLS_ENV, input="").stdout
    return parse_settings_env(text, file=Path(f"{target}:{SETTINGS_FILE}"))


def write_device_settings(
    target: Path, manifest: Manifest, settings: Mapping[str, str]
) -> dict[str, str]:
    """Merge `settings` (checked against the manifest's per-device settings) over any
    settings.env already in the target's boot partition and write it back with mtools;
    return what the file now holds."""
    part = boot_partition(manifest)
    checked = check_device_settings(settings, manifest)
    merged = dict(read_device_settings(target, manifest) or {})
    merged.update(checked)
    text = render_settings_env(merged, header="per-device settings, written by appliancekit flash")
    with tempfile.TemporaryDirectory(prefix="ak-settings-") as tmp:
        src = Path(tmp) / SETTINGS_FILE
        src.write_text(text)
        run(
            ["mcopy", "-o", "-i", f"{target}@@{part.offset}", src, f"::/{SETTINGS_FILE}"],
            env=_MTOOLS_ENV,
            input="",
        )
    fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if read_device_settings(target, manifest) != merged:
        raise ToolError(f"{SETTINGS_FILE} on {target} does not read back as written")
    return merged


# --- the command -----------------------------------------------------------------------


def confirm_block_write(
    target: Target,
    manifest: Manifest,
    *,
    yes: bool,
    interactive: bool,
    ask: Callable[[str], bool],
) -> None:
    """Block devices need --yes, or a "yes" typed on a terminal."""
    if target.kind != "block" or yes:
        return
    assert target.block is not None
    if not interactive:
        raise UserError(
            f"{target.path} is a block device and this is not a terminal: pass --yes to write it"
        )
    if not ask(
        f"Write {manifest.name} to {target.block.describe()}? Everything on it will be lost."
    ):
        raise UserError("not confirmed: nothing was written")


def flash(
    source_path: Path,
    target_path: Path,
    *,
    settings: Mapping[str, str] | None = None,
    force: bool = False,
    yes: bool = False,
    dry_run: bool = False,
    view: HostView | None = None,
    reporter: object | None = None,
    interactive: bool | None = None,
    ask: Callable[[str], bool] | None = None,
) -> FlashResult:
    from appliancekit.output import Reporter

    rep = reporter if isinstance(reporter, Reporter) else Reporter()
    started = time.monotonic()
    source = find_source(source_path)
    settings = check_device_settings(settings or {}, source.manifest)
    if settings:
        boot_partition(source.manifest)
        require_tools("mdir", "mtype", "mcopy")  # before anything is written
    target = check_target(target_path, source.size, view=view or HostView(), force=force)
    if target.exists and os.path.samefile(source.data, target.path):
        raise UserError(f"{target.path} is the source image itself")
    if not dry_run:
        confirm_block_write(
            target,
            source.manifest,
            yes=yes,
            interactive=sys.stdin.isatty() if interactive is None else interactive,
            ask=ask or _click_confirm,
        )
    with rep.progress("verifying image", total=source.size) as task:
        source = verify_source(source, progress=task)
    bmap = source.bmap
    assert bmap is not None
    result = FlashResult(
        source=str(source.directory),
        source_kind=source.kind,
        target=str(target.path),
        target_kind=target.kind,
        image_size=source.size,
        image_sha256=source.sha256,
        mapped_bytes=bmap.mapped_bytes,
        written_bytes=0,
        ranges=len(bmap.ranges),
        dry_run=dry_run,
        verified=False,
        settings=masked(settings, source.manifest),
        plan=list(bmap.byte_ranges()),
    )
    if dry_run:
        result.seconds = time.monotonic() - started
        return result

    created = target.kind != "block" and not target.exists
    try:
        fd = _open_target(target, source.size)
        try:
            t0 = time.monotonic()
            with rep.progress("writing", total=bmap.mapped_bytes) as task:
                result.written_bytes = write_ranges(
                    source,
                    fd,
                    progress=_Rate(task, "writing"),
                    sync_every=SYNC_EVERY if target.kind == "block" else 0,
                )
            os.fsync(fd)
            result.write_seconds = time.monotonic() - t0
        finally:
            os.close(fd)
        with rep.progress("verifying", total=bmap.mapped_bytes) as task:
            read_back(target.path, bmap, progress=_Rate(task, "verifying"))
        result.verified = True
        if settings:
            written = write_device_settings(target.path, source.manifest, settings)
            result.settings = masked(written, source.manifest)
    except BaseException:
        if created:  # a file this run created is not left half-written
            Path(target.path).unlink(missing_ok=True)
        raise
    if target.kind == "block":
        _reread_partitions(target.path)
    result.seconds = time.monotonic() - started
    return result


def flash_to_file(
    image_dir: Path, target: Path, settings: Mapping[str, str] | None = None
) -> FlashResult:
    """Flash an image or release directory to a regular file, with per-device settings
    (for tests that then boot the copy)."""
    return flash(Path(image_dir), Path(target), settings=settings or {}, yes=True)


def _click_confirm(question: str) -> bool:
    import click

    return click.confirm(question, default=False, err=True)


def _reread_partitions(path: Path) -> None:
    """Ask the kernel to re-read the new partition table (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.ioctl(fd, BLKRRPART)
    except OSError:
        pass
    finally:
        os.close(fd)
