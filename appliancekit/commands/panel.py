"""`appliancekit panel`: the administrator's web panel (appliancekit/panel/)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliancekit.commands._common import handle_errors, json_option
from appliancekit.errors import UserError
from appliancekit.output import emit_json
from appliancekit.project import find_project

DEFAULT_PORT = 8640


def _first_password(password_file: Path | None) -> str:
    from appliancekit.panel.auth import check_new_password, read_password_file

    if password_file is not None:
        return read_password_file(password_file)
    if not sys.stdin.isatty():
        raise UserError(
            "the panel has no password yet: start it once on a terminal to set one, or pass"
            " --password-file FILE",
            field="--password-file",
        )
    first = click.prompt("New panel password", hide_input=True, err=True)
    check_new_password(first)
    if click.prompt("The same again", hide_input=True, err=True) != first:
        raise UserError("the two passwords differ", field="password")
    return first


@click.command("panel")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: any free one).",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path, file_okay=False),
    help="Images directory (default: images/).",
)
@click.option(
    "--state",
    type=click.Path(path_type=Path, file_okay=False),
    help="The panel's own state: password hash, session key (default: IMAGES/panel).",
)
@click.option(
    "--releases",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where 'Publish release' writes SD-card releases (default: releases/).",
)
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the password from this file's first line (at first start or with"
    " --reset-password); otherwise it is asked on the terminal.",
)
@click.option("--reset-password", is_flag=True, help="Set a new password.")
@click.option(
    "--deploy-repo",
    type=click.Path(path_type=Path, file_okay=False),
    help="Deploy repository that 'Publish release' also commits to (publish --to git).",
)
@click.option(
    "--sign-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Sign releases in the deploy repository with this minisign key (appliancekit keygen).",
)
@json_option
@handle_errors
def panel_command(
    host: str,
    port: int,
    images: Path | None,
    state: Path | None,
    releases: Path | None,
    password_file: Path | None,
    reset_password: bool,
    deploy_repo: Path | None,
    sign_key: Path | None,
    json_mode: bool,
) -> None:
    """Serve the web panel: the clouds with their members' health and versions, DNS records
    and serial logs; build, boot-test, publish, approve or hold updates, and download card
    images with per-device settings. Listens on localhost unless --host says otherwise."""
    from appliancekit.panel.actions import PanelPaths
    from appliancekit.panel.app import PanelConfig
    from appliancekit.panel.auth import load_credentials, session_key, set_password
    from appliancekit.panel.server import cards_dir, serve, setup_logging

    project = find_project()
    images_dir = (images or project.images_dir).resolve()
    state_dir = (state or images_dir / "panel").resolve()
    if sign_key is not None and deploy_repo is None:
        raise UserError("--sign-key signs releases in --deploy-repo: give both", field="--sign-key")
    if deploy_repo is not None and not deploy_repo.is_dir():
        raise UserError("no such deploy repository", file=deploy_repo, field="--deploy-repo")
    credentials = load_credentials(state_dir)
    if credentials is None or reset_password:
        credentials = set_password(state_dir, _first_password(password_file))
        click.echo(f"panel password set (stored hashed in {state_dir})", err=True)
    paths = PanelPaths(
        images=images_dir,
        releases=(releases or project.root / "releases").resolve(),
        cards=cards_dir(state_dir),
        deploy_repo=deploy_repo.resolve() if deploy_repo else None,
        sign_key=sign_key.resolve() if sign_key else None,
    )
    config = PanelConfig(project, paths, credentials, session_key(state_dir))
    setup_logging()

    def ready(url: str) -> None:
        if json_mode:
            emit_json({"url": url, "state": str(state_dir), "images": str(images_dir)})
        else:
            click.echo(f"appliancekit panel: {url} (Ctrl-C stops it)")
        sys.stdout.flush()

    serve(config, host, port, ready)


COMMANDS = [panel_command]
