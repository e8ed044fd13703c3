"""`appliancekit doctor`: which host tools are missing and how to get them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from appliancekit.commands._common import json_option
from appliancekit.output import emit_json

# tool -> (Debian package, what needs it)
TOOLS = {
    "apt-get": ("apt", "Debian packages for the target"),
    "dpkg-deb": ("dpkg", "unpacking packages"),
    "mkfs.erofs": ("erofs-utils", "sealed root"),
    "fsck.erofs": ("erofs-utils", "image scans"),
    "veritysetup": ("cryptsetup-bin", "dm-verity hash tree"),
    "sfdisk": ("fdisk", "partition tables"),
    "mkfs.vfat": ("dosfstools", "boot partitions"),
    "mcopy": ("mtools", "boot partitions"),
    "mkfs.ext4": ("e2fsprogs", "data partitions"),
    "cpio": ("cpio", "initramfs"),
    "depmod": ("kmod", "initramfs modules"),
    "qemu-system-aarch64": ("qemu-system-arm", "boot tests (arm64, armhf)"),
    "qemu-system-x86_64": ("qemu-system-x86", "boot tests (amd64)"),
    "bmaptool": ("bmap-tools", "checking .bmap files"),
    "zstd": ("zstd", "release images"),
    "git": ("git", "publishing to a deploy repository"),
}
FILES = {
    "/usr/share/keyrings/debian-archive-keyring.gpg": (
        "debian-archive-keyring",
        "signature checks",
    ),
}


@click.command("doctor")
@json_option
def doctor_command(json_mode: bool) -> None:
    """Check the host for the tools appliancekit needs."""
    rows = []
    for tool, (package, why) in TOOLS.items():
        rows.append(
            {"tool": tool, "package": package, "for": why, "found": shutil.which(tool) is not None}
        )
    for path, (package, why) in FILES.items():
        rows.append({"tool": path, "package": package, "for": why, "found": Path(path).exists()})
    missing = sorted({r["package"] for r in rows if not r["found"]})
    nix = _nix_report()
    if json_mode:
        emit_json({"checks": rows, "missing_packages": missing, "ok": not missing, "nix": nix})
    else:
        for row in rows:
            click.echo(
                f"{'ok     ' if row['found'] else 'MISSING'} {row['tool']:32} ({row['package']}: {row['for']})"
            )
        if missing:
            click.echo(f"install with: apt-get install {' '.join(missing)}  (or: make setup)")
        else:
            click.echo("all host tools present")
        click.echo(_nix_line(nix))
    sys.exit(1 if missing else 0)


def _nix_report() -> dict[str, object]:
    """The Nix that `build --backend nixos` would use. Informational: the Debian backend
    needs no Nix, so a missing or too old Nix does not fail `doctor`."""
    from appliancekit.nixos.nixversion import nix_check

    return nix_check()


def _nix_line(nix: dict[str, object]) -> str:
    if nix["ok"]:
        return f"ok      nix {nix['version']} (builds NixOS-backend images)"
    return f"NIX     {nix['problem']} (only the NixOS backend needs it)"


COMMANDS = [doctor_command]
