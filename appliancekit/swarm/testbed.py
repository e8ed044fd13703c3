"""A People's Cloud swarm under QEMU for tests and benchmarks: N peoples-cloud machines on
one `cloud.network.Lan`, each with its own card (the image plus its per-device settings)
and its swarm API, gateway and Serf port forwarded to the host from its first NIC."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from appliancekit.board import Board
from appliancekit.boottest import qemu_config
from appliancekit.cloud.network import Cluster, Lan
from appliancekit.flash import write_device_settings
from appliancekit.manifest import Manifest
from appliancekit.qemu import Machine, PortForward, QemuConfig, free_port

API, GATEWAY, SERF = 8000, 8080, 7946
MIB = 1 << 20
T = TypeVar("T")


def address(index: int, subnet: str = "10.77.0") -> str:
    return f"{subnet}.{index + 1}"


def node_settings(
    names: Sequence[str], index: int, key: str, token: str, **more: str
) -> dict[str, str]:
    """Per-device settings of node `index`: its name, the others as join addresses, the
    swarm's key and token, and its static address on the swarm's NIC (the second)."""
    return {
        "hostname": names[index],
        "node_name": names[index],
        "join": ",".join(address(j) for j in range(len(names)) if j != index),
        "serf_key": key,
        "user_token": token,
        "advertise": address(index),
        "net_interface": "2",
        "net_address": f"{address(index)}/24",
        **more,
    }


class Swarm:
    """Started machines by name; `restart` boots a killed one again from its card."""

    def __init__(self, cluster: Cluster, configs: Mapping[str, QemuConfig], workdir: Path) -> None:
        self.cluster = cluster
        self.configs = dict(configs)
        self.workdir = workdir
        self.machines: dict[str, Machine] = dict(cluster.machines)
        self.restarted: list[Machine] = []
        self.started = 0.0

    def port(self, name: str, guest: int) -> int:
        return next(f.host_port for f in self.configs[name].forwards if f.guest_port == guest)

    def api(self, name: str) -> int:
        return self.port(name, API)

    def get(self, name: str, path: str, timeout: float = 30.0) -> Any:
        url = f"http://127.0.0.1:{self.api(name)}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())

    def deployment(self, via: str, cid: str) -> dict[str, Any] | None:
        return next((d for d in self.get(via, "/v1/deployments") if d["cid"] == cid), None)

    def logs(self, lines: int = 25) -> str:
        return "\n".join(f"--- {n}\n{m.tail(lines)}" for n, m in self.machines.items())

    def restart(self, name: str) -> Machine:
        index = list(self.configs).index(name) + 1
        attached = self.cluster.lan.attach(self.configs[name], index)
        machine = Machine(attached, self.workdir / f"{name}-again")
        self.restarted.append(machine)
        self.machines[name] = machine
        machine.start()
        return machine

    def close(self) -> None:
        for machine in self.restarted:
            machine.kill()


def make_card(image: Path, manifest: Manifest, card: Path, settings: Mapping[str, str]) -> Path:
    subprocess.run(["cp", "--sparse=always", str(image), str(card)], check=True)
    os.truncate(card, max(card.stat().st_size, 512 * MIB))  # room on /data for the swarm
    write_device_settings(card, manifest, settings)
    return card


def start_swarm(
    cluster: Cluster,
    image: Path,
    manifest: Manifest,
    board: Board,
    settings: Mapping[str, Mapping[str, str]],
    workdir: Path,
    memory: str = "1024M",
) -> Swarm:
    """Cards for every node (by name, in order), machines on the cluster's Lan, started."""
    configs = {}
    for name, device in settings.items():
        node_dir = workdir / name
        node_dir.mkdir(parents=True, exist_ok=True)
        card = make_card(image, manifest, workdir / f"{name}.img", device)
        forwards = tuple(PortForward(g, free_port()) for g in (API, GATEWAY, SERF))
        config = qemu_config(board, card, manifest, node_dir, forwards, snapshot=False)
        configs[name] = replace(config, memory=memory)  # kubo, Node and Python in one node (less not tried)
        cluster.add(name, configs[name])
    swarm = Swarm(cluster, configs, workdir)
    swarm.started = cluster.start()
    return swarm


def new_cluster(workdir: Path) -> Cluster:
    return Cluster(Lan.new(), workdir)


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float, logs: Callable[[], str]
) -> T:
    """Poll `check` every 2 s until it returns something true; AssertionError with the
    machines' consoles after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(2)
    raise AssertionError(f"{what}: not after {timeout:.0f} s (last: {last!r})\n{logs()}")
