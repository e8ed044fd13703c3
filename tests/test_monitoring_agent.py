"""The monitoring agent (appliancekit/monitoring/agent) built for this host and run against
a real s6-supervise: the supervision metrics follow what s6 does (up, down on purpose,
restarts), the control endpoint drives s6, and both tokens are enforced. Slow only for its
first Go build (the standard library for a new architecture); node-exporter is stood in for
by a local HTTP server here (the real one is scraped in test_monitoring_cloud.py)."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliancekit.cache import Cache, default_cache_dir
from appliancekit.monitoring.agent import build_agent
from appliancekit.sources.pypi import host_arch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("go") and shutil.which("s6-supervise") and shutil.which("execlineb")),
        reason="golang-go and s6 (scripts/setup-host.sh)",
    ),
]
SCRAPE, CONTROL = "scrape-token-1", "control-token-2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Upstream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        body = b"node_stand_in 1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def call(url: str, token: str | None = None, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str, service: str = "sleeper") -> float:
    match = re.search(rf'^{name}{{service="{service}"}} (\S+)$', text, re.M)
    assert match, f"{name} for {service} not in:\n{text}"
    return float(match[1])


@pytest.fixture()
def agent(tmp_path: Path) -> Iterator[str]:
    binary = build_agent(Cache(default_cache_dir()), host_arch())
    scan = tmp_path / "service"
    (scan / "sleeper").mkdir(parents=True)
    run = scan / "sleeper" / "run"
    run.write_text(f"#!{shutil.which('execlineb')} -P\n{shutil.which('sleep')} 1000\n")
    run.chmod(0o755)
    (tmp_path / "token").write_text(SCRAPE + "\n")
    (tmp_path / "control").write_text(CONTROL + "\n")
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    supervise = subprocess.Popen(["s6-supervise", str(scan / "sleeper")])
    process = subprocess.Popen(
        [
            str(binary),
            f"-listen=127.0.0.1:{port}",
            f"-upstream=http://127.0.0.1:{upstream.server_port}/metrics",
            f"-scan-dir={scan}",
            f"-token-file={tmp_path / 'token'}",
            f"-control-token-file={tmp_path / 'control'}",
            f"-metrics-dir={tmp_path / 'metrics'}",
            "-interval=100ms",
            "-upstream-interval=200ms",
        ]
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                call(base + "/metrics")
                break
            except OSError:
                assert time.monotonic() < deadline, "the agent did not listen"
                time.sleep(0.2)
        yield base
    finally:
        process.kill()
        process.wait()
        subprocess.run(["s6-svc", "-dx", str(scan / "sleeper")], check=False)
        supervise.wait(timeout=10)
        upstream.shutdown()


def scrape(base: str) -> str:
    status, text = call(base + "/metrics", SCRAPE)
    assert status == 200, text
    return text


def until(base: str, name: str, want: float) -> str:
    deadline = time.monotonic() + 20
    while True:
        text = scrape(base)
        # absent until s6-supervise has written the service's first status file
        if f'{name}{{service="sleeper"}} ' in text and metric(text, name) == want:
            return text
        assert time.monotonic() < deadline, f"{name} never became {want}:\n{text}"
        time.sleep(0.2)


def test_agent_exports_s6_state_and_obeys_only_its_tokens(agent: str, tmp_path: Path) -> None:
    assert call(agent + "/metrics")[0] == 401
    assert call(agent + "/metrics", "wrong")[0] == 401
    assert call(agent + "/metrics", CONTROL)[0] == 401
    text = until(agent, "appliancekit_service_up", 1)
    deadline = time.monotonic() + 20
    while not text.startswith("node_stand_in 1\n"):  # read in the background, served first
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
        text = scrape(agent)
    assert metric(text, "appliancekit_service_wanted_up") == 1
    assert metric(text, "appliancekit_service_restarts_total") == 0
    assert 0 <= metric(text, "appliancekit_service_state_seconds") < 60
    metrics_dir = tmp_path / "metrics"
    assert stat.S_IMODE(os.stat(metrics_dir).st_mode) == 0o1777

    down = agent + "/v1/services/sleeper/down"
    assert call(down, SCRAPE, "POST")[0] == 401  # the scrape token controls nothing
    assert call(down, None, "POST")[0] == 401
    assert call(down, CONTROL)[0] == 405
    assert call(agent + "/v1/services/nosuch/down", CONTROL, "POST")[0] == 404
    assert call(agent + "/v1/services/../down", CONTROL, "POST")[0] == 404
    assert call(down, CONTROL, "POST")[0] == 200
    text = until(agent, "appliancekit_service_up", 0)
    assert metric(text, "appliancekit_service_wanted_up") == 0

    assert call(agent + "/v1/services/sleeper/up", CONTROL, "POST")[0] == 200
    until(agent, "appliancekit_service_up", 1)
    for expected in (2, 3, 4):  # the up above was a start too
        time.sleep(1.2)  # s6 starts a service at most once a second
        assert call(agent + "/v1/services/sleeper/kill", CONTROL, "POST")[0] == 200
        until(agent, "appliancekit_service_restarts_total", expected)


def test_without_a_token_the_agent_serves_nothing(tmp_path: Path) -> None:
    # an agent whose token files are empty refuses everything
    binary = build_agent(Cache(default_cache_dir()), host_arch())
    (tmp_path / "empty").write_text("\n")
    port = free_port()
    process = subprocess.Popen(
        [str(binary), f"-listen=127.0.0.1:{port}", f"-token-file={tmp_path / 'empty'}",
         f"-control-token-file={tmp_path / 'empty'}", f"-scan-dir={tmp_path}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _ = call(f"http://127.0.0.1:{port}/metrics", "")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert status == 401
        assert call(f"http://127.0.0.1:{port}/v1/services/x/down", "", "POST")[0] == 401
    finally:
        process.kill()
        _out, err = process.communicate()
    assert "no scrape token set" in err
