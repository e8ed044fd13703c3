"""Where npm tarballs and their unpacked trees live in the shared cache."""

from __future__ import annotations

import base64
from pathlib import Path

from appliancekit.cache import Cache


def npm_dir(cache: Cache) -> Path:
    return cache.root / "npm"


def integrity_hex(integrity: str) -> tuple[str, str]:
    """("sha512", hex digest) of an SRI string."""
    algorithm, _, encoded = integrity.partition("-")
    return algorithm, base64.b64decode(encoded).hex()


def tarball_path(cache: Cache, integrity: str, tarball: str) -> Path:
    algorithm, digest = integrity_hex(integrity)
    return (
        npm_dir(cache) / "tarballs" / algorithm / digest[:2] / digest / tarball.rsplit("/", 1)[-1]
    )
