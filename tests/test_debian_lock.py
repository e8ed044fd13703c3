"""Debian locks: the file format, building from a lock without apt (pool files fetched from
a real HTTP server on loopback and verified), the one-line error for a version the mirror
no longer has, the diff, and the committed locks' completeness for the release matrix."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.build import resolve_recipe_sources
from appliancekit.cache import Cache
from appliancekit.errors import ToolError, UserError
from appliancekit.recipe import find_recipe
from appliancekit.release.matrix import debian_matrix
from appliancekit.sources import pypi
from appliancekit.sources.debian import DebPackage, Mirrors
from appliancekit.sources.debian_lock import (
    Closure,
    DebianLock,
    LockedSource,
    RecordingSource,
    diff_locks,
    format_lock,
    lock_from,
    lock_path,
    read_lock,
)

from .conftest import PROJECT


def _deb(name: str, version: str, data: bytes, *, security: bool = False) -> DebPackage:
    pool = "pool/updates/main" if security else "pool/main"
    return DebPackage(
        name=name,
        version=version,
        architecture="arm64",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        filename=f"{pool}/{name[0]}/{name}/{name}_{version}_arm64.deb",
        installed_size=4096,
    )


def _lock(*packages: DebPackage, request: tuple[str, ...] = ("tool",)) -> DebianLock:
    return DebianLock(
        suite="trixie",
        arch="arm64",
        boards=("qemu-virt-arm64",),
        snapshot="20261130T120000Z",
        release=(("trixie", "Sat, 21 Nov 2026 09:15:44 UTC"),),
        closures=(
            Closure("arm64", request, tuple(sorted((p.name, p.architecture) for p in packages))),
        ),
        packages=tuple(sorted(packages)),
    )


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on loopback, laid out like an archive."""
    root = tmp_path / "archive"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/debian"
    finally:
        server.shutdown()
        server.server_close()


def _publish(root: Path, package: DebPackage, data: bytes, archive: str = "debian") -> None:
    target = root / archive / package.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def test_lock_round_trips_through_its_file(tmp_path: Path) -> None:
    lock = _lock(_deb("tool", "1.0-1", b"tool"), _deb("libc6", "2.41-12", b"libc"))
    path = tmp_path / "debian-trixie-arm64.lock"
    path.write_text(format_lock(lock))
    assert read_lock(path) == lock
    assert lock.closure("arm64", ["tool", "tool"]) == sorted(lock.packages)
    assert lock.closure("arm64", ["other"]) is None
    assert lock.closure("amd64", ["tool"]) is None


def _without_stanza(text: str, head: str) -> str:
    start = text.index(head)
    return text[:start] + text[start:].split("\n\n", 1)[1]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda t: t.replace('sha256 = "', 'sha256 = "zz', 1), "package[0].sha256"),
        (lambda t: t.replace('filename = "pool/', 'filename = "/etc/', 1), "package[0].filename"),
        (lambda t: _without_stanza(t, '[[package]]\nname = "libc6"'), "closure[0].packages"),
        (lambda t: t.replace("format = 1", "format = 9"), "format"),
        (
            lambda t: t.replace('snapshot = "20261130T120000Z"', 'snapshot = "yesterday"'),
            "snapshot",
        ),
    ],
)
def test_malformed_lock_is_one_line_naming_file_and_field(
    tmp_path: Path, edit: object, field: str
) -> None:
    lock = _lock(_deb("tool", "1.0-1", b"tool"), _deb("libc6", "2.41-12", b"libc"))
    path = tmp_path / "debian-trixie-arm64.lock"
    path.write_text(edit(format_lock(lock)))  # type: ignore[operator]
    with pytest.raises(UserError) as err:
        read_lock(path)
    line = str(err.value)
    assert "\n" not in line and str(path) in line and field in line, line
    assert "appliancekit lock" in line


def test_locked_build_fetches_pool_files_and_verifies_them(
    tmp_path: Path, mirror: tuple[Path, str]
) -> None:
    root, url = mirror
    tool = _deb("tool", "1.0-1", b"tool bytes")
    fix = _deb("libfix", "2.0-1+deb13u1", b"security fix", security=True)
    _publish(root, tool, b"tool bytes")
    _publish(root, fix, b"security fix", archive="debian-security")
    lock = _lock(tool, fix)
    cache = Cache(tmp_path / "cache")
    mirrors = Mirrors(url, url.replace("/debian", "/debian-security"))
    source = LockedSource(lock, tmp_path / "x.lock", cache, "arm64", mirrors)
    resolved = source.resolve(["tool"])
    fetched = source.fetch(resolved)
    assert [f.path.read_bytes() for f in fetched] == [b"security fix", b"tool bytes"]
    assert source.missing_indexes() == []


def test_a_pool_file_with_other_bytes_is_refused(tmp_path: Path, mirror: tuple[Path, str]) -> None:
    root, url = mirror
    tool = _deb("tool", "1.0-1", b"tool bytes")
    _publish(root, tool, b"tool bytez")
    cache = Cache(tmp_path / "cache")
    source = LockedSource(_lock(tool), tmp_path / "x.lock", cache, "arm64", Mirrors(url, url))
    with pytest.raises(ToolError, match="the lock pins"):
        source.fetch([tool])
    assert not cache.deb_path(tool.sha256).exists()


def test_a_version_the_mirror_dropped_names_it_and_the_snapshot_to_build_from(
    tmp_path: Path, mirror: tuple[Path, str]
) -> None:
    _, url = mirror
    tool = _deb("tool", "1.0-1", b"tool bytes")
    lock_file = tmp_path / "homepage" / "debian-trixie-arm64.lock"
    source = LockedSource(_lock(tool), lock_file, Cache(tmp_path / "c"), "arm64", Mirrors(url))
    with pytest.raises(UserError) as err:
        source.fetch([tool])
    line = str(err.value)
    assert "\n" not in line
    assert "tool 1.0-1" in line and str(lock_file) in line
    assert "--mirror <snapshot-archive>/archive/debian/20261130T120000Z/" in line


def test_a_set_the_lock_lacks_is_an_error_not_a_resolution(tmp_path: Path) -> None:
    lock_file = tmp_path / "homepage" / "debian-trixie-arm64.lock"
    source = LockedSource(_lock(_deb("tool", "1", b"t")), lock_file, Cache(tmp_path), "arm64")
    with pytest.raises(UserError, match=r"appliancekit lock homepage --update"):
        source.resolve(["tool", "new-package"])


def test_snapshot_mirror_brings_its_security_twin() -> None:
    mirrors = Mirrors.from_option("http://snap.example/archive/debian/20261130T120000Z/")
    assert mirrors.security == "http://snap.example/archive/debian-security/20261130T120000Z"
    assert mirrors.url_for("pool/updates/main/n/nginx/x.deb").startswith(mirrors.security)
    assert mirrors.url_for("pool/main/n/nginx/x.deb").startswith(mirrors.debian)
    with pytest.raises(UserError):
        Mirrors.from_option("snap.example/archive")


class _FakeApt:
    def __init__(self, closures: dict[tuple[str, ...], list[DebPackage]]) -> None:
        self.closures = closures

    def resolve(self, packages: object) -> list[DebPackage]:
        return self.closures[tuple(sorted(set(packages)))]  # type: ignore[arg-type]

    def fetch(self, packages: object) -> list[object]:
        raise AssertionError("locking never downloads")

    def missing_indexes(self) -> list[str]:
        return []


def test_diff_names_old_and_new_versions_and_security_updates() -> None:
    old_tool, libc = _deb("tool", "1.0-1", b"a"), _deb("libc6", "2.41-12", b"c")
    new_tool = _deb("tool", "1.0-1+deb13u1", b"b", security=True)
    added = _deb("libnew", "3", b"n")

    def lock(*packages: DebPackage) -> DebianLock:
        recorder = RecordingSource(_FakeApt({("tool",): list(packages)}), "arm64")
        recorder.resolve(["tool"])
        return lock_from("trixie", "arm64", ["b"], "20261130T120000Z", {}, [recorder])

    changes = diff_locks(lock(old_tool, libc), lock(new_tool, libc, added))
    assert [(c.name, c.old, c.new, c.security) for c in changes] == [
        ("libnew", None, "3", False),
        ("tool", "1.0-1", "1.0-1+deb13u1", True),
    ]
    assert changes[1].line() == "tool:arm64  1.0-1 -> 1.0-1+deb13u1  [security]"
    assert diff_locks(lock(libc), lock(libc)) == []


MATRIX = debian_matrix(PROJECT.recipes_dir, PROJECT.boards_dir)


@pytest.mark.parametrize("entry", MATRIX, ids=[f"{e.recipe}-{e.board}" for e in MATRIX])
def test_every_shipped_recipe_and_board_has_a_complete_lock(entry: object, tmp_path: Path) -> None:
    """What a build asks for is all in the committed lock: building from it resolves nothing."""
    recipe = find_recipe(entry.recipe, PROJECT.recipes_dir)  # type: ignore[attr-defined]
    board = find_board(entry.board, PROJECT.boards_dir)  # type: ignore[attr-defined]
    suite = recipe.debian.suite or board.suite
    path = lock_path(recipe.directory, suite, board.arch.value)
    assert path.exists(), f"no lock {path}: run `appliancekit lock {recipe.name}`"
    lock = read_lock(path)  # checks every closure's packages are pinned with sha256 and size
    assert board.name in lock.boards
    source = LockedSource(lock, path, Cache(tmp_path), board.arch.value)
    sources = resolve_recipe_sources(recipe, board, source)
    assert sources.root and sources.initramfs and sources.kernel
    if recipe.python is not None and recipe.python.bytecode:
        host = LockedSource(lock, path, Cache(tmp_path), pypi.host_arch())
        assert host.resolve(pypi.host_python_packages(recipe.python.version))
    assert format_lock(lock) == path.read_text(), "locks are written by `appliancekit lock`"


def test_matrix_leaves_out_boards_the_suite_builds_no_packages_for() -> None:
    """Debian builds no pdns for armhf: dns's lock says so, and the matrix skips it."""
    suite = find_board("cubieboard", PROJECT.boards_dir).suite
    lock = read_lock(lock_path(PROJECT.recipes_dir / "dns", suite, "armhf"))
    assert lock.unavailable and not lock.packages
    pairs = {(e.recipe, e.board) for e in MATRIX}
    assert ("dns", "cubieboard") not in pairs and ("dns", "rpi4") in pairs
