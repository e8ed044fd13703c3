"""The image under audit: its manifest, its partitions as files, its extracted root."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from appliancekit.errors import ToolError, UserError
from appliancekit.hostcmd import run
from appliancekit.manifest import Manifest, load_manifest

CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One path of the extracted root, as the image holds it."""

    path: str  # "/usr/bin/x"
    mode: int  # st_mode (type and permission bits)
    target: str = ""  # symlink target

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


@dataclass
class AuditImage:
    directory: Path
    manifest: Manifest
    work: Path  # scratch directory, removed when the audit ends
    _root: Path | None = None
    _entries: list[Entry] = field(default_factory=list)

    @classmethod
    @contextmanager
    def open(cls, directory: Path) -> Iterator[AuditImage]:
        directory = Path(directory)
        manifest = load_manifest(directory)
        work = Path(tempfile.mkdtemp(prefix="ak-audit-"))
        try:
            yield cls(directory, manifest, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def partition_file(self, role: str) -> Path:
        """The partition with `role` copied out of the disk image into the scratch dir."""
        target = self.work / f"{role}.img"
        if target.exists():
            return target
        part = self.manifest.disk.by_role(role)
        if part is None:
            raise ToolError(f"the manifest records no {role} partition")
        disk = self.directory / self.manifest.disk.path
        try:
            with open(disk, "rb") as src, open(target, "wb") as out:
                src.seek(part.offset)
                left = part.size
                while left > 0:
                    chunk = src.read(min(CHUNK, left))
                    if not chunk:
                        raise ToolError(f"{disk}: ends inside partition {part.name}")
                    out.write(chunk)
                    left -= len(chunk)
        except OSError as exc:
            raise UserError(f"cannot read the disk image: {exc.strerror}", file=disk) from None
        return target

    @property
    def root(self) -> Path:
        """The root filesystem extracted with fsck.erofs (which also checks it)."""
        if self._root is None:
            image = self.partition_file("root")
            dest = self.work / "root"
            # modes only: fsck.erofs 1.5 chowns after chmod, and chown clears the setuid and
            # setgid bits this audit looks for (owners are not needed by any check)
            run(
                [
                    "fsck.erofs",
                    f"--extract={dest}",
                    "--preserve-perms",
                    "--no-preserve-owner",
                    image,
                ]
            )
            self._root = dest
        return self._root

    def entries(self) -> list[Entry]:
        """Every path of the root ("/" itself left out), sorted."""
        if not self._entries:
            root = self.root
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(dirnames + filenames):
                    full = Path(dirpath) / name
                    info = full.lstat()
                    target = os.readlink(full) if stat.S_ISLNK(info.st_mode) else ""
                    path = "/" + full.relative_to(root).as_posix()
                    self._entries.append(Entry(path, info.st_mode, target))
            self._entries.sort(key=lambda e: e.path)
        return self._entries

    def host_path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def read_text(self, path: str) -> str | None:
        """A text file of the root (None if absent or not UTF-8)."""
        try:
            return self.host_path(path).read_text()
        except (OSError, UnicodeDecodeError):
            return None

    def users(self) -> dict[int, str]:
        """uid -> name from the root's /etc/passwd."""
        names: dict[int, str] = {}
        for line in (self.read_text("/etc/passwd") or "").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[2].isdigit():
                names.setdefault(int(fields[2]), fields[0])
        return names
