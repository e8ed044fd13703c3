"""Signed A/B updates on the Raspberry Pi 4 through the firmware's tryboot, end to end with
the real agent (issue 12 §5 on rpi4, as far as QEMU's raspi4b allows).

What is real: the card's autoboot.txt and per-slot boot partitions as the agent writes them,
Debian's kernel with the ak_tryboot module (built from source for that kernel) sending the
SET_REBOOT_FLAGS mailbox call on the agent's `reboot "0 tryboot"`, and the agent itself.
What stands in: raspi4b runs no Pi firmware, so tests/pi_firmware.py plays the firmware at
each reset. It sets the tryboot flag only when QEMU's emulated mailbox received that call
in the boot that ended, and boots the partition autoboot.txt then names ([tryboot] once,
otherwise [all]).

One appliance (homepage v1) boots once: v2 is taken through one tryboot trial and committed
into autoboot.txt's [all]; the power is cut while v3 downloads, while its root is written and
while a boot file is written into slot a's boot partition (its NAME.new is seen there), and
each time the firmware boots v2's partition (a power cut clears the tryboot flag, so the
stand-in starts without it); v3, whose nginx does not start, gets its one tryboot trial, and
the next reset, without the flag, boots v2's partition again with no help from outside.
raspi4b has no RTC, so every one of those boots starts in 1970: the clock must never go back
from one boot to the next (the build time first, then the time the agent saved on /data).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.boot import tryboot
from tests.conftest import PROJECT
from tests.slot_support import Fat, boot_fat
from tests.update_helpers import (
    DeployServer,
    Laps,
    UpdateMachine,
    cut_power_at_every_stage,
    homepage_releases,
    make_deploy_repo,
    new_key,
    publish,
)

pytestmark = pytest.mark.slow
BOARD = "rpi4"
BOOT = 900.0  # generous: TCG on a shared, loaded machine


def slot_boot_partition(m: UpdateMachine, slot: str) -> Fat:
    """The slot's own boot partition (ak-boot-a or ak-boot-b), where the agent writes its files."""
    return Fat(m.disk, m.manifest.partition(tryboot.slot_partition_name(slot)).offset)


CLOCK_LINE = re.compile(
    r"appliancekit: the clock was behind (this release: set to its build time|the time saved"
    r" on /data: set to it), (\S+)"
)


def assert_clock_never_went_back(serial: str) -> None:
    """raspi4b has no RTC: every boot starts in 1970. The first boot's clock starts at the
    build time; after the agent has run, every power cut resumes at the time it saved on
    /data, so across all the boots the clock never goes back."""
    lines = CLOCK_LINE.findall(serial)
    assert len(lines) == len(re.findall(r"boot number \d+", serial)), lines
    assert lines[0][0].startswith("this release"), lines[0]
    assert sum(source.startswith("the time saved") for source, _ in lines) >= 3, lines
    times = [datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ") for _, at in lines]
    assert times == sorted(times), lines


@pytest.mark.timeout(3600)
def test_updates_itself_through_tryboot_and_falls_back_without_the_flag(tmp_path: Path) -> None:
    board = find_board(BOARD, PROJECT.boards_dir)
    key = new_key(tmp_path / "key")
    v1, v2, v3 = homepage_releases(PROJECT, BOARD, tmp_path, key)
    assert v1.manifest.slot_switch == "rpi-tryboot"
    repo = make_deploy_repo(tmp_path / "deploy")
    with DeployServer(repo) as server:
        m = UpdateMachine(
            v1.output_dir,
            board,
            tmp_path / "machine",
            {"update_url": server.guest_url, "update_interval": "3"},
        )
        lap = Laps(BOARD)
        m.start()
        try:
            m.wait_serving("Served by appliancekit", BOOT)
            line = m.agent_result("no release published", 0, BOOT)
            assert "slot a" in line
            lap("v1 serving")

            # v2: the agent writes ak-boot-b and ak-root-b, arms [tryboot] and reboots with
            # the flag; the module's mailbox call is what makes the stand-in honour [tryboot]
            since = m.mark()
            publish(v2.output_dir, repo, key)
            m.wait_for(r"ak-update: release \d+ written to slot b and verified", since, BOOT)
            m.wait_for(r"ak_tryboot: tryboot flag set for the next boot", since, BOOT)
            m.wait_for(r"ak-update: trial boot of release \d+ in slot b", since, BOOT)
            assert m.tryboots == 1
            m.wait_serving("release-two", BOOT)
            m.agent_result(r"committed release \d+ in slot b", since, BOOT)
            counts = [int(n) for n in re.findall(r"boot number (\d+)", m.serial())]
            assert counts == sorted(counts) and counts[-1] >= 2, counts  # /data kept
            lap("v2 committed")

            # power cuts while v3 downloads, while its root is written and while a boot file
            # is written into ak-boot-a: each time the firmware boots [all]'s partition, v2's
            def publish_v3() -> None:
                publish(v3.output_dir, repo, key)

            def slot_a_boot_files() -> list[str]:
                return slot_boot_partition(m, "a").listdir("")

            cut_power_at_every_stage(m, server, publish_v3, slot_a_boot_files, lap, BOOT)
            assert m.tryboots == 1  # none of those boots was a trial

            # v3, written at last, crashes at start: one tryboot trial; the agent reboots
            # without the flag and the firmware boots [all]'s partition, v2's, by itself
            since = m.mark()
            m.wait_for(r"ak-update: trial boot of release \d+ in slot a", since, BOOT)
            m.wait_for(r"ak-update: [^\n]*trial of release \d+ failed", since, BOOT)
            line = m.agent_result(
                r"rolled back: release \d+ in slot a did not commit", since, BOOT
            )
            version, root = v3.manifest.source_date_epoch, v3.manifest.verity.root_hash
            assert f"failed releases: {version} ({root[:12]})" in line
            m.wait_serving("release-two", BOOT)
            assert m.tryboots == 2  # v2's trial and v3's, nothing else
            trials = re.findall(r"ak-update: trial boot of release \d+ in slot a", m.serial()[since:])
            assert len(trials) == 1
            lap("v3 rolled back")

            # the initramfs saw both trials as trials (another partition than [all]'s); it
            # would arm the PM watchdog for them alone, but QEMU's PM block resets the moment
            # the watchdog starts, so the board's QEMU command line turns it off. The driver
            # took the 180 s heartbeat at load (no "out of range"), as it will on the board.
            serial = m.serial()
            assert len(re.findall(r"slot [ab]: tryboot trial \(autoboot\.txt \[all\]", serial)) == 2
            assert serial.count("watchdog for the trial not armed: ak.trial_watchdog=off") == 2
            assert "out of range" not in serial
            assert_clock_never_went_back(serial)
        finally:
            m.kill()
            (tmp_path / "serial-all.log").write_text(m.serial())

    # autoboot.txt as the agent left it: slot b's partition committed, no trial armed
    autoboot = tryboot.parse_autoboot(boot_fat(m.disk, m.manifest).read(tryboot.AUTOBOOT).decode())
    assert autoboot == tryboot.Autoboot(committed=tryboot.slot_partition("b")), autoboot
    left = slot_boot_partition(m, "a").listdir("")
    assert not [n for n in left if n.endswith(".new")], left
    print(lap.summary())
