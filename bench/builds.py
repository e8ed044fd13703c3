"""Build times as a user sees them: `appliancekit build` run as a command (interpreter start
and imports included) with APPLIANCEKIT_CACHE pointing at a cache directory of the bench's
own, so the first build is really cold (it downloads the package indexes and every package)
and the shared cache of other builds on the machine is neither used nor touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TimedBuild:
    seconds: float
    rebuilt: bool
    image_dir: Path
    sizes: dict[str, int]


@dataclass(frozen=True)
class BuildTimes:
    cold: TimedBuild  # empty cache directory: indexes and packages downloaded
    warm: TimedBuild  # `--force` with the package cache the cold build filled
    noop: TimedBuild  # nothing changed: the up-to-date check only


def timed_build(
    recipe: str, board: str, images: Path, cache: Path, *extra: str
) -> TimedBuild:
    argv = [sys.executable, "-m", "appliancekit", "build", recipe, "--board", board]
    argv += ["--images", str(images), "--json", *extra]
    env = {**os.environ, "APPLIANCEKIT_CACHE": str(cache)}
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[3:])} failed: {done.stderr.strip()}")
    summary = json.loads(done.stdout)
    return TimedBuild(seconds, summary["rebuilt"], Path(summary["image_dir"]), summary["sizes"])


def build_times(recipe: str, board: str, workdir: Path) -> BuildTimes:
    """Cold, warm (forced) and no-op builds in `workdir`/cache (created empty here)."""
    cache = workdir / "cache"
    cache.mkdir()
    images = workdir / "images"
    cold = timed_build(recipe, board, images, cache)
    warm = timed_build(recipe, board, images, cache, "--force")
    noop = timed_build(recipe, board, images, cache)
    if noop.rebuilt:
        raise SystemExit("bench: the no-op build rebuilt: the image's inputs are not stable")
    return BuildTimes(cold, warm, noop)
