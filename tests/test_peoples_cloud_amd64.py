"""One People's Cloud node on ec2-x86_64 (amd64 under OVMF, settings from IMDSv2 user-data):
the recipe's own boot test. The node's only address is on EC2's link-local user network
(169.254.0.0/16), as a VPS's only address may be public: Serf alone advertises only an
RFC 1918 address and refuses to start without one ("No private IP address found"), so the
"Serf connected" probe passes only because serfstart advertises the default route's
address. The swarm test's nodes all name their address (`advertise`), so this is where the
default is booted."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import ApplianceCache


@pytest.mark.slow
def test_an_amd64_node_with_only_a_link_local_address_starts_serf(
    appliances: ApplianceCache,
) -> None:
    report = appliances.boot("peoples-cloud", "ec2-x86_64")
    assert report.passed, f"{report.failure}\n{report.serial_tail}"
    console = Path(report.serial_log).read_text(errors="replace")
    assert "serfstart: advertising 169.254." in console
    assert "No private IP address found" not in console
