"""An image's file tree as data: what each path is and where its bytes come from.

Building the unminimised root as a real directory would copy every package on every build;
instead the tree maps paths to entries pointing into the unpacked-package cache (or holding
generated content), minimise selects a subset, and only that subset is materialised.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from appliancekit.errors import UserError

GENERATED = "(appliancekit)"
MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True)
class Entry:
    path: str  # absolute, normalised, e.g. /usr/sbin/nginx
    kind: str  # "file" | "dir" | "symlink"
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    size: int = 0
    source: Path | None = None  # host file holding the content (files from packages/trees)
    content: bytes | None = None  # generated content
    target: str = ""  # symlink target
    package: str = GENERATED


@dataclass
class RootTree:
    entries: dict[str, Entry] = field(default_factory=dict)

    def __contains__(self, path: str) -> bool:
        return path in self.entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries[p] for p in sorted(self.entries))

    def get(self, path: str) -> Entry | None:
        return self.entries.get(path)

    def add(self, entry: Entry) -> None:
        """Add or replace an entry, creating missing parent directories (root-owned, 0755)."""
        path = normpath(entry.path)
        self.ensure_dir(posixpath.dirname(path))
        existing = self.entries.get(path)
        if existing is not None and existing.kind == "dir" and entry.kind == "dir":
            return  # first definition of a directory wins (package metadata beats defaults)
        self.entries[path] = replace(entry, path=path)

    def ensure_dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        path = normpath(path)
        missing = []
        while path not in self.entries and path != "/":
            missing.append(path)
            path = posixpath.dirname(path)
        if "/" not in self.entries:
            self.entries["/"] = Entry("/", "dir", 0o755)
        for item in reversed(missing):
            self.entries[item] = Entry(item, "dir", mode, uid, gid)

    def add_file(
        self, path: str, content: bytes | str, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        data = content.encode() if isinstance(content, str) else content
        self.add(Entry(path, "file", mode, uid, gid, size=len(data), content=data))

    def add_symlink(self, path: str, target: str) -> None:
        self.add(Entry(path, "symlink", 0o777, target=target))

    def resolve(self, path: str) -> tuple[str | None, list[str]]:
        """Follow symlinks component by component inside the tree.

        Returns the final path (None if it does not exist) and every symlink traversed, so
        minimise can keep the links a program is reached through.
        """
        links: list[str] = []
        pending = [c for c in normpath(path).split("/") if c]
        current = "/"
        hops = 0
        while pending:
            component = pending.pop(0)
            candidate = normpath(posixpath.join(current, component))
            entry = self.entries.get(candidate)
            if entry is None:
                return None, links
            if entry.kind == "symlink":
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    return None, links
                links.append(candidate)
                target = entry.target
                base = "/" if target.startswith("/") else current
                pending = [
                    c for c in normpath(posixpath.join(base, target)).split("/") if c
                ] + pending
                current = "/"
                continue
            current = candidate
        return current, links

    def walk(self, directory: str) -> list[str]:
        """Every path at or below `directory` (no symlink following)."""
        prefix = normpath(directory).rstrip("/") + "/"
        return sorted(p for p in self.entries if p == directory or p.startswith(prefix))

    def total_size(self) -> int:
        return sum(e.size for e in self.entries.values() if e.kind == "file")


def normpath(path: str) -> str:
    normalised = posixpath.normpath("/" + path.lstrip("/"))
    return "/" if normalised in ("//", "/.") else normalised


def materialise(tree: RootTree, destination: Path) -> None:
    """Write the tree to a real directory with exact modes and ownership (needs root)."""
    destination.mkdir(parents=True, exist_ok=True)
    for entry in tree:  # sorted: parents before children
        target = destination / entry.path.lstrip("/")
        if entry.kind == "dir":
            target.mkdir(exist_ok=True)
        elif entry.kind == "symlink":
            os.symlink(entry.target, target)
        elif entry.content is not None:
            target.write_bytes(entry.content)
        elif entry.source is not None:
            shutil.copyfile(entry.source, target, follow_symlinks=False)
        else:
            raise UserError(f"{entry.path}: file entry has no content")
        os.lchown(target, entry.uid, entry.gid)
        if entry.kind != "symlink":
            os.chmod(target, entry.mode)
    # chmod after chown: chown clears setuid bits
    for entry in tree:
        if entry.kind == "dir":
            os.chmod(destination / entry.path.lstrip("/"), entry.mode)
