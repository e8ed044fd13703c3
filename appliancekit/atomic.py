"""Putting a finished directory in place with renames only.

Builds, releases and cache entries are made in a scratch directory and then swapped in, so a
reader sees the old tree or the new one, never a mix, and a failed run leaves the old one.
"""

from __future__ import annotations

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
        os.rename(new, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=scratch or target.parent))
    os.rename(target, aside / target.name)
    os.rename(new, target)
    shutil.rmtree(aside, ignore_errors=True)
