"""`cloud test` on the example cloud: dns, homepage, mailserver and matrix booted together
on qemu-virt-arm64 (TCG), one multicast network between the QEMU processes, each member at
the address the cloud file gives it. Reuses the session's images (tests/conftest.py)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from appliancekit.boottest import qemu_config
from appliancekit.build import BuildResult
from appliancekit.cloud import testca
from appliancekit.cloud.boot import HANDOVER, Card, build_members, make_cards
from appliancekit.cloud.model import Member, find_cloud, load_cloud
from appliancekit.cloud.secrets import load_or_create
from appliancekit.cloud.testrun import run_cloud_test
from appliancekit.devsettings import render_user_data
from appliancekit.imds import ImdsServer
from appliancekit.qemu import Machine

from .conftest import PROJECT, ApplianceCache

pytestmark = pytest.mark.slow


# 4 guests on 2 shared cores, with TLS through pebble: 555 s in all at load 7-9 (2026-12-01,
# beside another engineer's cloud test), healthy 456 s after the first QEMU start; the mail
# member's rspamd first start holds the STARTTLS and DKIM checks (docs/measurements.md). The
# mail member starts Dovecot before rspamd and Postfix (recipes/mailserver/init/rspamd-init).
@pytest.mark.timeout(4200)
def test_example_cloud(appliances: ApplianceCache, tmp_path: Path) -> None:
    cloud = find_cloud("example", PROJECT)
    secrets = load_or_create(tmp_path / "state")

    def builder(member: Member, build_settings: Mapping[str, str]) -> BuildResult:
        assert not build_settings, "the example cloud sets per-device settings only"
        return appliances.build(member.recipe.name, member.board.name)

    builds = build_members(cloud, secrets, builder)
    # the TLS members get their certificates from pebble (started on the members' user-mode
    # network once the DNS member's port is known), DNS-01 through the DNS member's API
    ca = testca.prepare(tmp_path / "ca")
    cards = make_cards(cloud, secrets, builds, tmp_path / "cards", test=True, test_ca=ca)
    report = run_cloud_test(cloud, secrets, cards, tmp_path / "run", timeout=3000, test_ca=ca)
    summary = "\n".join(f"{c.ok} {c.name}: {c.detail} ({c.seconds:.1f}s)" for c in report.checks)
    tails = "\n".join(f"--- {m}\n{t}" for m, t in report.serial_tails.items())
    assert report.passed, f"{report.failure}\n{summary}\n{tails}"
    names = [c.name for c in report.checks]
    assert names == [
        "records applied through the DNS member's API",
        "every member resolved at the DNS member and answering",
        "every TLS member serves an ACME certificate (chain verified)",
        "homepage by name: HTTP redirects to HTTPS",
        "MTA-STS policy over HTTPS",
        "Matrix delegation (.well-known) over TLS",
        "mail DKIM-signed, verified against the DNS member (dkimpy)",
        "mail member checks DKIM through the DNS member",
        "every certificate renewed before expiry",
    ]
    tls = next(c for c in report.checks if c.name.startswith("every TLS member"))
    for endpoint in (
        "example.org:443",
        "mail.example.org:25",
        "mail.example.org:587",
        "mail.example.org:993",
        "matrix.example.org:8448",
    ):
        assert endpoint in tls.detail, tls.detail
    # every member took its static address on the cloud's NIC (the second one)
    for member in cloud.members:
        serial = Path(report.logs[member.name]).read_text(errors="replace")
        assert (
            f"eth1: {member.address}/24 {member.address6}/64 (static, per-device settings)"
            in serial
        )
    print(f"example cloud healthy {report.healthy:.1f}s after the first QEMU start; {summary}")
    print(f"figures: {report.figures}; QEMU RSS: {report.memory}; pebble lifetime {ca.lifetime}s")


VOLUME_ID = "vol-0a1b2c3d4e5f60718"
EC2_CLOUD = f"""[cloud]
domain = "example.net"
network = "10.43.0.0/24"
mta_sts_mode = "none"

[[member]]
name = "ns"
recipe = "dns"
board = "qemu-virt-arm64"
role = "dns"
address = "10.43.0.2"

[[member]]
name = "web"
recipe = "homepage"
board = "ec2-x86_64"
role = "web"
address = "10.43.0.3"
# its /data on a volume of its own, as `appliancekit deploy` launches an EC2 member
settings = {{ data_volume = "{VOLUME_ID}" }}
"""


# 2 guests (dns on qemu-virt-arm64, homepage on ec2-x86_64 under OVMF), then the homepage's
# replacement alone up to its hand-over: docs/measurements.md. Both images are the session's
# (test_dns's; the ec2-x86_64 homepage test_slot_boot and test_board_ec2 build).
@pytest.mark.timeout(2400)
def test_cloud_member_on_a_second_board(appliances: ApplianceCache, tmp_path: Path) -> None:
    """The homepage on ec2-x86_64 (UEFI, the UKI, its settings as EC2 user-data over IMDSv2,
    its /data on a volume of its own, named by its serial number as EBS names one) on the
    same network as a DNS member on qemu-virt-arm64: its name resolves there, it gets its
    certificate from pebble through that member's API (DNS-01), and serves it by name. Lean:
    no wait for the renewal (the example cloud shows that).

    Then the instance is replaced as `deploy` replaces one (a fresh root disk from the image,
    the same user-data and volume): the new instance finds the old one's /data on the volume.
    That is the initramfs's business, so the new instance is followed up to its hand-over
    (nginx would not start there: the TLS key written seconds before the cloud's power pull
    does not survive it, docs/measurements.md)."""
    path = tmp_path / "mixed.toml"
    path.write_text(EC2_CLOUD)
    cloud = load_cloud(path, PROJECT)
    secrets = load_or_create(tmp_path / "state")
    builds = build_members(
        cloud, secrets, lambda m, _s: appliances.build(m.recipe.name, m.board.name)
    )
    ca = testca.prepare(tmp_path / "ca")
    cards = make_cards(cloud, secrets, builds, tmp_path / "cards", test=True, test_ca=ca)
    report = run_cloud_test(
        cloud, secrets, cards, tmp_path / "run", timeout=1500, test_ca=ca, renewal=False
    )
    summary = "\n".join(f"{c.ok} {c.name}: {c.detail} ({c.seconds:.1f}s)" for c in report.checks)
    tails = "\n".join(f"--- {m}\n{t}" for m, t in report.serial_tails.items())
    assert report.passed, f"{report.failure}\n{summary}\n{tails}"
    assert [c.name for c in report.checks] == [
        "records applied through the DNS member's API",
        "every member resolved at the DNS member and answering",
        "every TLS member serves an ACME certificate (chain verified)",
        "homepage by name: HTTP redirects to HTTPS",
    ]
    web = Path(report.logs["web"]).read_text(errors="replace")
    # its settings came as user-data over IMDSv2 (the address and ACME's among them), it took
    # its static address on the cloud's NIC (its second), and reached pebble where an EC2
    # board's user network puts the host
    imds = re.search(r"per-instance settings read from user-data \(IMDSv2\):([ a-z0-9_]*)", web)
    assert imds, web[-3000:]
    assert {"net_address", "net_interface", "acme_url", "data_volume"} <= set(imds[1].split())
    assert "eth1: 10.43.0.3/24  (static, per-device settings)" in web
    assert f"from https://169.254.2.2:{ca.acme_port}/dir installed" in web
    ns = Path(report.logs["ns"]).read_text(errors="replace")
    assert "eth1: 10.43.0.2/24  (static, per-device settings)" in ns
    print(f"mixed cloud healthy {report.healthy:.1f}s after the first QEMU start; {summary}")

    image = builds["web"].output_dir / builds["web"].manifest.disk.path
    replaced = replaced_instance(cards["web"], image, tmp_path / "replaced")
    for number, serial in enumerate((web, replaced), start=1):
        assert re.search(rf"data on volume {VOLUME_ID} \(nvme\d+n1\)", serial), serial[-3000:]
        # the boot counter lives on /data: the second instance continues the first one's
        assert re.search(rf"boot number {number},", serial), serial[-3000:]
    assert "first boot: creating the data filesystem" in web
    assert "creating the data filesystem" not in replaced


def replaced_instance(card: Card, image: Path, workdir: Path, timeout: float = 600) -> str:
    """A new instance of `image` (a fresh root disk) with `card`'s user-data and volume,
    booted alone until its initramfs hands over: its console."""
    workdir.mkdir(parents=True)
    root = workdir / "root.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(root)], check=True)
    volume = card.volume_drive()
    assert volume is not None
    with ImdsServer(render_user_data(card.settings, card.manifest)) as imds:
        config = qemu_config(card.member.board, root, card.manifest, workdir, (), snapshot=False)
        config = replace(config, net_options=imds.netdev_options(), drives=(*config.drives, volume))
        with Machine(config, workdir / "vm") as machine:
            machine.start()
            machine.wait_for_serial(HANDOVER, timeout)
            return machine.serial_text()
