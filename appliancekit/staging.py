"""Where a build writes before its result is renamed into images/: images/.tmp/WORK.

The work directory sits on the same filesystem as the images so that a finished image is put
in place by rename (atomic.replace_dir: readers see the old image or the new one, never a mix). When the build
ends, successful or not, its work directory goes, and so does images/.tmp once no other build
is using it; an images/ directory the build had to create goes too if it stayed empty. So a
build leaves nothing behind but the image it made.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_DIR = ".tmp"


@contextmanager
def work_dir(images_dir: Path, prefix: str) -> Iterator[Path]:
    """A private, empty directory under images_dir/.tmp, removed (with .tmp when it is
    empty) when the block ends, however it ends."""
    images_dir = Path(images_dir)
    created = [d for d in (images_dir, *images_dir.parents) if not d.exists()]
    tmp_root = images_dir / TMP_DIR
    work = None
    for _ in range(10):
        tmp_root.mkdir(parents=True, exist_ok=True)
        try:
            work = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_root))
            break
        except FileNotFoundError:  # another build removed the empty .tmp just now
            continue
    if work is None:
        raise FileNotFoundError(f"cannot create a work directory in {tmp_root}")
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for directory in (tmp_root, *created):  # innermost first
            try:
                directory.rmdir()
            except OSError:
                break  # in use by another build, or not empty: it stays
