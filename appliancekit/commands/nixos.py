"""`appliancekit nixos-flake`: render a recipe x board as a NixOS flake (no build).

`build --backend nixos` renders and builds; this command only renders, for machines (and the
release workflow) that run `nix build` on the flake themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from appliancekit.board import find_board
from appliancekit.commands._common import handle_errors, json_option
from appliancekit.project import find_project
from appliancekit.recipe import find_recipe, resolve_settings


@click.command("nixos-flake")
@click.argument("recipe")
@click.option("--board", "board_name", required=True, help="Board name (boards/NAME.toml).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory to write the flake into (must not exist or be empty).",
)
@click.option(
    "-s",
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a recipe setting.",
)
@click.option(
    "--recipes-dir",
    type=click.Path(path_type=Path),
    help="Recipes directory (default: the project's recipes/).",
)
@click.option(
    "--boards-dir",
    type=click.Path(path_type=Path),
    help="Boards directory (default: the project's boards/).",
)
@json_option
@handle_errors
def nixos_flake(
    recipe: str,
    board_name: str,
    out_dir: Path,
    overrides: tuple[str, ...],
    recipes_dir: Path | None,
    boards_dir: Path | None,
    json_mode: bool,
) -> None:
    """Render RECIPE for --board as a flake pinned to nixpkgs; build it with `nix build DIR#image`."""
    from appliancekit.nixos import NIXPKGS, render_flake
    from appliancekit.settings_kinds import parse_assignments

    values = parse_assignments(overrides)
    # the project's recipes and boards (APPLIANCEKIT_HOME, or found upwards), as every other
    # command reads them, instead of ./recipes relative to wherever the command runs
    project = find_project()
    loaded = find_recipe(recipe, recipes_dir or project.recipes_dir)
    board = find_board(board_name, boards_dir or project.boards_dir)
    render = render_flake(loaded, board, resolve_settings(loaded, values), out_dir)
    if json_mode:
        payload = {
            "flake": str(render.directory),
            "name": render.name,
            "system": render.system,
            "build_system": render.build_system,
            "seal": render.seal,
            "image_modules": list(render.board_modules),
            "nixpkgs": NIXPKGS.rev,
        }
        click.echo(json.dumps(payload, indent=2, sort_keys=True))
    else:
        click.echo(
            f"{render.directory}: nix build {render.directory}#packages.{render.build_system}.image"
        )


COMMANDS = [nixos_flake]
