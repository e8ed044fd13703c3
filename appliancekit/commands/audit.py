"""`appliancekit audit IMAGE_DIR`: static compliance checks on a sealed image."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliancekit.commands._common import handle_errors, json_option
from appliancekit.errors import UserError


@click.command("audit")
@click.argument("image_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--junit",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the results as JUnit XML to this file (for CI).",
)
@click.option(
    "--check", "only", multiple=True, help="Run only this check (repeatable); default: all."
)
@json_option
@handle_errors
def audit_command(
    image_dir: Path, junit: Path | None, only: tuple[str, ...], json_mode: bool
) -> None:
    """Check a sealed image: verity, no shell or login, no setuid or world-writable files,
    services as their declared users, only declared ports, every package recorded.

    Exits 0 when every check passes, 1 when one fails."""
    from appliancekit.audit import run_audit, to_json, to_junit, to_text

    report = run_audit(image_dir, only=only)
    if junit is not None:
        try:
            junit.write_text(to_junit(report))
        except OSError as exc:
            raise UserError(f"cannot write the JUnit report: {exc.strerror}", file=junit) from None
    click.echo(to_json(report) if json_mode else to_text(report), nl=False)
    if not report.passed:
        sys.exit(1)


COMMANDS = [audit_command]
