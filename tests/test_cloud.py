"""Clouds as data: loading and checking clouds/*.toml, the records generated from members,
the apply plan against a zone, and `cloud list` / `cloud dns` on the command line."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import dns.message
import pytest

from appliancekit.cloud import pdns, records, roles
from appliancekit.cloud.model import Role, find_cloud, load_cloud
from appliancekit.cloud.secrets import CloudSecrets, load_or_create
from appliancekit.errors import UserError
from appliancekit.project import Project

from .conftest import PROJECT, REPO

EXAMPLE = REPO / "clouds" / "example.toml"


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> CloudSecrets:
    return load_or_create(tmp_path_factory.mktemp("cloud-state"))


def write_cloud(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


HEAD = """[cloud]
domain = "example.net"
network = "10.9.0.0/24"
"""
DNS = """
[[member]]
name = "ns"
recipe = "dns"
board = "qemu-virt-arm64"
role = "dns"
address = "10.9.0.2"
"""


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(UserError) as info:
        load_cloud(write_cloud(tmp_path, text), PROJECT)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_example_cloud_loads() -> None:
    cloud = find_cloud("example", PROJECT)
    assert cloud.domain == "example.org"
    assert [m.role for m in cloud.members] == [Role.DNS, Role.WEB, Role.MAIL, Role.MATRIX]
    assert [m.recipe.name for m in cloud.members] == ["dns", "homepage", "mailserver", "matrix"]
    assert cloud.dns.name == "ns"


def test_two_members_claiming_one_name(tmp_path: Path) -> None:
    text = HEAD + DNS + DNS.replace('role = "dns"\n', "").replace("10.9.0.2", "10.9.0.3")
    message = load_error(tmp_path, text)
    assert message.startswith(
        f"{tmp_path}/mine.toml:13: member[1].name: host name 'ns' is already claimed by member 'ns' (line 6)"
    )


def test_an_alias_claiming_another_members_name(tmp_path: Path) -> None:
    text = (
        HEAD
        + DNS
        + DNS.replace('role = "dns"', 'aliases = ["www", "ns"]')
        .replace('name = "ns"', 'name = "web"')
        .replace("10.9.0.2", "10.9.0.3")
    )
    message = load_error(tmp_path, text)
    assert ":16: member[1].aliases[1]: host name 'ns' is already claimed" in message


def test_a_member_recipe_that_does_not_exist(tmp_path: Path) -> None:
    text = (
        HEAD
        + DNS
        + DNS.replace('recipe = "dns"', 'recipe = "webmail"')
        .replace('role = "dns"\n', "")
        .replace('"ns"', '"w"')
        .replace("10.9.0.2", "10.9.0.3")
    )
    message = load_error(tmp_path, text)
    assert ":14: member[1].recipe: no recipe 'webmail' in " in message


def test_a_cloud_without_a_dns_member(tmp_path: Path) -> None:
    message = load_error(tmp_path, HEAD + DNS.replace('role = "dns"\n', ""))
    assert message.startswith(f"{tmp_path}/mine.toml:1: cloud: the cloud has no DNS member")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('address = "10.9.0.2"', 'address = "10.8.0.2"'),
            "member[0].address: 10.8.0.2 is not a host address in the cloud's network 10.9.0.0/24",
        ),
        (
            ('board = "qemu-virt-arm64"', 'board = "qemu-virt-arm65"'),
            "member[0].board: no board 'qemu-virt-arm65'",
        ),
        (
            ('role = "dns"', 'role = "dns"\ncolour = "red"'),
            "member[0].colour: unknown key 'colour'",
        ),
        (
            ('role = "dns"', 'role = "dns"\nsettings = { api_kee = "x" }'),
            "member[0].settings.api_kee: recipe 'dns' has no setting 'api_kee' (did you mean 'api_key'?)",
        ),
        (
            ('role = "dns"', 'role = "mail"'),
            "member[0].role: role 'mail' needs recipe settings dkim_key, dkim_selector, domain, nameservers, which recipe 'dns' does not declare",
        ),
        (('name = "ns"', 'name = "Ns_1"'), "member[0].name: invalid value 'Ns_1'"),
    ],
)
def test_bad_member_fields(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    assert expected in load_error(tmp_path, HEAD + DNS.replace(*change))


def test_two_members_with_one_address(tmp_path: Path) -> None:
    text = HEAD + DNS + DNS.replace('role = "dns"\n', "").replace('"ns"', '"web"')
    assert "member[1].address: address 10.9.0.2 is already member 'ns''s (line 10)" in load_error(
        tmp_path, text
    )


def test_records_from_the_members(secrets: CloudSecrets) -> None:
    cloud = find_cloud("example", PROJECT)
    rrsets = {(r.name, r.type): r.contents for r in records.generate(cloud, secrets)}
    assert rrsets[("ns.example.org.", "A")] == ("10.42.0.2",)
    assert rrsets[("mail.example.org.", "AAAA")] == ("fd42:0:0:1::4",)
    assert rrsets[("ns1.example.org.", "A")] == ("10.42.0.2",)
    assert rrsets[("example.org.", "A")] == ("10.42.0.3",)  # the web member
    assert rrsets[("www.example.org.", "A")] == ("10.42.0.3",)
    assert rrsets[("example.org.", "MX")] == ("10 mail.example.org.",)
    assert rrsets[("example.org.", "TXT")] == ('"v=spf1 mx -all"',)
    assert rrsets[("example.org.", "CAA")] == ('0 issue "letsencrypt.org"',)
    assert rrsets[("_dmarc.example.org.", "TXT")] == (
        '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org"',
    )
    assert rrsets[("_smtp._tls.example.org.", "TXT")] == (
        '"v=TLSRPTv1; rua=mailto:postmaster@example.org"',
    )
    assert rrsets[("_mta-sts.example.org.", "TXT")][0].startswith('"v=STSv1; id=')
    # Matrix is delegated by the web member's /.well-known/matrix/server, not by SRV
    assert ("_matrix-fed._tcp.example.org.", "SRV") not in rrsets
    # the DKIM TXT holds the public half of the generated key, in strings of <= 255 bytes
    (dkim_txt,) = rrsets[("mail._domainkey.example.org.", "TXT")]
    parsed = dns.rdata.from_text("IN", "TXT", dkim_txt)
    assert all(len(s) <= 255 for s in parsed.strings)
    value = b"".join(parsed.strings).decode()
    assert value == records.dkim_record(cloud, secrets)
    assert "p=" + records.dkim_public_key_b64(secrets.dkim_key_pem) in value


def test_matrix_srv_without_a_web_member(tmp_path: Path, secrets: CloudSecrets) -> None:
    text = (
        HEAD
        + DNS
        + DNS.replace('role = "dns"', 'role = "matrix"')
        .replace('recipe = "dns"', 'recipe = "matrix"')
        .replace('"ns"', '"matrix"')
        .replace("10.9.0.2", "10.9.0.5")
    )
    cloud = load_cloud(write_cloud(tmp_path, text), PROJECT)
    rrsets = {(r.name, r.type): r.contents for r in records.generate(cloud, secrets)}
    # federation over TLS on 8448, whose certificate then holds the domain itself
    assert rrsets[("_matrix-fed._tcp.example.net.", "SRV")] == ("10 0 8448 matrix.example.net.",)
    assert roles.tls_names(cloud, cloud.member("matrix")) == ["matrix.example.net", "example.net"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("two-names", "host name 'ns' is already claimed"),
        ("no-recipe", "no recipe 'webmail'"),
        ("no-dns", "the cloud has no DNS member"),
    ],
)
def test_cloud_test_refuses_bad_input_before_building(
    cli, tmp_path: Path, change: str, expected: str
) -> None:  # type: ignore[no-untyped-def]
    """`cloud test` on a bad cloud file: one line, exit 2, nothing built or booted."""
    second = DNS.replace('role = "dns"\n', "").replace("10.9.0.2", "10.9.0.3")
    text = {
        "two-names": HEAD + DNS + second,
        "no-recipe": HEAD + DNS + second.replace('"ns"', '"w"').replace('"dns"', '"webmail"'),
        "no-dns": HEAD + second,
    }[change]
    images = tmp_path / "images"
    result = cli("cloud", "test", str(write_cloud(tmp_path, text)), "--images", str(images))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert not images.exists()


def test_mta_sts_policy_names_the_mail_member() -> None:
    cloud = find_cloud("example", PROJECT)
    policy = records.mta_sts_policy(cloud)
    assert policy.split("\r\n")[:3] == ["version: STSv1", "mode: testing", "mx: mail.example.org"]


def test_member_settings_from_roles(secrets: CloudSecrets) -> None:
    cloud = find_cloud("example", PROJECT)
    mail = roles.member_settings(cloud, cloud.member("mail"), secrets, net_interface=2)
    assert mail["hostname"] == "mail" and mail["domain"] == "example.org"
    assert mail["net_address"] == "10.42.0.4/24" and mail["net_interface"] == "2"
    assert mail["net_address6"] == "fd42:0:0:1::4/64"
    assert mail["nameservers"] == "10.42.0.2"
    assert base64.b64decode(mail["dkim_key"]).decode() == secrets.dkim_key_pem
    dns_settings = roles.member_settings(cloud, cloud.dns, secrets)
    assert (
        dns_settings["api_key"] == secrets.pdns_api_key and dns_settings["zones"] == "example.org"
    )
    build, device = roles.split_settings(
        cloud.member("matrix"), roles.member_settings(cloud, cloud.member("matrix"), secrets)
    )
    assert build == {} and device["server_name"] == "example.org"


def test_secrets_are_made_once_and_kept_private(tmp_path: Path) -> None:
    first = load_or_create(tmp_path)
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert load_or_create(tmp_path) == first
    assert first.pdns_api_key not in repr(first)


def _existing(name: str, rtype: str, contents: tuple[str, ...], owner: str | None) -> pdns.Existing:
    return pdns.Existing(name, rtype, 300, contents, owner)


def test_plan_keeps_hand_made_records_and_refuses_conflicts() -> None:
    a = records.RRset("www.example.org.", "A", ("10.0.0.3",))
    mx = records.RRset("example.org.", "MX", ("10 mail.example.org.",))
    existing = [
        _existing(
            "example.org.",
            "SOA",
            ("ns1.example.org. hostmaster.example.org. 1 10800 3600 604800 3600",),
            None,
        ),
        _existing("blog.example.org.", "CNAME", ("example.net.",), None),
        _existing("old.example.org.", "A", ("10.0.0.9",), "cloud mine"),
        _existing("example.org.", "MX", ("10 mail.example.org.",), "cloud mine"),
    ]
    plan = pdns.plan("example.org.", [a, mx], existing, "mine")
    assert plan.replace == [a] and [e.name for e in plan.delete] == ["old.example.org."]
    assert [e.type for e in plan.left_alone] == ["CNAME", "SOA"] and plan.unchanged == [mx]
    conflict = [*existing, _existing("www.example.org.", "A", ("192.0.2.1",), None)]
    with pytest.raises(
        UserError, match=r"^www.example.org. A: conflicts with a record made by hand \(192.0.2.1\)"
    ):
        pdns.plan("example.org.", [a, mx], conflict, "mine")
    cname = [*existing, _existing("www.example.org.", "CNAME", ("example.net.",), None)]
    with pytest.raises(UserError, match="a hand-made CNAME"):
        pdns.plan("example.org.", [a], cname, "mine")
    other_cloud = [_existing("www.example.org.", "A", ("10.0.0.4",), "cloud theirs")]
    with pytest.raises(UserError, match="made by cloud theirs"):
        pdns.plan("example.org.", [a], other_cloud, "mine")
    same_by_hand = [_existing("www.example.org.", "A", ("10.0.0.3",), None)]
    assert pdns.plan("example.org.", [a], same_by_hand, "mine").unchanged == [a]


def test_cli_cloud_list_and_dns(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    listing = cli("cloud", "list", "--json", check=True)
    clouds = {c["name"]: c for c in json.loads(listing.stdout)}
    assert [m["name"] for m in clouds["example"]["members"]] == ["ns", "web", "mail", "matrix"]
    text = cli("cloud", "dns", "example", "--images", str(tmp_path), check=True).stdout
    assert "example.org. 300 IN MX 10 mail.example.org.\n" in text
    zone = json.loads(
        cli("cloud", "dns", "example", "--images", str(tmp_path), "--json", check=True).stdout
    )
    assert zone["zone"] == "example.org."
    # the DKIM key was made once, before any boot, and every later call publishes the same one
    again = json.loads(
        cli("cloud", "dns", "example", "--images", str(tmp_path), "--json", check=True).stdout
    )
    assert again == zone
    assert (tmp_path / "clouds" / "example" / "secrets.json").exists()


def test_cli_cloud_bad_input_is_one_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_cloud(tmp_path, HEAD + DNS.replace('role = "dns"\n', ""))
    result = cli("cloud", "dns", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "the cloud has no DNS member" in result.stderr
    unknown = cli("cloud", "dns", "exampel")
    assert unknown.returncode == 2 and "did you mean 'example'?" in unknown.stderr
    assert not Project(REPO).images_dir.joinpath("clouds", "mine").exists()


def test_flash_settings_for_a_real_device(tmp_path: Path, secrets: CloudSecrets) -> None:
    import tomllib

    from appliancekit.cloud.boot import write_flash_settings

    text = (
        HEAD.replace('network = "10.9.0.0/24"', 'network = "10.9.0.0/24"\ngateway = "10.9.0.1"')
        + DNS
    )
    cloud = load_cloud(write_cloud(tmp_path, text), PROJECT)
    path = write_flash_settings(cloud, secrets, cloud.dns, tmp_path / "settings")
    assert path.stat().st_mode & 0o777 == 0o600
    values = tomllib.loads(path.read_text())  # what `flash --settings` reads
    assert values["net_address"] == "10.9.0.2/24" and values["net_interface"] == "1"
    assert values["net_gateway"] == "10.9.0.1" and values["hostname"] == "ns"
    assert values["api_key"] == secrets.pdns_api_key and values["zones"] == "example.net"
    outside = (
        HEAD.replace('network = "10.9.0.0/24"', 'network = "10.9.0.0/24"\ngateway = "10.8.0.1"')
        + DNS
    )
    assert "cloud.gateway: 10.8.0.1 is not in the cloud's network" in load_error(tmp_path, outside)
