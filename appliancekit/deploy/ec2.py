"""Reading a member's resources on EC2 and carrying a plan out through boto3.

Every resource a deployment makes is tagged `appliancekit:cloud` and `appliancekit:member`,
which is how the next run finds it: no state file to lose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliancekit.deploy.plan import (
    Action,
    ActionKind,
    InstanceState,
    Observed,
    Port,
    VolumeState,
)
from appliancekit.deploy.target import MemberTarget
from appliancekit.publish.ec2 import TAG_SHA, find_ami

TAG_CLOUD = "appliancekit:cloud"
TAG_MEMBER = "appliancekit:member"
TAG_SETTINGS = "appliancekit:settings-sha256"
DATA_DEVICE = "/dev/sdf"  # on Nitro: the second NVMe disk, found by its serial (volume id)
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
WAIT = {"Delay": 2, "MaxAttempts": 150}


def _filters(target: MemberTarget) -> list[dict[str, Any]]:
    return [
        {"Name": f"tag:{TAG_CLOUD}", "Values": [target.cloud]},
        {"Name": f"tag:{TAG_MEMBER}", "Values": [target.member]},
    ]


def _tags(target: MemberTarget, **more: str) -> list[dict[str, str]]:
    tags = {
        TAG_CLOUD: target.cloud,
        TAG_MEMBER: target.member,
        "Name": f"{target.cloud}-{target.member}",
        **more,
    }
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def _tag(resource: dict[str, Any], key: str) -> str:
    return next((t["Value"] for t in resource.get("Tags", []) if t["Key"] == key), "")


def observe(ec2: Any, target: MemberTarget) -> Observed:
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [target.security_group_name]}]
    )["SecurityGroups"]
    group = groups[0] if groups else None
    ingress: set[Port] = set()
    for perm in group.get("IpPermissions", []) if group else []:
        if perm.get("FromPort") == perm.get("ToPort") and perm.get("FromPort") is not None:
            ingress.add((str(perm["IpProtocol"]), int(perm["FromPort"])))
    reservations = ec2.describe_instances(
        Filters=[*_filters(target), {"Name": "instance-state-name", "Values": LIVE_STATES}]
    )["Reservations"]
    found = [i for r in reservations for i in r["Instances"]]
    instance = None
    if found:
        raw = sorted(found, key=lambda i: str(i.get("LaunchTime", "")))[-1]
        instance = InstanceState(
            instance_id=raw["InstanceId"],
            image_id=raw["ImageId"],
            image_sha256=_tag(raw, TAG_SHA),
            settings_digest=_tag(raw, TAG_SETTINGS),
            zone=raw["Placement"]["AvailabilityZone"],
            state=raw["State"]["Name"],
        )
    volumes = ec2.describe_volumes(Filters=_filters(target))["Volumes"]
    volume = None
    if volumes:
        raw_volume = volumes[0]
        attached = [a["InstanceId"] for a in raw_volume.get("Attachments", [])]
        volume = VolumeState(
            raw_volume["VolumeId"],
            raw_volume["AvailabilityZone"],
            attached[0] if attached else None,
        )
    return Observed(
        ami_id=find_ami(ec2, target.sha256),
        group_id=group["GroupId"] if group else None,
        ingress=frozenset(ingress),
        instance=instance,
        volume=volume,
    )


@dataclass
class Applied:
    member: str
    instance_id: str | None = None
    ami_id: str | None = None
    volume_id: str | None = None
    group_id: str | None = None
    done: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "member": self.member,
            "instance_id": self.instance_id,
            "ami_id": self.ami_id,
            "volume_id": self.volume_id,
            "security_group_id": self.group_id,
            "done": self.done,
        }


def _permissions(ports: tuple[Port, ...]) -> list[dict[str, Any]]:
    return [
        {
            "IpProtocol": proto,
            "FromPort": port,
            "ToPort": port,
            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
        }
        for proto, port in ports
    ]


def apply_member(
    ec2: Any,
    target: MemberTarget,
    actions: list[Action],
    observed: Observed,
    *,
    publish_ami: Callable[[MemberTarget], str],
    default_zone: str,
    step: Callable[[str], None] = lambda _: None,
) -> Applied:
    """Carry out `actions` (from plan_member(target, observed)) in order."""
    state = Applied(
        target.member,
        instance_id=observed.instance.instance_id if observed.instance else None,
        ami_id=observed.ami_id,
        volume_id=observed.volume.volume_id if observed.volume else None,
        group_id=observed.group_id,
    )
    zone = (
        observed.volume.zone
        if observed.volume
        else observed.instance.zone
        if observed.instance
        else default_zone
    )
    for action in actions:
        step(f"{target.member}: {action.kind.value} {action.detail}")
        if action.kind is ActionKind.PUBLISH_AMI:
            state.ami_id = publish_ami(target)
        elif action.kind is ActionKind.CREATE_GROUP:
            state.group_id = ec2.create_security_group(
                GroupName=target.security_group_name,
                Description=f"appliancekit {target.cloud}/{target.member}: declared ports only",
                TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags(target)}],
            )["GroupId"]
        elif action.kind is ActionKind.OPEN_PORTS:
            ec2.authorize_security_group_ingress(
                GroupId=state.group_id, IpPermissions=_permissions(action.ports)
            )
        elif action.kind is ActionKind.CLOSE_PORTS:
            ec2.revoke_security_group_ingress(
                GroupId=state.group_id, IpPermissions=_permissions(action.ports)
            )
        elif action.kind is ActionKind.CREATE_VOLUME:
            state.volume_id = ec2.create_volume(
                AvailabilityZone=zone,
                Size=target.data_volume_gib,
                VolumeType="gp3",
                Encrypted=True,
                TagSpecifications=[{"ResourceType": "volume", "Tags": _tags(target)}],
            )["VolumeId"]
            ec2.get_waiter("volume_available").wait(VolumeIds=[state.volume_id], WaiterConfig=WAIT)
        elif action.kind is ActionKind.LAUNCH:
            state.instance_id = _launch(ec2, target, state, zone)
        elif action.kind is ActionKind.REPLACE:
            assert state.instance_id is not None
            _retire(ec2, state.instance_id, state.volume_id)
            state.instance_id = _launch(ec2, target, state, zone)
        elif action.kind is ActionKind.ATTACH:
            assert state.instance_id is not None and state.volume_id is not None
            _attach(ec2, state.instance_id, state.volume_id)
        elif action.kind is ActionKind.START:
            ec2.start_instances(InstanceIds=[state.instance_id])
        state.done.append(action.kind.value)
    return state


def _launch(ec2: Any, target: MemberTarget, state: Applied, zone: str) -> str:
    assert state.ami_id and state.group_id and state.volume_id
    instance_id = ec2.run_instances(
        ImageId=state.ami_id,
        InstanceType=target.instance_type,
        MinCount=1,
        MaxCount=1,
        SecurityGroupIds=[state.group_id],
        UserData=target.user_data(state.volume_id).decode(),
        Placement={"AvailabilityZone": zone},
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": _tags(
                    target, **{TAG_SHA: target.sha256, TAG_SETTINGS: target.settings_digest()}
                ),
            }
        ],
    )["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    # The initramfs waits for the volume by its serial: attaching right after the start is
    # how a data volume reaches a new instance on EC2 (it cannot be named at launch).
    _attach(ec2, instance_id, state.volume_id)
    return instance_id


def _attach(ec2: Any, instance_id: str, volume_id: str) -> None:
    ec2.attach_volume(Device=DATA_DEVICE, InstanceId=instance_id, VolumeId=volume_id)
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[volume_id], WaiterConfig=WAIT)


def _retire(ec2: Any, instance_id: str, volume_id: str | None) -> None:
    """Stop the old instance before its data volume moves: the new one must never mount a
    filesystem the old one still writes."""
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    if volume_id:
        volumes = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
        if any(a["InstanceId"] == instance_id for a in volumes[0].get("Attachments", [])):
            ec2.detach_volume(VolumeId=volume_id, InstanceId=instance_id)
            ec2.get_waiter("volume_available").wait(VolumeIds=[volume_id], WaiterConfig=WAIT)
    ec2.terminate_instances(InstanceIds=[instance_id])
    # a terminated instance lingers in listings for a while; wait so the next run is exact
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        if state["State"]["Name"] in ("shutting-down", "terminated"):
            return
        time.sleep(1)
