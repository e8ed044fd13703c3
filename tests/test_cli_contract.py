"""The error contract, verb by verb: bad input exits 2 (a failing host tool 1) with exactly
one line on stderr, no traceback, and images/ left exactly as it was.

To cover a new verb, add rows to CASES; test_every_verb_has_a_row fails until there is one.
A row is (command path, arguments, exit code, text the line must contain). Arguments may use
{image} (a built Debian image directory), {nixos} (a NixOS-built one), {empty} (a directory
without a manifest), {broken} (an image directory whose manifest lacks a field) and {tmp}
(a scratch directory outside images/).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from appliancekit.cli import main
from appliancekit.disk import write_sha256sums
from appliancekit.errors import one_line_error

from .conftest import REPO
from .test_manifest import old_nixos_manifest
from .test_publish_support import make_image, needs_disk_tools


@dataclass(frozen=True)
class Case:
    verb: str  # command path, e.g. "cloud dns"
    args: tuple[str, ...]
    code: int
    needle: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.verb}:{' '.join(self.args)}"


def case(verb: str, *args: str, code: int = 2, needle: str = "", **env: str) -> Case:
    return Case(verb, (*verb.split(), *args), code, needle, env)


CASES = [
    case("build", "nosuch", "--board", "qemu-virt-arm64", needle="nosuch"),
    case("build", "homepage", "--board", "vax", needle="vax"),
    case("build", "homepage", "--board", "qemu-virt-arm64", "-s", "colour=blue", needle="colour"),
    case("build", "homepage", "--board", "qemu-virt-arm64", "-s", "site", needle="site"),
    case("build", "homepage", needle="--board"),
    case("build", "homepage", "-b", "rpi4", "--backend", "gentoo", needle="gentoo"),
    case("test", "nosuch", "-b", "rpi4", needle="nosuch"),
    case("test", "homepage", "-b", "rpi4", "--disk", "{tmp}/none.img", needle="none.img"),
    case("test", "pixelfed", "-b", "rpi4", "--backend", "debian", needle="appliance.backend"),
    case("run", "homepage", "-b", "vax", needle="vax"),
    case("run", "homepage", "-b", "rpi4", "-s", "site={tmp}/none", needle="site"),
    case("list", "things", needle="things"),
    case("list", needle="recipes"),
    case("inspect", "{tmp}/none", needle="none"),
    case("inspect", "{empty}", needle="no manifest.json"),
    case("inspect", "{broken}", needle="disk.sha256"),
    case("inspect", "{image}", "--bogus", needle="--bogus"),
    case("doctor", "--bogus", needle="--bogus"),
    case("doctor", "extra", needle="extra"),
    case("publish", "{empty}", "--to", "sdcard", needle="no manifest.json"),
    case("publish", "{image}", "--to", "nowhere", needle="nowhere"),
    case("publish", "{image}", "--to", "git", needle="--repo"),
    case("publish", "{image}", "--to", "ec2", needle="--region"),
    case("publish", "{image}", "--to", "sdcard", "--out", "/proc/release", needle="/proc"),
    case("publish", "{broken}", "--to", "sdcard", needle="disk.sha256"),
    case("flash", "{image}", "/proc/x.img", needle="/proc/x.img"),
    case("flash", "{tmp}/none", "{tmp}/card.img", needle="none"),
    case("flash", "{image}", "{tmp}/card.img", "-s", "novalue", needle="novalue"),
    case("flash", "{nixos}", "{tmp}/card.img", "-s", "hostname=a", needle="pixelfed-rpi4"),
    case("flash", "{image}", "{tmp}", needle="{tmp}"),
    # a host tool that is not there: exit 1, naming the package to install
    case("flash", "{image}", "{tmp}/card.img", "-s", "hostname=a", code=1, needle="mtools",
         PATH="{tmp}/no-bin"),
    case("nixos-flake", "nosuch", "--board", "rpi4", "--out", "{tmp}/flake", needle="nosuch"),
    case("nixos-flake", "pixelfed", "--board", "vax", "--out", "{tmp}/flake", needle="vax"),
    case("nixos-flake", "pixelfed", "--board", "rpi4", needle="--out"),
    case("audit", "{empty}", needle="no manifest.json"),
    case("audit", "{image}", "--check", "no-such-check", needle="no-such-check"),
    case("audit", "{image}", "--boot", "--check", "setuid", needle="--boot"),
    case("audit", "{empty}", "--boot", needle="no manifest.json"),
    case("deploy", "nosuch", needle="nosuch"),
    case("user-data", "{empty}", needle="no manifest.json"),
    case("user-data", "{image}", "-s", "novalue", needle="novalue"),
    case("lock", "nosuch", needle="nosuch"),
    case("release", "--recipe", "nosuch", needle="nosuch"),
    case("verify-release", "{empty}", needle="manifest"),
    case("keygen", "--bogus", needle="--bogus"),
    case("cloud build", "nosuch", needle="nosuch"),
    case("cloud test", "nosuch", needle="nosuch"),
    case("cloud run", "nosuch", needle="nosuch"),
    case("cloud audit", "nosuch", needle="nosuch"),
    case("cloud list", "--bogus", needle="--bogus"),
    case("cloud dns", "nosuch", needle="nosuch"),
    case("swarm members", "--node", "ftp://node", needle="--node"),
    case("swarm ls", "--node", "node:http", needle="--node"),
    case("swarm deploy", "{tmp}/none", "--node", "127.0.0.1:9", needle="none"),
    case("swarm unpin", "bafy", needle="--node"),
    case("swarm tui", "--node", "ftp://node", needle="--node"),
    case("panel", needle="--password-file"),  # no password yet, and no terminal to ask on
    case("panel", "--password-file", "{tmp}/none", needle="none"),
    case("panel", "--port", "70000", needle="70000"),
    case("panel", "--sign-key", "{tmp}/none.key", needle="none.key"),
]  # fmt: skip


def leaf_commands(group: click.Group, prefix: str = "") -> Iterator[str]:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from leaf_commands(command, f"{path} ")
        else:
            yield path


def test_every_verb_has_a_row() -> None:
    covered = {c.verb for c in CASES}
    missing = sorted(set(leaf_commands(main)) - covered)
    assert not missing, f"add rows for {missing} to CASES in {Path(__file__).name}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A project (recipes, boards, clouds) whose images/ holds a Debian-built image (synthetic,
    made with the real disk code), a NixOS-built one, an empty and a broken directory."""
    root = tmp_path_factory.mktemp("contract")
    project = root / "project"
    for name in ("recipes", "boards", "clouds"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, project / name)
    images = project / "images"
    image = make_image(images / "synthetic-qemu-virt-arm64")
    nixos = images / "pixelfed-rpi4"
    nixos.mkdir()
    disk = bytes(1 << 20)
    (nixos / "disk.img").write_bytes(disk)
    (nixos / "manifest.json").write_text(json.dumps(old_nixos_manifest(disk)))
    write_sha256sums(nixos, ["disk.img", "manifest.json"])
    empty = images / "empty"
    empty.mkdir()
    broken = images / "broken"
    shutil.copytree(image, broken)
    data = json.loads((broken / "manifest.json").read_text())
    del data["disk"]["sha256"]
    (broken / "manifest.json").write_text(json.dumps(data))
    tmp = root / "scratch"
    tmp.mkdir()
    return {
        "project": project,
        "images": images,
        "image": image,
        "nixos": nixos,
        "empty": empty,
        "broken": broken,
        "tmp": tmp,
    }


def snapshot(directory: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(directory)), p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
        for p in directory.rglob("*")
    )


@needs_disk_tools
@pytest.mark.parametrize("row", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line(row: Case, world: dict[str, Path]) -> None:
    places = {k: str(v) for k, v in world.items()}
    args = [a.format(**places) for a in row.args]
    env = {
        "APPLIANCEKIT_HOME": str(world["project"]),
        "APPLIANCEKIT_IMAGES": None,
        "AWS_REGION": None,
        "AWS_DEFAULT_REGION": None,
        **{k: v.format(**places) for k, v in row.env.items()},
    }
    before = snapshot(world["images"])
    result = CliRunner().invoke(main, args, env=env, prog_name="appliancekit")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == row.code, result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exc_info
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("appliancekit: error: ") and "Traceback" not in result.stderr
    assert row.needle.format(**places) in lines[0]
    assert snapshot(world["images"]) == before
    # a failed command leaves no half-written target either
    assert list(world["tmp"].iterdir()) == []


def test_debug_shows_the_traceback(world: dict[str, Path]) -> None:
    env = {"APPLIANCEKIT_HOME": str(world["project"])}
    result = CliRunner().invoke(main, ["--debug", "inspect", str(world["broken"])], env=env)
    assert result.exit_code == 2 and "Traceback" in result.stderr


def _raised(fn: object) -> BaseException:
    try:
        fn()  # type: ignore[operator]
    except BaseException as exc:  # noqa: BLE001 - the point is to look at it
        return exc
    raise AssertionError("nothing raised")


def test_a_template_error_names_the_template_file_and_line(tmp_path: Path) -> None:
    import jinja2

    (tmp_path / "site.conf").write_text("server {\n  listen {{ port }};\n  name {{ nmae }};\n}\n")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(tmp_path)), undefined=jinja2.StrictUndefined
    )
    exc = _raised(lambda: env.get_template("site.conf").render(port=80, name="x"))
    line, code = one_line_error(exc)  # type: ignore[misc]
    assert code == 2 and line.startswith(f"{tmp_path / 'site.conf'}:3: template: ")
    assert "nmae" in line
    (tmp_path / "bad.conf").write_text("a\n{% if %}\n")
    line, code = one_line_error(_raised(lambda: env.get_template("bad.conf")))  # type: ignore[misc]
    assert code == 2 and ":2: template: " in line


def test_host_failures_are_exit_1_and_bad_paths_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    failed = _raised(
        lambda: subprocess.run(
            [sys.executable, "-c", "import sys; sys.exit('first\\nlast words')"],
            check=True,
            capture_output=True,
            text=True,
        )
    )
    line, code = one_line_error(failed)  # type: ignore[misc]
    assert code == 1 and line.endswith("failed (exit 1): last words")
    missing_tool = _raised(lambda: subprocess.run(["mkfs.nosuchfs"], check=False))
    line, code = one_line_error(missing_tool)  # type: ignore[misc]
    assert code == 1 and line.startswith("mkfs.nosuchfs not found: install Debian package")
    line, code = one_line_error(_raised(lambda: (tmp_path / "none" / "x").read_text()))  # type: ignore[misc]
    assert code == 2 and line == f"{tmp_path / 'none' / 'x'}: No such file or directory"
    assert one_line_error(KeyError("size")) is None  # a bug keeps its traceback
