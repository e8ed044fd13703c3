"""`appliancekit user-data IMAGE_OR_RELEASE -s NAME=VALUE ...`: EC2 user-data for one
instance, checked as `flash` checks a card's settings."""

from __future__ import annotations

import os
from pathlib import Path

import click

from appliancekit.commands._common import handle_errors, json_option
from appliancekit.errors import UserError
from appliancekit.output import emit_json


@click.command("user-data")
@click.argument(
    "source", metavar="IMAGE_OR_RELEASE", type=click.Path(path_type=Path, file_okay=False)
)
@click.option(
    "-s",
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Per-instance setting (repeatable); checked against the recipe's per-device settings.",
)
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="TOML file of per-instance settings (-s wins over it).",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the user-data here (mode 0600) instead of to standard output.",
)
@json_option
@handle_errors
def user_data_command(
    source: Path,
    settings: tuple[str, ...],
    settings_file: Path | None,
    out: Path | None,
    json_mode: bool,
) -> None:
    """Per-instance settings as EC2 user-data (settings.env lines) for an image's instances.

    Pass the file to `aws ec2 run-instances --user-data file://FILE`; the appliance reads it
    over IMDSv2 at boot, ahead of the boot partition's settings.env.
    """
    from appliancekit.devsettings import (
        load_settings_toml,
        masked,
        parse_cli_settings,
        render_user_data,
    )
    from appliancekit.flash import find_source

    manifest = find_source(source).manifest
    values = load_settings_toml(settings_file, manifest) if settings_file else {}
    values.update(parse_cli_settings(settings, manifest))
    data = render_user_data(values, manifest)
    if out is not None:
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, out)
        except OSError as exc:
            raise UserError(f"cannot write user-data: {exc.strerror}", file=out) from None
    if json_mode:
        emit_json(
            {
                "image": manifest.name,
                "out": str(out) if out else None,
                "bytes": len(data),
                "settings": masked(values, manifest),
                **({} if out else {"user_data": data.decode()}),
            }
        )
    elif out is not None:
        click.echo(f"{out}: {len(data)} bytes of user-data for {manifest.name}")
    else:
        click.echo(data.decode(), nl=False)


COMMANDS = [user_data_command]
