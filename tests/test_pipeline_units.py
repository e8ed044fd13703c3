"""Fast tests of the pure pieces of the pipeline: run files, apt output parsing, module
dependencies, the generated init script."""

from __future__ import annotations

import subprocess
import subprocess as sp
from pathlib import Path

import pytest

from appliancekit import supervisor
from appliancekit.board import find_board
from appliancekit.boot.initramfs import render_init
from appliancekit.boot.kmod import _dependencies
from appliancekit.recipe import Service, User
from appliancekit.sources.debian import (
    DebPackage,
    _deb822_stanzas,
    _parse_simulated_installs,
    _update_problem,
    select_kernel_packages,
)

from .conftest import PROJECT

WWW = User("www-data", 33, 33)


def test_run_script_runs_service_as_its_user() -> None:
    service = Service(
        "web",
        ("/usr/sbin/nginx", "-g", "daemon off;"),
        user="www-data",
        environment=(("LANG", "C.UTF-8"),),
        working_directory="/srv",
    )
    script = supervisor.run_script(service, {"www-data": WWW})
    lines = script.splitlines()
    assert lines[0] == f"#!{supervisor.EXECLINEB} -P"
    assert f'{supervisor.EXPORT} "LANG" "C.UTF-8"' in lines
    assert f'{supervisor.CD} "/srv"' in lines
    assert f"{supervisor.APPLYUIDGID} -u 33 -g 33 -G 33" in lines
    assert lines[-1] == '"/usr/sbin/nginx" "-g" "daemon off;"'


def test_run_script_quotes_execline_specials() -> None:
    service = Service("x", ("/bin/x", 'say "hi" \\ ${HOME} { }'))
    assert (
        supervisor.run_script(service, {}).splitlines()[-1]
        == '"/bin/x" "say \\"hi\\" \\\\ ${HOME} { }"'
    )


def test_setup_commands_run_once_with_creates() -> None:
    service = Service(
        "db", ("/usr/sbin/db",), setup=(("/usr/bin/init-db", "/data/db"),), creates="/data/db/ok"
    )
    lines = supervisor.run_script(service, {}).splitlines()
    assert (
        lines[-3]
        == f'{supervisor.IFELSE} {{ {supervisor.ELTEST} -e "/data/db/ok" }} {{ "/usr/sbin/db" }}'
    )
    assert lines[-2] == f'{supervisor.IF} {{ "/usr/bin/init-db" "/data/db" }}'
    assert lines[-1] == '"/usr/sbin/db"'


def test_simulated_install_parsing() -> None:
    output = (
        "Inst libc6 (2.41-12 Debian:13.8/stable [arm64])\n"
        "Inst nginx [1.0] (1.26.3-3 Debian:13.8/stable [arm64]) []\n"
        "Conf libc6 (2.41-12 Debian:13.8/stable [arm64])\n"
        "Inst libfoo:arm64 (1.0 Debian:13.8/stable [arm64])\n"
    )
    assert _parse_simulated_installs(output) == [
        ("libc6", "2.41-12"),
        ("nginx", "1.26.3-3"),
        ("libfoo", "1.0"),
    ]


def test_deb822_stanzas_with_continuations() -> None:
    text = "Package: a\nVersion: 1\nDescription: x\n more\n\nPackage: b\nVersion: 2\n"
    stanzas = _deb822_stanzas(text)
    assert stanzas[0]["Description"] == "x\nmore" and stanzas[1]["Package"] == "b"


@pytest.mark.parametrize(
    ("stderr", "rc", "problem"),
    [
        ("", 0, ""),
        (
            "W: Failed to fetch http://x/InRelease  File has unexpected size (1 != 2). Mirror sync in progress?",
            0,
            "W: Failed to fetch",
        ),
        ("E: Some index files failed to download.", 100, "E: Some index files"),
        ("", 100, "exit code 100"),
    ],
)
def test_index_update_problems_are_detected(stderr: str, rc: int, problem: str) -> None:
    result = sp.CompletedProcess([], rc, stdout="", stderr=stderr)
    assert _update_problem(result).startswith(problem)


def test_kernel_selection_keeps_only_images() -> None:
    pkgs = [
        DebPackage(n, "1", "arm64", "0" * 64, 1, "f")
        for n in ("linux-image-arm64", "kmod", "linux-image-6.12-arm64")
    ]
    assert [p.name for p in select_kernel_packages(pkgs)] == [
        "linux-image-arm64",
        "linux-image-6.12-arm64",
    ]


def test_module_dependencies_include_pre_softdeps() -> None:
    info = {"depends": ["jbd2,mbcache,crc16"], "softdep": ["pre: crc32c post: foo"]}
    assert _dependencies(info) == ["jbd2", "mbcache", "crc16", "crc32c"]


def test_rendered_init_is_valid_shell() -> None:
    board = find_board("qemu-virt-arm64", PROJECT.boards_dir)
    script = render_init(board, "6.12.0-test", {"boot": 1, "root": 2, "verity": 3, "data": 4})
    assert "6.12.0-test" in script and "{{" not in script
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert "exec switch_root /newroot /usr/bin/s6-svscan /run/service" in script


def test_module_signature_stripping() -> None:
    from appliancekit.boot.kmod import SIGNATURE_MAGIC, strip_module_signature

    body = b"\x7fELF" + b"m" * 100
    signature = b"s" * 37
    info = bytes([0, 0, 2, 0, 0, 0, 0, 0]) + len(signature).to_bytes(4, "big")
    signed = body + signature + info + SIGNATURE_MAGIC
    assert strip_module_signature(signed) == body
    assert strip_module_signature(body) == body


def test_test_settings_must_be_per_device(tmp_path: Path) -> None:
    import shutil

    from appliancekit.errors import UserError
    from appliancekit.recipe import load_recipe

    recipe_dir = tmp_path / "homepage"
    shutil.copytree(PROJECT.recipes_dir / "homepage", recipe_dir)
    toml = recipe_dir / "recipe.toml"
    toml.write_text(toml.read_text() + '\n[test]\nsettings = { hostname = "t1" }\n')
    assert load_recipe(recipe_dir).test_settings == (("hostname", "t1"),)
    toml.write_text(toml.read_text().replace('hostname = "t1"', 'site = "/tmp"'))
    with pytest.raises(UserError, match="'site' is not a per-device setting") as err:
        load_recipe(recipe_dir)
    assert "test.settings.site" in str(err.value)
