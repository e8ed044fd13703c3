"""Figures of a cloud, each against a baseline measured in the same run:

- boot to all healthy (every cross-member check passed, TLS included) against the slowest
  member booted alone (its own boot test: boot to all its probes passed);
- `cloud dns --apply` to every generated record resolving at the DNS member, against one
  query to it;
- time to the first ACME certificate of every TLS member, and from it to the renewal, against
  pebble's certificate lifetime (the renewal comes when less than acme_renew_days = 1 day is
  left: testca.RENEW_AFTER seconds after the issue, plus the check interval);
- host memory (RSS of each QEMU process once the cloud is healthy) against the guest memory
  the board gives it.

    python -m bench.cloud [--cloud example] [--images DIR] [--json]

One cloud boot and one boot of the slowest member (by the cloud's own handover times).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from appliancekit.boottest import boot_test
from appliancekit.build import BuildPlan, BuildResult, build
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.cloud import testca
from appliancekit.cloud.boot import build_members, make_cards
from appliancekit.cloud.model import Member, find_cloud
from appliancekit.cloud.secrets import load_or_create
from appliancekit.cloud.testrun import run_cloud_test
from appliancekit.output import Reporter
from appliancekit.project import Project
from appliancekit.recipe import resolve_settings
from bench.figures import Figure, Unit

REPO = Path(__file__).resolve().parent.parent


def guest_bytes(memory: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(memory[:-1]) * units[memory[-1].upper()] if memory[-1].isalpha() else int(memory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cloud", default="example")
    parser.add_argument("--images", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    project = Project(REPO)
    cloud = find_cloud(args.cloud, project)
    images = (args.images or project.images_dir).resolve()
    cache = Cache(default_cache_dir())

    def builder(member: Member, settings: Mapping[str, str]) -> BuildResult:
        plan = BuildPlan(
            member.recipe, member.board, resolve_settings(member.recipe, settings), images
        )
        return build(plan, cache, Reporter())

    with tempfile.TemporaryDirectory(prefix="bench-cloud.") as tmp:
        work = Path(tmp)
        secrets = load_or_create(work / "state")
        builds = build_members(cloud, secrets, builder)
        ca = testca.prepare(work / "ca")
        cards = make_cards(
            cloud, secrets, builds, work / "cards", test=True, test_ca=ca
        )
        report = run_cloud_test(cloud, secrets, cards, work / "run", timeout=3000, test_ca=ca)
        if not report.passed:
            print(f"cloud test failed: {report.failure}", file=sys.stderr)
            return 1
        memory = report.memory
        resolving = (report.figures["dns_apply_to_resolving"], report.figures["dns_one_query"])
        checks = {c.name: c for c in report.checks}
        first_cert = checks["every TLS member serves an ACME certificate (chain verified)"].seconds
        renewed = checks["every certificate renewed before expiry"].seconds
        slowest = max(report.handover, key=lambda name: report.handover[name])
        member = cloud.member(slowest)
        alone = boot_test(builds[slowest].output_dir, builds[slowest].manifest, member.board)
        if not alone.passed or alone.boot_to_healthy is None:
            print(f"{slowest} alone failed: {alone.failure}", file=sys.stderr)
            return 1
        figures = [
            Figure(
                "cloud boot to all healthy",
                report.healthy or 0,
                Unit.SECONDS,
                f"{slowest} booted alone, to healthy",
                alone.boot_to_healthy,
            ),
            Figure(
                "cloud dns --apply to all records resolving",
                resolving[0],
                Unit.SECONDS,
                "one query to the DNS member",
                resolving[1],
            ),
            Figure(
                "first ACME certificate on every TLS member (from the first QEMU start)",
                first_cert,
                Unit.SECONDS,
                "pebble's certificate lifetime",
                ca.lifetime,
            ),
            Figure(
                "renewal of every certificate (after the first)",
                renewed - first_cert,
                Unit.SECONDS,
                "pebble's certificate lifetime",
                ca.lifetime,
            ),
        ]
        for name, rss in sorted(memory.items()):
            guest = guest_bytes(cloud.member(name).board.qemu.memory)
            figures.append(
                Figure(
                    f"host memory (QEMU RSS) of {name}", rss, Unit.BYTES, "its guest memory", guest
                )
            )
    if args.json:
        print(json.dumps([f.to_json() for f in figures], indent=2))
    else:
        for f in figures:
            print(
                f"{f.name}: {f.unit.show(f.value)} | {f.baseline_name}: {f.unit.show(f.baseline)} | {f.ratio:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
