"""`appliancekit verify-release RELEASE_DIR`: rebuild a release and compare sha256s."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliancekit.cache import Cache, default_cache_dir
from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.commands.build import mirror_option, settings_option
from appliancekit.output import emit_json
from appliancekit.project import find_project
from appliancekit.release.verify import verify_release
from appliancekit.settings_kinds import parse_assignments
from appliancekit.sources.debian import Mirrors


@click.command("verify-release")
@click.argument("release_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@settings_option
@mirror_option
@json_option
@click.pass_context
@handle_errors
def verify_release_command(
    ctx: click.Context,
    release_dir: Path,
    settings: tuple[str, ...],
    mirror: str | None,
    json_mode: bool,
) -> None:
    """Rebuild RELEASE_DIR (a published release or image directory) from its manifest and
    the recipe's lock, and compare the disk image sha256s.

    Exit codes: 0 identical, 1 different (the first differing file of the sealed root is
    named), 2 bad input (e.g. not the lock the release was built from)."""
    reporter = reporter_from(ctx, json_mode)
    result = verify_release(
        release_dir,
        find_project(),
        Cache(default_cache_dir()),
        reporter,
        overrides=parse_assignments(settings),
        mirrors=Mirrors.from_option(mirror),
    )
    if json_mode:
        emit_json(result.to_json())
    elif result.equal:
        click.echo(
            f"{result.name}: identical, sha256 {result.published_sha256} "
            f"(rebuilt in {result.rebuild_seconds:.1f}s)"
        )
    else:
        inputs = "" if result.inputs_equal else " (its inputs differ from the release's)"
        click.echo(
            f"{result.name}: DIFFERENT: published {result.published_sha256}, rebuilt "
            f"{result.rebuilt_sha256}{inputs}; first difference: {result.first_difference}",
            err=True,
        )
    sys.exit(0 if result.equal else 1)


COMMANDS = [verify_release_command]
