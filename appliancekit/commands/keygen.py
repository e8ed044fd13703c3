"""`appliancekit keygen`: an Ed25519 (minisign) key pair for signing releases."""

from __future__ import annotations

from pathlib import Path

import click

from appliancekit.commands._common import handle_errors, json_option
from appliancekit.output import emit_json
from appliancekit.release.signing import keygen


@click.command("keygen")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Directory for appliancekit.key (secret, mode 0600) and appliancekit.pub.",
)
@click.option("--force", is_flag=True, help="Replace an existing key pair.")
@json_option
@handle_errors
def keygen_command(out: Path, force: bool, json_mode: bool) -> None:
    """Create a key pair: `publish --to git --sign KEY` and `release --sign KEY` sign with
    the secret key; appliances and users verify with the public one."""
    pair = keygen(out, force=force)
    if json_mode:
        emit_json(
            {"secret": str(pair.secret), "public": str(pair.public), "key": pair.public_key()}
        )
        return
    click.echo(f"secret key: {pair.secret} (keep it secret)")
    click.echo(f"public key: {pair.public} ({pair.public_key()})")


COMMANDS = [keygen_command]
