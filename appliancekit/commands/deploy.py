"""`appliancekit deploy CLOUD`: the cloud's EC2 members, as the cloud file describes them."""

from __future__ import annotations

import os
from pathlib import Path

import click

from appliancekit.commands._common import handle_errors, json_option, reporter_from
from appliancekit.errors import UserError
from appliancekit.output import emit_json


@click.command("deploy")
@click.argument("name")
@click.option("--region", help="AWS region (default: from AWS_REGION / the AWS configuration).")
@click.option("--endpoint-url", help="AWS API endpoint (e.g. a moto server for tests).")
@click.option(
    "--zone", help="Availability zone for new data volumes and instances (default: REGIONa)."
)
@click.option(
    "--images",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where `cloud build` put the images (default: images/).",
)
@click.option("--dry-run", is_flag=True, help="Show the plan and change nothing.")
@json_option
@click.pass_context
@handle_errors
def deploy_command(
    ctx: click.Context,
    name: str,
    region: str | None,
    endpoint_url: str | None,
    zone: str | None,
    images: Path | None,
    dry_run: bool,
    json_mode: bool,
) -> None:
    """Publish the AMI of each EC2 member of cloud NAME, make its security group from the
    ports its recipe declares, and create its instance with its per-device settings as
    user-data, or replace the instance when the image or settings changed, keeping its EBS
    data volume. Prints the plan first; --dry-run stops there. Idempotent."""
    from appliancekit.cloud.model import find_cloud
    from appliancekit.cloud.updates import load_gates, may_update
    from appliancekit.deploy.ec2 import apply_member, observe
    from appliancekit.deploy.members import ec2_targets
    from appliancekit.deploy.plan import plan_member
    from appliancekit.project import find_project
    from appliancekit.publish.ec2 import aws_errors, make_clients, publish_ec2

    reporter = reporter_from(ctx, json_mode)
    project = find_project()
    cloud = find_cloud(name, project)
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise UserError("--region is required (or set AWS_REGION)", field="--region")
    images_dir = (images or project.images_dir).resolve()
    targets, skipped = ec2_targets(cloud, images_dir)
    gates = load_gates(images_dir / "clouds" / cloud.name)  # the panel's approve / hold
    ec2, _, _ = make_clients(region, endpoint_url, 4)

    def publish(target: object) -> str:
        return publish_ec2(
            target.image.directory,  # type: ignore[attr-defined]
            region=region,
            endpoint_url=endpoint_url,
            reporter=reporter,
            image=target.image,  # type: ignore[attr-defined]
        ).image_id

    with aws_errors():
        observed = {t.member: observe(ec2, t) for t in targets}
        plans = {
            t.member: plan_member(
                t, observed[t.member], update_allowed=may_update(gates, t.member, t.sha256)
            )
            for t in targets
        }
        if not json_mode:
            for member, reason in skipped.items():
                click.echo(f"{member}: not deployed ({reason})")
            for member, actions in plans.items():
                if not actions:
                    click.echo(f"{member}: up to date")
                for action in actions:
                    click.echo(f"{member}: {action.kind.value}: {action.detail}")
        applied = []
        if not dry_run:
            for target in targets:
                applied.append(
                    apply_member(
                        ec2,
                        target,
                        plans[target.member],
                        observed[target.member],
                        publish_ami=publish,
                        default_zone=zone or f"{region}a",
                        step=reporter.step,
                    ).to_json()
                )
    if json_mode:
        emit_json(
            {
                "cloud": cloud.name,
                "region": region,
                "dry_run": dry_run,
                "plan": [a.to_json() for actions in plans.values() for a in actions],
                "skipped": skipped,
                "applied": applied,
            }
        )
    elif not dry_run:
        for row in applied:
            click.echo(
                f"{row['member']}: instance {row['instance_id']} from {row['ami_id']},"
                f" data volume {row['volume_id']}, security group {row['security_group_id']}"
            )


COMMANDS = [deploy_command]
