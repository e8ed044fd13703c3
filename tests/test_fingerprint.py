"""The input fingerprint decides "up to date" and seeds every UUID, salt and volume id: it
must change with everything that makes the image and with nothing that does not."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from appliancekit.board import find_board
from appliancekit.build import BuildPlan, ResolvedSources, input_fingerprint
from appliancekit.recipe import find_recipe, resolve_settings
from appliancekit.sources.debian import DebPackage

from .conftest import PROJECT, checkout


def deb(name: str, version: str = "1", sha: str = "0") -> DebPackage:
    return DebPackage(name, version, "arm64", sha * 64, 1000, f"pool/{name}_{version}.deb")


SOURCES = ResolvedSources(
    root=(deb("nginx", sha="1"), deb("libc6", sha="2")),
    initramfs=(deb("busybox-static", sha="3"),),
    kernel=(deb("linux-image-arm64", sha="4"),),
    firmware=(deb("raspi-firmware", "1.20250430", sha="5"),),
)


def plan_for(recipes_dir: Path, board: str = "rpi4", images: Path = Path("images")) -> BuildPlan:
    recipe = find_recipe("homepage", recipes_dir)
    return BuildPlan(
        recipe, find_board(board, PROJECT.boards_dir), resolve_settings(recipe, {}), images
    )


def test_a_new_firmware_package_is_a_new_image() -> None:
    plan = plan_for(PROJECT.recipes_dir)
    newer = replace(SOURCES, firmware=(deb("raspi-firmware", "1.20250915", sha="6"),))
    assert input_fingerprint(plan, newer) != input_fingerprint(plan, SOURCES)


def test_the_source_date_is_an_input() -> None:
    plan = plan_for(PROJECT.recipes_dir)
    assert input_fingerprint(plan, SOURCES, 1_700_000_000) != input_fingerprint(
        plan, SOURCES, 1_700_086_400
    )


def test_checkout_umask_and_project_path_do_not_change_the_fingerprint(tmp_path: Path) -> None:
    source = PROJECT.recipes_dir / "homepage"
    strict = checkout(source, tmp_path / "a/recipes/homepage", 0o022)
    shared = checkout(source, tmp_path / "elsewhere/b/recipes/homepage", 0o002)
    assert (shared / "site/index.html").stat().st_mode & 0o777 == 0o664
    a = plan_for(strict.parent, images=tmp_path / "a/images")
    b = plan_for(shared.parent, images=tmp_path / "b/images")
    assert input_fingerprint(a, SOURCES, 1) == input_fingerprint(b, SOURCES, 1)
    # the executable bit is content (git records it)
    os.chmod(shared / "site/index.html", 0o775)
    assert input_fingerprint(a, SOURCES, 1) != input_fingerprint(b, SOURCES, 1)
