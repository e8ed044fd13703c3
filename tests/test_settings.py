"""Recipe settings: -s NAME=VALUE parsing, defaults, overrides and per-kind conversion."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliancekit.errors import UserError
from appliancekit.recipe import (
    Recipe,
    ResolvedSettings,
    load_recipe,
    resolve_settings,
)
from appliancekit.settings_kinds import parse_assignments as parse_setting_args

RECIPE = """\
[appliance]
name = "demo"
summary = "settings demo"

[debian]
packages = ["nginx-light"]

[settings.site]
kind = "path"
default = "site"

[settings.domain]
kind = "domain"
help = "Public DNS name"

[settings.workers]
kind = "int"
default = 2

[settings.tls]
kind = "bool"
default = false

[settings.admin]
kind = "email"
default = "admin@example.org"

[settings.token]
kind = "secret"
default = "s3cret"

[settings.greeting]
kind = "string"
default = "hello"

[[service]]
name = "web"
exec = ["/usr/sbin/nginx"]
"""


def line_no(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


@pytest.fixture
def recipe(tmp_path: Path) -> Recipe:
    directory = tmp_path / "recipes" / "demo"
    (directory / "site").mkdir(parents=True)
    (directory / "recipe.toml").write_text(RECIPE)
    return load_recipe(directory)


# --------------------------------------------------------------------------- -s parsing


def test_parse_setting_args() -> None:
    assert parse_setting_args([]) == {}
    assert parse_setting_args(["site=./public", "domain=a=b.org", "empty=", "x=1", "x=2"]) == {
        "site": "./public",
        "domain": "a=b.org",  # only the first '=' separates
        "empty": "",
        "x": "2",  # last one wins
    }


@pytest.mark.parametrize("arg", ["site", "=value", "1st=x", "my-name=x", " site=x", ""])
def test_parse_setting_args_rejects_bad_syntax(arg: str) -> None:
    with pytest.raises(UserError) as info:
        parse_setting_args(["ok=1", arg])
    assert info.value.field == "-s"
    assert str(info.value) == f"-s: expected NAME=VALUE, got {arg!r}"


# --------------------------------------------------------------------------- resolution


def test_defaults_and_overrides(
    recipe: Recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = tmp_path / "work" / "public"
    public.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    resolved = resolve_settings(recipe, {"domain": "Example.ORG", "site": "./public"})
    assert isinstance(resolved, ResolvedSettings)
    assert resolved.as_dict() == {
        "admin": "admin@example.org",
        "data_volume": "",  # built in, per device: a disk of its own for /data
        "domain": "example.org",  # lowercased
        "greeting": "hello",
        "hostname": "demo",  # built in: every appliance has a per-device host name
        "net_address": "",  # ... and per-device network settings, given at flash time
        "net_address6": "",
        "net_gateway": "",
        "net_interface": "",
        "site": str(public),  # relative to the current directory
        "tls": False,
        "update_allow_downgrade": "",  # built in, per device: the update agent's
        "update_interval": "",
        "update_status_port": "",
        "update_url": "",
        "update_window": "",
        "token": "s3cret",
        "workers": 2,
    }
    assert [name for name, _ in resolved.values] == sorted(resolved.as_dict())


def test_path_default_is_relative_to_recipe_dir(
    recipe: Recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./site here: the default must not use the CWD
    values = resolve_settings(recipe, {"domain": "example.org"}).as_dict()
    assert values["site"] == str(recipe.directory / "site")


def test_absolute_path_override(recipe: Recipe, tmp_path: Path) -> None:
    values = resolve_settings(recipe, {"domain": "a.org", "site": str(tmp_path)}).as_dict()
    assert values["site"] == str(tmp_path)


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("workers", "8", 8),
        ("workers", " -3 ", -3),
        ("tls", "true", True),
        ("tls", "YES", True),
        ("tls", "1", True),
        ("tls", "false", False),
        ("tls", "no", False),
        ("tls", "0", False),
        ("domain", "Mail.Example.org", "mail.example.org"),
        ("domain", "example.org.", "example.org"),
        ("domain", "xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("admin", "Root+tag@Example.ORG", "Root+tag@example.org"),
        ("token", "p@ss word", "p@ss word"),
        ("greeting", "hi there", "hi there"),
    ],
)
def test_conversion(recipe: Recipe, name: str, raw: str, value: object) -> None:
    overrides = {"domain": "example.org", name: raw}
    resolved = resolve_settings(recipe, overrides).as_dict()
    assert resolved[name] == value and type(resolved[name]) is type(value)


@pytest.mark.parametrize(
    ("name", "raw", "fragment"),
    [
        ("workers", "eight", "expected an int, got 'eight'"),
        ("workers", "1.5", "expected an int"),
        ("tls", "maybe", "expected a bool (true/false/yes/no/1/0), got 'maybe'"),
        ("domain", "localhost", "is not a domain name"),
        ("domain", "-bad.example.org", "is not a domain name"),
        ("domain", "under_score.org", "is not a domain name"),
        ("domain", "a..b", "is not a domain name"),
        ("domain", "x" * 64 + ".org", "is not a domain name"),
        ("admin", "admin", "is not an email address"),
        ("admin", "admin@localhost", "is not an email address"),
        ("admin", "a b@example.org", "is not an email address"),
        ("token", "", "expected a non-empty secret value"),
        ("greeting", "", "expected a non-empty string value"),
        ("site", "does/not/exist", "does not exist"),
    ],
)
def test_bad_override_values(recipe: Recipe, name: str, raw: str, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        resolve_settings(recipe, {"domain": "example.org", name: raw})
    err = info.value
    line = line_no(RECIPE, f"[settings.{name}]")
    assert str(err).startswith(f"{recipe.source_file}:{line}: settings.{name}: ")
    assert fragment in str(err) and "(-s " in str(err)


def test_unknown_override(recipe: Recipe) -> None:
    with pytest.raises(UserError) as info:
        resolve_settings(recipe, {"domian": "example.org"})
    err = info.value
    assert err.field == "settings.domian" and err.file == str(recipe.source_file)
    assert str(err).startswith(f"{recipe.source_file}: settings.domian: unknown setting 'domian'")
    assert "did you mean 'domain'" in str(err)
    assert "admin, data_volume, domain, greeting, hostname, net_address" in str(err)


def test_required_setting_missing(recipe: Recipe) -> None:
    with pytest.raises(UserError) as info:
        resolve_settings(recipe, {})
    line = line_no(RECIPE, "[settings.domain]")
    assert str(info.value) == (
        f"{recipe.source_file}:{line}: settings.domain: "
        "required setting domain is not set (use -s domain=VALUE)"
    )


def test_missing_default_path_reports_the_default_line(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    directory.mkdir()  # no site/ directory
    (directory / "recipe.toml").write_text(RECIPE)
    recipe = load_recipe(directory)
    with pytest.raises(UserError) as info:
        resolve_settings(recipe, {"domain": "example.org"})
    line = line_no(RECIPE, 'default = "site"')
    assert str(info.value).startswith(f"{recipe.source_file}:{line}: settings.site.default: ")
    assert "does not exist" in str(info.value)
