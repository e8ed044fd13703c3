"""An undefined name in a template or a probe is one line naming file:line, never a jinja2
traceback: recipe templates (file and inline), [[tree]] sources, probes at recipe load and
probes rendered from a manifest by the boot test."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.boottest import probes_from_manifest
from appliancekit.errors import UserError
from appliancekit.recipe import load_recipe, resolve_settings
from appliancekit.rootfs import ROOT_USER, render, template_context
from tests.conftest import PROJECT
from tests.test_flash_settings import MANIFEST

RECIPE = """\
[appliance]
name = "demo"
summary = "templates"

[debian]
packages = ["nginx-light"]

[settings.domain]
kind = "domain"
default = "example.org"

[[service]]
name = "web"
exec = ["/usr/sbin/nginx"]

[[file]]
path = "/etc/a.conf"
template = "a.conf.j2"

[[file]]
path = "/etc/b.conf"
content = \"\"\"
first {{ settings.domain }}
second {{ settings.domian }}
\"\"\"

[[file]]
path = "/etc/c.conf"
content = "one line {{ nope }}"
"""

TEMPLATE = "# a\nserver {{ settings.domain }};\nlisten {{ settings.port }};\n"


def line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    directory = tmp_path / "demo"
    directory.mkdir()
    (directory / "recipe.toml").write_text(RECIPE)
    (directory / "a.conf.j2").write_text(TEMPLATE)
    return directory


def render_file(directory: Path, index: int) -> str:
    recipe = load_recipe(directory)
    board = find_board("qemu-virt-arm64", PROJECT.boards_dir)
    context = template_context(recipe, resolve_settings(recipe, {}), board, {"root": ROOT_USER})
    item = recipe.files[index]
    return render(
        recipe, context, template=item.template, content=item.content, what=f"file[{index}]"
    )


def test_undefined_in_a_template_file_names_its_line(demo: Path) -> None:
    with pytest.raises(UserError) as info:
        render_file(demo, 0)
    assert str(info.value) == (
        f"{demo / 'a.conf.j2'}:3: file[0]: undefined: 'dict object' has no attribute 'port'"
    )


def test_undefined_in_inline_content_names_the_recipe_line(demo: Path) -> None:
    with pytest.raises(UserError) as info:
        render_file(demo, 1)
    line = line_of(RECIPE, "settings.domian")
    assert str(info.value).startswith(f"{demo / 'recipe.toml'}:{line}: file[1].content: undefined:")
    with pytest.raises(UserError) as info:
        render_file(demo, 2)
    line = line_of(RECIPE, "{{ nope }}")
    assert str(info.value) == (
        f"{demo / 'recipe.toml'}:{line}: file[2].content: undefined: 'nope' is undefined"
    )


def test_undefined_in_a_probe_fails_the_recipe_load(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    directory.mkdir()
    text = RECIPE.split("[[file]]")[0] + (
        '[[probe]]\nkind = "http"\nport = 80\ncontains = "{{ settings.domain }}"\n\n'
        '[[probe]]\nkind = "tcp"\nport = 80\nparams = { who = "{{ settings.hostnme }}" }\n'
    )
    (directory / "recipe.toml").write_text(text)
    with pytest.raises(UserError) as info:
        load_recipe(directory)
    line = line_of(text, "hostnme")
    assert str(info.value) == (
        f"{directory / 'recipe.toml'}:{line}: probe[1].params.who: "
        "undefined: 'dict object' has no attribute 'hostnme'"
    )


def test_undefined_in_a_manifest_probe_is_one_line() -> None:
    from dataclasses import replace

    manifest = replace(
        MANIFEST, probes=[{"kind": "http", "port": 80, "contains": "{{ settings.gone }}"}]
    )
    with pytest.raises(UserError) as info:
        probes_from_manifest(manifest, {"hostname": "x"})
    assert str(info.value) == (
        "manifest.json:1: probe[0].contains: undefined: 'dict object' has no attribute 'gone'"
    )


def test_a_syntax_error_names_its_line(demo: Path) -> None:
    (demo / "a.conf.j2").write_text("ok\n{% if %}\n")
    with pytest.raises(UserError) as info:
        render_file(demo, 0)
    assert str(info.value).startswith(f"{demo / 'a.conf.j2'}:2: file[0]: template error:")
