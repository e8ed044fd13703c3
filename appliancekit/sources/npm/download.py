"""Fetching the plan's tarballs from the registry and storing them by integrity hash after
checking it (a mismatch is the lock's fault: one line at the package's integrity)."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.errors import ToolError
from appliancekit.sources.npm.lockfile import LockedPackage, NpmLock
from appliancekit.sources.npm.registry import registry_url
from appliancekit.sources.npm.store import tarball_path

PARALLEL = 8  # tarballs are small; latency, not bandwidth, is what a lock of 1000 costs
TIMEOUT = 60.0


def fetch(
    cache: Cache,
    lock: NpmLock,
    packages: Sequence[LockedPackage],
    registry: str | None = None,
    progress: Callable[[], None] | None = None,
) -> dict[LockedPackage, Path]:
    """Every package's tarball in the cache, verified against its integrity hash."""
    paths = {p: tarball_path(cache, p.integrity, p.tarball) for p in packages}
    todo: dict[Path, LockedPackage] = {}
    for package, path in paths.items():
        if not path.exists():
            todo.setdefault(path, package)
    if todo:
        base = registry or registry_url()
        tmp = cache.tmp_dir()

        def one(item: tuple[Path, LockedPackage]) -> None:
            _download(base, item[1], item[0], tmp, lock)
            if progress is not None:
                progress()

        with ThreadPoolExecutor(PARALLEL) as pool:
            for _ in pool.map(one, sorted(todo.items())):
                pass
    return paths


def digest_of(integrity: str, data_path: Path) -> tuple[str, str]:
    """(expected, actual) base64 digests of `data_path` for the SRI string's algorithm."""
    algorithm, _, expected = integrity.partition("-")
    hasher = hashlib.new(algorithm)
    with open(data_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return expected, base64.b64encode(hasher.digest()).decode()


def _download(base: str, package: LockedPackage, target: Path, tmp: Path, lock: NpmLock) -> None:
    url = base + package.tarball
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="npm-", suffix=".part", dir=tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310
                    while block := response.read(1 << 16):
                        out.write(block)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise lock.error(
                        package,
                        "tarball",
                        f"the registry has no {package.name} {package.version} ({exc.code})",
                    ) from None
                raise ToolError(f"downloading {package.name} {package.version}: {exc}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise ToolError(f"downloading {package.name} {package.version}: {exc}") from None
        expected, actual = digest_of(package.integrity, Path(name))
        if expected != actual:
            algorithm = package.integrity.partition("-")[0]
            raise lock.error(
                package,
                "integrity",
                f"{package.name} {package.version}: the tarball's {algorithm} is "
                f"{algorithm}-{actual}, the lock says {package.integrity}",
            )
        os.replace(name, target)
    finally:
        if os.path.exists(name):
            os.unlink(name)
