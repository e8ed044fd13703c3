"""Locked builds, verify-release and the release command, on the session's homepage image.

Fast: a build with a lock never reaches apt. Slow (they reuse the session image and its
boot; times on the shared 2-core machine in the module's README section): verify-release
rebuilds it bit for bit and names the first differing file when a setting changed; the
release publishes it signed into a deploy repository, skips it on a rerun, and stops with
one line when a boot test fails.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from appliancekit.agent.packages import agent_lock_path
from appliancekit.board import find_board
from appliancekit.build import BuildPlan, debian_inputs, resolve_sources
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.digest import sha256_file
from appliancekit.errors import ToolError
from appliancekit.manifest import load_manifest
from appliancekit.output import Reporter
from appliancekit.project import Project
from appliancekit.publish.sdcard import publish_sdcard
from appliancekit.recipe import find_recipe, resolve_settings
from appliancekit.release.run import BOOT_TEST_RECORD, NOTES, ReleaseOptions, run_release
from appliancekit.release.signing import keygen, verify
from appliancekit.release.verify import first_tree_difference, verify_release
from appliancekit.sources.debian import AptSource
from appliancekit.sources.debian_lock import LockedSource, lock_path, read_lock

from .conftest import PROJECT, ApplianceCache


def _homepage_plan(images: Path) -> BuildPlan:
    recipe = find_recipe("homepage", PROJECT.recipes_dir)
    board = find_board("qemu-virt-arm64", PROJECT.boards_dir)
    return BuildPlan(recipe, board, resolve_settings(recipe, {}), images)


def test_a_build_with_a_lock_never_runs_apt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_apt(*args: object, **kwargs: object) -> object:
        raise AssertionError("apt ran although the recipe has a lock")

    monkeypatch.setattr(AptSource, "_apt", no_apt)
    monkeypatch.setattr(AptSource, "update", no_apt)
    plan = _homepage_plan(tmp_path)
    debian = debian_inputs(plan, Cache(tmp_path / "cache"), Reporter())
    assert isinstance(debian.target, LockedSource)
    assert isinstance(debian.for_arch("amd64"), LockedSource)
    sources = resolve_sources(plan, debian.target)
    lock = read_lock(lock_path(plan.recipe.directory, "trixie", "arm64"))
    assert set(sources.all()) <= set(lock.packages)


def test_first_tree_difference_names_the_first_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "etc/nginx").mkdir(parents=True)
        (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
        (root / "usr").mkdir()
    (a / "etc/nginx/nginx.conf").write_text("server_name _;\n")
    (b / "etc/nginx/nginx.conf").write_text("server_name example.org;\n")
    (b / "usr/extra").write_text("x")
    assert first_tree_difference(a, a) is None
    assert first_tree_difference(a, b) == "/etc/nginx/nginx.conf: content differs (15 and 25 bytes)"
    (b / "etc/nginx/nginx.conf").write_text("server_name _;\n")
    assert first_tree_difference(a, b) == "/usr/extra: only in the rebuilt image"


@pytest.mark.slow
def test_the_session_build_came_from_the_lock(homepage_image: Path) -> None:
    manifest = load_manifest(homepage_image)
    lock_file = lock_path(PROJECT.recipes_dir / "homepage", "trixie", "arm64")
    recorded = manifest.extra["debian_lock"]
    assert recorded["file"] == lock_file.name and recorded["sha256"] == sha256_file(lock_file)
    pinned = {(p.name, p.architecture): p for p in read_lock(lock_file).packages}
    # the update agent's packages (minisign) are pinned once for all recipes, in its own lock
    agent_pinned = {
        (p.name, p.architecture): p
        for p in read_lock(agent_lock_path("trixie", "arm64")).packages
    }
    debs = [p for p in manifest.packages if p["role"] != "pypi"]
    assert debs and any(p["role"] == "agent" for p in debs)
    for package in debs:
        locked = agent_pinned if package["role"] == "agent" else pinned
        lock_entry = locked[(package["name"], package["architecture"])]
        assert (lock_entry.version, lock_entry.sha256) == (package["version"], package["sha256"])


@pytest.mark.slow
def test_verify_release_rebuilds_bit_for_bit_and_names_a_difference(
    homepage_image: Path, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    publish_sdcard(homepage_image, release)
    cache = Cache(default_cache_dir())
    same = verify_release(release, PROJECT, cache, Reporter(), work=tmp_path)
    assert same.equal and same.inputs_equal and same.first_difference is None, same
    other = verify_release(
        release, PROJECT, cache, Reporter(), overrides={"server_name": "example.org"}, work=tmp_path
    )
    assert not other.equal and not other.inputs_equal
    assert other.first_difference is not None
    assert "/etc/nginx/nginx.conf: content differs" in other.first_difference


def _copy_image(source: Path, images: Path) -> Path:
    """A copy of a session image in another images/ (sparse; the session's stays as it is)."""
    images.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--sparse=always", str(source), str(images)], check=True)
    (images / source.name / BOOT_TEST_RECORD).unlink(missing_ok=True)
    return images / source.name


@pytest.fixture()
def deploy_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "deploy"
    repo.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.name", "Release Bot"],
        ["config", "user.email", "release@example.org"],
        ["commit", "-q", "--allow-empty", "-m", "deployments"],
    ):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    return repo


@pytest.mark.slow
def test_release_publishes_signed_and_resumes(
    appliances: ApplianceCache,
    deploy_repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session's homepage build and boot test stand in for the release's own (same
    inputs: the build is a no-op; the recorded pass is for the same sha256)."""
    report = appliances.boot("homepage", "qemu-virt-arm64")
    assert report.passed
    images = tmp_path / "images"
    image_dir = _copy_image(appliances.build("homepage", "qemu-virt-arm64").output_dir, images)
    sha = load_manifest(image_dir).disk.sha256
    (image_dir / BOOT_TEST_RECORD).write_text(json.dumps({"image_sha256": sha, "passed": True}))
    monkeypatch.setenv("APPLIANCEKIT_IMAGES", str(images))
    pair = keygen(tmp_path / "keys")
    options = ReleaseOptions(
        out=tmp_path / "releases",
        repo=deploy_repo,
        sign_key=pair.secret,
        recipes=("homepage",),
        boards=("qemu-virt-arm64",),
    )
    project = Project(PROJECT.root)
    [first] = run_release(project, Cache(default_cache_dir()), Reporter(), options)
    assert (first.image_sha256, first.built, first.sdcard, first.git) == (
        sha,
        False,
        "written",
        "committed",
    )
    published = deploy_repo / "homepage/qemu-virt-arm64"
    assert sha in verify(published / "SHA256SUMS", pair.public)
    assert (
        tmp_path / "releases/homepage-qemu-virt-arm64/homepage-qemu-virt-arm64.img.zst"
    ).exists()
    notes = (tmp_path / "releases" / NOTES).read_text()
    assert "## homepage" in notes and sha in notes
    assert set(first.seconds) == {"build", "boot_test", "publish"}
    assert all(seconds >= 0 for seconds in first.seconds.values())

    [again] = run_release(project, Cache(default_cache_dir()), Reporter(), options)
    assert (again.built, again.boot_tested, again.sdcard, again.git) == (
        False,
        False,
        "unchanged",
        "unchanged",
    )
    count = subprocess.run(
        ["git", "-C", str(deploy_repo), "rev-list", "--count", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert count == "2"


@pytest.mark.slow
def test_release_stops_at_a_failed_boot_test(
    appliances: ApplianceCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte flipped in the sealed root of a copy: verity refuses it at boot, the release
    stops with one line and publishes nothing."""
    source = appliances.build("homepage", "qemu-virt-arm64").output_dir
    images = tmp_path / "images"
    _copy_image(source, images)
    manifest = load_manifest(source)
    root = manifest.partition("ak-root-a")
    with open(images / source.name / "disk.img", "r+b") as disk:
        disk.seek(root.offset + 1024 + 8)  # the erofs superblock: read at mount
        byte = disk.read(1)
        disk.seek(-1, 1)
        disk.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setenv("APPLIANCEKIT_IMAGES", str(images))
    options = ReleaseOptions(
        out=tmp_path / "releases",
        recipes=("homepage",),
        boards=("qemu-virt-arm64",),
        boot_timeout=120,
    )
    with pytest.raises(ToolError) as err:
        run_release(Project(PROJECT.root), Cache(default_cache_dir()), Reporter(), options)
    line = str(err.value)
    assert "\n" not in line and "boot test failed" in line and "homepage-qemu-virt-arm64" in line
    assert not (tmp_path / "releases" / "homepage-qemu-virt-arm64").exists()
