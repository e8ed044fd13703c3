"""`appliancekit run`: boot an appliance interactively with its serial console on stdio."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from appliancekit.boottest import probes_from_manifest, qemu_config
from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.commands.build import (
    backend_option,
    board_option,
    build_to_boot,
    images_option,
    make_plan,
    recipe_argument,
    settings_option,
)
from appliancekit.output import emit_json
from appliancekit.probes import forwards_for
from appliancekit.qemu import Machine


@click.command("run")
@recipe_argument
@board_option
@settings_option
@images_option
@backend_option
@json_option
@click.pass_context
@handle_errors
def run_command(
    ctx: click.Context,
    recipe: str,
    board: str,
    settings: tuple[str, ...],
    images: Path | None,
    backend: str | None,
    json_mode: bool,
) -> None:
    """Boot RECIPE on a board's QEMU model with the serial console here (Ctrl-A X quits).

    Writes go to a throw-away overlay: the image itself stays as built."""
    reporter = reporter_from(ctx, json_mode)
    plan = make_plan(recipe, board, settings, images)
    result = build_to_boot(plan, reporter, backend)
    manifest = result.manifest
    forwards = forwards_for(probes_from_manifest(manifest), manifest.ports)
    with tempfile.TemporaryDirectory(prefix="run.") as tmp:
        config = qemu_config(
            plan.board, result.output_dir / manifest.disk.path, manifest, Path(tmp), forwards
        )
        ports = {f"{f.guest_port}/{f.protocol}": f"127.0.0.1:{f.host_port}" for f in forwards}
        if json_mode:
            emit_json({"image_dir": str(result.output_dir), "forwards": ports})
        else:
            for guest, host in ports.items():
                click.echo(f"guest port {guest} -> {host}", err=True)
        with Machine(config, Path(tmp), interactive=True) as machine:
            machine.start()
            machine.wait()


COMMANDS = [run_command]
