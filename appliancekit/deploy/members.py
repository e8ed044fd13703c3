"""A cloud's members as deployment targets: which go to EC2, with which image and settings."""

from __future__ import annotations

from pathlib import Path

from appliancekit.cloud.model import Cloud
from appliancekit.cloud.roles import (
    NET_ADDRESS,
    NET_ADDRESS6,
    NET_GATEWAY,
    NET_INTERFACE,
    member_settings,
    split_settings,
)
from appliancekit.cloud.secrets import load_or_create
from appliancekit.deploy.target import MemberTarget, ports_of
from appliancekit.errors import UserError
from appliancekit.publish.image import open_image_dir

# EC2 gives each instance its addresses (VPC DHCP): the cloud network's static ones are for
# members that share an L2 network, which instances in a VPC do not.
NOT_ON_EC2 = (NET_ADDRESS, NET_ADDRESS6, NET_GATEWAY, NET_INTERFACE)


def ec2_targets(cloud: Cloud, images_dir: Path) -> tuple[list[MemberTarget], dict[str, str]]:
    """(targets for the members whose board has an [ec2] table, {member: why not} for the
    rest). Each target's image must have been built (`appliancekit cloud build`) and must
    match its SHA256SUMS."""
    targets: list[MemberTarget] = []
    skipped: dict[str, str] = {}
    secrets = None
    for member in cloud.members:
        if member.board.ec2 is None:
            skipped[member.name] = f"board {member.board.name} has no [ec2] table"
            continue
        image_dir = images_dir / f"{member.recipe.name}-{member.board.name}"
        if not (image_dir / "manifest.json").is_file():
            raise UserError(
                f"member {member.name}: no image at {image_dir}: run `appliancekit cloud build"
                f" {cloud.name}` first",
                file=cloud.source_file,
            )
        image = open_image_dir(image_dir)
        secrets = secrets or load_or_create(images_dir / "clouds" / cloud.name)
        _, device = split_settings(member, member_settings(cloud, member, secrets))
        settings = {k: v for k, v in device.items() if k not in NOT_ON_EC2}
        tcp, udp = ports_of(tuple(image.manifest.ports))
        targets.append(
            MemberTarget(
                cloud=cloud.name,
                member=member.name,
                image=image,
                instance_type=member.board.ec2.instance_type,
                tcp_ports=tcp,
                udp_ports=udp,
                settings=settings,
                data_volume_gib=member.board.ec2.data_volume_gib,
            )
        )
    return targets, skipped
