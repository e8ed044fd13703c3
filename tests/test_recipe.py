"""Recipe loading and validation, plus the TOML line locator it relies on."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliancekit.errors import UserError
from appliancekit.recipe import (
    ProbeKind,
    SettingKind,
    find_recipe,
    list_recipes,
    load_recipe,
)
from appliancekit.tomlsource import TomlSource, format_path, locate_lines, parse_path

VALID = """\
[appliance]
name = "homepage"
summary = "A static website"
backend = "debian"

[debian]
suite = "trixie"
packages = ["nginx-light"]
keep = ["/etc/nginx/mime.types"]

[settings.site]
kind = "path"
default = "site"
help = "Directory with the static site"

[settings.domain]
kind = "domain"
help = "Public name"
per_device = true

[[user]]
name = "www-data"
uid = 33

[[service]]
name = "nginx"
exec = ["/usr/sbin/nginx", "-g", "daemon off;"]
user = "www-data"
environment = { LANG = "C.UTF-8" }

[[file]]
path = "/etc/nginx/nginx.conf"
template = "nginx.conf.j2"

[[file]]
path = "/etc/motd"
content = "hello"
mode = "0600"

[[tree]]
path = "/srv/www"
source = "{{ settings.site }}"
owner = "www-data"

[data]
paths = ["/var/lib/nginx"]

[network]
ports = [80]

[[probe]]
kind = "http"
port = 80
path = "/"
status = 200
contains = "Hello"

[nixos]
"services.nginx.enable" = true
"""


def line_no(text: str, marker: str, occurrence: int = 1) -> int:
    """1-based line of the `occurrence`-th line containing `marker`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    assert len(hits) >= occurrence, f"{marker!r} not in text"
    return hits[occurrence - 1]


def write_recipe(root: Path, text: str, name: str = "homepage") -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nginx.conf.j2").write_text("server {}\n")
    (directory / "site").mkdir(exist_ok=True)
    (directory / "recipe.toml").write_text(text)
    return directory


def load_error(tmp_path: Path, text: str, name: str = "homepage") -> tuple[UserError, Path]:
    directory = write_recipe(tmp_path, text, name)
    with pytest.raises(UserError) as info:
        load_recipe(directory)
    return info.value, directory / "recipe.toml"


# --------------------------------------------------------------------------- valid


def test_valid_recipe_loads(tmp_path: Path) -> None:
    directory = write_recipe(tmp_path, VALID)
    r = load_recipe(directory)
    assert r.name == "homepage" and r.summary == "A static website"
    assert r.directory == directory and r.source_file == directory / "recipe.toml"
    assert r.backend == "debian"
    assert r.debian.packages == ("nginx-light",) and r.debian.suite == "trixie"
    assert r.debian.keep == ("/etc/nginx/mime.types",)
    # hostname and the static network settings are built in
    assert [s.name for s in r.settings] == [
        "site",
        "domain",
        "hostname",
        "net_address",
        "net_address6",
        "net_gateway",
        "net_interface",
        "data_volume",
        "update_url",
        "update_interval",
        "update_window",
        "update_allow_downgrade",
        "update_status_port",
    ]
    site, domain, hostname = r.settings[:3]
    assert all(s.per_device and s.default is None for s in r.settings[3:])
    assert hostname.per_device and hostname.default == r.name
    assert site.kind is SettingKind.PATH and site.default == "site"
    assert domain.default is None and domain.per_device is True
    assert r.users[0].name == "www-data" and r.users[0].uid == 33 and r.users[0].gid == 33
    (svc,) = r.services
    assert svc.exec == ("/usr/sbin/nginx", "-g", "daemon off;")
    assert svc.user == "www-data" and svc.environment == (("LANG", "C.UTF-8"),)
    assert svc.working_directory == "/"
    assert r.files[0].template == "nginx.conf.j2" and r.files[0].mode == 0o644
    assert r.files[1].content == "hello" and r.files[1].mode == 0o600
    assert r.trees[0].source == "{{ settings.site }}" and r.trees[0].owner == "www-data"
    assert r.data_paths == ("/var/lib/nginx",) and r.ports == (80,)
    (probe,) = r.probes
    assert probe.kind is ProbeKind.HTTP and probe.contains == "Hello" and probe.timeout == 60.0
    assert r.nixos == (("services.nginx.enable", True),)


def test_load_recipe_accepts_the_file_path(tmp_path: Path) -> None:
    directory = write_recipe(tmp_path, VALID)
    assert load_recipe(directory / "recipe.toml").name == "homepage"


def test_minimal_nixos_recipe_and_flattened_options(tmp_path: Path) -> None:
    text = """\
[appliance]
name = "web"
summary = "x"
backend = "nixos"
[nixos]
"services.nginx.enable" = true
networking.firewall.allowedTCPPorts = [80, 443]
[nixos.services.nginx.virtualHosts."example.org"]
root = "/srv"
"""
    r = load_recipe(write_recipe(tmp_path, text, "web"))
    assert r.debian.packages == () and r.services == ()
    assert r.nixos == (
        ("networking.firewall.allowedTCPPorts", (80, 443)),
        ("services.nginx.enable", True),
        ("services.nginx.virtualHosts.example.org.root", "/srv"),
    )
    hash(r)  # frozen and hashable: lists became tuples


def test_find_and_list_recipes(tmp_path: Path) -> None:
    write_recipe(tmp_path, VALID)
    (tmp_path / "not-a-recipe").mkdir()
    assert list_recipes(tmp_path) == ["homepage"]
    assert find_recipe("homepage", tmp_path).name == "homepage"
    with pytest.raises(UserError) as info:
        find_recipe("homepag", tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "did you mean 'homepage'" in msg
    assert "known recipes: homepage" in msg
    assert list_recipes(tmp_path / "missing") == []


def test_missing_recipe_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no recipe.toml"):
        load_recipe(tmp_path / "empty")


# --------------------------------------------------------------------------- errors

# (replace this, with this, expected field, line marker or None, message fragment)
ERRORS = [
    pytest.param(
        'user = "www-data"\nenvironment',
        'usr = "www-data"\nenvironment',
        "service[0].usr",
        "usr = ",
        "did you mean 'user'",
        id="unknown-key-suggests",
    ),
    pytest.param(
        "[network]",
        "[netwrok]",
        "netwrok",
        "[netwrok]",
        "did you mean 'network'",
        id="unknown-section",
    ),
    pytest.param(
        'summary = "A static website"',
        'summary = "A static website"\nzzz = 1',
        "appliance.zzz",
        "zzz = 1",
        "unknown key 'zzz'; known: backend, name, summary",
        id="unknown-key-lists-known",
    ),
    pytest.param(
        'exec = ["/usr/sbin/nginx", "-g", "daemon off;"]',
        "exec = 5",
        "service[0].exec",
        "exec = 5",
        "expected a list of strings, got int",
        id="wrong-type-list",
    ),
    pytest.param(
        'exec = ["/usr/sbin/nginx", "-g", "daemon off;"]',
        'exec = [\n  "/usr/sbin/nginx",\n  5,\n]',
        "service[0].exec[1]",
        "  5,",
        "expected a string, got int",
        id="wrong-type-element",
    ),
    pytest.param(
        "uid = 33", 'uid = "33"', "user[0].uid", "uid = ", "expected an int, got string", id="int"
    ),
    pytest.param(
        'name = "nginx"\n',
        "",
        "service[0].name",
        "[[service]]",
        "required key 'name' is missing",
        id="missing-required-key",
    ),
    pytest.param(
        'packages = ["nginx-light"]\n',
        "",
        "debian.packages",
        "[debian]",
        "required key 'packages' is missing",
        id="missing-packages",
    ),
    pytest.param(
        'paths = ["/var/lib/nginx"]',
        'paths = ["var/lib/nginx"]',
        "data.paths[0]",
        "paths = ",
        "must be an absolute path, got 'var/lib/nginx'",
        id="relative-data-path",
    ),
    pytest.param(
        'path = "/srv/www"',
        'path = "srv/www"',
        "tree[0].path",
        'path = "srv/www"',
        "must be an absolute path",
        id="relative-tree-path",
    ),
    pytest.param(
        'exec = ["/usr/sbin/nginx", "-g", "daemon off;"]',
        'exec = ["nginx"]',
        "service[0].exec[0]",
        'exec = ["nginx"]',
        "exec[0] must be an absolute path",
        id="relative-exec",
    ),
    pytest.param(
        'exec = ["/usr/sbin/nginx", "-g", "daemon off;"]',
        "exec = []",
        "service[0].exec",
        "exec = []",
        "must not be an empty list",
        id="empty-exec",
    ),
    pytest.param(
        'user = "www-data"\nenvironment',
        'user = "nobody"\nenvironment',
        "service[0].user",
        'user = "nobody"',
        "user 'nobody' is neither root nor a declared [[user]]",
        id="undeclared-service-user",
    ),
    pytest.param(
        'owner = "www-data"',
        'owner = "www-dat"',
        "tree[0].owner",
        'owner = "www-dat"',
        "did you mean 'www-data'",
        id="undeclared-owner",
    ),
    pytest.param(
        'template = "nginx.conf.j2"',
        'template = "missing.j2"',
        "file[0].template",
        "template = ",
        "template file 'missing.j2' does not exist",
        id="missing-template",
    ),
    pytest.param(
        'template = "nginx.conf.j2"',
        'template = "../outside.j2"',
        "file[0].template",
        "template = ",
        "outside the recipe directory",
        id="template-escapes",
    ),
    pytest.param(
        'content = "hello"',
        'content = "hello"\ntemplate = "nginx.conf.j2"',
        "file[1]",
        ("[[file]]", 2),
        "exactly one of 'template' or 'content'",
        id="template-and-content",
    ),
    pytest.param(
        'mode = "0600"', "mode = 600", "file[1].mode", "mode = 600", 'like "0644"', id="int-mode"
    ),
    pytest.param(
        'mode = "0600"',
        'mode = "0999"',
        "file[1].mode",
        "mode = ",
        "invalid mode '0999'",
        id="bad-mode",
    ),
    pytest.param(
        '[[file]]\npath = "/etc/motd"',
        '[[service]]\nname = "nginx"\nexec = ["/bin/x"]\n\n[[file]]\npath = "/etc/motd"',
        "service[1].name",
        ('name = "nginx"', 2),
        "duplicate service name 'nginx' (also service[0])",
        id="duplicate-service",
    ),
    pytest.param(
        "uid = 33",
        'uid = 33\n\n[[user]]\nname = "www-data"\nuid = 34',
        "user[1].name",
        ('name = "www-data"', 2),
        "duplicate user name 'www-data'",
        id="duplicate-user",
    ),
    pytest.param(
        "ports = [80]",
        "ports = [80, 70000]",
        "network.ports[1]",
        "ports = ",
        "70000 is out of range 1..65535",
        id="port-out-of-range",
    ),
    pytest.param(
        "port = 80\npath",
        "port = 0\npath",
        "probe[0].port",
        "port = 0",
        "out of range",
        id="probe-port-zero",
    ),
    pytest.param(
        'kind = "http"',
        'kind = "ftp"',
        "probe[0].kind",
        'kind = "ftp"',
        "unknown probe kind 'ftp'; expected one of: http, tcp, dns, smtp, imap",
        id="probe-kind",
    ),
    pytest.param(
        'kind = "http"\nport = 80\npath = "/"',
        'kind = "dns"\nport = 53\npath = "/"',
        "probe[0].query",
        "[[probe]]",
        "a dns probe needs query",
        id="dns-probe-query",
    ),
    pytest.param(
        'name = "homepage"',
        'name = "other"',
        "appliance.name",
        'name = "other"',
        "'other' must equal the recipe directory name 'homepage'",
        id="name-mismatch",
    ),
    pytest.param(
        'backend = "debian"',
        'backend = "arch"',
        "appliance.backend",
        "backend = ",
        "expected one of: debian, nixos",
        id="backend",
    ),
    pytest.param(
        'kind = "path"',
        'kind = "file"',
        "settings.site.kind",
        'kind = "file"',
        "unknown setting kind 'file'",
        id="setting-kind",
    ),
    pytest.param(
        '[settings.domain]\nkind = "domain"',
        '[settings.domain]\nkind = "domain"\ndefault = "not a domain"',
        "settings.domain.default",
        'default = "not a domain"',
        "is not a domain name",
        id="bad-domain-default",
    ),
    pytest.param(
        '[settings.domain]\nkind = "domain"',
        '[settings.domain]\nkind = "int"\ndefault = "8"',
        "settings.domain.default",
        'default = "8"',
        "expected an int, got string",
        id="int-setting-string-default",
    ),
    pytest.param(
        "[settings.domain]",
        '[settings."bad name"]',
        'settings."bad name"',
        "bad name",
        "invalid name 'bad name'",
        id="setting-name",
    ),
    pytest.param(
        "per_device = true",
        'per_device = "yes"',
        "settings.domain.per_device",
        "per_device",
        "expected a bool",
        id="bool",
    ),
    pytest.param(
        'environment = { LANG = "C.UTF-8" }',
        "environment = { LANG = 1 }",
        "service[0].environment.LANG",
        "environment = ",
        "expected a string, got int",
        id="environment",
    ),
    pytest.param(
        'packages = ["nginx-light"]',
        'packages = ["nginx light"]',
        "debian.packages[0]",
        "packages = ",
        "expected a Debian package name",
        id="package-name",
    ),
    pytest.param(
        'packages = ["nginx-light"]',
        "packages = []",
        "debian.packages",
        "packages = []",
        "must not be an empty list",
        id="no-packages",
    ),
    pytest.param(
        "[[tree]]",
        "[tree]",
        "tree",
        "[tree]",
        "expected an array of tables ([[tree]]), got table",
        id="table-instead-of-array",
    ),
    pytest.param(
        '[nixos]\n"services.nginx.enable" = true',
        '[nixos]\n"services.nginx.enable" = true\nservices.nginx.enable = false',
        "nixos.services.nginx.enable",
        "services.nginx.enable = false",
        "set twice",
        id="nixos-duplicate-option",
    ),
]


@pytest.mark.parametrize(("old", "new", "field", "marker", "fragment"), ERRORS)
def test_validation_errors(
    tmp_path: Path, old: str, new: str, field: str, marker: str | tuple[str, int], fragment: str
) -> None:
    assert old in VALID
    text = VALID.replace(old, new, 1)
    err, file = load_error(tmp_path, text)
    expected_line = line_no(text, *marker) if isinstance(marker, tuple) else line_no(text, marker)
    assert str(err).startswith(f"{file}:{expected_line}: {field}: "), str(err)
    assert fragment in str(err)
    assert err.field == field and err.line == expected_line and err.file == str(file)
    assert "\n" not in str(err)


def test_error_in_second_array_table_points_at_it(tmp_path: Path) -> None:
    text = VALID.replace(
        '[[file]]\npath = "/etc/motd"',
        '[[service]]\nname = "second"\nexec = ["/bin/x"]\nuser = "ghost"\n\n'
        '[[file]]\npath = "/etc/motd"',
    )
    err, file = load_error(tmp_path, text)
    line = line_no(text, 'user = "ghost"')
    assert str(err).startswith(f"{file}:{line}: service[1].user: ")


def test_missing_appliance_section(tmp_path: Path) -> None:
    text = VALID.replace('[appliance]\nname = "homepage"\nsummary = "A static website"\n', "")
    text = text.replace('backend = "debian"\n', "")
    err, file = load_error(tmp_path, text)
    assert str(err) == f"{file}: appliance: required section [appliance] is missing"


def test_debian_backend_needs_debian_section(tmp_path: Path) -> None:
    text = VALID.replace('[debian]\nsuite = "trixie"\npackages = ["nginx-light"]\n', "")
    text = text.replace('keep = ["/etc/nginx/mime.types"]\n', "")
    err, file = load_error(tmp_path, text)
    assert str(err).startswith(f"{file}: debian: required section [debian] is missing")


def test_debian_backend_needs_a_service(tmp_path: Path) -> None:
    start = VALID.index("[[service]]")
    end = VALID.index("[[file]]")
    err, _ = load_error(tmp_path, VALID[:start] + VALID[end:])
    assert err.field == "service" and "at least one [[service]]" in str(err)


def test_toml_syntax_error_has_tomllib_line(tmp_path: Path) -> None:
    text = VALID.replace("uid = 33", "uid = = 33")
    err, file = load_error(tmp_path, text)
    assert str(err).startswith(f"{file}:{line_no(text, 'uid = = 33')}: TOML syntax error")


def test_toml_syntax_error_at_end_of_document(tmp_path: Path) -> None:
    text = VALID + 'broken = "unterminated'
    err, file = load_error(tmp_path, text)
    assert err.line == len(text.splitlines()) and str(err).startswith(f"{file}:{err.line}: ")


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    text = VALID.replace("uid = 33", "uid = 33\nuid = 34")
    err, _ = load_error(tmp_path, text)
    assert err.line == line_no(text, "uid = 34")


# --------------------------------------------------------------------------- the locator


def test_locator_structures() -> None:
    text = """\
top = 1  # comment with [brackets]
[appliance]
name = "x"
[settings.site]
kind = "path"
[[service]]
name = "a"
exec = [
  "/a",
  "b", # comment
]
environment = { FOO = "1", "B.A" = "2" }
[[service]]
name = \"\"\"multi
[[service]]
name = "fake"
\"\"\"
a.b."c.d" = 1
  [[service.probe]]
  x = 1
[[service.probe]]
x = 2
[nixos]
"services.nginx.enable" = true
'lit.key' = 'v'
"""
    tomllib.loads(text)
    src = TomlSource.from_text(text, "t.toml")

    def at(marker: str, n: int = 1) -> int:
        return line_no(text, marker, n)

    expect = {
        "top": at("top = 1"),
        "appliance": at("[appliance]"),
        "appliance.name": at('name = "x"'),
        "settings.site": at("[settings.site]"),
        "settings.site.kind": at('kind = "path"'),
        "settings": at("[settings.site]"),
        "service": at("[[service]]"),
        "service[0].exec": at("exec = ["),
        "service[0].exec[1]": at('"b", # comment'),
        'service[0].environment."B.A"': at("environment = "),
        "service[1]": at("[[service]]", 2),
        "service[1].name": at('name = """multi'),
        'service[1].a.b."c.d"': at("a.b."),
        "service[1].probe[0].x": at("x = 1"),
        "service[1].probe[1]": at("[[service.probe]]", 2),
        'nixos."services.nginx.enable"': at('"services.nginx.enable"'),
        'nixos."lit.key"': at("'lit.key'"),
    }
    for path, line in expect.items():
        assert src.line_of(path) == line, path
    assert ("service", 2) not in src.lines  # the [[service]] inside the string is no header
    # paths never written fall back to their closest written ancestor
    assert src.line_of("service[1].user") == at("[[service]]", 2)
    assert src.line_of("nothing.here") is None


def test_path_formatting_round_trip() -> None:
    path = ("nixos", "services.nginx.enable", "x y", 3, "plain-key_1", 'q"uote')
    assert format_path(path) == 'nixos."services.nginx.enable"."x y"[3].plain-key_1."q\\"uote"'
    assert parse_path(format_path(path)) == path
    assert parse_path("service[1].exec[0]") == ("service", 1, "exec", 0)


_bare = st.from_regex(r"[a-z][a-z0-9_-]{0,5}", fullmatch=True)
_quoted = st.text(alphabet="ab. -é'\"\\#[]=", min_size=1, max_size=6)
_key = st.one_of(_bare, _bare, _quoted)
# multi-line strings whose content looks like headers / keys
_multiline = st.sampled_from(['"""\n[[fake]]\nx = 1\n"""', "'''\n[table]\n'''", '"""a\\"""\n"""'])
_one_line_scalar = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))).map(
        lambda s: json.dumps(s, ensure_ascii=False)
    ),
    st.sampled_from(
        ['"# not = a comment"', "'[[x]]'", '"""one "" line"""', "1979-05-27 07:32:00Z"]
    ),
)
_scalar = st.one_of(_one_line_scalar, _multiline)


def _quote(key: str) -> str:
    return format_path((key,))


@st.composite
def _document(draw: st.DrawFn) -> tuple[str, dict[tuple[str | int, ...], int]]:
    lines: list[str] = ["# generated"]
    expected: dict[tuple[str | int, ...], int] = {}

    def emit(text: str) -> int:
        start = sum(chunk.count("\n") + 1 for chunk in lines) + 1
        lines.append(text)
        return start  # a multi-line value is located at its first line

    def body(prefix: tuple[str | int, ...]) -> list[str]:
        keys = draw(st.lists(_key, max_size=4, unique=True))
        for key in keys:
            sub = draw(st.one_of(st.none(), _key))
            written = _quote(key) + (f" . {_quote(sub)}" if sub is not None else "")
            path = prefix + (key,) + ((sub,) if sub is not None else ())
            style = draw(st.sampled_from(["scalar", "list", "multiline-list", "inline"]))
            if style == "scalar":
                expected[path] = emit(f"{written} = {draw(_scalar)}  # c")
            elif style == "list":
                items = draw(st.lists(_scalar, max_size=3))
                expected[path] = emit(f"{written}=[{', '.join(items)}]")
            elif style == "inline":
                inner = draw(st.lists(_key, min_size=1, max_size=3, unique=True))
                pairs = ", ".join(f"{_quote(k)} = {draw(_one_line_scalar)}" for k in inner)
                expected[path] = emit(f"{written} = {{ {pairs} }}")
                for k in inner:
                    expected[path + (k,)] = expected[path]
            else:
                expected[path] = emit(f"{written} = [  # opening")
                for i, item in enumerate(draw(st.lists(_scalar, max_size=3))):
                    expected[path + (i,)] = emit(f"    {item},")
                emit("]")
        return keys

    top_keys = set(body(()))
    names = draw(st.lists(_key.filter(lambda k: k not in top_keys), max_size=4, unique=True))
    counts: dict[str, int] = {}
    for name in names:
        if draw(st.booleans()):
            emit("")
            expected[(name,)] = emit(f"[ {_quote(name)} ]")
            body((name,))
        else:
            for _ in range(draw(st.integers(1, 3))):
                index = counts.get(name, 0)
                counts[name] = index + 1
                line = emit(f"[[{_quote(name)}]]")
                expected.setdefault((name,), line)
                expected[(name, index)] = line
                body((name, index))
    return "\n".join(lines) + "\n", expected


@settings(max_examples=150, deadline=None)
@given(_document())
def test_locator_finds_every_written_path(doc: tuple[str, dict]) -> None:
    text, expected = doc
    data = tomllib.loads(text)  # the generator only writes valid TOML
    lines = locate_lines(text)
    for path, line in expected.items():
        node = data
        for part in path:
            node = node[part]
        assert lines.get(path) == line, (format_path(path), text)


def test_data_owners_name_declared_paths() -> None:
    from appliancekit.recipe import load_recipe

    from .conftest import REPO

    recipe = load_recipe(REPO / "recipes" / "peoples-cloud")
    assert dict(recipe.data_owners) == {"/var/lib/ipfs": "ipfs", "/var/lib/swarmd": "swarmd"}
