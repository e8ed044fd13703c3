"""`appliancekit release`: build, boot-test and publish the Debian release matrix."""

from __future__ import annotations

import time
from pathlib import Path

import click

from appliancekit.cache import Cache, default_cache_dir
from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.output import emit_json
from appliancekit.project import find_project
from appliancekit.release.run import NOTES, ReleaseOptions, run_release


@click.command("release")
@click.option("--recipe", "-r", "recipes", multiple=True, help="Only this recipe (repeatable).")
@click.option("--board", "-b", "boards", multiple=True, help="Only this board (repeatable).")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="SD-card release directories and the notes (default: releases/ in the project).",
)
@click.option(
    "--repo",
    type=click.Path(path_type=Path, file_okay=False),
    help="Git deploy repository to commit each release into.",
)
@click.option(
    "--sign",
    "sign_key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Sign each deploy-repository release with this minisign secret key.",
)
@click.option("--since", help="Git ref the notes list recipe changes from (default: last tag).")
@click.option("--timeout", default=240.0, show_default=True, help="Boot-test probe timeout.")
@json_option
@click.pass_context
@handle_errors
def release_command(
    ctx: click.Context,
    recipes: tuple[str, ...],
    boards: tuple[str, ...],
    out: Path | None,
    repo: Path | None,
    sign_key: Path | None,
    since: str | None,
    timeout: float,
    json_mode: bool,
) -> None:
    """Build every recipe x board of the Debian matrix from its lock, boot-test it, publish
    the SD-card artefacts and (with --repo) commit it to the deploy repository; write
    release notes. A rerun skips what is already published with the same sha256; a failed
    boot test stops the run (exit 1)."""
    reporter = reporter_from(ctx, json_mode)
    project = find_project()
    options = ReleaseOptions(
        out=(out or project.root / "releases").absolute(),
        repo=repo,
        sign_key=sign_key,
        recipes=recipes,
        boards=boards,
        since=since,
        boot_timeout=timeout,
    )
    started = time.monotonic()
    outcomes = run_release(project, Cache(default_cache_dir()), reporter, options)
    wall = round(time.monotonic() - started, 1)
    if json_mode:
        emit_json(
            {
                "releases": [o.to_json() for o in outcomes],
                "notes": str(options.out / NOTES),
                "wall_seconds": wall,
            }
        )
        return
    for o in outcomes:
        tested = "boot-tested" if o.boot_tested else "boot test passed earlier"
        git = f", deploy {o.git}" if o.git else ""
        click.echo(
            f"{o.recipe} on {o.board}: {o.image_sha256[:16]} {tested}, sdcard {o.sdcard}{git}"
        )
    click.echo(f"notes: {options.out / NOTES}")
    click.echo(f"{len(outcomes)} releases in {wall:.0f} s")


COMMANDS = [release_command]
