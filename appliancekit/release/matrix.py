"""The Debian release matrix: which recipe is built for which board.

Every recipe with a [debian] section x every board in boards/, except boards whose
architecture the recipe's python.lock lists as [unavailable] (PyPI has no wheels for it)
or its [python] arches leaves out,
or whose Debian lock lists packages as unavailable (the suite does not build them for that
architecture): the build would stop saying so. Standard library only: ci/matrix.py runs it on a bare
runner before anything is installed.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

ARCHES = ("amd64", "arm64", "armhf")  # the Debian architectures boards/ uses


@dataclass(frozen=True, order=True)
class MatrixEntry:
    recipe: str
    board: str
    arch: str


def _unavailable_arches(recipe_dir: Path, recipe: dict[str, object]) -> set[str]:
    """Architectures the python.lock has no wheels for, or that [python] arches leaves out."""
    python = recipe.get("python")
    if not isinstance(python, dict):
        return set()
    only = set(python.get("arches", ()))
    out = set(ARCHES) - only if only else set()
    lock = recipe_dir / str(python.get("lock", "python.lock"))
    if lock.is_file():
        out |= set(tomllib.loads(lock.read_text()).get("unavailable", {}))
    return out


def _debian_unavailable(recipe_dir: Path, suite: str, arch: str) -> bool:
    """The recipe's Debian lock says the suite builds some of its packages not for arch."""
    lock = recipe_dir / f"debian-{suite}-{arch}.lock"
    return lock.exists() and bool(tomllib.loads(lock.read_text()).get("unavailable"))


def board_arches(boards_dir: Path) -> dict[str, str]:
    return {name: arch for name, (arch, _) in _boards(boards_dir).items()}


def _boards(boards_dir: Path) -> dict[str, tuple[str, str]]:
    boards = {}
    for p in sorted(boards_dir.glob("*.toml")):
        board = tomllib.loads(p.read_text())["board"]
        boards[p.stem] = (board["arch"], board.get("suite", "trixie"))
    return boards


def debian_matrix(recipes_dir: Path, boards_dir: Path) -> list[MatrixEntry]:
    boards = _boards(boards_dir)
    entries = []
    for path in sorted(recipes_dir.glob("*/recipe.toml")):
        recipe = tomllib.loads(path.read_text())
        if "debian" not in recipe:
            continue
        unavailable = _unavailable_arches(path.parent, recipe)
        entries += [
            MatrixEntry(path.parent.name, board, arch)
            for board, (arch, suite) in boards.items()
            if arch not in unavailable
            and not _debian_unavailable(path.parent, recipe["debian"].get("suite") or suite, arch)
        ]
    return entries
