"""A file or a directory as the multipart/form-data body the IPFS add API takes: one part
per file, named by its path under the directory's name (directories become IPFS
directories), streamed from disk."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from appliancekit.errors import UserError

CHUNK = 1 << 16


@dataclass(frozen=True)
class Upload:
    boundary: str
    parts: tuple[tuple[str, Path | None], ...]  # (name in IPFS, file or None for a directory)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _header(self, name: str, path: Path | None) -> bytes:
        if path is None:
            return (
                f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="file"; filename="{quote(name, safe="")}"\r\n'
                "Content-Type: application/x-directory\r\n\r\n"
            ).encode()
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{quote(name, safe="")}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

    def length(self) -> int:
        total = len(f"--{self.boundary}--\r\n")
        for name, path in self.parts:
            total += len(self._header(name, path)) + 2
            if path is not None:
                total += path.stat().st_size
        return total

    def chunks(self) -> Iterator[bytes]:
        for name, path in self.parts:
            yield self._header(name, path)
            if path is not None:
                with open(path, "rb") as handle:
                    while block := handle.read(CHUNK):
                        yield block
            yield b"\r\n"
        yield f"--{self.boundary}--\r\n".encode()

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for _n, p in self.parts if p is not None)


def upload_of(path: Path) -> Upload:
    """The upload of a file (one part) or a directory (its tree, symlinks left out)."""
    path = Path(path)
    boundary = uuid.uuid4().hex
    if path.is_file():
        return Upload(boundary, ((path.name, path),))
    if not path.is_dir():
        raise UserError("no such file or directory", file=path)
    top = path.resolve().name
    parts: list[tuple[str, Path | None]] = [(top, None)]
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        rel = os.path.relpath(dirpath, path)
        base = top if rel == "." else f"{top}/{rel}"
        for name in dirnames:
            if not (Path(dirpath) / name).is_symlink():
                parts.append((f"{base}/{name}", None))
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_file() and not full.is_symlink():
                parts.append((f"{base}/{name}", full))
    if len(parts) == 1:
        raise UserError("the directory holds no files", file=path)
    return Upload(boundary, tuple(parts))
