"""Command line: `appliancekit build|test|run|list|inspect|doctor|publish|flash|user-data|...`."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
