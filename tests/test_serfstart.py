"""serfstart, the People's Cloud launcher of Serf (recipes/peoples-cloud/serfstart): which
address it advertises, read from this host's real /proc and from recorded /proc text."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from .conftest import PROJECT

sys.path.insert(0, str(PROJECT.recipes_dir / "peoples-cloud"))

from serfstart.__main__ import (  # noqa: E402
    SERF,
    agent_argv,
    default_gateway,
    local_addresses,
    own_address,
)

# /proc/net/route and /proc/net/fib_trie of an ec2-x86_64 appliance under QEMU: one NIC on
# the link-local user network, no RFC 1918 address (where Serf alone refuses to start)
ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0202FEA9\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000FEA9\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
"""
FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 169.254.0.0/16 2 0 2
           |-- 169.254.0.15
              /32 host LOCAL
        |-- 169.254.255.255
           /32 link BROADCAST
Local:
     +-- 127.0.0.0/8 2 0 2
           |-- 127.0.0.1
              /32 host LOCAL
           |-- 169.254.0.15
              /32 host LOCAL
"""


def fake_proc(root: Path, route: str, fib_trie: str) -> Path:
    (root / "net").mkdir(parents=True)
    (root / "net/route").write_text(route)
    (root / "net/fib_trie").write_text(fib_trie)
    return root


def config(tmp_path: Path, advertise: str) -> Path:
    path = tmp_path / "serf.json"
    path.write_text(json.dumps({"bind": "0.0.0.0:7946", "advertise": advertise}))
    return path


def test_default_gateway_is_read_from_the_route_table() -> None:
    assert default_gateway(ROUTE) == "169.254.2.2"
    assert default_gateway(ROUTE.splitlines()[0] + "\n") is None


def test_local_addresses_leave_out_loopback_and_repeats() -> None:
    assert local_addresses(FIB_TRIE) == ["169.254.0.15"]


def test_the_hosts_own_address_is_one_of_its_addresses() -> None:
    hosts = local_addresses(Path("/proc/net/fib_trie").read_text())
    address = own_address(Path("/proc"))
    assert address is not None and address in hosts


def test_without_a_default_route_the_first_address_is_advertised(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", ROUTE.splitlines()[0] + "\n", FIB_TRIE)
    argv = agent_argv(config(tmp_path, ""), proc)
    assert argv[-2:] == ["-advertise", "169.254.0.15"]


def test_the_default_routes_source_address_is_advertised(tmp_path: Path) -> None:
    # a gateway the host routes to: the kernel's own choice of source address is advertised
    gateway = "127.0.0.53"
    route = ROUTE.replace("0202FEA9", socket.inet_aton(gateway)[::-1].hex().upper())
    proc = fake_proc(tmp_path / "proc", route, FIB_TRIE)
    argv = agent_argv(config(tmp_path, ""), proc)
    assert argv[:4] == [SERF, "agent", "-config-file", str(tmp_path / "serf.json")]
    assert argv[4:] == ["-advertise", "127.0.0.1"]


def test_a_configured_advertise_address_wins(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", ROUTE, FIB_TRIE)
    assert agent_argv(config(tmp_path, "10.7.0.2"), proc) == [
        SERF, "agent", "-config-file", str(tmp_path / "serf.json")
    ]  # fmt: skip


def test_no_address_at_all_leaves_the_choice_to_serf(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", "", "Main:\n")
    assert agent_argv(config(tmp_path, ""), proc)[-1] == str(tmp_path / "serf.json")
