"""`publish --to git`: one commit per release in a real temporary git repository."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from appliancekit.errors import UserError
from appliancekit.publish.git import publish_git
from tests.test_publish_support import cli_inprocess, make_image, needs_disk_tools

pytestmark = needs_disk_tools


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "deploy"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Deploy Bot")
    git(path, "config", "user.email", "deploy@example.org")
    (path / "README").write_text("deployments\n")
    git(path, "add", "README")
    git(path, "commit", "-q", "-m", "init")
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("git")
    return {
        "v1": make_image(base / "v1", name="syn-git", board="rpi4", seed=31, data_mib=16),
        "v2": make_image(base / "v2", name="syn-git", board="rpi4", seed=32, data_mib=16),
    }


def commits(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def test_one_commit_per_release_and_none_for_a_republish(
    cli: Any, repo: Path, images: dict[str, Path]
) -> None:
    proc = cli("publish", str(images["v1"]), "--to", "git", "--repo", str(repo), "--json")
    assert proc.returncode == 0, proc.stderr
    first = json.loads(proc.stdout)
    assert first["committed"] and first["artefacts"] and first["directory"] == "synthetic/rpi4"
    sha = first["image_sha256"]
    assert commits(repo) == 2
    message = git(repo, "log", "-1", "--format=%B")
    assert "synthetic" in message and "rpi4" in message and sha in message
    assert git(repo, "log", "-1", "--format=%an") == "Deploy Bot"
    files = git(repo, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert sorted(files) == sorted(
        f"synthetic/rpi4/{n}"
        for n in (
            "SHA256SUMS",
            "manifest.json",
            "release.json",
            "syn-git.img.bmap",
            "syn-git.img.zst",
            # what update agents range-read (publish/update.py)
            "update/update.json",
            "update/root.img",
            "update/root.img.chunks",
        )
    )
    release = json.loads((repo / "synthetic/rpi4/release.json").read_text())
    assert release["image_sha256"] == sha and release["artefacts_included"]
    check = subprocess.run(
        ["sha256sum", "-c", "--ignore-missing", "SHA256SUMS"],
        cwd=repo / "synthetic/rpi4",
        capture_output=True,
    )
    assert check.returncode == 0

    again = publish_git(images["v1"], repo)
    assert not again.committed and again.commit == first["commit"] and commits(repo) == 2

    newer = publish_git(images["v2"], repo)
    assert newer.committed and commits(repo) == 3 and newer.image_sha256 != sha
    assert newer.image_sha256 in git(repo, "log", "-1", "--format=%B")


def test_a_device_polling_during_a_publish_reads_one_whole_release(
    repo: Path, images: dict[str, Path]
) -> None:
    """The release directory is swapped in whole: a reader of the served tree never finds
    SHA256SUMS missing or half-written, and sees v1's sums until it sees v2's."""
    publish_git(images["v1"], repo)
    sums = repo / "synthetic/rpi4/SHA256SUMS"
    v1 = sums.read_text()
    stop = threading.Event()
    seen: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            try:
                seen.append(sums.read_text())
            except FileNotFoundError:
                seen.append("missing")

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        publish_git(images["v2"], repo)
    finally:
        stop.set()
        reader.join()
    v2 = sums.read_text()
    seen.append(v2)
    assert v2 != v1 and set(seen) <= {v1, v2} and seen[0] == v1
    assert seen.index(v2) == len(seen) - seen[::-1].index(v1)  # v1 until the swap, then v2
    assert sorted(p.name for p in (repo / "synthetic").iterdir()) == ["rpi4"]  # nothing aside
    assert oct((repo / "synthetic/rpi4").stat().st_mode & 0o777) == "0o755"


def test_large_images_commit_only_the_manifest_and_hashes(
    repo: Path, images: dict[str, Path]
) -> None:
    result = publish_git(images["v1"], repo, max_artifact_bytes=0)
    assert result.committed and not result.artefacts
    assert "syn-git.img.zst" not in result.files and "manifest.json" in result.files
    assert "not included" in git(repo, "log", "-1", "--format=%B")
    # raising the limit later adds the artefact in a new commit
    assert publish_git(images["v2"], repo).artefacts


def test_only_the_release_directory_is_committed(repo: Path, images: dict[str, Path]) -> None:
    (repo / "unrelated.txt").write_text("work in progress\n")
    git(repo, "add", "unrelated.txt")
    publish_git(images["v1"], repo)
    assert "unrelated.txt" not in git(repo, "show", "--name-only", "--format=", "HEAD")
    assert "A  unrelated.txt" in git(repo, "status", "--porcelain")


def test_works_without_a_configured_identity(
    tmp_path: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
    ):
        monkeypatch.delenv(var, raising=False)
    bare = tmp_path / "fresh"
    bare.mkdir()
    git(bare, "init", "-q")
    result = publish_git(images["v1"], bare)
    assert result.committed and commits(bare) == 1


def test_refuses_a_path_that_is_not_a_repository(
    cli: Any, tmp_path: Path, images: dict[str, Path]
) -> None:
    with pytest.raises(UserError, match="not a git work tree"):
        publish_git(images["v1"], tmp_path)
    proc = cli("publish", str(images["v1"]), "--to", "git", "--repo", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    result = cli_inprocess("publish", str(images["v1"]), "--to", "git")
    assert result.exit_code == 2 and "--repo" in result.stderr
