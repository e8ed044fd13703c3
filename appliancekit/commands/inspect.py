"""`appliancekit inspect IMAGE_DIR`: what an image holds and how it is laid out."""

from __future__ import annotations

import json
from pathlib import Path

import click

from appliancekit.commands._common import handle_errors, json_option
from appliancekit.digest import sha256_file
from appliancekit.errors import UserError
from appliancekit.manifest import Manifest, load_manifest
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
    """Show an image's manifest: packages, partitions, verity root hash, sizes.

    Exit codes: 0 shown (and verified), 1 --verify found a checksum mismatch, 2 bad input."""
    manifest = load_manifest(image_dir)
    size_report = _size_report(image_dir / "size-report.json")
    verified = None
    if verify:
        disk = image_dir / manifest.disk.path
        try:
            verified = sha256_file(disk) == manifest.disk.sha256
        except FileNotFoundError:
            raise UserError(f"disk image {manifest.disk.path} is missing", file=disk) from None
    if json_mode:
        emit_json(
            {"manifest": manifest.to_json(), "size_report": size_report, "verified": verified}
        )
    else:
        lines = _debian_lines if manifest.backend == "debian" else _nixos_lines
        for line in lines(manifest, verified):
            click.echo(line)
    if verified is False:
        raise SystemExit(1)


def _size_report(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"unreadable size report: {exc}", file=path) from None


def _disk_lines(manifest: Manifest, verified: bool | None) -> list[str]:
    disk = manifest.disk
    lines = [
        f"disk: {disk.path} {disk.size / MIB:.0f} MiB {disk.table or '(partition table not recorded)'}",
        f"sha256: {disk.sha256}"
        + ("" if verified is None else f" ({'ok' if verified else 'MISMATCH'})"),
    ]
    for part in disk.partitions:
        lines.append(
            f"  {part.number} {part.name:10} offset {part.offset:>11} size {part.size / MIB:7.1f} MiB"
        )
    return lines


def _debian_lines(manifest: Manifest, verified: bool | None) -> list[str]:
    lines = [
        f"{manifest.name}: {manifest.recipe} for {manifest.board} ({manifest.arch}, Debian {manifest.suite})",
        *_disk_lines(manifest, verified),
    ]
    if manifest.verity is not None:
        lines.append(f"verity root hash: {manifest.verity.root_hash}")
    lines.append(f"kernel {manifest.kernel_version}: {manifest.kernel_cmdline}")
    sizes = manifest.sizes
    if sizes.unminimised_root_bytes is not None:
        lines.append(
            f"root: {sizes.unminimised_root_bytes / MIB:.1f} MiB unminimised -> "
            f"{(sizes.minimised_root_bytes or 0) / MIB:.1f} MiB kept -> "
            f"{(sizes.sealed_root_bytes or 0) / MIB:.1f} MiB sealed"
        )
    roles: dict[str, int] = {}
    for package in manifest.packages:
        role = str(package.get("role", "?"))
        roles[role] = roles.get(role, 0) + 1
    lines.append("packages: " + ", ".join(f"{n} {role}" for role, n in sorted(roles.items())))
    return lines


def _nixos_lines(manifest: Manifest, verified: bool | None) -> list[str]:
    extra = manifest.extra
    pin = extra.get("nixpkgs")
    rev = pin.get("rev", "") if isinstance(pin, dict) else str(pin or "")
    return [
        f"{manifest.name}: {manifest.recipe} for {manifest.board} ({manifest.arch},"
        f" NixOS {manifest.suite}{' ' + rev[:12] if rev else ''}, built by Nix)",
        *_disk_lines(manifest, verified),
        f"root seal: {extra.get('seal', 'not recorded')}"
        + ("" if manifest.verity is None else f", verity root hash {manifest.verity.root_hash}"),
        f"flake: {manifest.name}/{extra.get('flake', 'flake')}",
    ]


COMMANDS = [inspect_command]
