"""Rewrite tests/schedule.toml from a full run's JUnit report (`make test` writes
.cache/test-report.xml): seconds per test file, for the files over a minute."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEADER = """\
# Seconds each test file took in the last measured full run on a fresh 2-core machine
# (`make test` writes .cache/test-report.xml; `python scripts/test-schedule.py` rewrites this
# table from it). A scheduling hint, not a figure: tests/ordering.py hands the heaviest files
# to the two xdist workers first, so the run ends on many short files instead of one long
# boot. Files not listed count as 0 and run after these, in collection order.
[seconds]
"""


def seconds_per_file(report: Path) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(report).getroot().iter("testcase"):
        # classname is the dotted module path, e.g. tests.test_dns
        module = case.get("classname", "").split(".")
        path = "/".join(part for part in module if not part[:1].isupper()) + ".py"
        totals[path] += float(case.get("time", "0"))
    return dict(totals)


def main() -> int:
    report = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / ".cache" / "test-report.xml"
    totals = seconds_per_file(report)
    lines = [
        f'"{path}" = {round(seconds)}'
        for path, seconds in sorted(totals.items(), key=lambda kv: -kv[1])
        if seconds >= 60
    ]
    (REPO / "tests" / "schedule.toml").write_text(HEADER + "\n".join(lines) + "\n")
    print(f"tests/schedule.toml: {len(lines)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
