"""`verify-release`: rebuild a published release from its manifest and the recipe's lock, and
compare sha256s. When they differ, both sealed roots are extracted (fsck.erofs --extract)
and the first differing file is named, so "trust us" becomes "check us".

A release directory is what `publish --to sdcard` or `publish --to git` wrote (manifest.json,
SHA256SUMS, NAME.img.zst when included) or an image directory (disk.img).
"""

from __future__ import annotations

import filecmp
import os
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from appliancekit.board import find_board
from appliancekit.build import BuildPlan, build
from appliancekit.cache import Cache
from appliancekit.digest import sha256_file
from appliancekit.errors import ToolError, UserError
from appliancekit.manifest import Manifest, load_manifest
from appliancekit.output import Reporter
from appliancekit.project import Project
from appliancekit.publish.image import SHA256SUMS, read_sha256sums
from appliancekit.recipe import SettingKind, find_recipe, resolve_settings
from appliancekit.sources.debian import DEFAULT_MIRRORS, Mirrors
from appliancekit.sources.debian_lock import lock_path


@dataclass(frozen=True)
class VerifyResult:
    release: Path
    name: str
    published_sha256: str
    rebuilt_sha256: str
    inputs_equal: bool  # the rebuild's input fingerprint is the release's
    first_difference: str | None  # first differing path of the sealed root, when known
    rebuild_seconds: float

    @property
    def equal(self) -> bool:
        return self.published_sha256 == self.rebuilt_sha256

    def to_json(self) -> dict[str, object]:
        return {
            "release": str(self.release),
            "name": self.name,
            "equal": self.equal,
            "published_sha256": self.published_sha256,
            "rebuilt_sha256": self.rebuilt_sha256,
            "inputs_equal": self.inputs_equal,
            "first_difference": self.first_difference,
            "rebuild_seconds": round(self.rebuild_seconds, 2),
        }


def verify_release(
    release: Path,
    project: Project,
    cache: Cache,
    reporter: Reporter,
    *,
    overrides: Mapping[str, str] | None = None,
    mirrors: Mirrors = DEFAULT_MIRRORS,
    work: Path | None = None,
) -> VerifyResult:
    release = Path(release)
    manifest = load_manifest(release)
    published = _published_sha256(release, manifest)
    recipe = find_recipe(manifest.recipe, project.recipes_dir)
    board = find_board(manifest.board, project.boards_dir)
    _check_lock(manifest, recipe.directory, manifest.suite, manifest.arch)
    settings = resolve_settings(recipe, _settings_from(manifest, recipe, overrides or {}))
    with tempfile.TemporaryDirectory(prefix="ak-verify-", dir=work) as tmp:
        images = Path(tmp) / "images"
        plan = BuildPlan(recipe, board, settings, images)
        reporter.step(f"rebuilding {manifest.name} from {release}")
        started = time.monotonic()
        result = build(plan, cache, reporter, force=True, mirrors=mirrors)
        seconds = time.monotonic() - started
        rebuilt = result.manifest.disk.sha256
        difference = None
        if rebuilt != published:
            reporter.step("images differ: extracting both sealed roots")
            difference = first_root_difference(
                _published_disk(release, manifest, Path(tmp)),
                result.output_dir / "disk.img",
                manifest,
                result.manifest,
                Path(tmp),
            )
    return VerifyResult(
        release,
        manifest.name,
        published,
        rebuilt,
        result.manifest.inputs == manifest.inputs,
        difference,
        seconds,
    )


def _published_sha256(release: Path, manifest: Manifest) -> str:
    sums_file = release / SHA256SUMS
    sums = read_sha256sums(sums_file) if sums_file.is_file() else {}
    for name in (f"{manifest.name}.img", manifest.disk.path):
        if name in sums:
            return sums[name]
    recorded = manifest.disk.sha256
    if not recorded:
        raise UserError("the release names no image sha256", file=release / "manifest.json")
    return str(recorded)


def _check_lock(manifest: Manifest, recipe_dir: Path, suite: str, arch: str) -> None:
    """The rebuild must use the lock the release was built from (the manifest pins its
    sha256); anything else would be checking a different image."""
    recorded = manifest.extra.get("debian_lock")
    path = lock_path(recipe_dir, suite, arch)
    if not recorded:
        raise UserError(
            "the release was built without a lock: it cannot be rebuilt bit for bit",
            field="extra.debian_lock",
        )
    if not path.exists():
        raise UserError(f"no lock {path.name} to rebuild from", file=path)
    if sha256_file(path) != recorded["sha256"]:
        raise UserError(
            f"this lock is not the one the release was built from (sha256 "
            f"{recorded['sha256'][:16]}...): check out the commit of the release",
            file=path,
        )


def _settings_from(
    manifest: Manifest, recipe: object, overrides: Mapping[str, str]
) -> dict[str, str]:
    """The release's settings; a path setting names a directory on the machine that built
    it, so it keeps the recipe's default unless given again (its content is in the inputs)."""
    kinds = {s.name: s.kind for s in recipe.settings}  # type: ignore[attr-defined]
    values = {
        name: value
        for name, value in manifest.settings.items()
        # an empty value is an unset optional setting: it keeps its default
        if name in kinds and kinds[name] != SettingKind.PATH and value != ""
    }
    return {**values, **overrides}


def _published_disk(release: Path, manifest: Manifest, tmp: Path) -> Path | None:
    disk = release / manifest.disk.path
    if disk.is_file():
        return disk
    compressed = release / f"{manifest.name}.img.zst"
    if not compressed.is_file():
        return None
    out = tmp / "published.img"
    result = subprocess.run(
        ["zstd", "-d", "-q", "-f", str(compressed), "-o", str(out)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ToolError(f"zstd -d {compressed.name}: {result.stderr.strip()}")
    return out


def first_root_difference(
    published: Path | None,
    rebuilt: Path,
    published_manifest: Manifest,
    rebuilt_manifest: Manifest,
    tmp: Path,
) -> str:
    """The first path (in sorted order) whose type, mode, owner, link target or content
    differs between the two sealed roots."""
    if published is None:
        return "(the release holds no image to compare with: only its sha256)"
    a = extract_root(published, published_manifest, tmp / "published-root")
    b = extract_root(rebuilt, rebuilt_manifest, tmp / "rebuilt-root")
    difference = first_tree_difference(a, b)
    if difference is None:
        return "(sealed roots hold the same files: the difference is outside them)"
    return difference


def extract_root(disk: Path, manifest: Manifest, destination: Path) -> Path:
    part = manifest.root_partition()
    image = destination.with_suffix(".erofs")
    with open(disk, "rb") as src, open(image, "wb") as dst:
        src.seek(part.offset)
        remaining = part.size
        if manifest.verity is not None and manifest.verity.hash_offset:
            remaining = manifest.verity.hash_offset  # the erofs image, not the hash tree after it
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            remaining -= len(chunk)
    destination.mkdir(parents=True)
    result = subprocess.run(
        ["fsck.erofs", f"--extract={destination}", "--preserve", str(image)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolError(f"fsck.erofs --extract of {disk.name}'s root failed: {detail}")
    image.unlink()
    return destination


def first_tree_difference(a: Path, b: Path) -> str | None:
    def listing(root: Path) -> dict[str, os.stat_result]:
        entries = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                full = Path(dirpath) / name
                entries["/" + str(full.relative_to(root))] = full.lstat()
        return entries

    left, right = listing(a), listing(b)
    for path in sorted(left.keys() | right.keys()):
        if path not in right:
            return f"{path}: only in the published image"
        if path not in left:
            return f"{path}: only in the rebuilt image"
        x, y = left[path], right[path]
        if (x.st_mode, x.st_uid, x.st_gid) != (y.st_mode, y.st_uid, y.st_gid):
            return (
                f"{path}: mode/owner {stat.filemode(x.st_mode)} {x.st_uid}:{x.st_gid} != "
                f"{stat.filemode(y.st_mode)} {y.st_uid}:{y.st_gid}"
            )
        pa, pb = a / path.lstrip("/"), b / path.lstrip("/")
        if stat.S_ISLNK(x.st_mode) and os.readlink(pa) != os.readlink(pb):
            return f"{path}: link target {os.readlink(pa)} != {os.readlink(pb)}"
        if stat.S_ISREG(x.st_mode) and not filecmp.cmp(pa, pb, shallow=False):
            return f"{path}: content differs ({x.st_size} and {y.st_size} bytes)"
    return None
