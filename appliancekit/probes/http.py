"""HTTP probe: GET a path, check the status and that the body contains a string."""

from __future__ import annotations

import http.client

from appliancekit.probes._common import short
from appliancekit.probes.runner import ProbeFailed, probe_kind
from appliancekit.recipe import Probe


def _http_describe(probe: Probe) -> str:
    return f"GET {probe.path}"


@probe_kind("http", describe=_http_describe)
def check_http(probe: Probe, host: str, port: int, timeout: float) -> str:
    # http.client talks to host:port directly: no proxy from the environment applies.
    return get(probe, http.client.HTTPConnection(host, port, timeout=timeout))


def get(probe: Probe, conn: http.client.HTTPConnection) -> str:
    """GET probe.path on `conn` (HTTP or HTTPS) and check status and body."""
    try:
        conn.request("GET", probe.path or "/", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != probe.status:
        raise ProbeFailed(
            f"expected HTTP {probe.status}, got {response.status} {response.reason} "
            f"(body: {short(body)!r})"
        )
    text = body.decode("utf-8", errors="replace")
    if probe.contains and probe.contains not in text:
        raise ProbeFailed(
            f"HTTP {response.status} but the body does not contain {probe.contains!r} "
            f"(body: {short(body)!r})"
        )
    # the validators caches revalidate with: they must change when a release changes a file
    validators = "".join(
        f", {name} {response.getheader(name)}"
        for name in ("ETag", "Last-Modified")
        if response.getheader(name)
    )
    return f"HTTP {response.status}, {len(body)} bytes{validators}"
