"""`appliancekit release`: the Debian release matrix, end to end.

For each recipe x board of the matrix (or the part of it this runner was given):
build from the committed lock, boot-test, publish the SD-card artefacts into OUT/NAME/, and
commit the release into the git deploy repository (signed with --sign). Then write release
notes from the package changes against the previous release in the deploy repository and
the recipe commits since the previous tag.

Resumable: a build whose inputs did not change is a no-op; a boot test that passed for the
same image sha256 (images/NAME/boot-test.json) is not repeated; an SD-card release and a
deploy-repository release holding the same sha256 are left as they are. A failed boot test
stops the run with one line.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliancekit.board import find_board
from appliancekit.boottest import boot_test
from appliancekit.build import BuildPlan, build
from appliancekit.cache import Cache
from appliancekit.errors import ToolError, UserError
from appliancekit.manifest import Manifest
from appliancekit.output import Reporter
from appliancekit.project import Project
from appliancekit.publish.image import SHA256SUMS, read_sha256sums
from appliancekit.recipe import find_recipe, resolve_settings
from appliancekit.release.lock import suite_for
from appliancekit.release.matrix import MatrixEntry, debian_matrix
from appliancekit.sources.debian_lock import lock_path, read_lock

BOOT_TEST_RECORD = "boot-test.json"
NOTES = "RELEASE-NOTES.md"


class BootTestFailed(ToolError):
    """A boot test failed: the release stops (exit 1) with one line."""


@dataclass
class EntryOutcome:
    recipe: str
    board: str
    image_sha256: str = ""
    built: bool = False
    boot_tested: bool = False  # a boot test ran now (False: an earlier pass was reused)
    sdcard: str = ""  # "written" | "unchanged"
    git: str = ""  # "committed" | "unchanged" | "" (no deploy repository)
    package_changes: list[dict[str, object]] = field(default_factory=list)
    # wall seconds per stage in this run (build, boot_test, publish): a resumed run shows
    # what it skipped as near zero, so the full matrix's time is that of one complete run
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ReleaseOptions:
    out: Path  # SD-card release directories: OUT/RECIPE-BOARD/
    repo: Path | None = None  # git deploy repository
    sign_key: Path | None = None
    recipes: tuple[str, ...] = ()  # empty: all
    boards: tuple[str, ...] = ()  # empty: all
    since: str | None = None  # git ref for the recipe changes in the notes
    boot_timeout: float = 240.0


def select(project: Project, options: ReleaseOptions) -> list[MatrixEntry]:
    entries = debian_matrix(project.recipes_dir, project.boards_dir)
    for wanted, attr in ((options.recipes, "recipe"), (options.boards, "board")):
        known = {getattr(e, attr) for e in entries}
        for name in wanted:
            if name not in known:
                raise UserError(
                    f"{attr} {name!r} is not in the Debian release matrix "
                    f"(known: {', '.join(sorted(known))})"
                )
    return [
        e
        for e in entries
        if (not options.recipes or e.recipe in options.recipes)
        and (not options.boards or e.board in options.boards)
    ]


def run_release(
    project: Project,
    cache: Cache,
    reporter: Reporter,
    options: ReleaseOptions,
) -> list[EntryOutcome]:
    entries = select(project, options)
    if options.sign_key is not None and not options.sign_key.is_file():
        raise UserError(
            "no such secret key (create one with `appliancekit keygen`)", file=options.sign_key
        )
    outcomes = []
    for entry in entries:
        outcomes.append(_release_one(project, cache, reporter, options, entry))
    notes = options.out / NOTES
    notes.parent.mkdir(parents=True, exist_ok=True)
    notes.write_text(release_notes(project, outcomes, options.since))
    return outcomes


def _release_one(
    project: Project,
    cache: Cache,
    reporter: Reporter,
    options: ReleaseOptions,
    entry: MatrixEntry,
) -> EntryOutcome:
    recipe = find_recipe(entry.recipe, project.recipes_dir)
    board = find_board(entry.board, project.boards_dir)
    lock_file = lock_path(recipe.directory, suite_for(recipe, board), board.arch.value)
    if not lock_file.exists():
        raise UserError(
            f"no lock for {entry.recipe} on {entry.board}: a release builds only from "
            f"committed locks (`appliancekit lock {entry.recipe}`)",
            file=lock_file,
        )
    outcome = EntryOutcome(entry.recipe, entry.board)
    started = time.monotonic()
    plan = BuildPlan(recipe, board, resolve_settings(recipe, {}), project.images_dir)
    result = build(plan, cache, reporter)
    outcome.seconds["build"] = round(time.monotonic() - started, 1)
    manifest = result.manifest
    sha = str(manifest.disk.sha256)
    outcome.image_sha256, outcome.built = sha, result.rebuilt
    release_dir = options.out / manifest.name
    deploy_dir = options.repo / recipe.name / board.name if options.repo else None
    previous = _deployed_manifest(deploy_dir)
    outcome.package_changes = package_changes(previous, manifest, lock_file)

    started = time.monotonic()
    if not _boot_test_passed(result.output_dir, sha):
        reporter.step(f"{manifest.name}: boot test")
        report = boot_test(result.output_dir, manifest, board, timeout=options.boot_timeout)
        if not report.passed:
            reason = (report.failure or "no reason given").splitlines()[0]
            raise BootTestFailed(
                f"{manifest.name}: boot test failed: {reason} "
                f"(serial log: {report.serial_log}); nothing of it was published"
            )
        (result.output_dir / BOOT_TEST_RECORD).write_text(
            json.dumps(
                {"image_sha256": sha, "passed": True, "boot_to_healthy": report.boot_to_healthy},
                indent=2,
            )
            + "\n"
        )
        outcome.boot_tested = True
    outcome.seconds["boot_test"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    if _holds(release_dir, manifest.name, sha):
        outcome.sdcard = "unchanged"
    else:
        from appliancekit.publish.sdcard import publish_sdcard

        publish_sdcard(result.output_dir, release_dir, reporter=reporter)
        outcome.sdcard = "written"
    if options.repo is not None:
        from appliancekit.publish.git import publish_git

        git = publish_git(
            result.output_dir, options.repo, reporter=reporter, sign_key=options.sign_key
        )
        outcome.git = "committed" if git.committed else "unchanged"
    outcome.seconds["publish"] = round(time.monotonic() - started, 1)
    reporter.step(
        f"{manifest.name}: {sha[:16]} sdcard {outcome.sdcard}"
        + (f", deploy repository {outcome.git}" if outcome.git else "")
    )
    return outcome


def _boot_test_passed(image_dir: Path, sha: str) -> bool:
    try:
        record = json.loads((image_dir / BOOT_TEST_RECORD).read_text())
    except (OSError, ValueError):
        return False
    return record.get("passed") is True and record.get("image_sha256") == sha


def _holds(release_dir: Path, name: str, sha: str) -> bool:
    sums = release_dir / SHA256SUMS
    if not sums.is_file():
        return False
    try:
        listed = read_sha256sums(sums)
    except UserError:
        return False
    return listed.get(f"{name}.img") == sha and (release_dir / f"{name}.img.zst").is_file()


def _deployed_manifest(deploy_dir: Path | None) -> dict[str, object] | None:
    if deploy_dir is None:
        return None
    try:
        return json.loads((deploy_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def package_changes(
    previous: dict[str, object] | None, manifest: Manifest, lock_file: Path
) -> list[dict[str, object]]:
    """Debian packages whose version changed since the previous release of this recipe and
    board (from its manifest in the deploy repository); security updates are those the lock
    fetches from the -security archive."""
    if previous is None:
        return []
    pool = {(p.name, p.architecture): p.filename for p in read_lock(lock_file).packages}

    def versions(packages: Sequence[dict[str, object]]) -> dict[tuple[str, str], str]:
        return {
            (str(p["name"]), str(p["architecture"])): str(p["version"])
            for p in packages
            if p.get("role") != "pypi"
        }

    old = versions(previous.get("packages", []))  # type: ignore[arg-type]
    new = versions(manifest.packages)
    changes = []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            changes.append(
                {
                    "name": key[0],
                    "architecture": key[1],
                    "old": old.get(key),
                    "new": new.get(key),
                    "security": pool.get(key, "").startswith("pool/updates/"),
                }
            )
    return changes


def _recipe_commits(project: Project, recipe: str, since: str | None) -> list[str]:
    if since is None:
        found = subprocess.run(
            ["git", "-C", str(project.root), "describe", "--tags", "--abbrev=0", "HEAD^"],
            capture_output=True,
            text=True,
        )
        since = found.stdout.strip() if found.returncode == 0 else None
    span = [f"{since}..HEAD"] if since else ["-n", "20"]
    log = subprocess.run(
        ["git", "-C", str(project.root), "log", "--format=%h %s", *span, "--", f"recipes/{recipe}"],
        capture_output=True,
        text=True,
    )
    return log.stdout.splitlines() if log.returncode == 0 else []


def release_notes(project: Project, outcomes: Sequence[EntryOutcome], since: str | None) -> str:
    lines = ["# Release notes", ""]
    for recipe in sorted({o.recipe for o in outcomes}):
        lines += [f"## {recipe}", ""]
        commits = _recipe_commits(project, recipe, since)
        if commits:
            lines += ["Recipe changes:", "", *(f"- {c}" for c in commits), ""]
        for o in (o for o in outcomes if o.recipe == recipe):
            lines.append(f"- **{o.board}**: image sha256 `{o.image_sha256}`")
            security = [c for c in o.package_changes if c["security"]]
            if security:
                lines.append(f"  - {len(security)} security updates")
            for c in o.package_changes:
                mark = " (security)" if c["security"] else ""
                lines.append(
                    f"  - {c['name']}:{c['architecture']} {c['old'] or '-'} -> "
                    f"{c['new'] or '-'}{mark}"
                )
        lines.append("")
    return "\n".join(lines)
