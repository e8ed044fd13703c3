"""The `[backup]` section of recipe.toml: what to back up and how to make it consistent.

    [backup]
    paths = ["/var/vmail"]        # declared [data] paths, or paths under one; default: all
    exclude = ["*.hs"]            # restic --exclude patterns (caches the service rebuilds)
    sqlite = ["/var/lib/powerdns/pdns.sqlite3"]  # copied with SQLite's online backup (.backup)
                                  # before each snapshot: never the live file, which may be
                                  # mid-transaction

Paths are named as the recipe's services see them; the agent works on /data, where the
data links point (rootfs._data_links: /var/vmail -> /data/vmail).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from appliancekit.tomlsource import Field, KeyPath, TomlSource, abs_path, list_of, string

DATA_MOUNT = "/data"  # rootfs.DATA_MOUNT (rootfs imports the recipe, which imports this)

FIELDS = (
    Field("paths", list_of(abs_path()), default=None),
    Field("exclude", list_of(string()), default=()),
    Field("sqlite", list_of(abs_path()), default=()),
)


@dataclass(frozen=True)
class SqliteCopy:
    database: str  # the live database under /data
    copy: str  # where the online backup goes before each snapshot (and comes back from)


@dataclass(frozen=True)
class BackupSection:
    paths: tuple[str, ...]  # under /data
    exclude: tuple[str, ...] = ()  # restic patterns, as given
    sqlite: tuple[SqliteCopy, ...] = ()


STATE_DIR = f"{DATA_MOUNT}/.appliancekit/backup"  # status, restic's cache, markers
SQLITE_DIR = f"{STATE_DIR}/sqlite"  # consistent copies of the databases (in each snapshot)


def on_data(path: str, data_paths: Sequence[str]) -> str | None:
    """Where `path` (a data path or a path under one) lives on /data, or None."""
    for data_path in data_paths:
        base = data_path.rstrip("/")
        if path == base or path.startswith(base + "/"):
            name = posixpath.basename(base)
            return posixpath.normpath(f"{DATA_MOUNT}/{name}{path[len(base) :]}")
    return None


def build_section(
    src: TomlSource, raw: dict[str, Any], data_paths: Sequence[str], where: KeyPath = ("backup",)
) -> BackupSection:
    if not data_paths:
        src.fail(where, "[backup] needs [data] paths: only state on /data is backed up")
    given = raw["paths"] if raw["paths"] is not None else tuple(data_paths)
    paths = []
    for i, path in enumerate(given):
        mapped = on_data(path, data_paths)
        if mapped is None:
            src.fail(
                (*where, "paths", i),
                f"{path} is not a [data] path or under one ({', '.join(data_paths)})",
            )
        paths.append(mapped)
    copies = []
    for i, database in enumerate(raw["sqlite"]):
        live = on_data(database, data_paths)
        if live is None or not any(live == p or live.startswith(p + "/") for p in paths):
            src.fail(
                (*where, "sqlite", i),
                f"{database} is not under a backed-up path ({', '.join(given)})",
            )
        copies.append(SqliteCopy(live, SQLITE_DIR + live[len(DATA_MOUNT) :]))
    for i, pattern in enumerate(raw["exclude"]):
        if any(c in pattern for c in '"\\\n'):
            src.fail((*where, "exclude", i), f"pattern {pattern!r} holds a quote or backslash")
    return BackupSection(tuple(dict.fromkeys(paths)), tuple(raw["exclude"]), tuple(copies))
