"""Longest files first: the order in which pytest-xdist (`--dist loadfile
--no-loadscope-reorder`) hands test files to its workers.

xdist's default reorders files by how many tests they hold, which puts the single-test boot
files (minutes each) at the end of the queue: on two workers the run then ends with one
worker idle while the other boots a cloud. Longest-first (tests/schedule.toml, refreshed
from a full run's JUnit report) ends it on short files that fill both workers instead.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

SCHEDULE = Path(__file__).with_name("schedule.toml")


def file_seconds(schedule: Path = SCHEDULE) -> dict[str, float]:
    """Measured seconds per test file (relative to the repository), from the schedule."""
    with schedule.open("rb") as stream:
        return {name: float(seconds) for name, seconds in tomllib.load(stream)["seconds"].items()}


def longest_files_first(items: list[pytest.Item], seconds: dict[str, float]) -> list[pytest.Item]:
    """Items grouped by file, the files by their measured seconds, longest first; within a file,
    and among files with no figure, collection order is kept (the sort is stable)."""
    first_seen: dict[str, int] = {}
    for item in items:
        first_seen.setdefault(item.nodeid.split("::", 1)[0], len(first_seen))

    def key(item: pytest.Item) -> tuple[float, int]:
        path = item.nodeid.split("::", 1)[0]
        return (-seconds.get(path, 0.0), first_seen[path])

    return sorted(items, key=key)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items[:] = longest_files_first(items, file_seconds())
