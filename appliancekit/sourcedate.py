"""SOURCE_DATE_EPOCH of a build: one timestamp, derived from the inputs, for every file.

The sealed root stamps every inode with it. Web servers turn mtimes into validators (nginx:
`Last-Modified` and `ETag: "<mtime hex>-<size hex>"`), so a fixed time would give two
releases of an equal-sized page the same ETag and caches would keep the old one. The
epoch must therefore move forward with each release of the content, and stay put while
the content does not (reproducible builds):

- a path inside a clean git work tree: the committer time of the newest commit touching it
  (stable across clones, checkouts, directories and machines);
- files git does not hold as committed (modified, untracked or ignored ones, e.g. a
  generated site left out of git) and paths outside any git work tree (`-s site=DIR`):
  their newest mtime, so editing or regenerating them moves the epoch, and copies that keep
  mtimes (`cp -a`, rsync -a) build the same image.

The epoch of a build is the newest over all its inputs. It never reads the clock and is
independent of TZ (git's %ct and st_mtime are UTC seconds).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path


def source_date_epoch(paths: Iterable[Path]) -> int:
    """The newest source date over `paths` (files or directory trees)."""
    return max((_path_epoch(Path(p)) for p in paths), default=0)


def _path_epoch(path: Path) -> int:
    path = path.resolve()  # git takes absolute pathspecs only below its own (real) top
    base = path if path.is_dir() else path.parent
    top = _git(base, "rev-parse", "--show-toplevel")
    if top is None:
        return _newest_mtime(_files(path))
    committed = _git(base, "log", "-1", "--format=%ct", "--", str(path))
    # Porcelain v1, -z: "XY NAME\0" (a rename adds "\0ORIGINAL", skipped: it is not a file
    # in the tree any more). Paths are relative to the work tree's top.
    status = _git(
        base, "status", "--porcelain", "-z", "--untracked-files=all", "--ignored", "--", str(path)
    )
    if committed is None or status is None:
        return _newest_mtime(_files(path))
    changed: list[Path] = []
    records = iter(status.split("\0"))
    for record in records:
        if len(record) < 4:
            continue
        if record[0] in "RC":
            next(records, None)
        changed.append(Path(top) / record[3:])
    epoch = int(committed) if committed.strip() else 0
    return max(epoch, _newest_mtime(f for c in changed for f in _files(c)))


def _files(path: Path) -> list[Path]:
    """`path` if it is a file, else every file below it (the files a build copies)."""
    if not path.is_dir():
        return [path] if path.is_file() else []
    found = []
    for dirpath, _dirnames, filenames in os.walk(path):
        found += [Path(dirpath) / name for name in filenames]
    return [f for f in found if f.is_file()]


def _newest_mtime(files: Iterable[Path]) -> int:
    return max((int(f.stat().st_mtime) for f in files), default=0)


def _git(cwd: Path, *args: str) -> str | None:
    """git's stdout, or None where git is missing or `cwd` is not in a work tree it trusts."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"},
        )
    except OSError:
        return None
    return proc.stdout.strip("\n") if proc.returncode == 0 else None
