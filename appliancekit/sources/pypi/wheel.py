"""Unpacking a wheel into the cache once, laid out as pip installs it under the site directory."""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.errors import ToolError
from appliancekit.sources.debian import DebPackage
from appliancekit.sources.pypi.store import pypi_dir
from appliancekit.sources.unpack import LISTING, PackageFile, UnpackedPackage

UNPACK_VERSION = 3  # bump when unpacking changes what lands in the cache


@dataclass(frozen=True)
class PrefixedPackage(UnpackedPackage):
    """An unpacked tree that appears at `prefix` in the image (wheels go to the site dir)."""

    prefix: str = "/"

    def host_path(self, path: str) -> Path:
        return self.root / posixpath.relpath(path, self.prefix)


def unpack_wheel(cache: Cache, wheel: DebPackage, path: Path, site: str) -> PrefixedPackage:
    """Unpack a wheel once into the cache (by sha256); its files appear under `site`.

    `NAME.data/purelib` and `platlib` go to the site directory as pip would install them;
    `scripts`, `headers` and `data` are left out: an appliance runs its service by module."""
    destination = pypi_dir(cache) / f"unpacked-{UNPACK_VERSION}" / wheel.sha256
    listing = destination / LISTING
    if not listing.exists():
        _extract_wheel(path, destination, cache)
    files = []
    for entry in json.loads(listing.read_text()):
        rel = entry["path"].lstrip("/")
        files.append(PackageFile(**{**entry, "path": posixpath.join(site, rel)}))
    if not any(f.path == site for f in files):
        files.insert(0, PackageFile(site, "dir", 0o755, 0, 0, 0))
    return PrefixedPackage(wheel, destination / "tree", tuple(files), prefix=site)


def _extract_wheel(path: Path, destination: Path, cache: Cache) -> None:
    try:
        with cache.staged_dir(destination, "wheel-") as staging:
            tree = staging / "tree"
            tree.mkdir()
            entries: dict[str, dict[str, object]] = {}
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    rel = _wheel_member_path(info.filename)
                    if rel is None:
                        continue
                    target = tree / rel
                    mode = (info.external_attr >> 16) & 0o7777
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
                    # a site directory's modules and scripts are imported or read, not executed
                    # through their #! line (which names /usr/bin/env or a shell, absent from an
                    # appliance): only ELF files keep their executable bits
                    with open(target, "rb") as head:
                        elf = head.read(4) == b"\x7fELF"
                    os.chmod(target, 0o755 if mode & 0o111 and elf else 0o644)
            for dirpath, dirnames, filenames in os.walk(tree):
                dirnames.sort()
                for name in sorted(dirnames + filenames):
                    full = Path(dirpath) / name
                    info_stat = full.lstat()
                    rel = "/" + str(full.relative_to(tree))
                    is_dir = stat.S_ISDIR(info_stat.st_mode)
                    entries[rel] = {
                        "path": rel,
                        "kind": "dir" if is_dir else "file",
                        "mode": 0o755 if is_dir else stat.S_IMODE(info_stat.st_mode),
                        "uid": 0,
                        "gid": 0,
                        "size": 0 if is_dir else info_stat.st_size,
                        "target": "",
                    }
            (staging / LISTING).write_text(json.dumps(sorted(entries.values(), key=_by_path)))
    except zipfile.BadZipFile as exc:
        raise ToolError(f"{path.name}: not a wheel: {exc}") from exc


def _by_path(entry: Mapping[str, object]) -> str:
    return str(entry["path"])


def _wheel_member_path(name: str) -> str | None:
    """Where a wheel member goes relative to the site directory (None: left out)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or name.startswith("/"):
        return None
    if parts[0].endswith(".data"):
        if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
            return None
        parts = parts[2:]
    return "/".join(parts)
