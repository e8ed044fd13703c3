"""Console output: human text with progress on a TTY, quiet in CI, JSON for machines."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


def is_interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


@dataclass
class Reporter:
    """Passed to long-running stages so they can report progress without knowing the UI."""

    json_mode: bool = False
    verbose: bool = False

    def step(self, message: str) -> None:
        """A stage boundary: shown on a TTY (or with --verbose), silent in CI and --json."""
        if self.json_mode:
            return
        if self.verbose or is_interactive():
            print(f"==> {message}", file=sys.stderr, flush=True)

    def info(self, message: str) -> None:
        if not self.json_mode:
            print(message, file=sys.stderr, flush=True)

    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[ProgressTask]:
        if self.json_mode or not is_interactive():
            yield ProgressTask(None, None)
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = [TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
        if total:
            columns.insert(2, DownloadColumn())
        with Progress(*columns, transient=True) as progress:
            task_id = progress.add_task(description, total=total)
            yield ProgressTask(progress, task_id)


@dataclass
class ProgressTask:
    progress: Any
    task_id: Any

    def advance(self, amount: float = 1) -> None:
        if self.progress is not None:
            self.progress.advance(self.task_id, amount)

    def update(self, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, **kwargs)


def emit_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
