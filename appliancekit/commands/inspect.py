"""`appliancekit inspect IMAGE_DIR`: what an image holds and how it is laid out."""

from __future__ import annotations

import json
from pathlib import Path

import click

from appliancekit.commands._common import handle_errors, json_option
from appliancekit.digest import sha256_file
from appliancekit.manifest import load_manifest
from appliancekit.output import emit_json

MIB = 1 << 20


@click.command("inspect")
@click.argument("image_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--verify", is_flag=True, help="Also check the disk image against its recorded sha256."
)
@json_option
@handle_errors
def inspect_command(image_dir: Path, verify: bool, json_mode: bool) -> None:
    """Show an image's manifest: packages, partitions, verity root hash, sizes."""
    manifest = load_manifest(image_dir)
    report_file = image_dir / "size-report.json"
    size_report = json.loads(report_file.read_text()) if report_file.exists() else None
    verified = None
    if verify:
        verified = sha256_file(image_dir / manifest.disk["path"]) == manifest.disk["sha256"]
    if json_mode:
        emit_json(
            {"manifest": manifest.to_json(), "size_report": size_report, "verified": verified}
        )
        return
    click.echo(
        f"{manifest.name}: {manifest.recipe} for {manifest.board} ({manifest.arch}, Debian {manifest.suite})"
    )
    click.echo(
        f"disk: {manifest.disk['path']} {manifest.disk['size'] / MIB:.0f} MiB {manifest.disk['table']}"
    )
    click.echo(
        f"sha256: {manifest.disk['sha256']}"
        + ("" if verified is None else f" ({'ok' if verified else 'MISMATCH'})")
    )
    for part in manifest.disk["partitions"]:
        click.echo(
            f"  {part['number']} {part['name']:10} offset {part['offset']:>11} size {part['size'] / MIB:7.1f} MiB"
        )
    click.echo(f"verity root hash: {manifest.verity['root_hash']}")
    click.echo(f"kernel {manifest.kernel_version}: {manifest.kernel_cmdline}")
    sizes = manifest.sizes
    click.echo(
        f"root: {sizes['unminimised_root_bytes'] / MIB:.1f} MiB unminimised -> "
        f"{sizes['minimised_root_bytes'] / MIB:.1f} MiB kept -> {sizes['sealed_root_bytes'] / MIB:.1f} MiB sealed"
    )
    roles: dict[str, int] = {}
    for package in manifest.packages:
        roles[package["role"]] = roles.get(package["role"], 0) + 1
    click.echo("packages: " + ", ".join(f"{n} {role}" for role, n in sorted(roles.items())))
    if verified is False:
        raise SystemExit(1)


COMMANDS = [inspect_command]
