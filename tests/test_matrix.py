"""The matrix appliance: Synapse from PyPI wheels on Debian's Python, sqlite on /data.

Fast tests: bad settings and an architecture PyPI has no wheels for fail in one line.
Slow tests (one build, one boot with its reboot): the image holds the wheels (role "pypi" in
the manifest, pinned by the lock), bytecode instead of sources, no shell; the boot test
registers a user with the shared secret, posts in a room, reboots and reads it back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appliancekit.manifest import load_manifest
from appliancekit.seal import list_erofs_paths
from appliancekit.sources import pypi

from .conftest import REPO, ApplianceCache, run_cli
from .test_homepage import FORBIDDEN, extract_partition

BOARD = "qemu-virt-arm64"
SITE = "/usr/lib/python3/dist-packages"


def _one_line_failure(result, *needles: str) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return str(lines[0])


def test_malformed_server_name_fails_at_build_time() -> None:
    result = run_cli("build", "matrix", "--board", BOARD, "-s", "server_name=not a domain")
    _one_line_failure(result, "settings.server_name", "is not a domain name")


def test_empty_registration_secret_fails_at_build_time() -> None:
    result = run_cli("build", "matrix", "--board", BOARD, "-s", "registration_shared_secret=")
    _one_line_failure(result, "settings.registration_shared_secret", "non-empty")


def test_board_without_wheels_fails_before_downloading(tmp_path: Path) -> None:
    """armhf: PyPI has no armv7l wheel of Synapse (and 7 of its libraries)."""
    project = tmp_path / "project"
    shutil.copytree(REPO / "recipes", project / "recipes")
    (project / "boards").mkdir()
    board = (REPO / "boards" / f"{BOARD}.toml").read_text()
    board = board.replace(f'name = "{BOARD}"', 'name = "armhf-test"')
    board = board.replace('arch = "arm64"', 'arch = "armhf"')
    (project / "boards" / "armhf-test.toml").write_text(board)
    result = run_cli(
        "build", "matrix", "--board", "armhf-test", env={"APPLIANCEKIT_HOME": str(project)}
    )
    _one_line_failure(
        result, "python.lock", "no armv7l wheel of", "matrix-synapse 1.163.2", "armhf"
    )
    assert not (project / "images" / "matrix-armhf-test").exists()


@pytest.mark.slow
def test_matrix_image_holds_the_locked_wheels_as_bytecode(
    appliances: ApplianceCache, tmp_path: Path
) -> None:
    result = appliances.build("matrix", BOARD)
    manifest = load_manifest(result.output_dir)
    wheels = {p["name"]: p for p in manifest.packages if p.get("role") == "pypi"}
    locked = {
        w.name: w
        for w in pypi.read_lock(REPO / "recipes/matrix/python.lock").wheels
        if "arm64" in w.arches
    }
    assert set(wheels) == set(locked)
    assert wheels["matrix-synapse"]["sha256"] == locked["matrix-synapse"].sha256
    assert wheels["matrix-synapse"]["version"] == "1.163.2"
    assert wheels["matrix-synapse"]["size"] > 0
    assert any(p["name"] == "python3.13-minimal" for p in manifest.packages)

    paths = set(list_erofs_paths(extract_partition(result.output_dir, "ak-root-a", tmp_path / "r")))
    directories = {p.rsplit("/", 1)[0] for p in paths}
    # Synapse's web client files have a directory named "login": programs are what count
    programs = {p.rsplit("/", 1)[-1] for p in paths if p not in directories}
    assert not (FORBIDDEN & programs), FORBIDDEN & programs
    assert "/usr/bin/env" not in paths
    # modules ship compiled, without their sources (except the one kept on purpose)
    assert f"{SITE}/synapse/app/homeserver.pyc" in paths
    assert f"{SITE}/synapse/app/homeserver.py" not in paths
    assert f"{SITE}/multipart.py" in paths
    assert "/usr/lib/python3.13/os.pyc" in paths and "/usr/lib/python3.13/os.py" not in paths
    # left out: stdlib test suite, curses/readline, Twisted's tests, unused optional codecs
    assert not any(p.startswith("/usr/lib/python3.13/test/") for p in paths)
    assert not any(p.startswith("/usr/lib/python3.13/lib-dynload/readline") for p in paths)
    assert not any(p.startswith("/usr/lib/python3.13/lib-dynload/_curses") for p in paths)
    assert not any("libreadline" in p or "libncurses" in p for p in paths)
    assert f"{SITE}/twisted/test" not in paths
    assert not any(p.startswith(f"{SITE}/PIL/_avif") for p in paths)
    # vendored libraries only as the ELF closure of what is kept
    assert any(p.startswith(f"{SITE}/pillow.libs/libjpeg") for p in paths)
    assert not any(p.startswith(f"{SITE}/pillow.libs/libavif") for p in paths)
    # the sqlite module and its library for the database on /data
    assert any(p.startswith("/usr/lib/python3.13/lib-dynload/_sqlite3") for p in paths)
    assert "/var/lib/synapse" in paths  # the link to /data/synapse


@pytest.mark.slow
def test_matrix_boots_registers_posts_and_keeps_state(appliances: ApplianceCache) -> None:
    report = appliances.boot("matrix", BOARD)
    assert report.passed, f"{report.failure}\n{report.serial_tail}"
    results = {p.name: p for p in report.probes}
    assert "HTTP 200" in results["client API"].detail
    posted = results["register, create a room, post"]
    assert posted.ok and "posted" in posted.detail and "@probe:" in posted.detail
    read = results["message survives the reboot (after reboot)"]
    assert read.ok and "hello from the first boot" in read.detail
    assert "login" in read.detail  # how long Synapse's password check took (bcrypt)
    # federation over TLS with the certificate the acme service made (self-signed here)
    assert results["federation over TLS (8448)"].ok
    assert results["federation over TLS (8448) (after reboot)"].ok
    serial = Path(report.serial_log).read_text()
    assert "Synapse now listening on TCP port 8008" in serial
    assert report.boot_to_healthy is not None and report.boot_to_healthy > 0
