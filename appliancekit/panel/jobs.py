"""Long actions (build, boot test, publish, card image) as background jobs with progress.

One worker thread runs the jobs one after another: a 2-core machine building two images at
once only makes both slow, and QEMU under TCG wants a core. The page polls a job's JSON
(`Job.to_json`) and shows its steps, its progress bar and, when it ends, its result.

A job's function gets a `JobReporter`: the same `Reporter` interface the pipeline stages
report to on a terminal, so the real build, boot test, publish and flash code runs unchanged
and its steps and progress bars land in the job instead of on stderr.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from appliancekit.errors import one_line_error
from appliancekit.output import ProgressTask, Reporter

log = logging.getLogger("appliancekit.panel")


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"


@dataclass
class JobResult:
    """What a finished job shows: a summary line, optional links, optional detail lines."""

    summary: str
    ok: bool = True
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, url)
    lines: list[str] = field(default_factory=list)


@dataclass
class Job:
    id: int
    kind: str  # "boot-test", "publish", "card"
    title: str
    cloud: str
    member: str
    state: JobState = JobState.QUEUED
    steps: list[str] = field(default_factory=list)
    progress_label: str = ""
    progress_done: float = 0.0
    progress_total: float | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: JobResult | None = None
    # the last lines of a boot's serial console, live while QEMU runs
    console: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=40))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def done(self) -> bool:
        return self.state in (JobState.PASSED, JobState.FAILED)

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    def step(self, message: str) -> None:
        with self.lock:
            self.steps.append(message)
            self.progress_label, self.progress_done, self.progress_total = "", 0.0, None

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            fraction = (
                min(1.0, self.progress_done / self.progress_total) if self.progress_total else None
            )
            return {
                "id": self.id,
                "kind": self.kind,
                "title": self.title,
                "cloud": self.cloud,
                "member": self.member,
                "state": self.state.value,
                "done": self.done,
                "steps": list(self.steps),
                "progress": {"label": self.progress_label, "fraction": fraction},
                "elapsed": round(self.elapsed(), 1),
                "console": list(self.console),
                "result": None
                if self.result is None
                else {
                    "summary": self.result.summary,
                    "ok": self.result.ok,
                    "links": [{"label": a, "url": b} for a, b in self.result.links],
                    "lines": list(self.result.lines),
                },
            }


class SerialFollower:
    """Follows a booting machine's serial log into the job's console (a boot test's progress:
    initramfs, verity, hand-over, services), one boot after another."""

    POLL = 0.5

    def __init__(self, job: Job) -> None:
        self.job = job
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def follow(self, path: Path) -> None:
        self.stop()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._tail, args=(Path(path), self._stop), name="panel-serial", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _tail(self, path: Path, stop: threading.Event) -> None:
        position, partial = 0, ""
        while True:
            done = stop.wait(self.POLL)
            try:
                with open(path, "rb") as log:
                    log.seek(position)
                    data = log.read()
            except OSError:
                data = b""
            position += len(data)
            lines = (partial + data.decode("utf-8", "replace")).split("\n")
            partial = lines.pop()
            with self.job.lock:
                self.job.console.extend(line.rstrip("\r") for line in lines)
            if done:
                return


class _JobProgress:
    """rich.progress's two calls that ProgressTask makes, recorded on the job."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def advance(self, _task_id: object, amount: float = 1) -> None:
        with self.job.lock:
            self.job.progress_done += amount

    def update(self, _task_id: object, **kwargs: Any) -> None:
        with self.job.lock:
            if "description" in kwargs:
                self.job.progress_label = str(kwargs["description"])


class JobReporter(Reporter):
    """A Reporter whose steps and progress bars go to a job (shown in the page)."""

    def __init__(self, job: Job) -> None:
        super().__init__(json_mode=False, verbose=True)
        self.job = job

    def step(self, message: str) -> None:
        self.job.step(message)

    def info(self, message: str) -> None:
        self.job.step(message)

    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[ProgressTask]:
        with self.job.lock:
            self.job.progress_label = description
            self.job.progress_done = 0.0
            self.job.progress_total = float(total) if total else None
        yield ProgressTask(_JobProgress(self.job), None)


def code_path(exc: BaseException) -> str:
    """A bug's traceback for the server log: the frames and the exception's type, not its
    message (which could quote a value from a form)."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"{frames}{type(exc).__module__}.{type(exc).__qualname__} (message not logged)"


JobFunction = Callable[[Job, JobReporter], JobResult]


class JobQueue:
    """Jobs by id, run one at a time on a daemon thread."""

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._queue: queue.Queue[tuple[Job, JobFunction] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="panel-jobs", daemon=True)
        self._thread.start()

    def submit(self, kind: str, title: str, cloud: str, member: str, fn: JobFunction) -> Job:
        with self._lock:
            job = Job(next(self._ids), kind, title, cloud, member)
            self._jobs[job.id] = job
        log.info("job %d queued: %s", job.id, title)
        self._queue.put((job, fn))
        return job

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.id, reverse=True)

    def latest(self, cloud: str, member: str, kind: str) -> Job | None:
        return next(
            (j for j in self.all() if (j.cloud, j.member, j.kind) == (cloud, member, kind)), None
        )

    def stop(self) -> None:
        """No new jobs start; queued ones are dropped, a running one finishes."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                job = item[0]
                with job.lock:
                    job.state, job.finished = JobState.FAILED, time.time()
                    job.result = JobResult("not started: the panel stopped", ok=False)
        self._queue.put(None)

    def running(self) -> Job | None:
        return next((j for j in self.all() if j.state == JobState.RUNNING), None)

    def join(self) -> None:
        self._thread.join()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, fn = item
            with job.lock:
                job.state, job.started = JobState.RUNNING, time.time()
            log.info("job %d started: %s", job.id, job.title)
            try:
                result = fn(job, JobReporter(job))
            except Exception as exc:  # noqa: BLE001 - a job's failure is shown, not raised
                described = one_line_error(exc)
                if described is None:
                    log.error("job %d failed:\n%s", job.id, code_path(exc))
                    message = f"internal error ({type(exc).__name__}); see the panel's log"
                else:
                    message = described[0]
                result = JobResult(message, ok=False)
            with job.lock:
                job.result = result
                job.state = JobState.PASSED if result.ok else JobState.FAILED
                job.finished = time.time()
                job.progress_label, job.progress_total = "", None
            log.info("job %d %s after %.1fs", job.id, job.state.value, job.elapsed())
