"""Where PyPI wheels and what is made from them live in the shared cache."""

from __future__ import annotations

from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.sources.debian import DebPackage


def pypi_dir(cache: Cache) -> Path:
    """The cache's PyPI area: wheels by sha256, unpacked wheels, bytecode, host Python."""
    return cache.root / "pypi"


def wheel_path(cache: Cache, wheel: DebPackage) -> Path:
    return pypi_dir(cache) / "wheels" / wheel.sha256[:2] / wheel.sha256 / wheel.filename
