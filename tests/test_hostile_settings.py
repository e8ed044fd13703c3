"""A setting's value cannot break out of the configuration file it is rendered into.

For every string-like setting of every Debian-backend recipe: hostile values are refused
with one line by every path (build, flash, user-data); the widest value its kind accepts is
rendered into the recipe's files the way the appliance gets them (build-time values by
jinja2, per-device ones by the initramfs' own settings code, run here under busybox) and
the files still parse (YAML, nginx) and hold none of their format's syntax characters from
the value. The initramfs itself drops hostile per-device values that never went through
flash (a hand-edited settings.env, user-data typed into a console).
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from appliancekit.board import find_board
from appliancekit.boot.initramfs import render_init
from appliancekit.content.install import config_files
from appliancekit.devsettings import (
    UNIVERSAL,
    check_device_settings,
    render_user_data,
    setting_records,
)
from appliancekit.errors import UserError
from appliancekit.manifest import Manifest
from appliancekit.recipe import Recipe, Setting, find_recipe, resolve_settings
from appliancekit.rootfs import (
    PER_DEVICE_SOURCE,
    ROOT_USER,
    generated_files,
    place_file,
    settings_defaults,
    settings_kinds_text,
    template_context,
)
from appliancekit.settings_kinds import ALLOWED, MAX_VALUE, SettingKind
from appliancekit.slots import PARTITION_NUMBERS
from appliancekit.tree import RootTree
from tests.conftest import PROJECT, run_cli
from tests.test_flash_settings import MANIFEST

DEBIAN_RECIPES = ("homepage", "dns", "mailserver", "matrix")
NOT_TEXT = (SettingKind.INT, SettingKind.BOOL, SettingKind.PATH)
HOSTILE = (
    "a b;}",
    'x"; include /etc/shadow; "',
    "x'y",
    "line\nnext=1",
    "back\\slash",
    "${HOME}",
    "$(id)",
    "`id`",
    "a#comment",
    "a|b&c",
    "</a><b>",
    "nul\x00",
    "tab\tx",
    "x" * (MAX_VALUE + 1),
)
# The widest value each kind accepts (every character it allows, where its structure lets)
WIDEST = {
    SettingKind.STRING: "A" + ALLOWED[SettingKind.STRING].strip() + "z",
    SettingKind.SECRET: "A" + ALLOWED[SettingKind.SECRET].strip() + "z",
    SettingKind.DOMAIN: "a-1.example-2.org",
    SettingKind.HOSTNAME: "Host-1.example",
    SettingKind.DOMAINS: "a.org, b-2.example.net",
    SettingKind.EMAIL: "x.y_z%+1@example.org",
    SettingKind.ADDRESS: "2001:db8::a:10/64",
    SettingKind.SERIAL: "vol-0a1B2c3d",
    SettingKind.URL: "https://u-1.x_y~z:p%41ss+w=rd,!*()@git.example.org:8443/a/site.git?x=[1]",
    SettingKind.GITREF: "release/v1.x_2-rc",
    SettingKind.SSHKEY: (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFz4VvGk6C9JgoY0Gj+/4wM8oV5bq3T3yZ0Oq7t8Hf1k"
        " a.b-c_d@host"
    ),
    SettingKind.USERS: (
        "al.i_ce-1:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA+/."
        " bob:{SHA512-CRYPT}$6$salt$hash./"
    ),
}
# Characters each file format reads as syntax (besides control characters), for the
# files these recipes render; the first pattern matching a path wins.
FORMATS = (
    ("*/nginx.conf", ";{}\"'\\#$"),
    ("*.yaml", '"\\'),
    ("/etc/rspamd/*", ";{}\"'\\#$"),
    ("/etc/postfix/*", "{}#$\\"),
    ("/etc/dovecot/*", "{}#$\"'\\"),
    ("/etc/powerdns/pdns.conf", "#\\"),
    ("*", ""),  # data files read whole (users, keys, zone lists), sed scripts' comments
)
BOARD = find_board("qemu-virt-arm64", PROJECT.boards_dir)


def text_settings() -> list[tuple[str, Setting]]:
    out = []
    for name in DEBIAN_RECIPES:
        recipe = find_recipe(name, PROJECT.recipes_dir)
        out += [(name, s) for s in recipe.settings if s.kind not in NOT_TEXT]
    return out


CASES = text_settings()
IDS = [f"{r}.{s.name}" for r, s in CASES]


def manifest_of(recipe: Recipe) -> Manifest:
    from dataclasses import replace

    return replace(MANIFEST, recipe=recipe.name, setting_records=setting_records(recipe))


def test_every_debian_recipe_has_text_settings_under_test() -> None:
    assert {r for r, _ in CASES} == set(DEBIAN_RECIPES)
    assert {s.kind for _, s in CASES} <= set(WIDEST)  # a new text kind needs a WIDEST


@pytest.mark.parametrize(("recipe_name", "setting"), CASES, ids=IDS)
def test_hostile_values_are_refused_by_every_path(recipe_name: str, setting: Setting) -> None:
    recipe = find_recipe(recipe_name, PROJECT.recipes_dir)
    manifest = manifest_of(recipe)
    for value in HOSTILE:
        with pytest.raises(UserError) as info:
            resolve_settings(recipe, {setting.name: value})
        message = str(info.value)
        assert "recipe.toml:" in message and f"settings.{setting.name}: " in message
        assert "\n" not in message and len(message) < 600, message
        if not setting.per_device:
            continue
        for check in (check_device_settings, render_user_data):
            with pytest.raises(UserError) as info:
                check({setting.name: value}, manifest)
            assert setting.name in str(info.value) and "\n" not in str(info.value)


def test_the_measured_breakout_is_refused_on_the_command_line(tmp_path: Path) -> None:
    images = tmp_path / "images"
    result = run_cli(
        "build",
        "homepage",
        "-b",
        "qemu-virt-arm64",
        "-s",
        "server_name=a b;}",
        "--images",
        str(images),
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "settings.server_name" in result.stderr
    assert "value holds ';'" in result.stderr
    assert not images.exists() or not any(images.iterdir())


# --------------------------------------------------------------------------- the boot side


def load_settings_function() -> str:
    """The initramfs' own settings code (init.sh's load_settings), as the image runs it."""
    init = render_init(BOARD, "6.12.0-test", PARTITION_NUMBERS)
    return init[init.index("# >>> settings") : init.index("# <<< settings")]


needs_busybox = pytest.mark.skipif(not shutil.which("busybox"), reason="needs busybox")


def run_load_settings(tmp: Path, settings_env: str, kinds: str) -> tuple[str, str, str]:
    """Run load_settings under busybox sh; (sed script, host name written, console)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "settings.env").write_text(settings_env)
    (tmp / "kinds").write_text(kinds)
    script = load_settings_function() + (
        f'load_settings "{tmp}/settings.env" "{tmp}/kinds" "{tmp}/settings.sed" "{tmp}/hostname"\n'
    )
    proc = subprocess.run(
        ["busybox", "sh", "-c", script], capture_output=True, text=True, check=True
    )
    hostname = (tmp / "hostname").read_text() if (tmp / "hostname").exists() else ""
    return (tmp / "settings.sed").read_text(), hostname, proc.stdout + proc.stderr


def substitute(tmp: Path, sed_script: str, text: str) -> str:
    (tmp / "script.sed").write_text(sed_script)
    (tmp / "source").write_text(text)
    return subprocess.run(
        ["busybox", "sed", "-f", str(tmp / "script.sed"), str(tmp / "source")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def rendered_files(recipe: Recipe, name: str, value: str, tmp: Path) -> dict[str, str]:
    """The recipe's generated files as the booted appliance has them, with setting `name`
    set to `value` (at build time, or per device through the initramfs: as flash writes it)."""
    setting = next(s for s in recipe.settings if s.name == name)
    resolved = resolve_settings(recipe, {} if setting.per_device else {name: value})
    users = {u.name: u for u in (ROOT_USER, *recipe.users)}
    context = template_context(recipe, resolved, BOARD, users)
    tree = RootTree()
    per_device = {line.split()[0] for line in generated_files(tree, recipe, context, users)}
    # content-sync's configuration files ([[content]]) are rendered the same way
    content = config_files(recipe, context["settings"])  # type: ignore[arg-type]
    for path, text in content:
        if place_file(tree, path, text, 0o644, ROOT_USER) is not None:
            per_device.add(path)
    device_env = ""
    if setting.per_device:
        written = check_device_settings({name: value}, manifest_of(recipe))[name]
        device_env = f"{name}={written}\n"
    sed_script, _, console = run_load_settings(
        tmp, device_env + settings_defaults(recipe, resolved), settings_kinds_text(recipe)
    )
    assert "ignoring" not in console, console
    files = {}
    for path in [f.path for f in recipe.files] + [path for path, _ in content]:
        if path in per_device:
            source = tree.entries[PER_DEVICE_SOURCE + path].content or b""
            files[path] = substitute(tmp, sed_script, source.decode())
        else:
            files[path] = (tree.entries[path].content or b"").decode()
    return files


def nginx_directives(text: str) -> list[list[str]]:
    """nginx's tokenizer, enough to check structure: directives as token lists, blocks
    balanced (ValueError otherwise)."""
    directives: list[list[str]] = []
    tokens: list[str] = []
    depth, i = 0, 0
    while i < len(text):
        c = text[i]
        if c == "#":
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
            continue
        if c.isspace():
            i += 1
            continue
        if c in ";{}":
            if c == "}":
                if tokens:
                    raise ValueError("directive without ';' before '}'")
                depth -= 1
                if depth < 0:
                    raise ValueError("unbalanced '}'")
            else:
                directives.append(tokens)
                tokens = []
                depth += c == "{"
            i += 1
            continue
        if c in "\"'":
            end = text.index(c, i + 1)
            tokens.append(text[i + 1 : end])
            i = end + 1
            continue
        start = i
        while i < len(text) and not text[i].isspace() and text[i] not in ";{}\"'#":
            i += 1
        tokens.append(text[start:i])
    if depth or tokens:
        raise ValueError("unterminated block or directive")
    return directives


@needs_busybox
@pytest.mark.parametrize(("recipe_name", "setting"), CASES, ids=IDS)
def test_the_widest_accepted_value_stays_inside_its_files(
    recipe_name: str, setting: Setting, tmp_path: Path
) -> None:
    recipe = find_recipe(recipe_name, PROJECT.recipes_dir)
    value = WIDEST[setting.kind]
    typed = str(resolve_settings(recipe, {setting.name: value}).as_dict()[setting.name])
    try:
        files = rendered_files(recipe, setting.name, value, tmp_path)
    except UserError as exc:  # a template may refuse values itself (mailserver's tld.sed)
        assert "\n" not in str(exc) and ":" in str(exc)
        return
    landed = [path for path, text in files.items() if typed in text]
    if setting.name not in UNIVERSAL:  # the initramfs itself uses these, no file of the recipe
        assert landed, f"{setting.name} is rendered into none of {recipe_name}'s files"
    for path in landed:
        syntax = next(chars for pattern, chars in FORMATS if fnmatch.fnmatch(path, pattern))
        assert not set(typed) & set(syntax), (path, set(typed) & set(syntax))
        text = files[path]
        if path.endswith(".yaml"):
            scalars = [v for v in _scalars(yaml.safe_load(text)) if typed in str(v)]
            assert typed in scalars, (path, scalars)
        if path.endswith("nginx.conf"):
            directives = nginx_directives(text)
            if setting.name == "server_name":
                assert ["server_name", *typed.split()] in directives
            if setting.name == "hostname":
                assert ["return", "200", f"{typed}\\n"] in directives


def _scalars(node: object) -> list[object]:
    if isinstance(node, dict):
        return [v for item in node.values() for v in _scalars(item)]
    if isinstance(node, list):
        return [v for item in node for v in _scalars(item)]
    return [node]


def test_a_hostile_value_does_land_somewhere_the_test_looks() -> None:
    """The checks above are not vacuous: the parser finds the measured breakout."""
    broken = "http {\n server {\n server_name a b;};\n }\n}\n"
    with pytest.raises(ValueError):
        nginx_directives(broken)


@needs_busybox
def test_the_initramfs_drops_values_that_never_went_through_flash(tmp_path: Path) -> None:
    kinds = "api_key secret\nhostname hostname\nusers users\nzones domains\n"
    hostile = "\n".join(
        [
            "# a settings.env edited by hand, or user-data typed into a cloud console",
            "api_key=k; rm -rf /data #",
            "hostname=evil|host&",
            'users=alice:{PLAIN}x"y',
            "zones=a.org",
            "site=/etc",
            "Bad-Name=1",
            "api_key=from-the-defaults",
            "hostname=from-the-defaults",
            "users=",
        ]
    )
    sed_script, hostname, console = run_load_settings(tmp_path, hostile + "\n", kinds)
    assert "ignoring api_key: its value holds characters a secret may not" in console
    assert "ignoring hostname: its value holds characters a hostname may not" in console
    assert "ignoring users:" in console and "ignoring site: not a per-device" in console
    assert "ignoring a line that is not NAME=VALUE" in console
    assert "rm -rf" not in console and "evil" not in console  # values are never printed
    text = "key=@@AK:api_key@@ host=@@AK:hostname@@ users=@@AK:users@@ zones=@@AK:zones@@"
    assert substitute(tmp_path, sed_script, text + "\n") == (
        "key=from-the-defaults host=from-the-defaults users= zones=a.org\n"
    )
    assert hostname == "from-the-defaults\n"


@needs_busybox
def test_a_real_sized_certificate_chain_passes_the_initramfs(tmp_path: Path) -> None:
    value = "LS0tLS1CRUdJTi" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo+/=" * 200  # 7.6 KB
    sed_script, _, console = run_load_settings(tmp_path, f"tls_cert={value}\n", "tls_cert secret\n")
    assert "ignoring" not in console
    assert substitute(tmp_path, sed_script, "@@AK:tls_cert@@") == value
