"""The update tests' console reader, without a VM: a status line counts only when whole."""

from __future__ import annotations

import pytest

from tests.update_helpers import UpdateMachine


class ScriptedConsole(UpdateMachine):
    """An UpdateMachine whose serial log grows by one scripted chunk per read."""

    def __init__(self, chunks: list[str]) -> None:  # no VM: only the reader is under test
        self.chunks = chunks
        self.reads = 0
        self.machine = None
        self.firmware_reboots = False

    def serial(self) -> str:
        self.reads += 1
        return "".join(self.chunks[: self.reads])


LINE = (
    "ak-update: status: slot a, release 1 (root ab), last check 2026-12-02T06:24:05Z: "
    "rolled back: release 2 in slot b did not commit: back to slot a, "
    "/data restored from before the trial\r\n"
)


def test_a_status_line_is_read_only_once_its_newline_has_arrived() -> None:
    cut = LINE.index("bac") + 3  # where CI once read the line, mid-word
    console = ScriptedConsole(["boot\r\n", LINE[:cut], LINE[cut:]])
    line = console.agent_result(r"rolled back: release \d+ in slot b did not commit", 0, 5)
    assert line == LINE.rstrip()
    assert console.reads == 3


def test_a_line_that_never_ends_is_not_a_result() -> None:
    console = ScriptedConsole([LINE[:-2]])
    with pytest.raises(AssertionError, match="no "):
        console.agent_result(r"rolled back", 0, 0.5)
