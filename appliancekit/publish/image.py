"""A built image directory, checked against its SHA256SUMS before anything is published
or flashed from it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from appliancekit.digest import sha256_file
from appliancekit.errors import UserError
from appliancekit.manifest import Manifest, load_manifest
from appliancekit.publish.bmap import (
    Bmap,
    must_map_extents,
    parse_bmap,
    scan_image,
    verify_image,
    write_bmap,
)

SHA256SUMS = "SHA256SUMS"
_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def read_sha256sums(path: Path) -> dict[str, str]:
    """name -> hex sha256 from a GNU coreutils style SHA256SUMS file."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no SHA256SUMS next to the image: cannot verify it", file=path)
    sums: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        match = _SUM_LINE.match(line.strip())
        if match is None:
            raise UserError(f"not a sha256sum line: {line!r}", file=path, line=number)
        sums[match.group(2)] = match.group(1)
    return sums


def sha256sums_text(sums: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))


@dataclass(frozen=True)
class VerifiedImage:
    """An image directory whose disk image matched its SHA256SUMS entry."""

    directory: Path
    manifest: Manifest
    disk: Path
    sha256: str
    bmap: Bmap

    @property
    def size(self) -> int:
        return self.bmap.image_size


def bmap_name(disk: Path) -> str:
    return f"{Path(disk).name}.bmap"


def open_image_dir(image_dir: Path, *, progress: object | None = None) -> VerifiedImage:
    """Load an image directory and prove disk.img is the image SHA256SUMS names.

    With a `disk.img.bmap` listed in SHA256SUMS, the image is checked against that map
    (mapped ranges by checksum, everything else must be zero: holes are not read).
    Otherwise the whole image is hashed while its block map is made. Raises UserError on
    any mismatch, before the caller writes or uploads anything.
    """
    image_dir = Path(image_dir)
    manifest = load_manifest(image_dir)
    disk = image_dir / manifest.disk.path
    if not disk.is_file():
        raise UserError(f"disk image {disk.name} is missing", file=disk)
    sums = read_sha256sums(image_dir / SHA256SUMS)
    expected = sums.get(disk.name)
    if expected is None:
        raise UserError(f"{disk.name} is not listed in SHA256SUMS", file=image_dir / SHA256SUMS)
    recorded = manifest.disk.sha256
    if recorded and recorded != expected:
        raise UserError(
            f"manifest.json says {recorded} but SHA256SUMS says {expected} for {disk.name}",
            file=image_dir / SHA256SUMS,
        )
    if disk.stat().st_size != manifest.disk.size:
        raise UserError(
            f"{disk.name} is {disk.stat().st_size} bytes, the manifest says {manifest.disk.size}",
            file=disk,
        )
    bmap_file = image_dir / bmap_name(disk)
    if bmap_file.name in sums and bmap_file.is_file():
        if sha256_file(bmap_file) != sums[bmap_file.name]:
            raise UserError("block map does not match SHA256SUMS", file=bmap_file)
        bmap = parse_bmap(bmap_file)
        verify_image(disk, bmap, progress=progress)
        return VerifiedImage(image_dir, manifest, disk, expected, bmap)
    scan = scan_image(disk, must_map_extents(manifest, disk), full_digest=True, progress=progress)
    if scan.sha256 != expected:
        raise UserError(
            f"checksum mismatch: {disk.name} is {scan.sha256}, SHA256SUMS says {expected}",
            file=disk,
        )
    return VerifiedImage(image_dir, manifest, disk, expected, scan.bmap)


def write_image_bmap(image_dir: Path) -> Path:
    """Write IMAGE_DIR/disk.img.bmap (for the build stage: call before SHA256SUMS is
    written and list the file in it, so that flash and publish skip the full hash)."""
    image_dir = Path(image_dir)
    manifest = load_manifest(image_dir)
    disk = image_dir / manifest.disk.path
    scan = scan_image(disk, must_map_extents(manifest, disk))
    return write_bmap(scan.bmap, image_dir / bmap_name(disk))
