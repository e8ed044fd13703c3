"""The matrix appliance: Synapse from PyPI wheels on Debian's Python, sqlite on /data.

Fast tests: bad settings and an architecture PyPI has no wheels for fail in one line.
Slow tests (one build, two boots): the image holds the wheels (role "pypi" in the manifest,
pinned by the lock), bytecode instead of sources, no shell; the boot test registers a user
with the shared secret, posts in a room and backs up; a fresh disk restored from that backup
lets the same user read the room back."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from appliancekit.backup.host import host_tools
from appliancekit.backup.vm import Vm
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.manifest import load_manifest
from appliancekit.recipe import ProbeKind
from appliancekit.seal import list_erofs_paths
from appliancekit.sources import pypi

from .conftest import REPO, ApplianceCache, run_cli
from .restore_support import backup_then_restore
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
    assert not any("libncurses" in p for p in paths)
    # libreadline only as a library of the sqlite3 CLI, which [backup] brings for SQLite's
    # online backup of the database (Python's readline module is left out above)
    assert "/usr/bin/sqlite3" in paths or not any("libreadline" in p for p in paths)
    assert f"{SITE}/twisted/test" not in paths
    assert not any(p.startswith(f"{SITE}/PIL/_avif") for p in paths)
    # vendored libraries only as the ELF closure of what is kept
    assert any(p.startswith(f"{SITE}/pillow.libs/libjpeg") for p in paths)
    assert not any(p.startswith(f"{SITE}/pillow.libs/libavif") for p in paths)
    # the sqlite module and its library for the database on /data
    assert any(p.startswith("/usr/lib/python3.13/lib-dynload/_sqlite3") for p in paths)
    assert "/var/lib/synapse" in paths  # the link to /data/synapse


def server_keys(port: int) -> dict[str, object]:
    """The homeserver's signing keys as other servers fetch them (/_matrix/key/v2/server)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_matrix/key/v2/server", timeout=60) as r:
        return dict(json.load(r)["verify_keys"])


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_matrix_boots_posts_and_is_restored_on_a_fresh_disk(
    appliances: ApplianceCache, tmp_path: Path
) -> None:
    """The boot test with its second boot a restore (tests/restore_support.py): a client
    registers, makes a room and posts on the first machine, which backs up to restic's REST
    server on the host; on a fresh disk with restore=latest the same client logs in and reads
    the room's messages, the server signs with the same key, and Synapse only started once
    /data was back."""
    result = appliances.build("matrix", BOARD)
    secret = dict(result.manifest.extra["test_settings"])["registration_shared_secret"]
    tools = host_tools(REPO / "recipes", Cache(default_cache_dir()))
    client = {"user": "probe", "password": "probe-password-1", "room": "appliancekit-probe"}
    more = ["a second message", "and a third, after it"]

    def post_more(vm: Vm) -> dict[str, object]:
        for message in more:
            vm.probe(ProbeKind.MATRIX, 8008, action="post", secret=secret, message=message,
                     **client)  # fmt: skip
        return server_keys(vm.forwards[8008])

    def read_back(vm: Vm) -> tuple[list[str], dict[str, object]]:
        read = [
            vm.probe(ProbeKind.MATRIX, 8008, timeout=300, action="read", message=m, **client)
            for m in more
        ]
        return read, server_keys(vm.forwards[8008])

    run = backup_then_restore(
        result, BOARD, tools, tmp_path, on_first=post_more, on_restored=read_back, timeout=1200
    )
    failed = [f"{p.name}: {p.detail}" for p in run.probes if not p.ok]
    assert run.passed, f"{run.failure}\n{failed}"
    results = run.by_name()
    assert "HTTP 200" in results["client API"].detail
    posted = results["register, create a room, post"]
    assert posted.ok and "posted" in posted.detail and "@probe:" in posted.detail
    read = results["message survives the reboot (after restore)"]
    assert read.ok and "hello from the first boot" in read.detail
    assert "login" in read.detail  # how long Synapse's password check took (bcrypt)
    messages, keys = run.restored
    assert all("read" in m for m in messages), messages
    assert keys == run.first and keys, (run.first, keys)  # the signing key came back
    # federation over TLS with the certificate the acme service made (self-signed here)
    assert results["federation over TLS (8448)"].ok
    assert results["federation over TLS (8448) (after restore)"].ok
    assert "Synapse now listening on TCP port 8008" in run.first_serial
    # every backup succeeded, the first too, taken while the service was making its database
    assert "appliancekit: backup: FAILED" not in run.first_serial
    head = run.before_restore()
    assert f"restoring snapshot {run.snapshot} of" in head, head[-2000:]
    assert "synapse:" not in head  # no line of Synapse's before /data was back
    after = run.second_serial[len(head) :]
    assert "Synapse now listening on TCP port 8008" in after
    print(f"matrix: backed up in snapshot {run.snapshot}; restored: {messages}")
