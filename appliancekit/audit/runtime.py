"""Runtime audit: from a boot, the TCP ports that answer on an appliance's network are
exactly its declared ports.

Scanned from inside that network, not through QEMU's forwards (which would only show what
is forwarded): the scanner appliance (recipes/scanner, nmap, built by appliancekit like any
other) joins the machines' `Lan` once they answer their probes, scans every TCP port of
each target once and prints nmap's grepable report on its console, which is read here.
`appliancekit audit --boot IMAGE_DIR` boots one image this way; a cloud's members are
scanned the same way by `scan_cloud` (`appliancekit cloud audit NAME`,
tests/test_monitoring_cloud.py).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliancekit.audit.registry import AuditReport, CheckResult
from appliancekit.board import Board
from appliancekit.boottest import FATAL, HANDOVER, probes_from_manifest, qemu_config
from appliancekit.cloud.network import Cluster, Lan
from appliancekit.errors import ToolError, UserError
from appliancekit.flash import read_device_settings, write_device_settings
from appliancekit.manifest import Manifest
from appliancekit.probes import forward_map, forwards_for, wait_for_probes
from appliancekit.qemu import BootError, Machine
from appliancekit.recipe import Probe, ProbePhase

if TYPE_CHECKING:
    from appliancekit.cloud.boot import BootedCloud

SCANNER_RECIPE = "scanner"
SCANNER_BOARD = "qemu-virt-arm64"
SCAN_DONE = re.compile(r"# Nmap done at [^\n]*\n")
CHECK_TITLE = "the TCP ports answering on its network are exactly the declared ports"
ALL_PORTS = "1-65535"
_PORT_SPEC = re.compile(r"^\d{1,5}(-\d{1,5})?(,\d{1,5}(-\d{1,5})?)*$")
# The network `audit --boot` puts one image and the scanner on (NIC 2 of each).
AUDIT_NETWORK = ipaddress.IPv4Network("10.99.0.0/24")
_HOST = re.compile(r"^Host: (\S+) \([^)]*\)\t(.*)$")


@dataclass(frozen=True)
class Target:
    """An appliance under audit: where it is on the network and what it declares."""

    name: str
    address: str
    declared: frozenset[int]


def declared_ports(manifest: Manifest) -> frozenset[int]:
    """The image's declared TCP ports (its recipe's and its probes'), except ports only a
    `closed` probe names (that probe checks nothing answers there)."""
    closed = {int(p["port"]) for p in manifest.probes if p.get("kind") == "closed"}
    probed = {int(p["port"]) for p in manifest.probes if p.get("kind") != "closed"}
    return frozenset(p for p in manifest.ports if p not in closed or p in probed)


def parse_grepable(text: str) -> dict[str, frozenset[int]]:
    """address -> open TCP ports, from `nmap -oG` output (other console lines are ignored).

    A host whose every port is closed has a line without Ports: it maps to no ports."""
    found: dict[str, set[int]] = {}
    for line in text.splitlines():
        match = _HOST.match(line.strip("\r"))
        if match is None:
            continue
        ports = found.setdefault(match[1], set())
        for field in match[2].split("\t"):
            if not field.startswith("Ports: "):
                continue
            for entry in field[len("Ports: ") :].split(", "):
                number, state, protocol = (entry.split("/") + ["", "", ""])[:3]
                if state == "open" and protocol == "tcp" and number.isdigit():
                    ports.add(int(number))
    return {address: frozenset(ports) for address, ports in found.items()}


def port_spec(ports: str, targets: Sequence[Target]) -> str:
    """nmap's -p argument: `ports` (its syntax: 1-1024,8080) plus every declared port of the
    targets, so a narrower scan still sees whether each declared port answers."""
    if not _PORT_SPEC.match(ports) or any(
        not 1 <= int(n) <= 65535 for n in re.findall(r"\d+", ports)
    ):
        raise UserError(
            f"ports {ports!r}: give TCP ports as nmap does, e.g. 1-1024,8080", field="--ports"
        )
    ranges = [tuple(map(int, (part + "-" + part).split("-")[:2])) for part in ports.split(",")]
    declared = sorted({p for t in targets for p in t.declared})
    missing = [p for p in declared if not any(lo <= p <= hi for lo, hi in ranges)]
    return ",".join([ports, *map(str, missing)])


def scan_results(
    targets: Sequence[Target],
    scanned: Mapping[str, frozenset[int]],
    seconds: float = 0.0,
    ports: str = ALL_PORTS,
) -> list[CheckResult]:
    """One check per target: what answered against what it declares."""
    title = CHECK_TITLE if ports == ALL_PORTS else f"{CHECK_TITLE} (TCP ports {ports} scanned)"
    results = []
    for target in targets:
        findings = []
        if target.address not in scanned:
            findings.append(f"the scan did not reach {target.address}")
        else:
            answering = scanned[target.address]
            for port in sorted(answering - target.declared):
                findings.append(f"port {port}/tcp answers on {target.address} but is not declared")
            for port in sorted(target.declared - answering):
                findings.append(f"declared port {port}/tcp does not answer on {target.address}")
        results.append(
            CheckResult(
                f"listening-ports[{target.name}]",
                title,
                "failed" if findings else "passed",
                tuple(findings),
                seconds,
            )
        )
    return results


def wait_until_answering(
    name: str,
    machine: Machine,
    probes: Sequence[Probe],
    forwards: Mapping[tuple[int, str], int],
    timeout: float,
) -> None:
    """Wait for the machine's hand-over to its services, then for its probes.

    The probes say when the services are up, nothing more: how fast they come up is the boot
    test's business. So each probe may take until the audit's own deadline, not its 60 s: on
    a loaded machine under emulation, QEMU's start to the hand-over, and the hand-over to a
    service answering, can each take minutes."""
    deadline = time.monotonic() + timeout
    try:
        machine.wait_for_serial(HANDOVER, timeout)
    except BootError as exc:
        raise ToolError(f"{name} did not boot, nothing to scan: {exc.message}") from None
    if FATAL.search(machine.serial_text()):
        raise ToolError(f"{name} did not boot, nothing to scan: {machine.failure_tail(5)}")
    left = max(1.0, deadline - time.monotonic())
    patient = [dataclasses.replace(p, timeout=left) for p in probes]
    answers = wait_for_probes(patient, forwards, left, machine)
    failed = [r for r in answers if not r.ok]
    if failed:
        detail = "; ".join(f"{r.name}: {r.detail}" for r in failed)
        raise ToolError(f"{name} did not answer its probes, nothing to scan: {detail}")


def scanner_card(
    image_dir: Path,
    manifest: Manifest,
    workdir: Path,
    addresses: Sequence[str],
    own: str,
    ports: str = ALL_PORTS,
) -> Path:
    """A copy of the scanner's image whose settings name the targets, the ports and its
    own address on the network (its second NIC)."""
    workdir.mkdir(parents=True, exist_ok=True)
    card = workdir / "scanner.img"
    subprocess.run(
        ["cp", "--sparse=always", str(image_dir / manifest.disk.path), str(card)], check=True
    )
    write_device_settings(
        card,
        manifest,
        {
            "hostname": "scanner",
            "targets": " ".join(addresses),
            "ports": ports,
            "net_address": own,
            "net_interface": "2",
        },
    )
    return card


def scan(
    cluster: Cluster,
    scanner_dir: Path,
    scanner_manifest: Manifest,
    scanner_board: Board,
    addresses: Sequence[str],
    own: str,
    timeout: float,
    ports: str = ALL_PORTS,
) -> dict[str, frozenset[int]]:
    """Boot the scanner on the cluster's network, wait for its report, parse it."""
    workdir = cluster.workdir / "scanner"
    card = scanner_card(scanner_dir, scanner_manifest, workdir, addresses, own, ports)
    config = qemu_config(scanner_board, card, scanner_manifest, workdir, (), snapshot=False)
    machine = cluster.add("scanner", config)
    machine.start()
    try:
        machine.wait_for_serial(SCAN_DONE, timeout)
        return parse_grepable(machine.serial_text())
    finally:
        machine.kill()  # done: its CPU goes back to the machines under test


def audit_boot(
    image_dir: Path,
    manifest: Manifest,
    board: Board,
    scanner_dir: Path,
    scanner_manifest: Manifest,
    scanner_board: Board,
    workdir: Path,
    *,
    timeout: float = 900.0,
    ports: str = ALL_PORTS,
) -> AuditReport:
    """Boot the image on its own network with the scanner, once it answers its probes."""
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    card = workdir / "disk.img"
    subprocess.run(
        ["cp", "--sparse=always", str(image_dir / manifest.disk.path), str(card)], check=True
    )
    hosts = AUDIT_NETWORK.hosts()
    own, scanner_address = str(next(hosts)), str(next(hosts))
    settings = {
        **(manifest.extra.get("test_settings") or {}),
        **(read_device_settings(card, manifest) or {}),
        "net_address": f"{own}/{AUDIT_NETWORK.prefixlen}",
        "net_interface": "2",
    }
    write_device_settings(card, manifest, settings)
    probes = [
        p
        for p in probes_from_manifest(manifest, {**manifest.settings, **settings})
        if p.phase != ProbePhase.REBOOT
    ]
    forwards = forwards_for(probes, manifest.ports)
    target = Target(manifest.recipe, own, declared_ports(manifest))
    spec = port_spec(ports, [target])
    with Cluster(Lan.new(), workdir) as cluster:
        (workdir / "vm").mkdir(exist_ok=True)
        machine = cluster.add(
            manifest.name, qemu_config(board, card, manifest, workdir / "vm", forwards)
        )
        machine.start()
        wait_until_answering(manifest.name, machine, probes, forward_map(forwards), timeout)
        try:
            scanned = scan(
                cluster,
                scanner_dir,
                scanner_manifest,
                scanner_board,
                [own],
                f"{scanner_address}/{AUDIT_NETWORK.prefixlen}",
                timeout,
                spec,
            )
        except BootError as exc:
            raise ToolError(f"the scanner did not finish: {exc.message}") from None
    results = scan_results([target], scanned, time.monotonic() - started, ports)
    return AuditReport(str(image_dir), tuple(results))


def scanner_address(network: ipaddress.IPv4Network, taken: Sequence[str]) -> str:
    """The highest host address of `network` that no machine has, as ADDR/PREFIX."""
    used = {ipaddress.ip_address(a) for a in taken}
    for host in reversed(list(network.hosts())):
        if host not in used:
            return f"{host}/{network.prefixlen}"
    raise ToolError(f"no free address for the scanner in {network}")


def scan_cloud(
    booted: BootedCloud,
    scanner_dir: Path,
    scanner_manifest: Manifest,
    scanner_board: Board,
    *,
    timeout: float = 1200.0,
    ports: str = ALL_PORTS,
) -> AuditReport:
    """A booted cloud's members, once each answers its probes, scanned on the cloud's
    network: one check per member."""
    started = time.monotonic()
    deadline = started + timeout
    targets = []
    for name, member in booted.members.items():
        card = member.card
        probes = [
            p
            for p in probes_from_manifest(
                card.manifest, {**card.manifest.settings, **card.settings}
            )
            if p.phase != ProbePhase.REBOOT
        ]
        wait_until_answering(
            name,
            member.machine,
            probes,
            forward_map(member.forwards),
            max(1.0, deadline - time.monotonic()),
        )
        targets.append(Target(name, str(card.member.address), declared_ports(card.manifest)))
    own = scanner_address(booted.cloud.network, [t.address for t in targets])
    spec = port_spec(ports, targets)
    try:
        scanned = scan(
            booted.cluster,
            scanner_dir,
            scanner_manifest,
            scanner_board,
            [t.address for t in targets],
            own,
            max(1.0, deadline - time.monotonic()),
            spec,
        )
    except BootError as exc:
        raise ToolError(f"the scanner did not finish: {exc.message}") from None
    results = scan_results(targets, scanned, time.monotonic() - started, ports)
    return AuditReport(f"cloud {booted.cloud.name}", tuple(results))
