"""The order xdist hands test files out in: longest first, from tests/schedule.toml."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .conftest import REPO
from .ordering import file_seconds, longest_files_first


@dataclass
class Item:
    nodeid: str


def test_heaviest_files_first_and_each_file_kept_whole_in_its_order() -> None:
    items = [
        Item("tests/test_a.py::one"),
        Item("tests/test_boot.py::first"),
        Item("tests/test_a.py::two"),
        Item("tests/test_b.py::one"),
        Item("tests/test_boot.py::second"),
        Item("tests/test_cloud.py::only"),
    ]
    seconds = {"tests/test_boot.py": 200.0, "tests/test_cloud.py": 500.0}
    ordered = [i.nodeid for i in longest_files_first(items, seconds)]  # type: ignore[arg-type]
    assert ordered == [
        "tests/test_cloud.py::only",
        "tests/test_boot.py::first",
        "tests/test_boot.py::second",
        "tests/test_a.py::one",
        "tests/test_a.py::two",
        "tests/test_b.py::one",
    ]


def test_the_schedule_names_only_files_that_exist() -> None:
    seconds = file_seconds()
    assert seconds, "tests/schedule.toml is empty"
    missing = [path for path in seconds if not (REPO / path).is_file()]
    assert not missing, f"tests/schedule.toml names files that are gone: {missing}"


def test_the_schedule_is_rewritten_from_a_junit_report(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("schedule", REPO / "scripts" / "test-schedule.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    report = tmp_path / "report.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_dns" name="test_boot" time="150.5"/>'
        '<testcase classname="tests.test_dns" name="test_zone" time="0.5"/>'
        '<testcase classname="tests.test_board.TestLayout" name="test_gpt" time="61"/>'
        "</testsuite></testsuites>"
    )
    assert script.seconds_per_file(report) == {
        "tests/test_dns.py": 151.0,
        "tests/test_board.py": 61.0,
    }
