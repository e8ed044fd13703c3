"""`appliancekit deploy`: plans (pure), then the real command against a moto server, checked
through boto3: instances, data volumes and security groups."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from appliancekit.cloud.updates import load_gates
from appliancekit.deploy.plan import (
    ActionKind,
    InstanceState,
    Observed,
    VolumeState,
    plan_member,
)
from appliancekit.deploy.target import MemberTarget
from appliancekit.publish.image import open_image_dir
from tests.moto_support import CREDENTIALS, REGION, moto_server
from tests.test_publish_support import cli_inprocess, make_image, needs_disk_tools

CLOUD = """\
[cloud]
domain = "example.net"
network = "10.9.0.0/24"
gateway = "10.9.0.1"
# the fake homepage image below declares no ACME settings: no ACME for this cloud
acme_url = ""

[[member]]
name = "ns"
recipe = "dns"
board = "qemu-virt-arm64"
role = "dns"
address = "10.9.0.2"

[[member]]
name = "web"
recipe = "homepage"
board = "ec2-x86_64"
role = "web"
address = "10.9.0.3"
"""
IMAGE = "homepage-ec2-x86_64"


def _image(images: Path, seed: int, ports: tuple[int, ...] = (80,)) -> Path:
    return make_image(
        images / IMAGE,
        name=IMAGE,
        recipe="homepage",
        board="ec2-x86_64",
        arch="amd64",
        data_mib=8,
        seed=seed,
        ports=ports,
    )


# --- plans -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> MemberTarget:
    image = open_image_dir(_image(tmp_path_factory.mktemp("plan"), seed=31, ports=(53, 8081)))
    return MemberTarget(
        cloud="c", member="ns", image=image, instance_type="t3.micro",
        tcp_ports=(53, 8081), udp_ports=(53,), settings={"hostname": "ns"},
    )  # fmt: skip


def _observed(target: MemberTarget, **changes: Any) -> Observed:
    instance = InstanceState(
        "i-1", "ami-1", target.sha256, target.settings_digest(), "eu-central-1a", "running"
    )
    base = {
        "ami_id": "ami-1",
        "group_id": "sg-1",
        "ingress": frozenset({("tcp", 53), ("tcp", 8081), ("udp", 53)}),
        "instance": instance,
        "volume": VolumeState("vol-1", "eu-central-1a", "i-1"),
    }
    return Observed(**{**base, **changes})


@needs_disk_tools
def test_nothing_to_do_when_everything_matches(target: MemberTarget) -> None:
    assert plan_member(target, _observed(target)) == []


@needs_disk_tools
def test_a_new_member_gets_everything_in_order(target: MemberTarget) -> None:
    empty = Observed(None, None, frozenset(), None, None)
    kinds = [a.kind for a in plan_member(target, empty)]
    assert kinds == [
        ActionKind.PUBLISH_AMI, ActionKind.CREATE_GROUP, ActionKind.OPEN_PORTS,
        ActionKind.CREATE_VOLUME, ActionKind.LAUNCH,
    ]  # fmt: skip
    opened = next(a for a in plan_member(target, empty) if a.kind is ActionKind.OPEN_PORTS)
    assert set(opened.ports) == {("tcp", 53), ("tcp", 8081), ("udp", 53)}


@needs_disk_tools
def test_a_new_image_or_new_settings_replace_the_instance(target: MemberTarget) -> None:
    old = _observed(target).instance
    assert old is not None
    for instance in (
        InstanceState(**{**old.__dict__, "image_sha256": "0" * 64}),
        InstanceState(**{**old.__dict__, "settings_digest": "changed"}),
    ):
        actions = plan_member(target, _observed(target, instance=instance, ami_id=None))
        assert [a.kind for a in actions] == [ActionKind.PUBLISH_AMI, ActionKind.REPLACE]


@needs_disk_tools
def test_a_held_update_keeps_the_running_image(target: MemberTarget, tmp_path: Path) -> None:
    from appliancekit.cloud.updates import Decision, may_update, set_gate

    old = _observed(target).instance
    assert old is not None
    running = InstanceState(**{**old.__dict__, "image_sha256": "0" * 64})
    observed = _observed(target, instance=running, ami_id=None)
    set_gate(tmp_path, "ns", Decision.HOLD, "0" * 64)
    gates = load_gates(tmp_path)
    assert not may_update(gates, "ns", target.sha256)
    actions = plan_member(target, observed, update_allowed=False)
    assert [a.kind for a in actions] == [ActionKind.HELD]
    # approving exactly this release lets it through; approving another does not
    set_gate(tmp_path, "ns", Decision.APPROVE, target.sha256)
    assert may_update(load_gates(tmp_path), "ns", target.sha256)
    set_gate(tmp_path, "ns", Decision.APPROVE, "1" * 64)
    assert not may_update(load_gates(tmp_path), "ns", target.sha256)
    # a member on the approved image is not touched by the gate at all
    assert plan_member(target, _observed(target), update_allowed=False) == []


@needs_disk_tools
def test_undeclared_ports_are_closed_and_missing_ones_opened(target: MemberTarget) -> None:
    actions = plan_member(
        target, _observed(target, ingress=frozenset({("tcp", 22), ("tcp", 53), ("udp", 53)}))
    )
    assert [(a.kind, a.ports) for a in actions] == [
        (ActionKind.OPEN_PORTS, (("tcp", 8081),)),
        (ActionKind.CLOSE_PORTS, (("tcp", 22),)),
    ]


@needs_disk_tools
def test_a_detached_volume_is_attached_and_a_stopped_instance_started(
    target: MemberTarget,
) -> None:
    old = _observed(target).instance
    assert old is not None
    actions = plan_member(
        target,
        _observed(
            target,
            volume=VolumeState("vol-1", "eu-central-1a", None),
            instance=InstanceState(**{**old.__dict__, "state": "stopped"}),
        ),
    )
    assert [a.kind for a in actions] == [ActionKind.ATTACH, ActionKind.START]


# --- the command against moto ------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


def _deploy(cloud: Path, images: Path, url: str, *more: str) -> dict[str, Any]:
    result = cli_inprocess(
        "deploy", str(cloud), "--endpoint-url", url, "--images", str(images), "--json",
        "--region", REGION, *more,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _live(ec2: Any) -> list[dict[str, Any]]:
    return [
        i
        for r in ec2.describe_instances(
            Filters=[{"Name": "tag:appliancekit:member", "Values": ["web"]}]
        )["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] in ("pending", "running")
    ]


@needs_disk_tools
def test_deploy_creates_keeps_and_replaces_an_ec2_member(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key.upper(), value)
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url, **CREDENTIALS)
    images = tmp_path / "images"
    _image(images, seed=41)
    cloud = tmp_path / "family.toml"
    cloud.write_text(CLOUD)

    # the plan, and nothing else
    dry = _deploy(cloud, images, moto_url, "--dry-run")
    assert [a["action"] for a in dry["plan"]] == [
        "publish-ami", "create-security-group", "open-ports", "create-data-volume",
        "launch-instance",
    ]  # fmt: skip
    assert dry["skipped"] == {"ns": "board qemu-virt-arm64 has no [ec2] table"}
    # (moto keeps one state per process: other tests' volumes may be there, so filter)
    ours = [{"Name": "tag:appliancekit:cloud", "Values": ["family"]}]
    assert _live(ec2) == [] and ec2.describe_volumes(Filters=ours)["Volumes"] == []

    first = _deploy(cloud, images, moto_url)
    (instance,) = _live(ec2)
    applied = first["applied"][0]
    assert instance["InstanceId"] == applied["instance_id"]
    assert instance["ImageId"] == applied["ami_id"] and instance["InstanceType"] == "t3.micro"
    # the security group: exactly the recipe's declared ports
    (group,) = ec2.describe_security_groups(GroupIds=[applied["security_group_id"]])[
        "SecurityGroups"
    ]
    assert [(p["IpProtocol"], p["FromPort"]) for p in group["IpPermissions"]] == [("tcp", 80)]
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group["GroupId"]]
    # the data volume, attached where the initramfs looks for it
    (volume,) = ec2.describe_volumes(VolumeIds=[applied["volume_id"]])["Volumes"]
    assert [(a["InstanceId"], a["Device"]) for a in volume["Attachments"]] == [
        (instance["InstanceId"], "/dev/sdf")
    ]
    user_data = base64.b64decode(
        ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")[
            "UserData"
        ]["Value"]
    ).decode()
    assert f"data_volume={volume['VolumeId']}\n" in user_data
    assert "hostname=web\n" in user_data and "net_" not in user_data

    # idempotent: nothing planned, nothing changed
    again = _deploy(cloud, images, moto_url)
    assert again["plan"] == [] and [i["InstanceId"] for i in _live(ec2)] == [instance["InstanceId"]]

    # a new image: a new AMI and instance, the same data volume moved over
    _image(images, seed=42)
    replaced = _deploy(cloud, images, moto_url)
    assert [a["action"] for a in replaced["plan"]] == ["publish-ami", "replace-instance"]
    (new,) = _live(ec2)
    assert new["InstanceId"] != instance["InstanceId"] and new["ImageId"] != instance["ImageId"]
    old_state = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0][
        "Instances"
    ][0]["State"]["Name"]
    assert old_state in ("shutting-down", "terminated")
    volumes = ec2.describe_volumes(
        Filters=[{"Name": "tag:appliancekit:member", "Values": ["web"]}]
    )["Volumes"]
    assert [v["VolumeId"] for v in volumes] == [volume["VolumeId"]]
    assert [a["InstanceId"] for a in volumes[0]["Attachments"]] == [new["InstanceId"]]


@needs_disk_tools
def test_deploy_without_built_images_says_what_to_run(cli: Any, tmp_path: Path) -> None:
    cloud = tmp_path / "family.toml"
    cloud.write_text(CLOUD)
    result = cli(
        "deploy", str(cloud), "--region", REGION, "--images", str(tmp_path / "none"), "--dry-run"
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "appliancekit cloud build" in result.stderr
