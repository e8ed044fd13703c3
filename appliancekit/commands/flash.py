"""`appliancekit flash IMAGE_OR_RELEASE DEVICE`."""

from __future__ import annotations

from pathlib import Path

import click

from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.output import emit_json

MIB = 1 << 20


@click.command("flash")
@click.argument(
    "source", metavar="IMAGE_OR_RELEASE", type=click.Path(path_type=Path, file_okay=False)
)
@click.argument("device", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Write to a device that is not marked removable.")
@click.option(
    "--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a TTY)."
)
@click.option("--dry-run", is_flag=True, help="Check everything and show what would be written.")
@click.option(
    "-s",
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Per-device setting written to settings.env on the boot partition (repeatable);"
    " checked against the recipe's per-device settings and their kinds.",
)
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="TOML file of per-device settings (-s wins over it; keeps secrets off the command line).",
)
@json_option
@click.pass_context
@handle_errors
def flash_command(
    ctx: click.Context,
    source: Path,
    device: Path,
    force: bool,
    yes: bool,
    dry_run: bool,
    settings: tuple[str, ...],
    settings_file: Path | None,
    json_mode: bool,
) -> None:
    """Write an image (images/NAME) or a release (publish --to sdcard) to a card or file.

    Only the mapped blocks are written, then read back and checked. Refuses mounted,
    system and non-removable disks (--force for the last) and asks before writing a
    block device (--yes for scripts). Regular files are created or truncated.
    """
    from appliancekit.devsettings import load_settings_toml, parse_cli_settings
    from appliancekit.flash import find_source, flash

    manifest = find_source(source).manifest
    values = load_settings_toml(settings_file, manifest) if settings_file else {}
    values.update(parse_cli_settings(settings, manifest))
    result = flash(
        source,
        device,
        settings=values,
        force=force,
        yes=yes,
        dry_run=dry_run,
        reporter=reporter_from(ctx, json_mode),
    )
    if json_mode:
        emit_json(result.to_json())
        return
    if dry_run:
        click.echo(
            f"would write {result.mapped_bytes} bytes ({result.mapped_bytes / MIB:.1f} MiB) in"
            f" {result.ranges} ranges of a {result.image_size / MIB:.0f} MiB image to {result.target}"
            f" ({result.target_kind})"
        )
        for start, end in result.plan:
            click.echo(f"  {start:>13} .. {end:>13}  {end - start:>12} bytes")
        if result.settings:
            click.echo(
                "would set " + ", ".join(f"{k}={v}" for k, v in sorted(result.settings.items()))
            )
        return
    rate = result.written_bytes / MIB / max(result.write_seconds, 1e-6)
    click.echo(
        f"{result.target}: wrote {result.written_bytes / MIB:.1f} MiB of {result.image_size / MIB:.0f} MiB"
        f" in {result.write_seconds:.1f}s ({rate:.0f} MiB/s), read back and verified"
        + (
            "; settings " + ", ".join(f"{k}={v}" for k, v in sorted(result.settings.items()))
            if result.settings
            else ""
        )
    )


COMMANDS = [flash_command]
