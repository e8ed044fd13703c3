"""A deployment plan: what is on EC2 for one member against what should be, as actions.

Pure data in, data out: `deploy --dry-run` prints this and stops, `deploy` prints it and
then carries it out, and a second `deploy` with nothing changed plans nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from appliancekit.deploy.target import MemberTarget

Port = tuple[str, int]  # (protocol, port)


@dataclass(frozen=True)
class InstanceState:
    instance_id: str
    image_id: str
    image_sha256: str  # tag: the image it was launched from
    settings_digest: str  # tag: the settings its user-data carries
    zone: str
    state: str  # pending | running | stopping | stopped


@dataclass(frozen=True)
class VolumeState:
    volume_id: str
    zone: str
    attached_to: str | None


@dataclass(frozen=True)
class Observed:
    ami_id: str | None
    group_id: str | None
    ingress: frozenset[Port]
    instance: InstanceState | None
    volume: VolumeState | None


class ActionKind(StrEnum):
    PUBLISH_AMI = "publish-ami"
    CREATE_GROUP = "create-security-group"
    OPEN_PORTS = "open-ports"
    CLOSE_PORTS = "close-ports"
    CREATE_VOLUME = "create-data-volume"
    LAUNCH = "launch-instance"
    REPLACE = "replace-instance"
    ATTACH = "attach-data-volume"
    START = "start-instance"
    HELD = "update-held"  # nothing to do: the member keeps its release (cloud/updates.py)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    member: str
    detail: str
    ports: tuple[Port, ...] = ()

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "action": self.kind.value,
            "member": self.member,
            "detail": self.detail,
        }
        if self.ports:
            data["ports"] = [f"{port}/{proto}" for proto, port in self.ports]
        return data


def wanted_ingress(target: MemberTarget) -> frozenset[Port]:
    return frozenset(
        [("tcp", p) for p in target.tcp_ports] + [("udp", p) for p in target.udp_ports]
    )


def plan_member(
    target: MemberTarget, observed: Observed, *, update_allowed: bool = True
) -> list[Action]:
    """The actions that turn `observed` into `target`, in the order they must run.

    `update_allowed=False` (the cloud's update approvals hold the member, or approve another
    release): a running instance of another image keeps it; the plan says so and changes
    nothing else about the instance."""
    member = target.member
    actions: list[Action] = []
    held = (
        not update_allowed
        and observed.instance is not None
        and observed.instance.image_sha256 != target.sha256
    )
    if observed.ami_id is None and not held:
        actions.append(
            Action(
                ActionKind.PUBLISH_AMI, member, f"{target.image.manifest.name} {target.sha256[:12]}"
            )
        )
    wanted = wanted_ingress(target)
    if observed.group_id is None:
        actions.append(Action(ActionKind.CREATE_GROUP, member, target.security_group_name))
        missing, extra = wanted, frozenset[Port]()
    else:
        missing, extra = wanted - observed.ingress, observed.ingress - wanted
    if missing:
        actions.append(
            Action(ActionKind.OPEN_PORTS, member, _ports(missing), tuple(sorted(missing)))
        )
    if extra:
        actions.append(Action(ActionKind.CLOSE_PORTS, member, _ports(extra), tuple(sorted(extra))))
    if observed.volume is None:
        actions.append(
            Action(
                ActionKind.CREATE_VOLUME,
                member,
                f"{target.data_volume_gib} GiB, kept across replacements",
            )
        )
    instance = observed.instance
    if instance is None:
        actions.append(Action(ActionKind.LAUNCH, member, target.instance_type))
        return actions
    reasons = []
    if held:
        actions.append(
            Action(
                ActionKind.HELD,
                member,
                f"{instance.instance_id} keeps image {instance.image_sha256[:12]}: the update to"
                f" {target.sha256[:12]} is not approved (updates.json)",
            )
        )
    elif instance.image_sha256 != target.sha256:
        reasons.append(f"image {instance.image_sha256[:12]} -> {target.sha256[:12]}")
    if instance.settings_digest != target.settings_digest() and not held:
        reasons.append("per-device settings changed")
    if reasons:
        actions.append(
            Action(ActionKind.REPLACE, member, f"{instance.instance_id}: {', '.join(reasons)}")
        )
        return actions
    if observed.volume is None or observed.volume.attached_to != instance.instance_id:
        actions.append(Action(ActionKind.ATTACH, member, instance.instance_id))
    if instance.state in ("stopped", "stopping"):
        actions.append(Action(ActionKind.START, member, instance.instance_id))
    return actions


def _ports(ports: frozenset[Port]) -> str:
    return ", ".join(f"{port}/{proto}" for proto, port in sorted(ports))
