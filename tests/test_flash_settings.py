"""Per-device settings (settings.env, user-data): checked against the image's own setting
records with the same conversion as `build`, the TOML file, masking, the round trip."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliancekit.devsettings import (
    check_device_settings,
    load_settings_toml,
    masked,
    parse_cli_settings,
    parse_settings_env,
    render_settings_env,
    render_user_data,
)
from appliancekit.errors import UserError
from appliancekit.manifest import DiskRecord, Manifest, SizeRecord
from appliancekit.settings_kinds import MAX_USER_DATA, SettingKind, check_hostname, convert
from tests.test_publish_support import SYNTHETIC_SETTINGS

MANIFEST = Manifest(
    name="synthetic-qemu",
    recipe="synthetic",
    board="qemu-virt-arm64",
    arch="arm64",
    suite="trixie",
    boot="direct",
    inputs="",
    appliancekit="",
    settings={},
    packages=[],
    kernel_version="",
    kernel_cmdline="",
    initramfs_modules=[],
    verity=None,
    disk=DiskRecord(path="disk.img", size=0, sha256=""),
    sizes=SizeRecord(disk_bytes=0),
    probes=[],
    ports=[],
    setting_records=SYNTHETIC_SETTINGS,
)


def check(**values: object) -> dict[str, str]:
    return check_device_settings(values, MANIFEST)


def test_values_are_converted_as_build_converts_them() -> None:
    assert check(hostname="pi1", domain="Example.ORG.", port=" 8080 ", motd="hi there") == {
        "hostname": "pi1",
        "domain": "example.org",
        "port": "8080",
        "motd": "hi there",
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"domain": "not_a_domain"}, "-s domain: domain setting: 'not_a_domain' is not a domain"),
        ({"port": "eighty"}, "-s port: int setting: expected an int"),
        ({"hostname": "bad_host!"}, "-s hostname: hostname setting: 'bad_host!' is not a host"),
        ({"hostname": "pi\n1"}, "-s hostname: hostname setting: value holds '\\n'"),
        ({"domain": ""}, "expected a non-empty domain value"),
        ({"token": ""}, "expected a non-empty secret value"),
        ({"motd": "a b;}"}, "-s motd: string setting: value holds ';'"),
        ({"motd": "caf\u00e9"}, "only printable ASCII on one line"),
        ({"token": "x" * 20000}, "at most 16384 fit"),
        ({"site": "/etc"}, "'site' is not a per-device setting of synthetic"),
        ({"Hostname": "x"}, "'Hostname' is not a per-device setting"),
    ],
)
def test_refused(values: dict[str, str], message: str) -> None:
    with pytest.raises(UserError) as info:
        check(**values)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_unknown_name_lists_the_per_device_settings() -> None:
    with pytest.raises(UserError) as info:
        check(site="/etc")
    assert "(per-device: data_volume, domain, hostname, motd, net_address, net_address6, net_gateway, net_interface, port, token, update_allow_downgrade, update_interval, update_status_port, update_url, update_window)" in str(info.value)


def test_an_image_without_setting_records_asks_for_a_rebuild() -> None:
    old = replace(MANIFEST, setting_records=())
    with pytest.raises(UserError, match="rebuild the image"):
        check_device_settings({"hostname": "x"}, old)


@pytest.mark.parametrize("name", ["pi1", "pi-1.example.org", "A1", "x" * 63, "a.b.c."])
def test_good_hostnames(name: str) -> None:
    assert check_hostname(name) == name.rstrip(".")


@pytest.mark.parametrize(
    "name", ["", "-pi", "pi-", "a..b", "x" * 64, "pi_1", "pi 1", ("a" * 60 + ".") * 5]
)
def test_bad_hostnames(name: str) -> None:
    with pytest.raises(ValueError):
        check_hostname(name)
    with pytest.raises(UserError, match="hostname"):
        check(hostname=name)


def test_cli_settings_last_one_wins() -> None:
    assert parse_cli_settings(["hostname=a", "motd=x=y", "hostname=b"], MANIFEST) == {
        "hostname": "b",
        "motd": "x=y",
    }
    with pytest.raises(UserError, match="NAME=VALUE"):
        parse_cli_settings(["hostname"], MANIFEST)


def test_toml_settings_with_positions(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('hostname = "pi1"\nport = 8080\ntoken = "t0k"\n')
    assert load_settings_toml(good, MANIFEST) == {"hostname": "pi1", "port": "8080", "token": "t0k"}
    bad = tmp_path / "bad.toml"
    bad.write_text('# device\nhostname = "pi1"\ndomain = "a\\nb"\n')
    with pytest.raises(UserError) as info:
        load_settings_toml(bad, MANIFEST)
    assert f"{bad}:3: domain:" in str(info.value)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('hostname = "pi1"\nsite = "/etc"\n')
    with pytest.raises(UserError, match=r"unknown.toml:2: site: 'site' is not a per-device"):
        load_settings_toml(unknown, MANIFEST)
    arr = tmp_path / "arr.toml"
    arr.write_text("servers = [1, 2]\n")
    with pytest.raises(UserError, match="arr.toml:1: servers: setting servers must be"):
        load_settings_toml(arr, MANIFEST)


def test_secrets_are_masked_with_their_length() -> None:
    shown = masked({"token": "s3cret-value", "hostname": "pi1", "motd": ""}, MANIFEST)
    assert shown == {"token": "(secret, 12 characters)", "hostname": "pi1", "motd": ""}


def test_render_and_parse() -> None:
    text = render_settings_env({"hostname": "pi1", "domain": "example.org"})
    assert text.splitlines()[1:] == ["domain=example.org", "hostname=pi1"]
    assert text.startswith("#")
    assert parse_settings_env(text) == {"hostname": "pi1", "domain": "example.org"}
    with pytest.raises(UserError, match="line 2|:2"):
        parse_settings_env("a=1\nbroken\n", file=Path("settings.env"))


def test_user_data_is_checked_and_fits_ec2() -> None:
    assert render_user_data({"hostname": "web-1"}, MANIFEST).endswith(b"\nhostname=web-1\n")
    with pytest.raises(UserError, match="user-data domain: domain setting"):
        render_user_data({"domain": "not_a_domain"}, MANIFEST)
    with pytest.raises(UserError, match=f"EC2 takes at most {MAX_USER_DATA}"):
        render_user_data({"token": "a" * 9000, "motd": "b" * 9000}, MANIFEST)


names = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@given(st.dictionaries(names, values, max_size=8))
def test_round_trip(settings: dict[str, str]) -> None:
    assert parse_settings_env(render_settings_env(settings)) == settings


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("192.0.2.10/24", "192.0.2.10/24"),
        ("192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0::10/64", "2001:db8::10/64"),
    ],
)
def test_addresses(raw: str, value: str) -> None:
    assert convert(SettingKind.ADDRESS, raw) == value


@pytest.mark.parametrize("raw", ["192.0.2.300/24", "192.0.2.1/33", "host.example", "1.2.3.4; x"])
def test_bad_addresses(raw: str) -> None:
    with pytest.raises(ValueError, match="is not an IP address|configuration files"):
        convert(SettingKind.ADDRESS, raw)
