"""Where the build host answers on QEMU's user network, per board (appliancekit/usernet.py):
a server a test starts on 127.0.0.1 is at 10.0.2.2 for most guests and at 169.254.2.2 for
EC2 boards' (their user network is the metadata service's 169.254.0.0/16)."""

from __future__ import annotations

from appliancekit.board import find_board
from appliancekit.qemu import build_command
from appliancekit.usernet import HOST_ADDRESSES, guest_network, host_address

from .conftest import PROJECT


def test_the_host_is_where_qemus_user_network_puts_it() -> None:
    assert host_address(find_board("qemu-virt-arm64", PROJECT.boards_dir)) == "10.0.2.2"
    assert host_address(find_board("ec2-x86_64", PROJECT.boards_dir)) == "169.254.2.2"
    assert host_address(find_board("ec2-arm64", PROJECT.boards_dir)) == "169.254.2.2"
    assert HOST_ADDRESSES == ("10.0.2.2", "169.254.2.2")


def test_the_ec2_network_is_the_one_the_metadata_service_puts_qemu_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """usernet's network for an EC2 board is the one `-netdev user,net=...` gets in boot tests."""
    from dataclasses import replace

    from appliancekit.imds import ImdsServer
    from appliancekit.qemu import QemuConfig

    board = find_board("ec2-x86_64", PROJECT.boards_dir)
    config = QemuConfig.from_spec(board.qemu)
    with ImdsServer(b"") as imds:
        command = build_command(
            replace(config, net_options=imds.netdev_options()),
            qmp_socket=tmp_path / "qmp",
            serial_log=tmp_path / "serial.log",
        )
    netdev = command[command.index("-netdev") + 1]
    assert f"net={guest_network(board)}" in netdev.split(",")
