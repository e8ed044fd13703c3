"""Writing a recipe's Debian locks: resolve every package set its builds use, per (suite,
architecture), and pin the result (the only place apt resolves for a locked recipe).

A lock file is one consistent resolution: when a board is added or `--update` is asked for,
every set in it is resolved again from one fresh index, and the diff is reported.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliancekit.board import Board
from appliancekit.build import resolve_recipe_sources
from appliancekit.cache import Cache
from appliancekit.errors import UserError
from appliancekit.monitoring import augment as with_monitoring
from appliancekit.output import Reporter
from appliancekit.recipe import Recipe
from appliancekit.sources import pypi
from appliancekit.sources.debian import AptSource
from appliancekit.sources.debian_lock import (
    SNAPSHOT_FORMAT,
    DebianLock,
    PackageChange,
    RecordingSource,
    diff_locks,
    lock_from,
    lock_path,
    read_lock,
    write_lock,
)


@dataclass(frozen=True)
class LockOutcome:
    path: Path
    suite: str
    arch: str
    boards: tuple[str, ...]
    resolved: bool  # apt ran (the lock was missing, lacked a board, or --update)
    written: bool  # the file changed
    previous: bool  # there was a lock before
    changes: tuple[PackageChange, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "lock": str(self.path),
            "suite": self.suite,
            "arch": self.arch,
            "boards": list(self.boards),
            "resolved": self.resolved,
            "written": self.written,
            "previous": self.previous,
            "changes": [c.to_json() for c in self.changes],
        }


# a board name -> the board, or None when it no longer exists (it leaves the lock)
BoardLoader = Callable[[str], "Board | None"]


def suite_for(recipe: Recipe, board: Board) -> str:
    return recipe.debian.suite or board.suite


def lock_recipe(
    recipe: Recipe,
    boards: Sequence[Board],
    load_board: BoardLoader,
    cache: Cache,
    reporter: Reporter,
    *,
    update: bool = False,
) -> list[LockOutcome]:
    """Write (or keep) the lock of every (suite, arch) the boards need. Without `update`, a
    lock that already covers the boards is left alone and nothing is resolved."""
    groups: dict[tuple[str, str], list[Board]] = {}
    for board in boards:
        groups.setdefault((suite_for(recipe, board), board.arch.value), []).append(board)
    outcomes = []
    for (suite, arch), group in sorted(groups.items()):
        path = lock_path(recipe.directory, suite, arch)
        old = read_lock(path) if path.exists() else None
        wanted = {b.name for b in group}
        if old is not None and wanted <= set(old.boards) and not update:
            outcomes.append(LockOutcome(path, suite, arch, old.boards, False, False, True, ()))
            continue
        kept = [load_board(name) for name in (old.boards if old else ()) if name not in wanted]
        every = sorted([*group, *(b for b in kept if b is not None)], key=lambda b: b.name)
        reporter.step(f"{recipe.name}: resolving Debian {suite}/{arch} for {len(every)} boards")
        new = resolve_lock(recipe, suite, arch, every, cache)
        changes = tuple(diff_locks(old, new))
        written = old is None or bool(changes) or _shape(old) != _shape(new)
        if written:
            write_lock(path, new)
        outcomes.append(
            LockOutcome(path, suite, arch, new.boards, True, written, old is not None, changes)
        )
    return outcomes


def resolve_lock(
    recipe: Recipe, suite: str, arch: str, boards: Sequence[Board], cache: Cache
) -> DebianLock:
    apt = AptSource(cache, suite, arch)
    apt.update(force=True)
    snapshot = time.strftime(SNAPSHOT_FORMAT, time.gmtime())
    target = RecordingSource(apt, arch)
    recorders = [target]
    try:
        for board in boards:
            # with monitoring: a cloud may turn it on for any recipe's members
            resolve_recipe_sources(with_monitoring(recipe), board, target)
    except UserError as exc:
        missing = _UNAVAILABLE.findall(str(exc))
        if not missing:
            raise
        # the suite has no such package for this architecture: say so in the lock, so the
        # release matrix leaves these boards out and a build names the reason
        return DebianLock(
            suite=suite,
            arch=arch,
            boards=tuple(sorted(b.name for b in boards)),
            snapshot=snapshot,
            release=tuple(sorted(apt.release_dates().items())),
            closures=(),
            packages=(),
            unavailable=tuple(sorted(set(missing))),
        )
    if recipe.python is not None and recipe.python.bytecode:
        # the suite's Python for the build host compiles the bytecode
        host = pypi.host_arch()
        if host == arch:
            host_source = target
        else:
            host_apt = AptSource(cache, suite, host)
            host_apt.update(force=True)
            host_source = RecordingSource(host_apt, host)
            recorders.append(host_source)
        host_source.resolve(pypi.host_python_packages(recipe.python.version))
    return lock_from(
        suite,
        arch,
        [b.name for b in boards],
        snapshot,
        apt.release_dates(),
        recorders,
        apt.missing_indexes(),
    )


_UNAVAILABLE = re.compile(r"Unable to locate package (\S+)")


def _shape(lock: DebianLock) -> tuple[object, ...]:
    """What a lock says besides its package versions."""
    return (
        lock.boards,
        lock.missing_indexes,
        lock.unavailable,
        sorted(lock.closures, key=lambda c: (c.arch, c.request)),
    )
