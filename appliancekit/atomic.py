"""Putting a finished directory in place with renames only.

Builds, releases and cache entries are made in a scratch directory and then swapped in, so a
reader sees the old tree or the new one, never a mix, and a failed run leaves the old one.
Where the kernel and filesystem allow it, the swap is one renameat2(RENAME_EXCHANGE): the
path names a whole tree at every instant, which an HTTP server reading a deploy repository
for a polling device needs (with two renames it would answer 404 in between).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

from appliancekit.errors import UserError


def replace_dir(new: Path, target: Path, *, scratch: Path | None = None) -> None:
    """Move directory `new` to `target`, replacing what is there with two renames.

    The old tree is first renamed aside (into `scratch`, or beside `target`: it must be on
    the same filesystem) and removed after the swap. A `target` that exists and is not a
    directory is refused rather than replaced."""
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} exists and is not a directory", file=target)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(new, target)
            return
        except OSError as e:
            # another writer (a parallel build filling the same cache entry) put a tree
            # there since the check: replace it like any existing one
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=scratch or target.parent))
    if exchange(new, target):
        os.rename(new, aside / target.name)  # `new` now holds the old tree
    else:
        os.rename(target, aside / target.name)
        os.rename(new, target)
    shutil.rmtree(aside, ignore_errors=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (renameat2 RENAME_EXCHANGE). False when this
    kernel, C library or filesystem cannot, so the caller falls back to two renames."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))
