"""What the panel's buttons start: the real pipeline, as background jobs (panel/jobs.py).

- build and boot-test a member: `build.build` with the member's build-time settings from the
  cloud (as `cloud build` makes them), then `boottest.boot_test` on its image; the result is
  recorded in the image's boot-test.json (which `release` also reads);
- publish a release: `publish_sdcard` into releases/NAME, and a signed commit into the deploy
  repository (`publish_git`) when the panel was started with one; only an image whose
  current sha256 passed its boot test is published, and the deploy repository (what update
  agents pull) gets it only when no member of that recipe and board holds its updates
  (cloud/updates.py);
- a card image: `flash.flash` onto a file with the form's settings (checked by their kinds
  as `flash -s` checks them), then zstd-compressed for the download.
"""

from __future__ import annotations

import secrets as random
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import zstandard

from appliancekit.boottest import boot_test
from appliancekit.build import BuildPlan, build
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.cloud.model import Cloud, Member
from appliancekit.cloud.roles import member_settings, split_settings
from appliancekit.cloud.secrets import load_or_create
from appliancekit.cloud.updates import UpdateGate, load_gates, may_update
from appliancekit.errors import UserError
from appliancekit.flash import flash
from appliancekit.panel.jobs import Job, JobFunction, JobReporter, JobResult, SerialFollower
from appliancekit.panel.status import (
    boot_health,
    cloud_state_dir,
    image_dir_of,
    member_manifest,
    write_boot_record,
)
from appliancekit.recipe import resolve_settings

CARD_CHUNK = 4 << 20
CARD_LEVEL = 3  # zstd: fast, and a card image is mostly zeros


@dataclass(frozen=True)
class PanelPaths:
    images: Path  # images/ (members' images, images/clouds/NAME state)
    releases: Path  # releases/ (publish --to sdcard)
    cards: Path  # finished card images waiting for their download (mode 0700)
    deploy_repo: Path | None = None  # publish --to git here too
    sign_key: Path | None = None  # minisign secret key for the deploy repository


def device_defaults(cloud: Cloud, member: Member, images: Path) -> dict[str, str]:
    """The per-device settings the cloud gives a real device of this member (its only NIC
    on the cloud's network), as `cloud build` writes them for `flash --settings`."""
    secrets = load_or_create(cloud_state_dir(cloud, images))
    _build, device = split_settings(member, member_settings(cloud, member, secrets))
    return device


def holding_members(
    cloud: Cloud, member: Member, sha256: str, gates: Mapping[str, UpdateGate]
) -> list[str]:
    """The members that would receive this release from the deploy repository (same recipe
    and board: one directory there) but whose approvals do not let it through."""
    return [
        m.name
        for m in cloud.members
        if (m.recipe.name, m.board.name) == (member.recipe.name, member.board.name)
        and not may_update(gates, m.name, sha256)
    ]


def boot_test_job(cloud: Cloud, member: Member, paths: PanelPaths) -> JobFunction:
    def run(job: Job, reporter: JobReporter) -> JobResult:
        secrets = load_or_create(cloud_state_dir(cloud, paths.images))
        build_settings, _device = split_settings(member, member_settings(cloud, member, secrets))
        plan = BuildPlan(
            member.recipe,
            member.board,
            resolve_settings(member.recipe, build_settings),
            paths.images.resolve(),
        )
        reporter.step(f"building {plan.name} (a no-op when nothing changed)")
        result = build(plan, Cache(default_cache_dir()), reporter)
        manifest = result.manifest
        reporter.step(
            f"{plan.name}: {'built' if result.rebuilt else 'up to date'},"
            f" image {manifest.disk.sha256[:12]}"
        )
        board = member.board
        reporter.step(
            f"boot test: {board.qemu.binary} -M {board.qemu.machine}, probes from the host"
        )
        follower = SerialFollower(job)
        try:
            report = boot_test(result.output_dir, manifest, board, on_start=follower.follow)
        finally:
            follower.stop()
        write_boot_record(
            result.output_dir,
            str(manifest.disk.sha256),
            report.passed,
            report.boot_to_healthy,
            report.serial_log,
        )
        lines = [
            f"{'ok  ' if p.ok else 'FAIL'} {p.name}: {p.detail} ({p.seconds:.1f}s)"
            for p in report.probes
        ]
        serial = ("serial log", f"/clouds/{cloud.name}/members/{member.name}/serial")
        if report.passed:
            summary = f"PASS: {plan.name} healthy {report.boot_to_healthy:.1f}s after QEMU start"
        else:
            summary = f"FAIL: {(report.failure or 'no reason given').splitlines()[0]}"
        return JobResult(summary, ok=report.passed, links=[serial], lines=lines)

    return run


def publish_job(cloud: Cloud, member: Member, paths: PanelPaths) -> JobFunction:
    def run(job: Job, reporter: JobReporter) -> JobResult:
        from appliancekit.publish.sdcard import publish_sdcard

        image_dir = image_dir_of(member, paths.images)
        manifest = member_manifest(image_dir)
        if manifest is None:
            raise UserError(f"{member.name}: no image yet: build and boot-test it first")
        health = boot_health(image_dir, manifest)
        if health is None or not health.current or not health.passed:
            raise UserError(
                f"{member.name}: image {manifest.disk.sha256[:12]} has not passed a boot test:"
                " only a tested image is published"
            )
        reporter.step(f"SD-card release of {manifest.name}")
        release = publish_sdcard(image_dir, paths.releases / manifest.name, reporter=reporter)
        lines = [
            f"{release.directory}: {release.image.name}"
            f" {release.compressed_size / 2**20:.1f} MiB, {release.bmap.name}, SHA256SUMS"
        ]
        held = holding_members(
            cloud,
            member,
            str(manifest.disk.sha256),
            load_gates(cloud_state_dir(cloud, paths.images)),
        )
        if paths.deploy_repo is not None and held:
            lines.append(
                f"not committed to {paths.deploy_repo}: updates of {', '.join(held)} are held"
                " or approved for another release, and update agents pull from there"
            )
        elif paths.deploy_repo is not None:
            from appliancekit.publish.git import publish_git

            reporter.step(f"deploy repository {paths.deploy_repo}")
            git = publish_git(
                image_dir, paths.deploy_repo, reporter=reporter, sign_key=paths.sign_key
            )
            state = "committed" if git.committed else "already there, no new commit"
            signed = ", signed" if paths.sign_key else ""
            lines.append(f"{git.repo}/{git.directory}: {state} ({git.commit[:12]}{signed})")
        return JobResult(f"published {manifest.name} {manifest.disk.sha256[:12]}", lines=lines)

    return run


def card_job(
    cloud: Cloud, member: Member, paths: PanelPaths, settings: Mapping[str, str]
) -> JobFunction:
    """`settings` were checked by the form; flash checks them again on its own path."""
    values = dict(settings)

    def run(job: Job, reporter: JobReporter) -> JobResult:
        image_dir = image_dir_of(member, paths.images)
        manifest = member_manifest(image_dir)
        if manifest is None:
            raise UserError(f"{member.name}: no image yet: build and boot-test it first")
        host = values.get("hostname", member.name)
        name = f"{manifest.name}-{host}.img.zst"
        token = random.token_urlsafe(16)
        paths.cards.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="card-", dir=paths.cards) as tmp:
            raw = Path(tmp) / f"{manifest.name}.img"
            reporter.step(f"writing {manifest.name} to a card image with the form's settings")
            result = flash(image_dir, raw, settings=values, yes=True, reporter=reporter)
            reporter.step("compressing the card image (zstd)")
            packed = Path(tmp) / name
            _compress(raw, packed, reporter)
            final = paths.cards / token
            final.mkdir(mode=0o700)
            shutil.move(str(packed), final / name)
        shown = [f"{k} = {v}" for k, v in sorted(result.settings.items())]
        return JobResult(
            f"card image for {host} ready ({(final / name).stat().st_size / 2**20:.1f} MiB)",
            links=[(f"download {name}", f"/cards/{token}/{name}")],
            lines=["settings.env on the boot partition:", *shown],
        )

    return run


def _compress(raw: Path, packed: Path, reporter: JobReporter) -> None:
    size = raw.stat().st_size
    compressor = zstandard.ZstdCompressor(level=CARD_LEVEL, threads=-1)
    with (
        reporter.progress("compressing", total=size) as task,
        open(raw, "rb") as src,
        open(packed, "wb") as dst,
        compressor.stream_writer(dst, size=size) as writer,
    ):
        while chunk := src.read(CARD_CHUNK):
            writer.write(chunk)
            task.advance(len(chunk))
