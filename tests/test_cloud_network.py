"""The multi-VM harness's QEMU command lines: a second NIC on a per-run multicast network,
after the board's own (user-mode, DHCP) NIC, with a MAC per machine."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.cloud.network import MCAST_NET, Cluster, Lan
from appliancekit.errors import UserError
from appliancekit.qemu import PortForward, QemuConfig, build_command

from .conftest import PROJECT


def virt(tmp_path: Path) -> QemuConfig:
    board = find_board("qemu-virt-arm64", PROJECT.boards_dir)
    return QemuConfig.from_spec(
        board.qemu, kernel=tmp_path / "vmlinuz", forwards=(PortForward(80, 40080),)
    )


def test_each_lan_has_its_own_group_and_port() -> None:
    lans = [Lan.new() for _ in range(20)]
    assert len({(lan.group, lan.port) for lan in lans}) == 20
    assert all(lan.group in MCAST_NET and lan.group != MCAST_NET.network_address for lan in lans)


def test_second_nic_on_the_lan_after_the_user_nic(tmp_path: Path) -> None:
    lan = Lan(ipaddress.IPv4Address("239.255.1.2"), 40000)
    config = lan.attach(virt(tmp_path), 3)
    argv = build_command(config, qmp_socket=tmp_path / "q", serial_log=tmp_path / "s")
    # the NICs only: the board also adds a watchdog device (i6300esb) for trial boots
    devices = [
        argv[i + 1] for i, arg in enumerate(argv) if arg == "-device" and "net" in argv[i + 1]
    ]
    assert devices == [
        "virtio-net-pci,netdev=net0",
        "virtio-net-pci,netdev=lan0,mac=52:54:00:ac:00:03",
    ]
    assert "socket,id=lan0,mcast=239.255.1.2:40000,localaddr=127.0.0.1" in argv
    assert "user,id=net0,hostfwd=tcp:127.0.0.1:40080-:80" in argv


def test_machines_get_distinct_macs(tmp_path: Path) -> None:
    lan = Lan.new()
    with Cluster(lan, tmp_path) as cluster:
        a = cluster.add("a", virt(tmp_path))
        b = cluster.add("b", virt(tmp_path))
        assert a.workdir == tmp_path / "a"
        macs = {m.config.extra_args[-1].rsplit("mac=", 1)[1] for m in (a, b)}
        assert len(macs) == 2
        with pytest.raises(ValueError, match="added twice"):
            cluster.add("a", virt(tmp_path))


def test_a_board_with_a_built_in_nic_cannot_join(tmp_path: Path) -> None:
    board = find_board("cubieboard", PROJECT.boards_dir)
    config = QemuConfig.from_spec(board.qemu)
    with pytest.raises(UserError, match="its only NIC is built into the board"):
        Lan.new().attach(config, 1)
