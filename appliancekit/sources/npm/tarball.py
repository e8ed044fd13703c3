"""Unpacking an npm tarball into the cache once (by integrity hash), presented at the
package's node_modules path in the image."""

from __future__ import annotations

import json
import posixpath
import shutil
import tarfile
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.errors import ToolError
from appliancekit.sources.debian import DebPackage
from appliancekit.sources.npm.store import integrity_hex, npm_dir
from appliancekit.sources.pypi.wheel import PrefixedPackage
from appliancekit.sources.unpack import LISTING, PackageFile

UNPACK_VERSION = 1  # bump when unpacking changes what lands in the cache


def unpack_tarball(
    cache: Cache, package: DebPackage, integrity: str, path: Path, prefix: str
) -> PrefixedPackage:
    """The tarball's files (its top directory, `package/` as npm packs it, stripped) under
    `prefix`, the package's directory in the image."""
    algorithm, digest = integrity_hex(integrity)
    destination = npm_dir(cache) / f"unpacked-{UNPACK_VERSION}" / f"{algorithm}-{digest}"
    listing = destination / LISTING
    if not listing.exists():
        _extract(path, destination, cache)
    files = [PackageFile(prefix, "dir", 0o755, 0, 0, 0)]
    for entry in json.loads(listing.read_text()):
        rel = entry["path"].lstrip("/")
        files.append(PackageFile(**{**entry, "path": posixpath.join(prefix, rel)}))
    return PrefixedPackage(package, destination / "tree", tuple(files), prefix=prefix)


def _member_path(name: str) -> str | None:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if len(parts) < 2 or ".." in parts or name.startswith("/"):
        return None
    return "/".join(parts[1:])


def _extract(path: Path, destination: Path, cache: Cache) -> None:
    try:
        with cache.staged_dir(destination, "npm-") as staging:
            tree = staging / "tree"
            tree.mkdir()
            entries: dict[str, dict[str, object]] = {}
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    rel = _member_path(member.name)
                    if rel is None or not (member.isfile() or member.isdir()):
                        continue  # npm packs no links or devices; anything else is left out
                    target = tree / rel
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = archive.extractfile(member)
                    if source is None:
                        continue
                    with source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out)
                    with open(target, "rb") as head:
                        elf = head.read(4) == b"\x7fELF"
                    # run by node, never exec'd through a #! line: only ELF keeps its x bit
                    mode = 0o755 if elf and member.mode & 0o111 else 0o644
                    target.chmod(mode)
                    entries["/" + rel] = _entry("/" + rel, "file", mode, target.stat().st_size)
            for directory in sorted({posixpath.dirname(p) for p in entries} - {"/"}):
                while directory not in ("/", "") and directory not in entries:
                    entries[directory] = _entry(directory, "dir", 0o755, 0)
                    directory = posixpath.dirname(directory)
            (staging / LISTING).write_text(json.dumps(sorted(entries.values(), key=_by_path)))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ToolError(f"{path.name}: not an npm tarball: {exc}") from exc


def _entry(path: str, kind: str, mode: int, size: int) -> dict[str, object]:
    return {
        "path": path,
        "kind": kind,
        "mode": mode,
        "uid": 0,
        "gid": 0,
        "size": size,
        "target": "",
    }


def _by_path(entry: dict[str, object]) -> str:
    return str(entry["path"])
