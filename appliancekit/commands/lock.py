"""`appliancekit lock`: pin every Debian package of a recipe's builds, per (suite, arch)."""

from __future__ import annotations

import click

from appliancekit.board import find_board, list_boards
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.errors import UserError
from appliancekit.output import emit_json
from appliancekit.project import find_project
from appliancekit.recipe import find_recipe
from appliancekit.release.lock import LockOutcome, lock_recipe
from appliancekit.release.matrix import debian_matrix


@click.command("lock")
@click.argument("recipe")
@click.option("--board", "-b", "boards", multiple=True, help="Lock for this board (repeatable).")
@click.option(
    "--all-boards", is_flag=True, help="Every board the release matrix builds it for (default)."
)
@click.option("--update", is_flag=True, help="Resolve again and print what changed.")
@json_option
@click.pass_context
@handle_errors
def lock_command(
    ctx: click.Context,
    recipe: str,
    boards: tuple[str, ...],
    all_boards: bool,
    update: bool,
    json_mode: bool,
) -> None:
    """Write recipes/RECIPE/debian-SUITE-ARCH.lock for each board's (suite, architecture).

    A lock that already covers the boards is kept as it is unless --update. Builds use the
    lock and never resolve with apt; commit it."""
    reporter = reporter_from(ctx, json_mode)
    project = find_project()
    parsed = find_recipe(recipe, project.recipes_dir)
    if not parsed.debian.packages:
        raise UserError(
            f"recipe {parsed.name!r} has no [debian] section: nothing to lock",
            file=parsed.source_file,
            field="debian",
        )
    if boards and all_boards:
        raise UserError("--board and --all-boards exclude each other")
    if not boards:
        boards = tuple(
            e.board
            for e in debian_matrix(project.recipes_dir, project.boards_dir)
            if e.recipe == parsed.name
        )
    chosen = [find_board(name, project.boards_dir) for name in boards]
    known = set(list_boards(project.boards_dir))

    def load(name: str):  # type: ignore[no-untyped-def]
        return find_board(name, project.boards_dir) if name in known else None

    outcomes = lock_recipe(
        parsed, chosen, load, Cache(default_cache_dir()), reporter, update=update
    )
    if json_mode:
        emit_json({"recipe": parsed.name, "locks": [o.to_json() for o in outcomes]})
        return
    for outcome in outcomes:
        click.echo(_summary(outcome))
        for change in outcome.changes if outcome.previous else ():
            click.echo(f"  {change.line()}")


def _summary(outcome: LockOutcome) -> str:
    boards = ", ".join(outcome.boards)
    if not outcome.resolved:
        return f"{outcome.path}: up to date for {boards} (--update resolves again)"
    if not outcome.written:
        return f"{outcome.path}: unchanged ({boards})"
    if not outcome.previous:
        return f"{outcome.path}: written, {len(outcome.changes)} packages ({boards})"
    if not outcome.changes:
        return f"{outcome.path}: rewritten, same packages ({boards})"
    security = sum(1 for c in outcome.changes if c.security)
    return (
        f"{outcome.path}: {len(outcome.changes)} packages changed"
        f"{f', {security} security updates' if security else ''} ({boards})"
    )


COMMANDS = [lock_command]
