"""Errors found after loading (while resolving, minimising, laying out the boot partition)
still name the recipe or board file, the line and the field that caused them.
The slow tests in test_cli_errors.py show the same through a whole `build`."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliancekit.board import Architecture, find_board
from appliancekit.boot import package_files
from appliancekit.build import _resolve
from appliancekit.errors import UserError
from appliancekit.minimise import ClosureRequest, closure
from appliancekit.recipe import find_recipe
from appliancekit.rootfs import _declarations
from appliancekit.tree import RootTree

from .conftest import PROJECT


def line_of(file: Path, needle: str) -> int:
    return next(n for n, text in enumerate(file.read_text().splitlines(), 1) if needle in text)


def test_an_executable_not_in_the_packages_names_its_service_line() -> None:
    recipe = find_recipe("homepage", PROJECT.recipes_dir)
    request = ClosureRequest(
        executables=(recipe.services[0].exec[0],),
        origin="recipe",
        source=recipe.source_file,
        fields=_declarations(recipe),
    )
    with pytest.raises(UserError) as exc:
        closure(RootTree(), Architecture.ARM64, [request])
    err = exc.value
    assert err.file == str(recipe.source_file) and err.field == "service[0].exec[0]"
    assert err.line == line_of(recipe.source_file, "exec = [")
    assert recipe.services[0].exec[0] in err.message


class _Apt:
    """Answers as AptSource.resolve does when apt cannot install a name."""

    def __init__(self, message: str) -> None:
        self.message = message

    def resolve(self, names: object) -> list[object]:
        raise UserError(self.message, field="debian.packages")


def test_an_unresolvable_package_names_its_line(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[debian]\npackages = [\n  "nginx",\n  "no-such-pkg",\n]\n')
    apt = _Apt("cannot resolve Debian packages for trixie/arm64: Unable to locate package no-such-pkg")
    with pytest.raises(UserError) as exc:
        _resolve(apt, ["nginx", "no-such-pkg"], recipe, ("debian", "packages"))  # type: ignore[arg-type]
    assert exc.value.one_line().startswith(f"{recipe}:4: debian.packages[1]: cannot resolve")


def test_a_board_package_names_the_board_line(tmp_path: Path) -> None:
    board = tmp_path / "board.toml"
    board.write_text('[kernel]\npackage = "linux-image-nope"\n')
    apt = _Apt("cannot resolve Debian packages: Package 'linux-image-nope' has no installation candidate")
    with pytest.raises(UserError) as exc:
        _resolve(apt, ["linux-image-nope"], board, ("kernel", "package"))  # type: ignore[arg-type]
    assert exc.value.one_line().startswith(f"{board}:2: kernel.package: ")


def test_a_missing_firmware_file_names_the_board_line() -> None:
    board = find_board("rpi4", PROJECT.boards_dir)
    with pytest.raises(UserError) as exc:
        package_files([], "/usr/lib/raspi-firmware/start4.elf", board, ("firmware", "files", "start4.elf"))
    err = exc.value
    assert err.file == str(board.source_file) and err.field == 'firmware.files."start4.elf"'
    assert err.line == line_of(board.source_file, '"start4.elf" =')
