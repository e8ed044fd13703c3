"""settings.env: names, values, host names, the TOML file and the round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliancekit.devsettings import (
    check_hostname,
    check_setting,
    load_settings_toml,
    parse_cli_settings,
    parse_settings_env,
    render_settings_env,
)
from appliancekit.errors import UserError


@pytest.mark.parametrize("name", ["hostname", "a", "api_token2", "x_"])
def test_good_names(name: str) -> None:
    assert check_setting(name, "v") == "v"


@pytest.mark.parametrize("name", ["", "Hostname", "2x", "_x", "a-b", "a.b", "a b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(UserError, match="must match"):
        check_setting(name, "v")


@pytest.mark.parametrize("value", ["a\nb", "tab\there", "caf\u00e9", "\x00", "x\r"])
def test_values_must_be_printable_ascii_on_one_line(value: str) -> None:
    with pytest.raises(UserError, match="printable ASCII"):
        check_setting("motd", value)


def test_values_are_literal() -> None:
    assert (
        check_setting("motd", 'say "hi" \\n # not a comment = ok')
        == 'say "hi" \\n # not a comment = ok'
    )


@pytest.mark.parametrize("name", ["pi1", "pi-1.example.org", "A1", "x" * 63, "a.b.c."])
def test_good_hostnames(name: str) -> None:
    assert check_hostname(name) == name.rstrip(".")


@pytest.mark.parametrize(
    "name", ["", "-pi", "pi-", "a..b", "x" * 64, "pi_1", "pi 1", ("a" * 60 + ".") * 5]
)
def test_bad_hostnames(name: str) -> None:
    with pytest.raises(ValueError):
        check_hostname(name)
    with pytest.raises(UserError, match="not a host name"):
        check_setting("hostname", name)


def test_cli_settings_last_one_wins() -> None:
    assert parse_cli_settings(["hostname=a", "domain=x=y", "hostname=b"]) == {
        "hostname": "b",
        "domain": "x=y",
    }
    with pytest.raises(UserError, match="NAME=VALUE"):
        parse_cli_settings(["hostname"])


def test_toml_settings_with_positions(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('hostname = "pi1"\nport = 8080\nenable_ssh = false\n')
    assert load_settings_toml(good) == {"hostname": "pi1", "port": "8080", "enable_ssh": "false"}
    bad = tmp_path / "bad.toml"
    bad.write_text('# device\nhostname = "pi1"\ndomain = "a\\nb"\n')
    with pytest.raises(UserError) as info:
        load_settings_toml(bad)
    assert f"{bad}:3: domain:" in str(info.value)
    arr = tmp_path / "arr.toml"
    arr.write_text("servers = [1, 2]\n")
    with pytest.raises(UserError, match="arr.toml:1: servers: setting servers must be"):
        load_settings_toml(arr)


def test_render_and_parse() -> None:
    text = render_settings_env({"hostname": "pi1", "domain": "example.org"})
    assert text.splitlines()[1:] == ["domain=example.org", "hostname=pi1"]
    assert text.startswith("#")
    assert parse_settings_env(text) == {"hostname": "pi1", "domain": "example.org"}
    with pytest.raises(UserError, match="line 2|:2"):
        parse_settings_env("a=1\nbroken\n", file=Path("settings.env"))


names = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True).filter(lambda n: n != "hostname")
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@given(st.dictionaries(names, values, max_size=8))
def test_round_trip(settings: dict[str, str]) -> None:
    assert parse_settings_env(render_settings_env(settings)) == settings
