"""`appliancekit publish IMAGE_DIR --to sdcard|ec2|git`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.errors import UserError
from appliancekit.output import emit_json
from appliancekit.project import find_project

MIB = 1 << 20


@click.command("publish")
@click.argument("image_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--to",
    "target",
    type=click.Choice(["sdcard", "ec2", "git", "proxmox"]),
    required=True,
    help="sdcard: .img.zst + .bmap release dir; ec2: EBS snapshot + AMI; git: commit to a"
    " deploy repo; proxmox: qcow2 + the qm command that imports it.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="[sdcard, proxmox] Release directory (default: releases/NAME[-proxmox]).",
)
@click.option(
    "--level",
    default=9,
    show_default=True,
    type=click.IntRange(1, 22),
    help="[sdcard, git] zstd level.",
)
@click.option("--region", help="[ec2] AWS region (default: from the AWS configuration).")
@click.option("--endpoint-url", help="[ec2] AWS API endpoint (e.g. a moto server for tests).")
@click.option("--bucket", help="[ec2] S3 bucket for --method s3.")
@click.option(
    "--method",
    type=click.Choice(["ebs", "s3"]),
    default="ebs",
    show_default=True,
    help="[ec2] EBS direct APIs, or S3 upload + ImportSnapshot.",
)
@click.option(
    "--workers",
    default=16,
    show_default=True,
    type=click.IntRange(1, 256),
    help="[ec2] Parallel block uploads.",
)
@click.option(
    "--repo",
    type=click.Path(path_type=Path, file_okay=False),
    help="[git] Deploy repository work tree.",
)
@click.option(
    "--max-artifact-size",
    default=64,
    show_default=True,
    type=click.IntRange(0, None),
    help="[git] Commit the compressed image only up to this many MiB.",
)
@click.option("--vmid", default=100, show_default=True, type=int, help="[proxmox] VM id.")
@click.option("--vm-name", help="[proxmox] VM name (default: the hostname setting or NAME).")
@click.option("--storage", default="local-lvm", show_default=True, help="[proxmox] Storage.")
@click.option("--bridge", default="vmbr0", show_default=True, help="[proxmox] Network bridge.")
@click.option(
    "-s",
    "--set",
    "device_settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="[proxmox] Per-device setting written to settings.env on the ESP (repeatable).",
)
@click.option(
    "--sign",
    "sign_key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="[git] Sign SHA256SUMS with this minisign secret key (`appliancekit keygen`).",
)
@json_option
@click.pass_context
@handle_errors
def publish_command(
    ctx: click.Context,
    image_dir: Path,
    target: str,
    out: Path | None,
    level: int,
    region: str | None,
    endpoint_url: str | None,
    bucket: str | None,
    method: str,
    workers: int,
    repo: Path | None,
    max_artifact_size: int,
    vmid: int,
    vm_name: str | None,
    storage: str,
    bridge: str,
    device_settings: tuple[str, ...],
    sign_key: Path | None,
    json_mode: bool,
) -> None:
    """Publish a built image: an SD-card release, an AMI, or a commit in a deploy repo.

    The image is checked against its SHA256SUMS first; nothing is published from a bad one.
    """
    reporter = reporter_from(ctx, json_mode)
    if sign_key is not None and target != "git":
        raise UserError("--sign is for --to git", field="--sign")
    if target == "sdcard":
        from appliancekit.manifest import load_manifest
        from appliancekit.publish.sdcard import publish_sdcard

        name = load_manifest(image_dir).name
        out_dir = out or find_project().root / "releases" / name
        release = publish_sdcard(image_dir, out_dir, level=level, reporter=reporter)
        payload = release.to_json()
        text = (
            f"{release.directory}: {release.image.name} {release.compressed_size / MIB:.1f} MiB"
            f" (image {release.image_size / MIB:.0f} MiB, {release.mapped_bytes / MIB:.1f} MiB mapped),"
            f" {release.bmap.name}, SHA256SUMS"
        )
    elif target == "ec2":
        from appliancekit.publish.ec2 import publish_ec2

        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise UserError("--region is required (or set AWS_REGION)", field="--region")
        result = publish_ec2(
            image_dir,
            region=region,
            endpoint_url=endpoint_url,
            bucket=bucket,
            method=method,
            workers=workers,
            reporter=reporter,
        )
        payload = result.to_json()
        how = {
            "ami": "already published",
            "snapshot": "registered an existing snapshot",
        }.get(
            result.reused or "",
            f"uploaded {result.bytes_sent / MIB:.1f} MiB of {result.image_size / MIB:.0f} MiB",
        )
        text = f"{result.image_id} in {result.region} ({result.snapshot_id}): {how}"
    elif target == "proxmox":
        from appliancekit.devsettings import parse_cli_settings
        from appliancekit.manifest import load_manifest
        from appliancekit.publish.proxmox import VmSpec, publish_proxmox

        manifest = load_manifest(image_dir)
        values = parse_cli_settings(device_settings, manifest)
        name = manifest.name
        vm = VmSpec(
            vmid=vmid, name=vm_name or values.get("hostname", name), storage=storage, bridge=bridge
        )
        out_dir = out or find_project().root / "releases" / f"{name}-proxmox"
        reporter.step(f"converting {name} to qcow2 for Proxmox VM {vmid}")
        result_pm = publish_proxmox(image_dir, out_dir, vm, settings=values)
        payload = result_pm.to_json()
        text = (
            f"{result_pm.directory}: {result_pm.qcow2.name} {result_pm.qcow2_size / MIB:.1f} MiB,"
            f" {result_pm.script.name} (qm create {vmid}), SHA256SUMS"
        )
    else:
        from appliancekit.publish.git import publish_git

        if repo is None:
            raise UserError("--to git needs --repo PATH", field="--repo")
        result_git = publish_git(
            image_dir,
            repo,
            max_artifact_bytes=max_artifact_size * MIB,
            level=level,
            reporter=reporter,
            sign_key=sign_key,
        )
        payload = result_git.to_json()
        state = "committed" if result_git.committed else "already published, no new commit"
        text = f"{result_git.repo}/{result_git.directory}: {state} ({result_git.commit[:12]})"
    if json_mode:
        emit_json(payload)
    else:
        click.echo(text)


COMMANDS = [publish_command]
