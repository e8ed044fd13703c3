"""python3 -m serfstart CONFIG: runs `serf agent -config-file CONFIG`, advertising this
device's own address when CONFIG gives none.

Serf binds 0.0.0.0 and, with no advertise address, advertises the first RFC 1918 address it
finds; with none it refuses to start ("No private IP address found"). A volunteer's VPS with
only a public address, and EC2's link-local test network under QEMU, have none. Without a
shell to compute the address in, this launcher picks the source address of the default
route (the address peers on the way out see), or else the first non-loopback address, and
passes it as -advertise. A per-device `advertise` setting still wins: it is passed through.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

SERF = "/usr/bin/serf"


def default_gateway(route_table: str) -> str | None:
    """The IPv4 default route's gateway from /proc/net/route's text (hex, little-endian)."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "00000000" and fields[2] != "00000000":
            return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    return None


def local_addresses(fib_trie: str) -> list[str]:
    """This host's own IPv4 addresses from /proc/net/fib_trie's text ("/32 host LOCAL" leaves),
    loopback left out, in the order the kernel lists them."""
    found: list[str] = []
    previous = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text == "/32 host LOCAL" and previous.startswith("|-- "):
            address = previous[4:]
            if not address.startswith("127.") and address not in found:
                found.append(address)
        previous = text
    return found


def source_address(gateway: str) -> str:
    """The address the kernel would send from towards `gateway` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((gateway, 9))
        return str(probe.getsockname()[0])


def own_address(proc: Path) -> str | None:
    gateway = default_gateway((proc / "net/route").read_text())
    if gateway is not None:
        try:
            return source_address(gateway)
        except OSError:
            pass
    addresses = local_addresses((proc / "net/fib_trie").read_text())
    return addresses[0] if addresses else None


def agent_argv(config_file: Path, proc: Path) -> list[str]:
    argv = [SERF, "agent", "-config-file", str(config_file)]
    if json.loads(config_file.read_text()).get("advertise"):
        return argv
    address = own_address(proc)
    if address is None:
        print("serfstart: no IPv4 address on any interface; Serf picks its own", file=sys.stderr)
        return argv
    print(f"serfstart: advertising {address}", file=sys.stderr, flush=True)
    return [*argv, "-advertise", address]


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python3 -m serfstart CONFIG")
    argv = agent_argv(Path(sys.argv[1]), Path("/proc"))
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
