"""atomic.replace_dir: the one way builds, releases and cache entries are put in place."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from appliancekit.atomic import exchange, replace_dir
from appliancekit.errors import UserError


def _tree(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "file").write_text(text)
    return path


def test_new_target_and_missing_parents(tmp_path: Path) -> None:
    new = _tree(tmp_path / "new", "v1")
    target = tmp_path / "a" / "b" / "out"
    replace_dir(new, target)
    assert (target / "file").read_text() == "v1" and not new.exists()


@pytest.mark.parametrize("use_scratch", [False, True])
def test_replaces_old_tree_and_leaves_nothing_aside(tmp_path: Path, use_scratch: bool) -> None:
    target = _tree(tmp_path / "out", "old")
    (target / "only-in-old").write_text("x")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    replace_dir(_tree(tmp_path / "new", "new"), target, scratch=scratch if use_scratch else None)
    assert sorted(p.name for p in target.iterdir()) == ["file"]
    assert (target / "file").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "scratch"]
    assert list(scratch.iterdir()) == []


def test_refuses_to_replace_a_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("not a directory")
    new = _tree(tmp_path / "new", "v1")
    with pytest.raises(UserError, match="exists and is not a directory"):
        replace_dir(new, target)
    assert target.read_text() == "not a directory" and (new / "file").exists()


def test_exchange_swaps_two_trees(tmp_path: Path) -> None:
    a, b = _tree(tmp_path / "a", "A"), _tree(tmp_path / "b", "B")
    assert exchange(a, b)  # tmpfs and ext4 both support RENAME_EXCHANGE
    assert (a / "file").read_text() == "B" and (b / "file").read_text() == "A"


def test_a_reader_always_finds_a_tree(tmp_path: Path) -> None:
    """What a polling device needs from the deploy repository's server: while releases are
    replaced, the path always names a tree, the old one or the new one, never nothing (with
    two renames a reader could be answered 404 in between)."""
    target = _tree(tmp_path / "out", "0")
    stop = threading.Event()
    seen: list[str] = []
    missing: list[OSError] = []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append((target / "file").read_text())
            except FileNotFoundError as gone:
                missing.append(gone)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for version in range(1, 400):
            replace_dir(_tree(tmp_path / f"new{version}", str(version)), target)
    finally:
        stop.set()
        reader.join()
    assert len(set(seen)) > 1 and not missing
    assert (target / "file").read_text() == "399"


def test_a_tree_another_writer_put_there_meanwhile_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two parallel builds fill the same cache entry: the second finds no tree when it
    looks, and one when it renames. It replaces that tree instead of failing."""
    target = _tree(tmp_path / "out", "first writer")
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda p: False if p == target else real_exists(p))
    replace_dir(_tree(tmp_path / "new", "second writer"), target)
    monkeypatch.undo()
    assert (target / "file").read_text() == "second writer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
