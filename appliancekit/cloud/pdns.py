"""Apply a cloud's records through the PowerDNS HTTP API, as a user's own tools would.

RRsets the cloud writes carry a comment (account "appliancekit", content "cloud NAME"): that
is how a later run knows which RRsets are its own. Applying is a plan, then one PATCH
(PowerDNS applies a PATCH as one transaction):
- a generated RRset that is missing, or ours with other contents, is replaced;
- ours that the cloud no longer generates are deleted;
- RRsets without our comment (made by hand, or by the zone's creation: SOA, NS) are never
  touched. A generated RRset whose name and type (or a CNAME at its name) are held by one
  with other contents is a conflict: nothing is changed and one line names it.
Applying twice changes nothing the second time.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from appliancekit.cloud.records import RRset
from appliancekit.errors import ToolError, UserError

ACCOUNT = "appliancekit"
TIMEOUT = 15.0


def marker(cloud_name: str) -> str:
    return f"cloud {cloud_name}"


@dataclass(frozen=True)
class Existing:
    name: str
    type: str
    ttl: int
    contents: tuple[str, ...]
    owner: str | None  # "cloud NAME" when a cloud wrote it, else None (hand-made)


@dataclass
class Plan:
    zone: str
    create_zone: bool = False
    replace: list[RRset] = field(default_factory=list)
    delete: list[Existing] = field(default_factory=list)
    unchanged: list[RRset] = field(default_factory=list)
    left_alone: list[Existing] = field(default_factory=list)  # hand-made, not ours

    @property
    def changes(self) -> int:
        return int(self.create_zone) + len(self.replace) + len(self.delete)

    def to_json(self) -> dict[str, object]:
        return {
            "zone": self.zone,
            "zone_created": self.create_zone,
            "replaced": [r.to_json() for r in self.replace],
            "deleted": [{"name": e.name, "type": e.type} for e in self.delete],
            "unchanged": len(self.unchanged),
            "left_alone": [{"name": e.name, "type": e.type} for e in self.left_alone],
        }


class PowerDNS:
    """The few calls of the PowerDNS Authoritative HTTP API (v1) the cloud needs."""

    def __init__(
        self, url: str, api_key: str, *, server: str = "localhost", key_source: str | None = None
    ) -> None:
        self.base = url.rstrip("/") + f"/api/v1/servers/{server}"
        self.url = url
        self.api_key = api_key
        self.key_source = key_source

    def _call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={
                "X-API-Key": self.api_key,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ToolError(f"PowerDNS API at {self.url}: {reason}") from None
        if status == 401:
            raise UserError(
                f"PowerDNS API at {self.url} refused the API key",
                file=self.key_source,
            )
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", errors="replace")

    def _error(self, what: str, status: int, body: object) -> ToolError:
        detail = body.get("error") if isinstance(body, dict) else str(body)[:200]
        return ToolError(f"PowerDNS API at {self.url}: {what}: HTTP {status}: {detail}")

    def zone(self, zone: str) -> list[Existing] | None:
        """The zone's RRsets, or None if the server has no such zone."""
        status, body = self._call("GET", f"/zones/{urllib.parse.quote(zone)}")
        if status in (404, 422):
            return None
        if status != 200 or not isinstance(body, dict):
            raise self._error(f"reading zone {zone}", status, body)
        out = []
        for rrset in body.get("rrsets", []):
            owner = next(
                (
                    c.get("content")
                    for c in rrset.get("comments", [])
                    if c.get("account") == ACCOUNT
                ),
                None,
            )
            contents = tuple(
                sorted(r["content"] for r in rrset.get("records", []) if not r.get("disabled"))
            )
            out.append(
                Existing(rrset["name"], rrset["type"], int(rrset.get("ttl", 0)), contents, owner)
            )
        return out

    def create_zone(self, zone: str, nameservers: Iterable[str]) -> None:
        body = {"name": zone, "kind": "Native", "nameservers": list(nameservers)}
        status, answer = self._call("POST", "/zones", body)
        if status not in (201, 409):
            raise self._error(f"creating zone {zone}", status, answer)

    def patch(self, zone: str, rrsets: list[dict[str, object]]) -> None:
        if not rrsets:
            return
        status, body = self._call("PATCH", f"/zones/{urllib.parse.quote(zone)}", {"rrsets": rrsets})
        if status != 204:
            raise self._error(f"changing zone {zone}", status, body)


def plan(
    zone: str,
    wanted: Iterable[RRset],
    existing: Iterable[Existing] | None,
    cloud_name: str,
    *,
    source: Path | None = None,
) -> Plan:
    """What applying `wanted` to a zone holding `existing` (None: no zone yet) changes.

    Raises UserError (one line, `source` as the file) on the first conflict with an RRset
    that is not ours."""
    mine = marker(cloud_name)
    result = Plan(zone=zone, create_zone=existing is None)
    current: Mapping[tuple[str, str], Existing] = {(e.name, e.type): e for e in existing or ()}
    generated = {(r.name, r.type) for r in list(wanted)}
    for rrset in sorted(wanted):
        held = current.get((rrset.name, rrset.type))
        cname = current.get((rrset.name, "CNAME"))
        if cname is not None and cname.owner != mine:
            raise UserError(
                f"{rrset.name} {rrset.type}: a hand-made CNAME ({', '.join(cname.contents)}) holds "
                "this name; remove it or rename the member",
                file=source,
            )
        if held is None:
            result.replace.append(rrset)
        elif held.owner != mine:
            if held.contents == rrset.contents:
                result.unchanged.append(rrset)  # the same data, made by hand: leave it as is
                continue
            made = "by hand" if held.owner is None else f"by {held.owner}"
            raise UserError(
                f"{rrset.name} {rrset.type}: conflicts with a record made {made} "
                f"({'; '.join(held.contents) or 'empty'}); the cloud would publish "
                f"{'; '.join(rrset.contents)}: remove that record or change the cloud",
                file=source,
            )
        elif held.contents != rrset.contents or held.ttl != rrset.ttl:
            result.replace.append(rrset)
        else:
            result.unchanged.append(rrset)
    for key, held in sorted(current.items()):
        if held.owner == mine and key not in generated:
            result.delete.append(held)
        elif held.owner != mine and key not in generated:
            result.left_alone.append(held)
    return result


def apply(
    client: PowerDNS,
    zone: str,
    wanted: list[RRset],
    cloud_name: str,
    *,
    nameservers: Iterable[str] = (),
    source: Path | None = None,
) -> Plan:
    """Plan against the server's zone, then change it in one PATCH."""
    existing = client.zone(zone)
    result = plan(zone, wanted, existing, cloud_name, source=source)
    if result.create_zone:
        client.create_zone(zone, nameservers)
        existing = client.zone(zone) or []
        result = plan(zone, wanted, existing, cloud_name, source=source)
        result.create_zone = True
    comment = [{"content": marker(cloud_name), "account": ACCOUNT}]
    changes: list[dict[str, object]] = [
        {
            "name": r.name,
            "type": r.type,
            "ttl": r.ttl,
            "changetype": "REPLACE",
            "records": [{"content": c, "disabled": False} for c in r.contents],
            "comments": comment,
        }
        for r in result.replace
    ]
    changes += [{"name": e.name, "type": e.type, "changetype": "DELETE"} for e in result.delete]
    client.patch(zone, changes)
    return result


def read_api_key(path: Path) -> str:
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise UserError(f"cannot read the API key: {exc.strerror}", file=path) from None
    if not key or "\n" in key:
        raise UserError("expected the API key on one line", file=path)
    return key
