"""Command line: `appliancekit build|test|run|list|inspect|doctor|publish|flash|user-data|...`.

The error contract lives here, for every command at once (those added later too): bad input
and failing host tools reach the user as one line on stderr, `appliancekit: error: ...`, with
exit code 2 (bad input, usage errors included) or 1 (the host failed), never a traceback
(unless --debug). Commands raise; they do not print errors themselves.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, NoReturn

import click

from appliancekit.errors import one_line_error

PROG = "appliancekit"


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(code)


def usage_line(exc: click.ClickException) -> tuple[str, int]:
    """click's usage errors (several lines of usage and hints) as one line, exit 2."""
    message = " ".join(exc.format_message().split())
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        words = []
        ctx: click.Context | None = exc.ctx
        while ctx is not None and ctx.parent is not None:
            words.append(ctx.info_name or "")
            ctx = ctx.parent
        command = " ".join([PROG, *reversed(words)])
        return f"{message} (see {command} --help)", 2
    if isinstance(exc, click.FileError):
        return message, 2
    return message, exc.exit_code


class AppliancekitGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            described = one_line_error(exc)
            if described is None:
                raise
            if ctx.params.get("debug"):
                traceback.print_exc()
            fail(*described)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as exc:
            fail(*usage_line(exc))
        except click.Abort:
            fail("aborted", 1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=AppliancekitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("-v", "--verbose", is_flag=True, help="Show every stage, even when not on a TTY.")
@click.version_option(package_name="appliancekit")
def main(debug: bool, verbose: bool) -> None:
    """Build sealed single-purpose appliance images, boot-test them, publish and flash them."""


def _register_commands() -> None:
    # Each command lives in its own module; importing registers it on `main`.
    from appliancekit.commands import register_all

    register_all(main)


_register_commands()
