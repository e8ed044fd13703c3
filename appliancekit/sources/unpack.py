"""Unpack .debs into the cache, once per package file, already mapped to merged /usr.

No maintainer scripts run. `dpkg-deb -x` straight into a merged-/usr tree would replace the
/sbin -> usr/sbin symlink with a directory, so each package is extracted on its own and its
/bin, /sbin and /lib* directories are moved under /usr here.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.errors import ToolError
from appliancekit.sources.debian import DebPackage, FetchedDeb

MERGED_USR_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
LISTING = ".appliancekit-files.json"


@dataclass(frozen=True)
class PackageFile:
    path: str  # absolute path in the image, e.g. /usr/sbin/nginx
    kind: str  # "file" | "dir" | "symlink"
    mode: int  # permission bits (incl. setuid etc.)
    uid: int
    gid: int
    size: int
    target: str = ""  # symlink target


@dataclass(frozen=True)
class UnpackedPackage:
    package: DebPackage
    root: Path  # extracted tree in the cache; never modified after unpacking
    files: tuple[PackageFile, ...]

    def host_path(self, path: str) -> Path:
        return self.root / path.lstrip("/")


def unpack(cache: Cache, fetched: FetchedDeb) -> UnpackedPackage:
    destination = cache.unpacked_dir(fetched.package.sha256)
    listing = destination / LISTING
    if not listing.exists():
        _extract(fetched.path, destination, cache)
    files = tuple(PackageFile(**entry) for entry in json.loads(listing.read_text()))
    return UnpackedPackage(fetched.package, destination, files)


def _extract(deb: Path, destination: Path, cache: Cache) -> None:
    with cache.staged_dir(destination, "unpack-") as staging:
        result = subprocess.run(
            ["dpkg-deb", "-x", str(deb), str(staging)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ToolError(f"dpkg-deb -x {deb.name} failed: {result.stderr.strip()}")
        _merge_usr(staging)
        entries = _scan(staging)
        (staging / LISTING).write_text(json.dumps(entries, sort_keys=True))


def _merge_usr(tree: Path) -> None:
    usr = tree / "usr"
    for name in MERGED_USR_DIRS:
        top = tree / name
        if top.is_symlink() or not top.is_dir():
            continue
        _move_into(top, usr / name)
        top.rmdir()


def _move_into(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for child in sorted(source.iterdir()):
        dest = target / child.name
        if child.is_dir() and not child.is_symlink() and dest.is_dir() and not dest.is_symlink():
            _move_into(child, dest)
            child.rmdir()
        else:
            if dest.exists() or dest.is_symlink():
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                else:
                    dest.unlink()
            os.rename(child, dest)


def _scan(tree: Path) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            full = base / name
            info = full.lstat()
            rel = "/" + str(full.relative_to(tree))
            if stat.S_ISLNK(info.st_mode):
                kind, target, size = "symlink", os.readlink(full), 0
            elif stat.S_ISDIR(info.st_mode):
                kind, target, size = "dir", "", 0
            elif stat.S_ISREG(info.st_mode):
                kind, target, size = "file", "", info.st_size
            else:
                continue  # device nodes and fifos have no place in an appliance root
            entries.append(
                {
                    "path": rel,
                    "kind": kind,
                    "mode": stat.S_IMODE(info.st_mode),
                    "uid": info.st_uid,
                    "gid": info.st_gid,
                    "size": size,
                    "target": target,
                }
            )
    return entries
