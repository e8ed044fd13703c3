"""`appliancekit build` and the plan/build helpers `test` and `run` share."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import click

from appliancekit.board import Board, find_board
from appliancekit.build import BuildPlan, BuildResult, build
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.errors import UserError
from appliancekit.output import Reporter, emit_json
from appliancekit.project import find_project
from appliancekit.recipe import find_recipe, resolve_settings
from appliancekit.release.signing import public_key_line
from appliancekit.settings_kinds import parse_assignments
from appliancekit.sources.debian import Mirrors


def make_plan(
    recipe_name: str, board_name: str, setting_args: Sequence[str], images: Path | None
) -> BuildPlan:
    project = find_project()
    recipe = find_recipe(recipe_name, project.recipes_dir)
    board = find_board(board_name, project.boards_dir)
    settings = resolve_settings(recipe, parse_assignments(setting_args))
    return BuildPlan(
        recipe, board, settings, (images or project.images_dir).resolve(), update_key()
    )


UPDATE_KEY_ENV = "APPLIANCEKIT_UPDATE_KEY"


def update_key() -> str | None:
    """The public key images trust for updates: $APPLIANCEKIT_UPDATE_KEY names the .pub file
    `appliancekit keygen` wrote (unset: the image's update agent refuses every release)."""
    path = os.environ.get(UPDATE_KEY_ENV)
    if not path:
        return None
    if not Path(path).is_file():
        raise UserError(f"${UPDATE_KEY_ENV} names no file", file=path)
    return public_key_line(Path(path))


def load_board_for(name: str) -> Board:
    return find_board(name, find_project().boards_dir)


def run_build(
    plan: BuildPlan,
    reporter: Reporter,
    *,
    refresh: bool = False,
    force: bool = False,
    mirror: str | None = None,
    update_lock: bool = False,
) -> BuildResult:
    cache = Cache(default_cache_dir())
    if update_lock:
        from appliancekit.release.lock import lock_recipe

        boards = find_project().boards_dir

        def load(name: str) -> Board | None:
            return find_board(name, boards) if (boards / f"{name}.toml").exists() else None

        for outcome in lock_recipe(plan.recipe, [plan.board], load, cache, reporter, update=True):
            for change in outcome.changes if outcome.previous else ():
                reporter.info(f"{outcome.path.name}: {change.line()}")
    return build(
        plan,
        cache,
        reporter,
        refresh=refresh,
        force=force,
        mirrors=Mirrors.from_option(mirror),
    )


def build_to_boot(
    plan: BuildPlan, reporter: Reporter, backend: str | None, *, mirror: str | None = None
) -> BuildResult:
    """The image `test` and `run` boot, built (or found up to date) as `build` would.

    A NixOS-backend recipe goes the way `build` sends it: its flake is rendered and, without
    a usable Nix, the command stops with build's own line and exit code 3. An image Nix did
    build cannot be booted here (its boot files are not in a recorded partition), which is
    one line too, never a Debian build of a recipe that has no Debian part.
    """
    if (backend or plan.recipe.backend) == "nixos":
        from appliancekit.nixos import build_nixos

        nix = build_nixos(plan.recipe, plan.board, plan.settings, plan.images_dir, reporter)
        raise UserError(
            f"{plan.name}: NixOS image built in {nix.output_dir}; boot tests run only on images"
            " built by the Debian backend (boot it with the board's own tools)",
            field="--backend",
        )
    return run_build(plan, reporter, mirror=mirror)


backend_option = click.option(
    "--backend",
    type=click.Choice(["debian", "nixos"]),
    help="debian (built here) or nixos (a flake, built where Nix is); default: the recipe's.",
)


def build_summary(result: BuildResult) -> dict[str, object]:
    m = result.manifest
    return {
        "image_dir": str(result.output_dir),
        "disk": str(result.output_dir / m.disk.path),
        "sha256": m.disk.sha256,
        "rebuilt": result.rebuilt,
        "seconds": round(result.seconds, 2),
        "root_hash": m.verity.root_hash if m.verity else None,
        "sizes": dataclasses.asdict(m.sizes),
    }


recipe_argument = click.argument("recipe")
board_option = click.option(
    "--board", "-b", required=True, help="Target board (see `list boards`)."
)
settings_option = click.option(
    "-s",
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a recipe setting.",
)
mirror_option = click.option(
    "--mirror",
    metavar="URL",
    help="Debian archive to fetch from, e.g. a snapshot archive's "
    "<snapshot-archive>/archive/debian/YYYYMMDDTHHMMSSZ/ when the mirror no longer has a "
    "locked version.",
)
images_option = click.option(
    "--images",
    type=click.Path(path_type=Path, file_okay=False),
    help="Output directory (default: images/).",
)


@click.command("build")
@recipe_argument
@board_option
@settings_option
@images_option
@click.option("--refresh", is_flag=True, help="Refresh the Debian package indexes first.")
@click.option("--force", is_flag=True, help="Rebuild even if nothing changed.")
@mirror_option
@click.option(
    "--update-lock",
    is_flag=True,
    help="Resolve the Debian packages again and rewrite the recipe's lock first.",
)
@backend_option
@json_option
@click.pass_context
@handle_errors
def build_command(
    ctx: click.Context,
    recipe: str,
    board: str,
    settings: tuple[str, ...],
    images: Path | None,
    refresh: bool,
    force: bool,
    mirror: str | None,
    update_lock: bool,
    backend: str | None,
    json_mode: bool,
) -> None:
    """Build RECIPE for a board into images/RECIPE-BOARD/.

    Exit codes: 0 built, 2 bad input, 3 NixOS flake rendered but Nix is needed to build it."""
    reporter = reporter_from(ctx, json_mode)
    plan = make_plan(recipe, board, settings, images)
    if (backend or plan.recipe.backend) == "nixos":
        from appliancekit.nixos import build_nixos

        nix = build_nixos(plan.recipe, plan.board, plan.settings, plan.images_dir, reporter)
        if json_mode:
            emit_json(
                {
                    "image_dir": str(nix.output_dir),
                    "flake": str(nix.flake.directory),
                    "backend": "nixos",
                }
            )
        else:
            click.echo(f"{plan.name}: NixOS image built: {nix.output_dir}")
        return
    result = run_build(
        plan, reporter, refresh=refresh, force=force, mirror=mirror, update_lock=update_lock
    )
    summary = build_summary(result)
    if json_mode:
        emit_json(summary)
        return
    state = "built" if result.rebuilt else "up to date"
    sizes = result.manifest.sizes
    click.echo(
        f"{plan.name}: {state} in {result.seconds:.1f}s; sealed root "
        f"{(sizes.sealed_root_bytes or 0) / 2**20:.1f} MiB"
        f" (unminimised {(sizes.unminimised_root_bytes or 0) / 2**20:.1f} MiB)"
    )
    click.echo(f"image: {summary['disk']}")


COMMANDS = [build_command]
