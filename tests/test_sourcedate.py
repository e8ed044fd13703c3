"""sourcedate.py: the build's SOURCE_DATE_EPOCH from git commits and mtimes, with real git."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appliancekit.sourcedate import source_date_epoch

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")

COMMITTED = 1_700_000_000  # 2023-11-14 22:13:20 UTC
LATER = COMMITTED + 86_400


def git(repo: Path, *args: str, when: int = COMMITTED) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        # a committer zone far from UTC: %ct is UTC seconds whatever the zone
        "GIT_AUTHOR_DATE": f"{when - 3600} +0900",
        "GIT_COMMITTER_DATE": f"{when} +0900",
    }
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def write(path: Path, text: str, mtime: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


def make_repo(root: Path) -> Path:
    """A project whose recipe (with its site) was committed at COMMITTED; other history
    touching only other paths is newer."""
    root.mkdir()
    git(root, "init", "-q")
    write(root / "recipes/web/recipe.toml", "[appliance]\n", 5)
    write(root / "recipes/web/site/index.html", "<p>one</p>\n", 5)
    write(root / ".gitignore", "public/\n", 5)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "recipe")
    write(root / "README", "elsewhere\n", 5)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "unrelated", when=LATER + 1000)
    return root


def test_outside_git_the_newest_file_mtime(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write(site / "index.html", "x", COMMITTED)
    write(site / "css/a.css", "y", LATER)
    os.utime(site / "css", (LATER + 50, LATER + 50))  # directories do not count
    assert source_date_epoch([site]) == LATER
    write(site / "index.html", "z", LATER + 7)  # a new release of the content moves it
    assert source_date_epoch([site]) == LATER + 7
    # a copy that keeps mtimes has the same epoch
    shutil.copytree(site, tmp_path / "copy")
    assert source_date_epoch([tmp_path / "copy"]) == LATER + 7


@needs_git
def test_clean_git_path_the_commit_touching_it_not_mtimes_or_clones(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    recipe = repo / "recipes/web"
    os.utime(recipe / "recipe.toml")  # touched now: content unchanged, so still clean
    assert source_date_epoch([recipe]) == COMMITTED
    clone = tmp_path / "elsewhere/clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert source_date_epoch([clone / "recipes/web"]) == COMMITTED
    # through a symlinked path, as git sees its own real top
    (tmp_path / "link").symlink_to(clone)
    assert source_date_epoch([tmp_path / "link/recipes/web"]) == COMMITTED


@needs_git
def test_uncommitted_untracked_and_ignored_files_count_by_mtime(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    recipe = repo / "recipes/web"
    # edited but not committed: same size, so only a new mtime tells caches apart
    write(recipe / "site/index.html", "<p>two</p>\n", LATER)
    assert source_date_epoch([recipe]) == LATER
    git(repo, "commit", "-q", "-am", "two", when=LATER + 100)
    assert source_date_epoch([recipe]) == LATER + 100
    write(recipe / "site/new.html", "new\n", LATER + 200)  # untracked
    assert source_date_epoch([recipe]) == LATER + 200
    public = write(repo / "public/index.html", "generated\n", LATER + 300)  # ignored
    assert source_date_epoch([public.parent]) == LATER + 300
    # the epoch of a build is the newest over its inputs
    assert source_date_epoch([recipe, public.parent]) == LATER + 300
    assert source_date_epoch([]) == 0
