"""`cloud test`: boot every member on one network, apply the records, run the cross-member
checks, report how long the whole cloud took to be healthy."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliancekit.cloud.boot import HANDOVER, Card, boot_cloud
from appliancekit.cloud.checks import CheckResult, MailAccount, cloud_checks, run_checks
from appliancekit.cloud.model import Cloud, Role
from appliancekit.cloud.secrets import CloudSecrets
from appliancekit.cloud.testca import TestCA, pebble
from appliancekit.qemu import BootError


@dataclass(frozen=True)
class CloudTestReport:
    cloud: str
    passed: bool
    healthy: float | None  # seconds from the first QEMU start until every check passed
    handover: dict[str, float]  # seconds from each QEMU start to its switch_root
    checks: list[CheckResult]
    lan: dict[str, object]
    failure: str | None = None
    serial_tails: dict[str, str] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)  # measured by the checks
    memory: dict[str, int] = field(default_factory=dict)  # QEMU RSS (bytes) once healthy

    def to_json(self) -> dict[str, object]:
        return {
            "cloud": self.cloud,
            "passed": self.passed,
            "healthy_seconds": self.healthy,
            "handover_seconds": self.handover,
            "checks": [c.to_json() for c in self.checks],
            "lan": self.lan,
            "failure": self.failure,
            "serial_tails": self.serial_tails,
            "serial_logs": self.logs,
            "figures": self.figures,
            "qemu_rss_bytes": self.memory,
        }


def rss_bytes(pid: int | None) -> int:
    """Resident memory of a host process (0 once it is gone)."""
    if pid is None:
        return 0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((x for x in status.splitlines() if x.startswith("VmRSS:")), "VmRSS: 0 kB")
    return int(line.split()[1]) * 1024


def mail_account(cloud: Cloud, cards: dict[str, Card]) -> MailAccount | None:
    """The account the mail recipe's own probes log in with (its [test] settings made it)."""
    mail = cloud.with_role(Role.MAIL)
    if mail is None:
        return None
    for probe in cards[mail.name].manifest.probes:
        params = dict(probe.get("params", ()))
        if params.get("user") and params.get("password"):
            return MailAccount(str(params["user"]), str(params["password"]))
    return None


def run_cloud_test(
    cloud: Cloud,
    secrets: CloudSecrets,
    cards: dict[str, Card],
    workdir: Path,
    *,
    timeout: float = 600.0,
    on_result: Callable[[CheckResult], None] | None = None,
    test_ca: TestCA | None = None,
    renewal: bool = True,
) -> CloudTestReport:
    """Boot, check, report. `test_ca`: the ACME CA the cards point the members at (made
    with `testca.prepare` before the cards); pebble starts once the DNS member's port is
    known, and the TLS checks verify against its root. `renewal=False` skips waiting for
    the renewals."""
    account = mail_account(cloud, cards)
    handover: dict[str, float] = {}
    results: list[CheckResult] = []
    failure = None
    tails: dict[str, str] = {}
    logs: dict[str, str] = {}
    with boot_cloud(cloud, cards, workdir) as booted, contextlib.ExitStack() as stack:
        deadline = time.monotonic() + timeout
        try:
            root = None
            if test_ca is not None:
                dns_port = booted.members[cloud.dns.name].host_port(53, "udp")
                root = stack.enter_context(pebble(test_ca, dns_port)).issuing_roots()
            handover = booted.cluster.wait_for_serial(HANDOVER, timeout)
            results = run_checks(
                booted,
                cloud_checks(booted, secrets, account, root, renewal=renewal),
                deadline,
                on_result,
            )
            failed = next((r for r in results if not r.ok), None)
            if failed is not None:
                failure = f"{failed.name}: {failed.detail}"
        except BootError as exc:
            failure = exc.message
        healthy = booted.elapsed() if failure is None else None
        memory = {name: rss_bytes(machine.pid) for name, machine in booted.cluster}
        for name, machine in booted.cluster:
            logs[name] = str(machine.serial_log)
            if failure is not None:
                tails[name] = machine.failure_tail(15)
    return CloudTestReport(
        cloud=cloud.name,
        passed=failure is None,
        healthy=healthy,
        handover=handover,
        checks=results,
        lan=booted.lan.to_json(),
        failure=failure,
        serial_tails=tails,
        logs=logs,
        figures=dict(booted.figures),
        memory=memory,
    )
