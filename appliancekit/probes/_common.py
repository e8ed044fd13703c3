"""Helpers the protocol modules share: short details, TLS without checks, credentials."""

from __future__ import annotations

import ssl

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
