"""The build cache: downloaded packages (content-addressed), apt state, unpacked packages."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliancekit.atomic import replace_dir


def default_cache_dir() -> Path:
    if env := os.environ.get("APPLIANCEKIT_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "appliancekit"


@dataclass(frozen=True)
class Cache:
    root: Path

    def apt_dir(self, suite: str, arch: str) -> Path:
        return self.root / "apt" / f"{suite}-{arch}"

    def deb_path(self, sha256: str) -> Path:
        return self.root / "debs" / sha256[:2] / f"{sha256}.deb"

    def unpacked_dir(self, sha256: str) -> Path:
        return self.root / "unpacked" / sha256

    def tmp_dir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def staged_dir(self, destination: Path, prefix: str) -> Iterator[Path]:
        """A scratch directory that replaces `destination` in one rename when the block
        ends without an error; readers never see a half-filled cache entry."""
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp_dir()))
        try:
            yield staging
            replace_dir(staging, destination, scratch=self.tmp_dir())
        finally:
            if staging.exists():
                shutil.rmtree(staging)
