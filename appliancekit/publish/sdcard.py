"""`publish --to sdcard`: a release directory for SD cards and USB sticks.

    NAME.img.zst    the raw disk image, zstd (multi-threaded), content size in the header
    NAME.img.bmap   bmaptool's block map (format 2.0, sha256 per range)
    manifest.json   the image's manifest, unchanged
    SHA256SUMS      of the three files above, plus the uncompressed NAME.img

`bmaptool copy NAME.img.zst /dev/sdX` (the .bmap is found next to it) and `appliancekit
flash RELEASE_DIR /dev/sdX` both write only the mapped blocks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

from appliancekit.atomic import replace_dir
from appliancekit.digest import sha256_file
from appliancekit.errors import UserError
from appliancekit.publish.bmap import CHUNK, data_extents, write_bmap
from appliancekit.publish.image import (
    SHA256SUMS,
    VerifiedImage,
    open_image_dir,
    sha256sums_text,
)

DEFAULT_LEVEL = 9
_ZERO = bytes(CHUNK)


@dataclass(frozen=True)
class SdcardRelease:
    directory: Path
    image: Path  # NAME.img.zst
    bmap: Path  # NAME.img.bmap
    image_sha256: str  # of the uncompressed image
    image_size: int
    compressed_size: int
    mapped_bytes: int

    def to_json(self) -> dict:
        return {
            "to": "sdcard",
            "directory": str(self.directory),
            "image": str(self.image),
            "bmap": str(self.bmap),
            "image_sha256": self.image_sha256,
            "image_size": self.image_size,
            "compressed_size": self.compressed_size,
            "mapped_bytes": self.mapped_bytes,
        }


def release_names(name: str) -> tuple[str, str]:
    return f"{name}.img.zst", f"{name}.img.bmap"


def compress_image(
    source: Path, dest: Path, *, level: int = DEFAULT_LEVEL, progress: object | None = None
) -> int:
    """zstd-compress a (sparse) raw image; holes are fed as zeros without reading them.

    Uses every CPU (zstd's own worker threads). Returns the compressed size.
    """
    if not 1 <= level <= 22:
        raise UserError(f"zstd level {level} is not in 1..22", field="level")
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else -1
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_content_size=True)
    with open(source, "rb", buffering=0) as src, open(dest, "wb") as out:
        fd = src.fileno()
        size = os.fstat(fd).st_size
        with cctx.stream_writer(out, size=size, closefd=False) as writer:
            pos = 0
            for start, end in [*data_extents(fd, size), (size, size)]:
                while pos < start:  # a hole
                    n = min(CHUNK, start - pos)
                    writer.write(_ZERO[:n])
                    pos += n
                    if progress is not None:
                        progress.advance(n)  # type: ignore[attr-defined]
                while pos < end:
                    chunk = os.pread(fd, min(CHUNK, end - pos), pos)
                    if not chunk:
                        raise UserError(f"{source} shrank while being compressed", file=source)
                    writer.write(chunk)
                    pos += len(chunk)
                    if progress is not None:
                        progress.advance(len(chunk))  # type: ignore[attr-defined]
        out.flush()
        os.fsync(out.fileno())
    return dest.stat().st_size


def write_release(
    image: VerifiedImage,
    out_dir: Path,
    *,
    level: int = DEFAULT_LEVEL,
    progress: object | None = None,
) -> SdcardRelease:
    """Write the release directory for an already verified image (atomically: a temp dir
    next to out_dir is renamed over it)."""
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    name = image.manifest.name
    zst_name, bmap_name = release_names(name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        compressed = compress_image(image.disk, tmp / zst_name, level=level, progress=progress)
        write_bmap(image.bmap, tmp / bmap_name)
        shutil.copyfile(image.directory / "manifest.json", tmp / "manifest.json")
        sums = {n: sha256_file(tmp / n) for n in (zst_name, bmap_name, "manifest.json")}
        sums[f"{name}.img"] = image.sha256
        (tmp / SHA256SUMS).write_text(sha256sums_text(sums))
        for entry in tmp.iterdir():
            os.chmod(entry, 0o644)
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SdcardRelease(
        directory=out_dir,
        image=out_dir / zst_name,
        bmap=out_dir / bmap_name,
        image_sha256=image.sha256,
        image_size=image.size,
        compressed_size=compressed,
        mapped_bytes=image.bmap.mapped_bytes,
    )


def publish_sdcard(
    image_dir: Path, out_dir: Path, *, level: int = DEFAULT_LEVEL, reporter: object | None = None
) -> SdcardRelease:
    """Verify IMAGE_DIR against its SHA256SUMS, then write the release to out_dir."""
    from appliancekit.output import Reporter

    rep = reporter if isinstance(reporter, Reporter) else Reporter()
    size = (
        (Path(image_dir) / "disk.img").stat().st_size
        if (Path(image_dir) / "disk.img").exists()
        else None
    )
    with rep.progress("verifying image", total=size) as task:
        image = open_image_dir(image_dir, progress=task)
    with rep.progress("compressing image", total=image.size) as task:
        return write_release(image, out_dir, level=level, progress=task)
