"""Fetching exact .deb files by their pool path, verified by a known sha256.

apt can download `name=version` only while the index still lists that version; the pool
keeps a file longer than that, and a snapshot archive keeps it for good. So a locked build
downloads `MIRROR/pool/...` itself and trusts nothing but the sha256 from the lock.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.errors import ToolError
from appliancekit.sources.debian import DebPackage, Mirrors

ATTEMPTS = 3
PARALLEL = 4
TIMEOUT_SECONDS = 60
CHUNK = 1 << 20


class PoolFileGone(Exception):
    """The mirror answers, but no longer has this file (HTTP 404/410, or no such file)."""

    def __init__(self, package: DebPackage, url: str) -> None:
        super().__init__(f"{url}: gone")
        self.package = package
        self.url = url


def fetch_from_pool(cache: Cache, packages: Sequence[DebPackage], mirrors: Mirrors) -> None:
    """Download every package not yet in the content-addressed cache. Raises PoolFileGone
    for the first file the mirror no longer has, ToolError for anything else."""
    todo = sorted(
        {p for p in packages if not cache.deb_path(p.sha256).exists()},
        key=lambda p: (p.name, p.architecture),
    )
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        # list() re-raises the first failure in package order
        list(pool.map(lambda p: _fetch_one(cache, p, mirrors.url_for(p.filename)), todo))


def _fetch_one(cache: Cache, package: DebPackage, url: str) -> None:
    destination = cache.deb_path(package.sha256)
    error = ""
    for attempt in range(ATTEMPTS):
        try:
            _download_verified(cache, package, url, destination)
            return
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise PoolFileGone(package, url) from None
            error = f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, FileNotFoundError):
                raise PoolFileGone(package, url) from None
            error = str(exc.reason)
        except OSError as exc:  # reset connections, timeouts mid-body
            error = str(exc)
        if attempt + 1 < ATTEMPTS:
            time.sleep(2 * (attempt + 1))
    raise ToolError(f"downloading {url} failed after {ATTEMPTS} attempts: {error}")


def _download_verified(cache: Cache, package: DebPackage, url: str, destination: Path) -> None:
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix="pool-", suffix=".deb", dir=cache.tmp_dir())
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as r:
            while chunk := r.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if digest.hexdigest() != package.sha256 or size != package.size:
            # a wrong file is never retried into the cache: it is a different package
            raise ToolError(
                f"{package.name}_{package.version}: {url} has sha256 {digest.hexdigest()} "
                f"({size} bytes), the lock pins {package.sha256} ({package.size} bytes)"
            )
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
