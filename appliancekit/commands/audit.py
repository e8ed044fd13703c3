"""`appliancekit audit IMAGE_DIR`: compliance checks on a sealed image, static or (--boot)
from a boot."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.errors import UserError
from appliancekit.output import Reporter

if TYPE_CHECKING:
    from appliancekit.audit import AuditReport


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
@click.option(
    "--boot",
    is_flag=True,
    help="The runtime checks instead: boot the image under QEMU with the scanner appliance "
    "on one network and check that the TCP ports answering are exactly the declared ones.",
)
@click.option(
    "--timeout", type=float, default=900.0, show_default=True, help="--boot: seconds allowed."
)
@click.option(
    "--ports",
    default="1-65535",
    show_default=True,
    help="--boot: TCP ports to scan, in nmap's syntax (1-1024,8080); declared ports are "
    "always added.",
)
@click.option(
    "--lynis",
    is_flag=True,
    help="Also run Lynis (Debian's lynis) with --rootdir on the extracted root: its account "
    "file tests; a Lynis warning fails the audit.",
)
@json_option
@click.pass_context
@handle_errors
def audit_command(
    ctx: click.Context,
    image_dir: Path,
    junit: Path | None,
    only: tuple[str, ...],
    boot: bool,
    timeout: float,
    ports: str,
    lynis: bool,
    json_mode: bool,
) -> None:
    """Check a sealed image: verity, no shell or login, no setuid or world-writable files,
    services as their declared users, only declared ports, every package recorded.

    With --boot: from a boot, nothing answers on an undeclared port and every declared
    port answers (nmap, from the scanner appliance on the image's network).

    Exits 0 when every check passes, 1 when one fails."""
    from appliancekit.audit import run_audit, to_json, to_junit, to_text

    if boot:
        if only or lynis:
            option = "--check" if only else "--lynis"
            raise UserError(f"{option} selects static checks; --boot runs the runtime ones")
        from appliancekit.audit.runtime import port_spec

        port_spec(ports, [])  # a bad --ports fails now, not after the boot
        report = _boot_audit(image_dir, timeout, ports, reporter_from(ctx, json_mode))
    else:
        report = run_audit(image_dir, only=only, lynis=lynis)
    if junit is not None:
        try:
            junit.write_text(to_junit(report))
        except OSError as exc:
            raise UserError(f"cannot write the JUnit report: {exc.strerror}", file=junit) from None
    click.echo(to_json(report) if json_mode else to_text(report), nl=False)
    if not report.passed:
        sys.exit(1)


def _boot_audit(image_dir: Path, timeout: float, ports: str, reporter: Reporter) -> AuditReport:
    from appliancekit.audit.runtime import SCANNER_BOARD, SCANNER_RECIPE, audit_boot
    from appliancekit.board import find_board
    from appliancekit.commands.build import make_plan, run_build
    from appliancekit.manifest import load_manifest
    from appliancekit.project import find_project

    manifest = load_manifest(image_dir)
    project = find_project()
    board = find_board(manifest.board, project.boards_dir)
    scanner = run_build(make_plan(SCANNER_RECIPE, SCANNER_BOARD, (), None), reporter)
    with tempfile.TemporaryDirectory(prefix="ak-audit-boot-") as work:
        return audit_boot(
            image_dir,
            manifest,
            board,
            scanner.output_dir,
            scanner.manifest,
            find_board(SCANNER_BOARD, project.boards_dir),
            Path(work),
            timeout=timeout,
            ports=ports,
        )


COMMANDS = [audit_command]
