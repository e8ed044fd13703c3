"""PowerDNS HTTP API probe: unauthenticated requests are refused; create a zone and an A record."""

from __future__ import annotations

from appliancekit.probes._common import json_request, short
from appliancekit.probes.runner import ProbeFailed, probe_kind
from appliancekit.recipe import Probe


def _pdns_api_describe(probe: Probe) -> str:
    return f"{probe.param('name') or probe.param('zone')} via the API"


@probe_kind("pdns-api", describe=_pdns_api_describe)
def check_pdns_api(probe: Probe, host: str, port: int, timeout: float) -> str:
    """PowerDNS HTTP API: a request without the key is refused; with params.api_key, zone
    params.zone is created (an existing one is fine: retries and re-runs) and the A record
    params.name -> params.address is set, then read back."""
    key, zone, address = probe.param("api_key"), probe.param("zone"), probe.param("address")
    if not (key and zone and address):
        raise ProbeFailed("a pdns-api probe needs params api_key, zone and address")
    zone = zone if zone.endswith(".") else zone + "."
    name = probe.param("name") or zone
    name = name if name.endswith(".") else name + "."
    zones = f"/api/v1/servers/{probe.param('server') or 'localhost'}/zones"
    auth = {"X-API-Key": key}

    status, body = json_request(host, port, "GET", zones, timeout)
    if status != 401:
        raise ProbeFailed(f"GET {zones} without X-API-Key answered {status}, expected 401")

    new = {"name": zone, "kind": "Native", "nameservers": [f"ns1.{zone}"]}
    status, body = json_request(host, port, "POST", zones, timeout, auth, new)
    if status not in (201, 409):  # 409: it exists already (an earlier attempt made it)
        raise ProbeFailed(f"creating zone {zone}: HTTP {status} {short(str(body))}")
    created = status == 201

    rrset = {
        "name": name,
        "type": "A",
        "ttl": 60,
        "changetype": "REPLACE",
        "records": [{"content": address, "disabled": False}],
    }
    status, body = json_request(
        host, port, "PATCH", f"{zones}/{zone}", timeout, auth, {"rrsets": [rrset]}
    )
    if status != 204:
        raise ProbeFailed(f"setting {name} A {address}: HTTP {status} {short(str(body))}")

    status, body = json_request(host, port, "GET", f"{zones}/{zone}", timeout, auth)
    if status != 200 or not isinstance(body, dict):
        raise ProbeFailed(f"reading zone {zone} back: HTTP {status} {short(str(body))}")
    contents = [
        record.get("content")
        for found in body.get("rrsets", [])
        if found.get("name") == name and found.get("type") == "A"
        for record in found.get("records", [])
    ]
    if address not in contents:
        raise ProbeFailed(f"zone {zone} read back without {name} A {address} (got {contents})")
    return f"zone {zone} {'created' if created else 'existed'}; {name} A {address} set"
