"""Signed A/B updates with one trial boot and automatic rollback, on qemu-virt-arm64 (the
`direct` boot path: the initramfs chooses the slot), end to end with the real agent.

One appliance (homepage v1) boots once and then goes through the scenarios in order, each
building on the last: v2 is published and taken; tampered and wrong-board releases are
refused while v2 keeps serving; the power is cut while v3 downloads, while its root is
written and while a boot file is written, and v2 boots each time; v3 (whose service
crashes at start) gets its one trial, the appliance returns to v2 by itself and reports v3
as failed; the repository goes away and v2 keeps serving.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.build import BuildResult
from tests.conftest import PROJECT
from tests.slot_support import boot_fat
from tests.update_helpers import (
    TAMPER_REFUSALS,
    DeployServer,
    Laps,
    UpdateMachine,
    cut_power_at_every_stage,
    homepage_releases,
    make_deploy_repo,
    new_key,
    publish,
    publish_tampered,
)

pytestmark = pytest.mark.slow
BOARD = "qemu-virt-arm64"
BOOT = 600.0  # generous: TCG on a shared, loaded machine


@dataclass
class Rig:
    machine: UpdateMachine
    server: DeployServer
    repo: Path
    key: object
    other_key: object
    v1: BuildResult
    v2: BuildResult
    v3: BuildResult
    work: Path


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("update")
    key = new_key(work / "key")
    other_key = new_key(work / "other-key")
    v1, v2, v3 = homepage_releases(PROJECT, BOARD, work, key)
    assert v1.manifest.source_date_epoch < v2.manifest.source_date_epoch
    assert v2.manifest.source_date_epoch < v3.manifest.source_date_epoch
    repo = make_deploy_repo(work / "deploy")
    with DeployServer(repo) as server:
        machine = UpdateMachine(
            v1.output_dir,
            find_board(BOARD, PROJECT.boards_dir),
            work / "machine",
            {"update_url": server.guest_url, "update_interval": "3"},
        )
        machine.start()
        try:
            yield Rig(machine, server, repo, key, other_key, v1, v2, v3, work)
        finally:
            machine.kill()
            (work / "serial-all.log").write_text(machine.serial())


def agent_result(rig: Rig, pattern: str, since: int, timeout: float = 60.0) -> str:
    return rig.machine.agent_result(pattern, since, timeout)


def test_v1_boots_and_waits_for_a_release(rig: Rig) -> None:
    rig.machine.wait_serving("Served by appliancekit", BOOT)
    line = agent_result(rig, "no release published", 0, BOOT)
    assert "slot a" in line and "failed releases: none" in line


def test_v2_is_taken_through_one_trial_and_committed(rig: Rig) -> None:
    since = rig.machine.mark()
    release = publish(rig.v2.output_dir, rig.repo, rig.key)
    assert (release / "SHA256SUMS.minisig").is_file()
    rig.machine.wait_for(r"ak-update: release \d+ written to slot b and verified", since, BOOT)
    rig.machine.wait_for(r"appliancekit: slot b: trial boot", since, BOOT)
    rig.machine.wait_serving("release-two", BOOT)
    line = agent_result(rig, r"committed release \d+ in slot b", since, BOOT)
    assert "slot b" in line
    serial = rig.machine.serial()[since:]
    assert "watchdog armed for the trial" in serial
    # /data survived: the boot counter went on; the per-device host name is still served
    counts = [int(n) for n in re.findall(r"boot number (\d+)", rig.machine.serial())]
    assert counts == sorted(counts) and counts[-1] >= 2
    hostname = rig.v1.manifest.extra["test_settings"].get("hostname")
    if hostname:
        assert hostname in rig.machine.http_get("/.well-known/appliance/hostname")
    # only slot content came over the network, far less than the image
    assert rig.server.sent < rig.v2.manifest.disk.size // 4


@pytest.mark.parametrize("tamper", list(TAMPER_REFUSALS))
def test_bad_releases_are_refused_and_v2_keeps_serving(rig: Rig, tamper: str) -> None:
    rig.server.reachable = False  # the agent must never see the good v3 before the damage
    refusal = publish_tampered(
        rig.v3.output_dir, rig.repo, rig.key, rig.other_key, tamper, "cubieboard"
    )
    since = rig.machine.mark()
    rig.server.reachable = True
    agent_result(rig, refusal, since, 90)
    assert "release-two" in rig.machine.http_get("/")
    assert "rebooting" not in rig.machine.serial()[since:]


def test_power_cut_at_every_stage_boots_v2(rig: Rig) -> None:
    m = rig.machine
    lap = Laps(BOARD)

    def publish_v3() -> None:
        publish(rig.v3.output_dir, rig.repo, rig.key)  # a good v3 again

    def slot_a_boot_files() -> list[str]:
        return boot_fat(m.disk, m.manifest).listdir(rig.v1.manifest.slot("a").boot_dir)

    cut_power_at_every_stage(m, rig.server, publish_v3, slot_a_boot_files, lap, BOOT)
    print(lap.summary())


def test_v3_crashes_is_tried_once_and_rolled_back(rig: Rig) -> None:
    m = rig.machine
    since = m.mark()
    # the agent resumes writing v3 (the kills above left it half-written), then tries it
    m.wait_for(r"appliancekit: slot a: trial boot", since, 2 * BOOT)
    m.wait_for(r"ak-update: [^\n]*trial of release \d+ failed", since, 2 * BOOT)
    m.wait_for(r"slot a did not commit: back to slot b", since, BOOT)
    line = agent_result(rig, r"rolled back: release \d+ in slot a did not commit", since, BOOT)
    v3 = rig.v3.manifest
    assert f"failed releases: {v3.source_date_epoch} ({v3.verity.root_hash[:12]})" in line
    m.wait_serving("release-two", BOOT)
    # exactly one trial of v3
    assert len(re.findall(r"appliancekit: slot a: trial boot", m.serial()[since:])) == 1
    # and it is not tried again
    since = m.mark()
    agent_result(rig, "refused: release \\d+ failed here before", since, 60)


def test_unreachable_repository_keeps_v2_serving(rig: Rig) -> None:
    since = rig.machine.mark()
    rig.server.reachable = False
    agent_result(rig, "repository unreachable", since, 60)
    assert "release-two" in rig.machine.http_get("/")
    rig.server.reachable = True
    status = json.dumps(rig.machine.serial()[since:][-500:])
    assert "slot b" in status
