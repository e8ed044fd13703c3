"""HTTPS probe: the http probe over TLS. The certificate is not checked here (an appliance
starts with a self-signed one until ACME brings its own); `cloud test` verifies chains."""

from __future__ import annotations

import http.client

from appliancekit.probes._common import tls_context
from appliancekit.probes.http import get
from appliancekit.probes.runner import probe_kind
from appliancekit.recipe import Probe


def _https_describe(probe: Probe) -> str:
    return f"GET {probe.path} over TLS"


@probe_kind("https", describe=_https_describe)
def check_https(probe: Probe, host: str, port: int, timeout: float) -> str:
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls_context())
    return get(probe, conn)
