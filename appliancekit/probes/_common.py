"""Helpers the protocol modules share: short details, TLS without checks, credentials, JSON
over HTTP."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Mapping

from appliancekit.probes.runner import ProbeFailed
from appliancekit.recipe import Probe


def short(data: bytes | str, limit: int = 120) -> str:
    """One line of at most `limit` characters, for a result detail."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tls_context() -> ssl.SSLContext:
    """TLS without certificate checks: appliances start with a self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def credentials(probe: Probe) -> tuple[str, str]:
    user, password = probe.param("user"), probe.param("password")
    if not (user and password):
        raise ProbeFailed(f"a {probe.kind} probe needs params user and password")
    return user, password


def json_request(
    host: str,
    port: int,
    method: str,
    path: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    body: object = None,
) -> tuple[int, object]:
    """One HTTP request with a JSON body (if any): (status, the answer parsed as JSON, or its
    text if it is not JSON, or None if it is empty)."""
    data = None if body is None else json.dumps(body).encode()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            method,
            path,
            body=data,
            headers={"Connection": "close", "Content-Type": "application/json", **(headers or {})},
        )
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw.decode("utf-8", errors="replace")
