"""`cloud dns --apply` against a real PowerDNS (Debian's pdns-server with the sqlite3 backend,
started on loopback by the test): records resolve, applying twice changes nothing, records
made by hand stay, and a conflicting hand-made record stops the run with one line."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

from appliancekit.cloud import records
from appliancekit.cloud.model import find_cloud
from appliancekit.cloud.secrets import load_or_create

from .conftest import PROJECT
from .pdns_server import HostPowerDNS, powerdns


def api(server: HostPowerDNS, method: str, path: str, body: object = None) -> object:
    request = urllib.request.Request(
        f"{server.api_url}/api/v1/servers/localhost{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"X-API-Key": server.api_key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def by_hand(server: HostPowerDNS, name: str, rtype: str, content: str) -> None:
    """What a user's own tool does: an RRset without the cloud's comment."""
    rrset = {
        "name": name,
        "type": rtype,
        "ttl": 3600,
        "changetype": "REPLACE",
        "records": [{"content": content, "disabled": False}],
    }
    api(server, "PATCH", "/zones/example.org.", {"rrsets": [rrset]})


def resolve(server: HostPowerDNS, name: str, rtype: str) -> list[str]:
    answer = dns.query.udp(
        dns.message.make_query(name, rtype), "127.0.0.1", port=server.dns_port, timeout=5
    )
    return sorted(
        rd.to_text()
        for rrset in answer.answer
        for rd in rrset
        if rrset.rdtype == dns.rdatatype.from_text(rtype)
    )


def test_apply_to_a_real_powerdns(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    images = tmp_path / "images"
    with powerdns(tmp_path / "pdns") as server:
        api(
            server,
            "POST",
            "/zones",
            {"name": "example.org.", "kind": "Native", "nameservers": ["ns1.example.org."]},
        )
        by_hand(server, "blog.example.org.", "A", "192.0.2.7")
        by_hand(server, "www.example.org.", "A", "192.0.2.8")
        args = (
            "cloud",
            "dns",
            "example",
            "--images",
            str(images),
            "--apply",
            server.api_url,
            "--api-key-file",
            str(server.key_file),
        )

        # a hand-made www that the web member would replace: one line, nothing changed
        refused = cli(*args)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1
        assert (
            "www.example.org. A: conflicts with a record made by hand (192.0.2.8)" in refused.stderr
        )
        assert resolve(server, "example.org.", "MX") == []

        api(
            server,
            "PATCH",
            "/zones/example.org.",
            {"rrsets": [{"name": "www.example.org.", "type": "A", "changetype": "DELETE"}]},
        )
        first = json.loads(cli(*args, "--json", check=True).stdout)
        cloud = find_cloud("example", PROJECT)
        wanted = records.generate(cloud, load_or_create(images / "clouds" / "example"))
        assert len(first["replaced"]) == len(wanted) and first["unchanged"] == 0
        assert {(e["name"], e["type"]) for e in first["left_alone"]} == {
            ("blog.example.org.", "A"),
            ("example.org.", "NS"),
            ("example.org.", "SOA"),
        }

        # served as generated (the DKIM TXT is the key made before any boot)
        assert resolve(server, "example.org.", "MX") == ["10 mail.example.org."]
        assert resolve(server, "www.example.org.", "A") == ["10.42.0.3"]
        assert resolve(server, "mta-sts.example.org.", "A") == ["10.42.0.3"]
        (dkim,) = resolve(server, "mail._domainkey.example.org.", "TXT")
        joined = "".join(part.strip('"') for part in dkim.split('" "'))
        assert joined == records.dkim_record(cloud, load_or_create(images / "clouds" / "example"))

        # idempotent: nothing changes the second time; the hand-made record is untouched
        second = json.loads(cli(*args, "--json", check=True).stdout)
        assert (
            second["replaced"] == []
            and second["deleted"] == []
            and second["unchanged"] == len(wanted)
        )
        assert resolve(server, "blog.example.org.", "A") == ["192.0.2.7"]
        human = cli(*args, check=True).stdout
        assert f"0 RRsets set, 0 removed, {len(wanted)} unchanged, 3 not ours left alone" in human

        # a wrong API key is refused with one line naming the key file
        bad_key = tmp_path / "bad-key"
        bad_key.write_text("wrong\n")
        denied = cli(*args[:-1], str(bad_key))
        assert (
            denied.returncode == 2
            and f"{bad_key}: PowerDNS API at {server.api_url} refused the API key" in denied.stderr
        )
