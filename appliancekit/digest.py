"""Content digests and input fingerprints used for caching, reproducibility and manifests."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks; holes of sparse files are hashed without reads."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a pipe or a device: no holes, no size to trust
            while chunk := f.read(CHUNK):
                digest.update(chunk)
            return digest.hexdigest()
        size = info.st_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                data = size
            for start in range(pos, data, CHUNK):
                digest.update(_ZEROS[: min(CHUNK, data - start)])
            if data >= size:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            os.lseek(fd, data, os.SEEK_SET)
            remaining = hole - data
            while remaining > 0:
                chunk = f.read(min(remaining, CHUNK))
                if not chunk:
                    break
                digest.update(chunk)
                remaining -= len(chunk)
            pos = hole
    return digest.hexdigest()


def fingerprint(*parts: object) -> str:
    """A stable sha256 over JSON-serialisable parts (sorted keys): the seed of a build."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
