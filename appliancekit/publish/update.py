"""The update artefacts of a release: what an appliance's update agent range-reads.

`publish --to git` writes them into RECIPE/BOARD/update/ of the deploy repository, and
lists each in the signed SHA256SUMS:

- `update.json`: recipe, board, version (the release's source date), verity root hash,
  and for each artefact its path, size, sha256 and chunk list;
- `root.img`: slot A's partition content (erofs image, then its verity hash tree);
- `boot/NAME`: each of the slot's boot files (kernel, initramfs, command line, ...);
- `*.chunks`: the sha256 of every CHUNK bytes of an artefact, back to back.

Raw files, not the compressed disk image: a plain HTTP server (or a forge's raw file view)
answers byte ranges of them, so the agent downloads only the chunks its own slots do not
already hold, and never the data partition.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from appliancekit.disk import extract_fat_file
from appliancekit.errors import UserError
from appliancekit.publish.image import VerifiedImage

UPDATE_DIR = "update"
UPDATE_JSON = f"{UPDATE_DIR}/update.json"
CHUNK = 4096
FORMAT = 1


@dataclass(frozen=True)
class UpdateArtefacts:
    names: tuple[str, ...]  # paths relative to the release directory, update.json included
    bytes: int  # what a first update downloads at most (root + boot files)


def _chunks(path: Path) -> bytes:
    digests = bytearray()
    with open(path, "rb") as f:
        while piece := f.read(CHUNK):
            digests += hashlib.sha256(piece).digest()
    return bytes(digests)


def _artefact(directory: Path, name: str, rel: str) -> dict[str, object]:
    path = directory / rel
    chunks = _chunks(path)
    chunks_rel = rel + ".chunks"
    (directory / chunks_rel).write_bytes(chunks)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            digest.update(piece)
    return {
        "name": name,
        "path": rel,
        "size": path.stat().st_size,
        "sha256": digest.hexdigest(),
        "chunks": chunks_rel,
        "chunks_sha256": hashlib.sha256(chunks).hexdigest(),
    }


def write_update_artefacts(image: VerifiedImage, directory: Path) -> UpdateArtefacts:
    """Write RELEASE/update/ for `image` into `directory` (replacing an older one)."""
    m = image.manifest
    if not m.slots or m.verity is None or not m.verity.hash_offset:
        raise UserError(
            "the image has a single root slot: rebuild it with this appliancekit to publish"
            " an update",
            file=image.directory,
        )
    slot = m.slots[0]
    out = Path(directory) / UPDATE_DIR
    if out.exists():
        shutil.rmtree(out)
    (out / "boot").mkdir(parents=True)
    part = m.partition(slot.partition)
    size = m.verity.hash_offset + m.verity.hash_bytes
    with open(image.disk, "rb") as src, open(out / "root.img", "wb") as dst:
        src.seek(part.offset)
        left = size
        while left:
            piece = src.read(min(left, 1 << 20))
            if not piece:
                raise UserError("the disk image ends inside the root slot", file=image.disk)
            dst.write(piece)
            left -= len(piece)
    boot_part = m.partition(slot.boot_partition)
    for name in slot.boot_files:
        dest = out / "boot" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        path = f"{slot.boot_dir}/{name}" if slot.boot_dir else name
        extract_fat_file(image.disk, boot_part.offset, path, dest)
    base = Path(directory)
    document = {
        "format": FORMAT,
        "recipe": m.recipe,
        "board": m.board,
        "arch": m.arch,
        "version": m.source_date_epoch,
        "image_sha256": image.sha256,
        "root_hash": m.verity.root_hash,
        "chunk_size": CHUNK,
        "root": _artefact(base, "", f"{UPDATE_DIR}/root.img"),
        "boot": [_artefact(base, name, f"{UPDATE_DIR}/boot/{name}") for name in slot.boot_files],
    }
    (base / UPDATE_JSON).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    names = [UPDATE_JSON]
    total = 0
    for item in (document["root"], *document["boot"]):  # type: ignore[misc]
        names += [item["path"], item["chunks"]]
        total += item["size"]
    return UpdateArtefacts(tuple(sorted(names)), total)
