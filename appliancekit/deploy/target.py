"""What one member of a cloud should be on EC2 (the desired side of a deployment plan)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from appliancekit.devsettings import render_user_data
from appliancekit.publish.image import VerifiedImage

# Ports every appliance's recipe declares as TCP; DNS also answers on UDP.
UDP_PORTS = frozenset({53})
# The setting that names the member's data volume (read by the initramfs).
DATA_VOLUME_SETTING = "data_volume"


@dataclass(frozen=True)
class MemberTarget:
    cloud: str
    member: str
    image: VerifiedImage
    instance_type: str
    tcp_ports: tuple[int, ...]
    udp_ports: tuple[int, ...]
    settings: Mapping[str, str] = field(default_factory=dict)  # per-device, as user-data
    data_volume_gib: int = 8

    @property
    def sha256(self) -> str:
        return self.image.sha256

    @property
    def security_group_name(self) -> str:
        return f"appliancekit-{self.cloud}-{self.member}"

    def user_data(self, volume_id: str) -> bytes:
        """The instance's user-data: its settings plus where its data lives, checked against
        the image's per-device settings as `flash` and `user-data` check them."""
        return render_user_data(
            {**self.settings, DATA_VOLUME_SETTING: volume_id}, self.image.manifest
        )

    def settings_digest(self) -> str:
        """Changes when the settings do (a tag on the instance: user-data is replaced by
        replacing the instance, as an image is). Values never leave this digest."""
        text = "".join(f"{k}={v}\n" for k, v in sorted(self.settings.items()))
        return hashlib.sha256(text.encode()).hexdigest()


def ports_of(declared: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(tcp, udp) ingress ports for a recipe's declared ports."""
    tcp = tuple(sorted(set(declared)))
    return tcp, tuple(p for p in tcp if p in UDP_PORTS)
