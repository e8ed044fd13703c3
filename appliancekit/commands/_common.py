"""Helpers shared by the CLI commands: error handling, --json, the progress reporter."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from appliancekit.errors import one_line_error
from appliancekit.output import Reporter


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One line on stderr and a distinct exit code instead of a traceback (unless --debug).

    The command group (cli.AppliancekitGroup) does the same for every command; this keeps a
    command that is invoked on its own (tests, other groups) to the same contract."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        debug = bool(ctx.find_root().params.get("debug"))
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            described = one_line_error(exc)
            if described is None:
                raise
            if debug:
                traceback.print_exc()
            click.echo(f"appliancekit: error: {described[0]}", err=True)
            sys.exit(described[1])

    return wrapper


def reporter_from(ctx: click.Context, json_mode: bool) -> Reporter:
    return Reporter(json_mode=json_mode, verbose=bool(ctx.find_root().params.get("verbose")))


json_option = click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
