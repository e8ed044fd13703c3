"""Boot a cloud: every member's card (its image with its per-device settings), all members on
one `network.Lan`, each reachable from the host through its user-mode NIC's forwards."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from appliancekit.boottest import probes_from_manifest, qemu_config
from appliancekit.build import BuildResult
from appliancekit.cloud.model import Cloud, Member
from appliancekit.cloud.network import Cluster, Lan
from appliancekit.cloud.roles import member_settings, split_settings
from appliancekit.cloud.secrets import CloudSecrets
from appliancekit.cloud.testca import TestCA
from appliancekit.deploy.target import DATA_VOLUME_SETTING
from appliancekit.devsettings import render_user_data
from appliancekit.flash import write_device_settings
from appliancekit.imds import ImdsServer
from appliancekit.manifest import Manifest
from appliancekit.probes import forward_map, forwards_for
from appliancekit.qemu import Drive, Machine, PortForward

# The cloud's NIC is each machine's second one: the first stays on DHCP for the host's probes.
CLOUD_NIC = 2
HANDOVER = "appliancekit: switching root"

Builder = Callable[[Member, Mapping[str, str]], BuildResult]


@dataclass(frozen=True)
class Card:
    """A member's disk as it would be flashed: the image plus its settings.env."""

    member: Member
    disk: Path
    manifest: Manifest
    settings: Mapping[str, str]  # per-device, as written (secrets included: never print)
    # the data volume its settings name (`data_volume`, as `deploy` gives an EC2 member):
    # a disk of its own, attached with that serial number and never snapshotted
    volume: Path | None = None

    def volume_drive(self) -> Drive | None:
        """The volume as EBS attaches one: NVMe, serial = the volume id without the dash
        (what the initramfs looks for)."""
        volume_id = self.settings.get(DATA_VOLUME_SETTING)
        if self.volume is None or not volume_id:
            return None
        return Drive(self.volume, device="nvme", snapshot=False, serial=volume_id.replace("-", ""))


def build_members(cloud: Cloud, secrets: CloudSecrets, builder: Builder) -> dict[str, BuildResult]:
    """Each member's image, built with its build-time settings (per-device ones go on cards)."""
    results: dict[str, BuildResult] = {}
    for member in cloud.members:
        build, _device = split_settings(member, member_settings(cloud, member, secrets))
        results[member.name] = builder(member, build)
    return results


def card_settings(
    cloud: Cloud,
    secrets: CloudSecrets,
    member: Member,
    *,
    test_settings: Mapping[str, str] | None = None,
    test_ca: TestCA | None = None,
) -> dict[str, str]:
    """A member's per-device settings on its QEMU card: the cloud's, its static address on
    the cloud's NIC (the second), under `test_settings` (a recipe's [test] ones); with
    `test_ca`, that CA's ACME settings as the member's board reaches it."""
    _build, device = split_settings(
        member, member_settings(cloud, member, secrets, net_interface=CLOUD_NIC)
    )
    device = {**(test_settings or {}), **device}
    if test_ca is not None and device.get("acme_url"):
        declared = {s.name for s in member.recipe.settings}
        acme = test_ca.member_settings(member.board)
        device.update({k: v for k, v in acme.items() if k in declared})
    return device


def make_cards(
    cloud: Cloud,
    secrets: CloudSecrets,
    builds: Mapping[str, BuildResult],
    directory: Path,
    *,
    test: bool = False,
    test_ca: TestCA | None = None,
) -> dict[str, Card]:
    """A card per member in `directory` (kept if there: a member's /data survives runs).

    `test=True` puts each recipe's [test] settings under the cloud's (the probe accounts).
    `test_ca` replaces the ACME settings of the members that use ACME with that CA's."""
    directory.mkdir(parents=True, exist_ok=True)
    cards = {}
    for member in cloud.members:
        result = builds[member.name]
        manifest = result.manifest
        test_settings = (manifest.extra.get("test_settings") or {}) if test else {}
        device = card_settings(cloud, secrets, member, test_settings=test_settings, test_ca=test_ca)
        card = directory / f"{member.name}.img"
        image = result.output_dir / manifest.disk.path
        stamp = directory / f"{member.name}.image-sha256"
        if not card.exists() or not stamp.exists() or stamp.read_text() != manifest.disk.sha256:
            subprocess.run(["cp", "--sparse=always", str(image), str(card)], check=True)
            stamp.write_text(manifest.disk.sha256)
        write_device_settings(card, manifest, device)
        volume = None
        if device.get(DATA_VOLUME_SETTING):
            # as big as the image's own data partition; kept, like the card
            volume = directory / f"{member.name}.volume.img"
            if not volume.exists():
                with open(volume, "wb") as out:
                    out.truncate(member.board.disk.data_size_mib << 20)
        cards[member.name] = Card(member, card, manifest, device, volume)
    return cards


def write_flash_settings(
    cloud: Cloud, secrets: CloudSecrets, member: Member, directory: Path
) -> Path:
    """MEMBER.toml for `appliancekit flash ... --settings` onto a real device, whose only
    NIC is on the cloud's network (mode 0600: it holds the member's secrets)."""
    _build, device = split_settings(
        member, member_settings(cloud, member, secrets, net_interface=1)
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{member.name}.toml"
    text = "".join(f"{name} = {json.dumps(value)}\n" for name, value in sorted(device.items()))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(
            f"# per-device settings of {member.name}.{cloud.domain} (cloud {cloud.name})\n{text}"
        )
    os.chmod(path, 0o600)
    return path


@dataclass
class BootedMember:
    card: Card
    machine: Machine
    forwards: tuple[PortForward, ...]

    def host_port(self, guest_port: int, protocol: str = "tcp") -> int:
        ports = forward_map(self.forwards)
        if (guest_port, protocol) not in ports:
            raise KeyError(
                f"{self.card.member.name}: port {guest_port}/{protocol} is not forwarded"
            )
        return ports[(guest_port, protocol)]


@dataclass
class BootedCloud:
    cloud: Cloud
    lan: Lan
    cluster: Cluster
    members: dict[str, BootedMember]
    started: float  # time.monotonic() when the first machine started
    # figures the checks measure on the way (seconds), for bench/cloud.py
    figures: dict[str, float] = field(default_factory=dict)

    def by_address(self, address: str) -> BootedMember | None:
        for booted in self.members.values():
            m = booted.card.member
            if address in (str(m.address), str(m.address6) if m.address6 else None):
                return booted
        return None

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@contextmanager
def boot_cloud(
    cloud: Cloud, cards: Mapping[str, Card], workdir: Path, *, snapshot: bool = True
) -> Iterator[BootedCloud]:
    """Start every member on one new `Lan`; all are killed when the block ends."""
    lan = Lan.new()
    with Cluster(lan, workdir) as cluster, contextlib.ExitStack() as servers:
        members = {}
        for member in cloud.members:
            card = cards[member.name]
            probes = probes_from_manifest(
                card.manifest, {**card.manifest.settings, **card.settings}
            )
            forwards = forwards_for(probes, card.manifest.ports)
            (workdir / member.name).mkdir(parents=True, exist_ok=True)
            config = qemu_config(
                member.board,
                card.disk,
                card.manifest,
                workdir / member.name,
                forwards,
                snapshot=snapshot,
            )
            volume = card.volume_drive()
            if volume is not None:
                config = replace(config, drives=(*config.drives, volume))
            if member.board.qemu.imds:
                # an EC2 board reads its settings from user-data (IMDSv2), as on EC2
                imds = servers.enter_context(
                    ImdsServer(render_user_data(card.settings, card.manifest))
                )
                config = replace(config, net_options=imds.netdev_options())
            machine = cluster.add(member.name, config)
            members[member.name] = BootedMember(card, machine, forwards)
        started = cluster.start()
        yield BootedCloud(cloud, lan, cluster, members, started)
