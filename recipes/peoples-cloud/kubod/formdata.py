"""Request bodies (Content-Length or chunked: swarmd pipes the user's upload through Node,
which sends it chunked) and multipart/form-data uploads as kubo's add takes them: one part
per file or directory (Content-Type application/x-directory), named by its URL-quoted path.
Parts are streamed to disk, never held in memory."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote

CHUNK = 1 << 16
MAX_HEADER = 16 * 1024


class BadRequest(Exception):
    pass


def body_chunks(stream: BinaryIO, headers: object) -> Iterator[bytes]:
    """The request body's bytes, from Content-Length or chunked transfer encoding."""
    encoding = (headers.get("Transfer-Encoding") or "").lower()  # type: ignore[attr-defined]
    if "chunked" in encoding:
        while True:
            line = stream.readline(1024)
            if not line:
                raise BadRequest("the chunked body ends early")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("bad chunk size") from None
            if size == 0:
                while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from exactly(stream, size, "the chunked body ends early")
            stream.readline(16)  # the CRLF after each chunk
        return
    length = int(headers.get("Content-Length") or 0)  # type: ignore[attr-defined]
    yield from exactly(stream, length, "the body ends early")


def exactly(stream: BinaryIO, size: int, short: str) -> Iterator[bytes]:
    """`size` bytes of `stream` in blocks; BadRequest(`short`) if it ends before them."""
    while size:
        block = stream.read(min(size, CHUNK))
        if not block:
            raise BadRequest(short)
        size -= len(block)
        yield block


def boundary_of(content_type: str) -> str:
    match = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not content_type.startswith("multipart/form-data") or not match:
        raise BadRequest("send the content as multipart/form-data with a boundary")
    return match.group(1)


@dataclass(frozen=True)
class Upload:
    root: Path  # the file or the top directory, under the staging directory
    name: str
    files: tuple[tuple[str, int], ...]  # (path in the upload, bytes)
    directory: bool

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files)


def _safe_name(raw: str) -> PurePosixPath:
    path = PurePosixPath(unquote(raw))
    parts = [p for p in path.parts if p not in ("", ".", "/")]
    if not parts or ".." in parts or path.is_absolute():
        raise BadRequest(f"bad file name {raw!r}")
    return PurePosixPath(*parts)


def _part_header(block: bytes) -> tuple[PurePosixPath, bool]:
    text = block.decode("utf-8", "replace")
    disposition = re.search(r"^content-disposition:(.*)$", text, re.I | re.M)
    if not disposition:
        raise BadRequest("a part has no Content-Disposition")
    match = re.search(r'filename="([^"]*)"', disposition.group(1)) or re.search(
        r'name="([^"]*)"', disposition.group(1)
    )
    if not match:
        raise BadRequest("a part has no file name")
    kind = re.search(r"^content-type:\s*(\S+)", text, re.I | re.M)
    directory = bool(kind) and kind.group(1).lower() == "application/x-directory"
    return _safe_name(match.group(1)), directory


def receive(chunks: Iterator[bytes], boundary: str, staging: Path) -> Upload:
    """Write the multipart upload's files and directories under `staging`; what was sent:
    one file, or one directory holding every part."""
    delimiter = b"\r\n--" + boundary.encode()
    buffer = b"\r\n"  # the first boundary line has no CRLF before it
    source = iter(chunks)

    def more() -> bool:
        nonlocal buffer
        block = next(source, None)
        if block is None:
            return False
        buffer += block
        return True

    # skip the preamble up to the first delimiter
    while (at := buffer.find(delimiter)) < 0:
        buffer = buffer[-(len(delimiter) - 1) :]
        if not more():
            raise BadRequest("no multipart boundary in the body")
    buffer = buffer[at + len(delimiter) :]
    files: list[tuple[str, int]] = []
    names: list[tuple[PurePosixPath, bool]] = []
    while True:
        while len(buffer) < 2 and more():
            pass
        if buffer.startswith(b"--"):
            break  # the closing delimiter
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > MAX_HEADER or not more():
                raise BadRequest("a part's headers do not end")
        name, directory = _part_header(buffer[:end])
        buffer = buffer[end + 4 :]
        target = staging / name
        names.append((name, directory))
        if directory:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        out = None if directory else open(target, "wb")  # noqa: SIM115
        try:
            while True:
                at = buffer.find(delimiter)
                if at >= 0:
                    data, buffer = buffer[:at], buffer[at + len(delimiter) :]
                else:  # keep what could be the start of the delimiter
                    cut = max(0, len(buffer) - len(delimiter))
                    data, buffer = buffer[:cut], buffer[cut:]
                if data and out is None:
                    raise BadRequest(f"the directory part {name} has content")
                if out is not None:
                    out.write(data)
                written += len(data)
                if at >= 0:
                    break
                if not more():
                    raise BadRequest("the multipart body ends inside a part")
        finally:
            if out is not None:
                out.close()
        if not directory:
            files.append((str(name), written))
    if not names:
        raise BadRequest("the upload holds nothing")
    tops = {name.parts[0] for name, _ in names}
    if len(names) == 1 and not names[0][1]:
        return Upload(staging / names[0][0], names[0][0].name, tuple(files), directory=False)
    if len(tops) != 1 or any(len(n.parts) == 1 and not d for n, d in names):
        raise BadRequest("send one file, or one directory holding every other part")
    top = tops.pop()
    if not files:
        raise BadRequest("the directory holds no files")
    return Upload(staging / top, top, tuple(files), directory=True)
