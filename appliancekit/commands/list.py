"""`appliancekit list recipes|boards`."""

from __future__ import annotations

import click

from appliancekit.board import find_board, list_boards
from appliancekit.commands._common import handle_errors, json_option
from appliancekit.output import emit_json
from appliancekit.project import find_project
from appliancekit.recipe import find_recipe, list_recipes


@click.command("list")
@click.argument("what", type=click.Choice(["recipes", "boards"]))
@json_option
@handle_errors
def list_command(what: str, json_mode: bool) -> None:
    """List the recipes or the boards this project knows."""
    project = find_project()
    rows: list[dict[str, str]] = []
    if what == "recipes":
        for name in list_recipes(project.recipes_dir):
            recipe = find_recipe(name, project.recipes_dir)
            rows.append({"name": name, "backend": recipe.backend, "summary": recipe.summary})
    else:
        for name in list_boards(project.boards_dir):
            board = find_board(name, project.boards_dir)
            rows.append(
                {
                    "name": name,
                    "arch": board.arch.value,
                    "boot": board.boot.value,
                    "suite": board.suite,
                    "nixos": board.nixos.image.value if board.nixos else "-",
                    "qemu": f"{board.qemu.binary} -M {board.qemu.machine}",
                    "summary": board.summary,
                }
            )
    if json_mode:
        emit_json(rows)
        return
    if not rows:
        return
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys[:-1]}
    click.echo("  ".join(k.upper().ljust(widths[k]) for k in keys[:-1]) + "  " + keys[-1].upper())
    for row in rows:
        click.echo("  ".join(row[k].ljust(widths[k]) for k in keys[:-1]) + "  " + row[keys[-1]])


COMMANDS = [list_command]
