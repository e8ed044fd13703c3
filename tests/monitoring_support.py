"""The real monitoring agent (monitoring/agent, Go), built for this host and run against a
state directory laid out like a device's: what test_monitoring_state scrapes and what the
panel's tests point a cloud member at."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from appliancekit import monitoring
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.monitoring.agent import build_agent
from appliancekit.recipe import load_recipe

from .conftest import PROJECT

needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="needs golang-go")


def device_sources(root: Path) -> dict[str, object]:
    """The sources file the image gets (monitoring.sources_config), every path moved under
    `root`: the agent reads exactly the layout a device has."""
    recipe = load_recipe(PROJECT.recipes_dir / "dns")
    config = monitoring.sources_config(recipe)
    config["certificates"] = [{"name": "tls", "path": "/var/lib/tls/cert.pem"}]

    def moved(value: object) -> object:
        if isinstance(value, str) and value.startswith("/"):
            return str(root) + value
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v) for v in value]
        return value

    return moved(config)  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_agent(work: Path, token: str) -> Iterator[tuple[str, int, Path]]:
    """(metrics URL, port, device root) of the real agent listening on 127.0.0.1, taking
    `token`, reading its state under `work`/device; killed on exit."""
    binary = build_agent(Cache(default_cache_dir()), "amd64")
    root = work / "device"
    (root / "run" / "service").mkdir(parents=True)
    sources = work / "sources.json"
    sources.write_text(json.dumps(device_sources(root)))
    (work / "token").write_text(token + "\n")
    port = free_port()
    process = subprocess.Popen(
        [
            str(binary),
            f"-listen=127.0.0.1:{port}",
            f"-upstream=http://127.0.0.1:{free_port()}/metrics",  # nothing there: no node metrics
            "-upstream-interval=1h",
            f"-scan-dir={root / 'run' / 'service'}",
            f"-token-file={work / 'token'}",
            f"-sources={sources}",
        ],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while True:
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=10):
                    break
            except OSError:
                assert process.poll() is None, "the agent exited"
                assert time.monotonic() < deadline, "the agent did not listen"
                time.sleep(0.2)
        yield url, port, root
    finally:
        process.kill()
        process.wait()
