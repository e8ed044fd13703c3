"""Fast tests of the pure pieces of the pipeline: run files, apt output parsing, module
dependencies, the generated init script."""

from __future__ import annotations

import subprocess
import subprocess as sp
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliancekit import supervisor
from appliancekit.board import find_board
from appliancekit.boot.initramfs import render_init
from appliancekit.boot.kmod import _dependencies
from appliancekit.cache import Cache
from appliancekit.errors import ToolError
from appliancekit.recipe import Service, User
from appliancekit.slots import PARTITION_NUMBERS
from appliancekit.sources.debian import (
    AptSource,
    DebPackage,
    _deb822_stanzas,
    _parse_simulated_installs,
    _update_problems,
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
        ("E: Some index files failed to download.", 100, "exit code 100"),
        ("E: The repository is not signed.", 100, "E: The repository"),
        ("", 100, "exit code 100"),
    ],
)
def test_index_update_problems_are_detected(stderr: str, rc: int, problem: str) -> None:
    result = sp.CompletedProcess([], rc, stdout="", stderr=stderr)
    found = _update_problems(result)
    assert (found[0] if found else "").startswith(problem)


@dataclass(frozen=True)
class _ScriptedApt(AptSource):
    """apt-get update answering with a fixed stderr (the mirror's behaviour is the input)."""

    stderr: str = ""

    def _apt(self, args, cwd=None):  # type: ignore[no-untyped-def]
        return sp.CompletedProcess(args, 100, stdout="", stderr=self.stderr)


def _scripted(tmp_path: Path, stderr: str, *, suite_index: bool) -> AptSource:
    apt = _ScriptedApt(Cache(tmp_path), "bookworm", "armhf", stderr=stderr)
    apt.prepare()
    if suite_index:
        lists = apt.root / "state/lists"
        (lists / "deb.debian.org_debian_dists_bookworm_main_binary-armhf_Packages").write_text("")
    return apt


MISMATCH = (
    "Err:4 http://deb.debian.org/debian-security {dist}/main armhf Packages\n"
    "E: Failed to fetch http://deb.debian.org/debian-security/dists/{dist}/main/binary-armhf/"
    "Packages.xz  File has unexpected size (334084 != 349884). Mirror sync in progress?"
)


def test_unverifiable_security_index_is_recorded_not_fatal(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("appliancekit.sources.debian.time.sleep", lambda s: None)
    apt = _scripted(tmp_path, MISMATCH.format(dist="bookworm-security"), suite_index=True)
    assert apt.update()
    assert apt.missing_indexes() == MISMATCH.format(dist="bookworm-security").splitlines()


@pytest.mark.parametrize(
    ("dist", "suite_index"),
    [("bookworm", True), ("bookworm-security", False), ("trixie-security", True)],
)
def test_unverifiable_suite_index_is_fatal(
    tmp_path: Path, monkeypatch, dist: str, suite_index: bool
) -> None:
    monkeypatch.setattr("appliancekit.sources.debian.time.sleep", lambda s: None)
    apt = _scripted(tmp_path, MISMATCH.format(dist=dist), suite_index=suite_index)
    with pytest.raises(ToolError, match="Mirror sync in progress"):
        apt.update()
    assert apt.missing_indexes() == []


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
    script = render_init(board, "6.12.0-test", PARTITION_NUMBERS)
    assert "6.12.0-test" in script and "{{" not in script
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert "exec switch_root /newroot /usr/bin/s6-svscan /run/service" in script


def test_the_clock_never_starts_before_the_release_was_built() -> None:
    """A Pi 4 has no RTC: without the floor its services saw 1970 and rspamd skipped every
    DKIM signature and ARC seal as from the future (mailserver on rpi4's boot test)."""
    from appliancekit.boot.initramfs import APPLETS
    from appliancekit.rootfs import CLOCK_FLOOR_FILE

    board = find_board("rpi4", PROJECT.boards_dir)
    script = render_init(board, "6.12.0-test", PARTITION_NUMBERS)
    floor = script.index(f"read -r floor < /newroot{CLOCK_FLOOR_FILE}")
    assert script.index("mount -t erofs -o ro /dev/dm-0 /newroot") < floor
    assert floor < script.index('date -s "@$floor"') < script.index("exec switch_root")
    assert "date" in APPLETS


def test_the_clock_never_starts_before_the_time_saved_on_data() -> None:
    """The agent keeps the time on /data (agent.json's saved_clock); the initramfs reads the
    same file, while /data is still its own mount, and takes the later of it and the floor."""
    from appliancekit.agent.install import agent_config
    from appliancekit.recipe import load_recipe
    from appliancekit.rootfs import DATA_MOUNT, SAVED_CLOCK

    board = find_board("rpi4", PROJECT.boards_dir)
    script = render_init(board, "6.12.0-test", PARTITION_NUMBERS)
    saved = script.index(f'saved=$(date -r "$DATA/{SAVED_CLOCK}" +%s')
    assert script.index("mount -t ext4") < saved < script.index("mount --move $DATA")
    assert saved < script.index('date -s "@$saved"') < script.index('date -s "@$floor"')
    assert '[ "$saved" -gt "${floor:-0}" ]' in script
    recipe = load_recipe(PROJECT.recipes_dir / "homepage" / "recipe.toml")
    assert agent_config(recipe, board, None, 1)["saved_clock"] == f"{DATA_MOUNT}/{SAVED_CLOCK}"


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
