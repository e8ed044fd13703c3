"""A cloud whose members sit on different boards (issue 13 §5: the homepage on ec2-x86_64
beside a DNS member on qemu-virt-arm64): what each member's card carries, fast. The boot
itself is tests/test_cloud_boot.py::test_cloud_member_on_a_second_board."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from appliancekit.cloud import testca
from appliancekit.cloud.boot import CLOUD_NIC, Card, card_settings
from appliancekit.cloud.model import Cloud, find_cloud, load_cloud
from appliancekit.cloud.secrets import CloudSecrets, load_or_create
from appliancekit.devsettings import parse_settings_env, render_user_data, setting_records
from appliancekit.qemu import Drive, QemuConfig, build_command
from appliancekit.settings_kinds import MAX_USER_DATA

from .conftest import PROJECT
from .test_cloud_boot import EC2_CLOUD, VOLUME_ID
from .test_flash_settings import MANIFEST


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> CloudSecrets:
    return load_or_create(tmp_path_factory.mktemp("cloud-state"))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> testca.TestCA:
    return testca.prepare(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Cloud:
    path = tmp_path_factory.mktemp("mixed") / "mixed.toml"
    path.write_text(EC2_CLOUD)
    return load_cloud(path, PROJECT)


def test_each_member_reaches_the_test_ca_where_its_board_puts_the_host(
    mixed: Cloud, secrets: CloudSecrets, ca: testca.TestCA
) -> None:
    """pebble listens on the host's loopback: an EC2 board's guest (user network
    169.254.0.0/16, for the metadata service) reaches it at 169.254.2.2, not 10.0.2.2."""
    web = card_settings(mixed, secrets, mixed.member("web"), test_ca=ca)
    assert web["acme_url"] == f"https://169.254.2.2:{ca.acme_port}/dir"
    # the challenge still goes to the DNS member over the cloud's network
    assert web["acme_dns_api"] == "http://10.43.0.2:8081"
    assert web["acme_renew_days"] == "1" and web["acme_ca"]
    example = find_cloud("example", PROJECT)
    for member in example.members:  # all on qemu-virt-arm64
        values = card_settings(example, secrets, member, test_ca=ca)
        if "acme_url" in values:
            assert values["acme_url"] == f"https://10.0.2.2:{ca.acme_port}/dir", member.name
    assert "acme_url" not in card_settings(mixed, secrets, mixed.dns, test_ca=ca)


def test_the_ec2_member_takes_its_static_address_on_the_clouds_nic(
    mixed: Cloud, secrets: CloudSecrets, ca: testca.TestCA
) -> None:
    """Whatever the board, the cloud's network is the QEMU card's second NIC (the first
    keeps DHCP: the host's forwards, and on EC2 boards the metadata service)."""
    for member in mixed.members:
        values = card_settings(mixed, secrets, member, test_ca=ca)
        assert values["net_interface"] == str(CLOUD_NIC) == "2"
        assert values["net_address"] == f"{member.address}/24"
        assert "net_gateway" not in values  # NIC 1's DHCP route stays the way out
        assert values["hostname"] == member.name


def test_the_ec2_members_card_settings_fit_in_its_user_data(
    mixed: Cloud, secrets: CloudSecrets, ca: testca.TestCA
) -> None:
    """The EC2 member reads its settings from user-data (IMDSv2): all of them are per-device
    settings of its image (checked as flash checks them), within EC2's 16 KB, and read back
    as the initramfs reads them."""
    web = mixed.member("web")
    manifest = replace(
        MANIFEST,
        name="homepage-ec2-x86_64",
        recipe="homepage",
        board="ec2-x86_64",
        setting_records=setting_records(web.recipe),
    )
    values = card_settings(mixed, secrets, web, test_settings={}, test_ca=ca)
    data = render_user_data(values, manifest)
    assert len(data) <= MAX_USER_DATA
    assert parse_settings_env(data.decode()) == values


def test_pebbles_certificate_names_every_address_a_guest_reaches_the_host_at(
    ca: testca.TestCA,
) -> None:
    text = subprocess.run(
        [
            "openssl",
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            str(ca.workdir / "pebble.pem"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for address in ("10.0.2.2", "169.254.2.2", "127.0.0.1"):
        assert f"IP Address:{address}" in text, text
    # and it chains to the root the members are given as acme_ca
    subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(ca.workdir / "ca.pem"),
            str(ca.workdir / "pebble.pem"),
        ],
        check=True,
        capture_output=True,
    )
    assert Path(ca.workdir / "ca.pem").read_text() == ca.listener_root_pem


def test_a_member_with_a_data_volume_gets_it_attached_as_ebs_does(
    mixed: Cloud, secrets: CloudSecrets, ca: testca.TestCA, tmp_path: Path
) -> None:
    """The web member's settings name a data volume (as `deploy` gives an EC2 member): its
    card's volume is attached as an NVMe disk whose serial is the volume id without the
    dash, which the initramfs looks for, and never through a snapshot (it outlives the
    instance)."""
    web = mixed.member("web")
    settings = card_settings(mixed, secrets, web, test_ca=ca)
    assert settings["data_volume"] == VOLUME_ID
    card = Card(web, tmp_path / "web.img", MANIFEST, settings, tmp_path / "web.volume.img")
    drive = card.volume_drive()
    assert drive == Drive(
        tmp_path / "web.volume.img", device="nvme", snapshot=False, serial="vol0a1b2c3d4e5f60718"
    )
    command = build_command(
        QemuConfig(binary="qemu-system-x86_64", machine="q35", drives=(drive,)),
        qmp_socket=tmp_path / "qmp",
        serial_log=tmp_path / "serial.log",
    )
    assert "nvme,drive=drive0,serial=vol0a1b2c3d4e5f60718" in command
    assert f"file={tmp_path / 'web.volume.img'},format=raw,if=none,id=drive0" in command
    # no volume named, or none made: nothing attached
    others = {k: v for k, v in settings.items() if k != "data_volume"}
    assert replace(card, settings=others).volume_drive() is None
    assert replace(card, volume=None).volume_drive() is None
