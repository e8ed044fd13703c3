"""`appliancekit doctor`: which host tools and files are missing and how to get them.

The rows come from hosttools (one table for doctor and for hostcmd's hints), plus what each
board file names: its QEMU and the firmware files its QEMU command line reads."""

from __future__ import annotations

import sys

import click

from appliancekit.board import find_board, list_boards
from appliancekit.commands._common import handle_errors, json_option
from appliancekit.hosttools import CHECKS, FILES, TOOLS, CheckResult, Row, board_rows, check_all
from appliancekit.output import emit_json
from appliancekit.project import find_project


def doctor_rows() -> list[Row]:
    project = find_project()
    boards = [find_board(name, project.boards_dir) for name in list_boards(project.boards_dir)]
    return [*TOOLS, *FILES, *board_rows(boards), *CHECKS]


@click.command("doctor")
@json_option
@handle_errors
def doctor_command(json_mode: bool) -> None:
    """Check the host for the tools and firmware files appliancekit and the boards need.

    Exit codes: 0 all required present, 1 something required is missing (the install line
    says what to get). Nix is reported but optional: only the NixOS backend needs it."""
    results = check_all(doctor_rows())
    missing = sorted({r.package for r in results if not r.found and r.required})
    if json_mode:
        from appliancekit.nixos.nixversion import nix_check

        emit_json(
            {
                "checks": [r.to_json() for r in results],
                "missing_packages": missing,
                "ok": not missing,
                "nix": nix_check(),
            }
        )
    else:
        for r in results:
            click.echo(_line(r))
        if missing:
            click.echo(f"install with: apt-get install {' '.join(missing)}  (or: make setup)")
        else:
            click.echo("all host tools present")
    sys.exit(1 if missing else 0)


def _line(r: CheckResult) -> str:
    state = "ok     " if r.found else ("MISSING" if r.required else "NOTE   ")
    detail = f": {r.detail}" if r.detail else ""
    optional = "" if r.required else ", optional"
    return f"{state} {r.name:32} ({r.package}: {r.purpose}{optional}){detail}"


COMMANDS = [doctor_command]
