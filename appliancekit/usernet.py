"""QEMU's user-mode network as a guest sees it: where the build host answers.

libslirp puts the host's loopback at network | 0.0.2.2 (the guest gets .2.15 the same way):
10.0.2.2 on QEMU's default 10.0.2.0/24, and 169.254.2.2 on boards whose guest network is
169.254.0.0/16 so that the EC2 metadata service can sit at 169.254.169.254 (`imds.py`).
A server a test starts on 127.0.0.1 (pebble, a git or restic server) is at this address for
a guest of that board, so two members of one cloud on different boards may reach the same
server at different addresses.
"""

from __future__ import annotations

import ipaddress

from appliancekit.board import Board
from appliancekit.imds import GUEST_NETWORK

DEFAULT_NETWORK = "10.0.2.0/24"  # QEMU's -netdev user default
HOST_LOW = ipaddress.ip_address("0.0.2.2")


def guest_network(board: Board) -> ipaddress.IPv4Network:
    """The board's user-mode network in boot tests (EC2 boards: the metadata service's)."""
    return ipaddress.IPv4Network(GUEST_NETWORK if board.qemu.imds else DEFAULT_NETWORK)


def _host_in(network: ipaddress.IPv4Network) -> str:
    return str(network.network_address + (int(HOST_LOW) & int(network.hostmask)))


# the host for a guest on QEMU's default network: any board booted without the metadata
# service (the update and content tests' machines)
DEFAULT_HOST_ADDRESS = _host_in(ipaddress.IPv4Network(DEFAULT_NETWORK))


def host_address(board: Board) -> str:
    """The build host as a guest of `board` sees it when booted as boot tests boot it (an
    EC2 board with its metadata service)."""
    return _host_in(guest_network(board))


# every address a guest of some board may use for the host (a server's certificate names all)
HOST_ADDRESSES = (DEFAULT_HOST_ADDRESS, _host_in(ipaddress.IPv4Network(GUEST_NETWORK)))
