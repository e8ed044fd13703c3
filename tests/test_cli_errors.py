"""Bad recipes, boards and settings: one line naming file, line and field; exit 2; nothing in images/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import REPO, run_cli


@pytest.fixture()
def scratch_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(REPO / "recipes", project / "recipes")
    shutil.copytree(REPO / "boards", project / "boards")
    return project


def build_in(project: Path, *args: str):  # type: ignore[no-untyped-def]
    """`appliancekit build homepage --board qemu-virt-arm64 ARGS` against `project`."""
    return run_cli(
        "build",
        "homepage",
        "--board",
        "qemu-virt-arm64",
        *args,
        env={"APPLIANCEKIT_HOME": str(project)},
    )


def assert_clean_failure(result, project: Path, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    # not even an empty images/ or images/.tmp: the project is as it was
    assert not (project / "images").exists(), list((project / "images").rglob("*"))
    assert "Traceback" not in result.stderr


def test_unknown_recipe(scratch_project: Path) -> None:
    result = run_cli(
        "build",
        "nosuch",
        "--board",
        "qemu-virt-arm64",
        env={"APPLIANCEKIT_HOME": str(scratch_project)},
    )
    assert_clean_failure(result, scratch_project, "nosuch", "homepage")


def test_unknown_board(scratch_project: Path) -> None:
    result = run_cli(
        "build", "homepage", "--board", "vax", env={"APPLIANCEKIT_HOME": str(scratch_project)}
    )
    assert_clean_failure(result, scratch_project, "vax", "qemu-virt-arm64")


def test_unknown_key_in_recipe(scratch_project: Path) -> None:
    recipe = scratch_project / "recipes/homepage/recipe.toml"
    recipe.write_text(
        recipe.read_text().replace(
            '[[service]]\nname = "nginx"', '[[service]]\nname = "nginx"\nexce = "x"'
        )
    )
    line = recipe.read_text().splitlines().index('exce = "x"') + 1
    result = build_in(scratch_project)
    assert_clean_failure(result, scratch_project, f"recipe.toml:{line}", "service[0].exce")


def test_wrong_type_in_board(scratch_project: Path) -> None:
    board = scratch_project / "boards/qemu-virt-arm64.toml"
    board.write_text(board.read_text().replace("smp = 1", 'smp = "two"'))
    line = board.read_text().splitlines().index('smp = "two"') + 1
    result = build_in(scratch_project)
    assert_clean_failure(result, scratch_project, f"qemu-virt-arm64.toml:{line}", "qemu.smp")


def test_unknown_setting(scratch_project: Path) -> None:
    result = build_in(scratch_project, "-s", "colour=blue")
    assert_clean_failure(result, scratch_project, "colour", "site")


def test_missing_site_directory(scratch_project: Path, tmp_path: Path) -> None:
    result = build_in(scratch_project, "-s", f"site={tmp_path}/nope")
    assert_clean_failure(result, scratch_project, "settings.site")


@pytest.mark.slow
def test_failure_mid_build_leaves_nothing(scratch_project: Path) -> None:
    """A package that does not exist fails after apt ran: still nothing in images/."""
    for lock in (scratch_project / "recipes/homepage").glob("debian-*.lock"):
        lock.unlink()  # without a lock the build resolves with apt
    recipe = scratch_project / "recipes/homepage/recipe.toml"
    text = recipe.read_text()
    # the second name in the list, whatever the recipe's own packages are
    assert text.count('packages = ["nginx"') == 1
    recipe.write_text(
        text.replace('packages = ["nginx"', 'packages = ["nginx", "no-such-package-xyz"')
    )
    line = next(
        n for n, text in enumerate(recipe.read_text().splitlines(), 1) if "no-such-package" in text
    )
    result = build_in(scratch_project)
    assert_clean_failure(
        result,
        scratch_project,
        f"recipe.toml:{line}: debian.packages[1]:",
        "no-such-package-xyz",
    )


@pytest.mark.slow
def test_missing_executable_fails_in_minimise(scratch_project: Path) -> None:
    """An exec path no package provides is caught while building, before anything lands."""
    recipe = scratch_project / "recipes/homepage/recipe.toml"
    recipe.write_text(
        recipe.read_text().replace('exec = ["/usr/sbin/nginx"', 'exec = ["/usr/sbin/nginxx"')
    )
    line = next(n for n, text in enumerate(recipe.read_text().splitlines(), 1) if "nginxx" in text)
    result = build_in(scratch_project)
    assert_clean_failure(
        result, scratch_project, f"recipe.toml:{line}: service[0].exec[0]:", "/usr/sbin/nginxx"
    )


@pytest.mark.slow
def test_missing_kernel_module_names_the_board_line(scratch_project: Path) -> None:
    """Found after the kernel package is unpacked, before the root is assembled."""
    board = scratch_project / "boards/qemu-virt-arm64.toml"
    board.write_text(board.read_text().replace('"ext4"', '"ext4", "no_such_mod"', 1))
    line = next(n for n, text in enumerate(board.read_text().splitlines(), 1) if "no_such" in text)
    result = build_in(scratch_project)
    assert_clean_failure(
        result, scratch_project, f"qemu-virt-arm64.toml:{line}: kernel.modules[5]:", "no_such_mod"
    )


def test_a_package_the_lock_does_not_pin_is_not_resolved(scratch_project: Path) -> None:
    """With a lock, a recipe asking for more than it pins fails before apt or any download."""
    recipe = scratch_project / "recipes/homepage/recipe.toml"
    recipe.write_text(
        recipe.read_text().replace('packages = ["nginx", ', 'packages = ["nginx", "wget", ')
    )
    result = build_in(scratch_project)
    assert_clean_failure(
        result, scratch_project, "debian-trixie-arm64.lock", "wget", "appliancekit lock homepage"
    )


def _corrupt_lock(project: Path) -> None:
    lock = project / "recipes/homepage/debian-trixie-arm64.lock"
    lock.write_text(lock.read_text().replace('sha256 = "', 'sha256 = "x', 1))


# `appliancekit lock` and locked builds: (arguments, how to spoil the project, words the one
# line must hold)
LOCK_CASES = [
    (["lock", "nosuch"], None, ["nosuch", "homepage"]),
    (["lock", "garage"], None, ["garage", "[debian]"]),
    (["lock", "homepage", "--board", "vax"], None, ["vax", "qemu-virt-arm64"]),
    (["lock", "homepage", "--board", "rpi4", "--all-boards"], None, ["--all-boards"]),
    (["lock", "homepage"], _corrupt_lock, ["debian-trixie-arm64.lock", "package[0].sha256"]),
    (
        ["build", "homepage", "--board", "qemu-virt-arm64"],
        _corrupt_lock,
        ["debian-trixie-arm64.lock", "package[0].sha256", "appliancekit lock homepage"],
    ),
    (["release", "--recipe", "nosuch"], None, ["nosuch", "homepage"]),
    (["release", "--board", "vax"], None, ["vax", "rpi4"]),
    (["release", "--sign", "/nonexistent/key"], None, ["/nonexistent/key", "keygen"]),
    (["verify-release", "recipes"], None, ["manifest"]),
    (
        ["build", "homepage", "--board", "qemu-virt-arm64", "--mirror", "snapshot/archive"],
        None,
        ["--mirror", "snapshot/archive"],
    ),
]


@pytest.mark.parametrize(
    ("args", "spoil", "needles"), LOCK_CASES, ids=[" ".join(c[0]) for c in LOCK_CASES]
)
def test_lock_errors(scratch_project: Path, args: list[str], spoil, needles: list[str]) -> None:  # type: ignore[no-untyped-def]
    if spoil is not None:
        spoil(scratch_project)
    result = run_cli(*args, env={"APPLIANCEKIT_HOME": str(scratch_project)})
    assert_clean_failure(result, scratch_project, *needles)
