"""The Debian release matrix's wall time (issue 14 §3), in one run of `appliancekit release`
over every recipe x board of `ci/matrix.py`, on this machine:

- the full matrix (build from the lock, boot test, SD-card artefacts, a signed commit into a
  deploy repository of the bench's own), against the demo entry (homepage on
  qemu-virt-arm64) of the same run: how many demo builds the matrix costs;
- the slowest entry, which is what one CI runner of the split workflow needs, against the
  full matrix: what splitting per runner saves; its target is the job's 90 min limit;
- the rerun that resumes a finished release (what the workflow's deploy job does once every
  runner has built and boot-tested its image), against the full run.

    .venv/bin/python -m bench.release_matrix [--work DIR] [--json]
    .venv/bin/python -m bench.release_matrix --from FULL.json --rerun RERUN.json [--json]

The package cache is the machine's own (APPLIANCEKIT_CACHE or the default), so the figure is
a warm-cache one: a fresh runner also downloads its packages (docs/measurements.md, "Locks
and reproducibility", measures that cost for one entry). --from summarises the `--json`
output of runs made by hand, such as one made in the background while nothing else ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from appliancekit.release.signing import SECRET_KEY, keygen  # noqa: E402
from bench.figures import Figure, Target, Unit, table  # noqa: E402
from tests.update_helpers import make_deploy_repo  # noqa: E402

DEMO = ("homepage", "qemu-virt-arm64")
RUNNER_LIMIT = 90 * 60.0  # ci/release.yml's debian-images timeout-minutes
SOURCE = "issue 14 §3; ci/release.yml timeout-minutes"


def release(work: Path, record: str) -> dict:
    """`appliancekit release --json` over the whole matrix into work/ (created if missing),
    its output kept as work/RECORD.json for --from; a second call on the same work/ is the
    resuming rerun."""
    key = work / "key" / SECRET_KEY
    deploy = work / "deploy"
    if not key.exists():  # set-up, not timed: the first call only
        keygen(key.parent)
        make_deploy_repo(deploy)
    env = {**os.environ, "APPLIANCEKIT_IMAGES": str(work / "images")}
    argv = [sys.executable, "-m", "appliancekit", "release", "--out", str(work / "releases")]
    argv += ["--repo", str(deploy), "--sign", str(key), "--json"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"bench: appliancekit release failed: {done.stderr.strip()}")
    (work / f"{record}.json").write_text(done.stdout)
    return json.loads(done.stdout)


def entry_seconds(entry: dict) -> float:
    return sum(float(s) for s in entry["seconds"].values())


def figures(full: dict, rerun: dict) -> list[Figure]:
    entries = full["releases"]
    if not all(e["built"] and e["boot_tested"] for e in entries):
        raise SystemExit("bench: the full run reused earlier builds or boot tests: start empty")
    demo = next(e for e in entries if (e["recipe"], e["board"]) == DEMO)
    slowest = max(entries, key=entry_seconds)
    wall = float(full["wall_seconds"])
    return [
        Figure(
            f"full Debian matrix ({len(entries)} entries), one machine",
            wall,
            Unit.SECONDS,
            f"{DEMO[0]} on {DEMO[1]}",
            entry_seconds(demo),
        ),
        Figure(
            f"slowest entry ({slowest['recipe']} on {slowest['board']}): one runner",
            entry_seconds(slowest),
            Unit.SECONDS,
            "full matrix",
            wall,
            (Target(RUNNER_LIMIT, False, SOURCE),),
        ),
        Figure(
            "rerun that resumes the finished release",
            float(rerun["wall_seconds"]),
            Unit.SECONDS,
            "full matrix",
            wall,
        ),
    ]


def stage_totals(full: dict) -> dict[str, float]:
    totals: dict[str, float] = {}
    for entry in full["releases"]:
        for stage, seconds in entry["seconds"].items():
            totals[stage] = round(totals.get(stage, 0.0) + float(seconds), 1)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--from", dest="full", type=Path, help="a full run's --json output")
    parser.add_argument("--rerun", type=Path, help="with --from: the resuming rerun's output")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.full:
        if not args.rerun:
            parser.error("--from needs --rerun")
        full, rerun = json.loads(args.full.read_text()), json.loads(args.rerun.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="ak-bench-release-") as tmp:
            work = args.work or Path(tmp)
            full, rerun = release(work, "full"), release(work, "rerun")
    measured = figures(full, rerun)
    if args.json:
        json.dump(
            {"figures": [f.to_json() for f in measured], "stages": stage_totals(full)},
            sys.stdout,
            indent=2,
        )
        print()
        return
    print(table(measured))
    print("seconds per stage, summed over the matrix:", stage_totals(full))


if __name__ == "__main__":
    main()
