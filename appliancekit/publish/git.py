"""`publish --to git`: commit each release to a deploy repository, one commit per release,
the way the MirageOS homepage deployments committed every built unikernel to git.

The release lands in RECIPE/BOARD/ of the repository: manifest.json, SHA256SUMS,
release.json and NAME.img.bmap always, NAME.img.zst only when it is at most
--max-artifact-size (64 MiB by default; larger images keep their hashes in SHA256SUMS and
are published elsewhere). The commit message names recipe, board and the image sha256.
Publishing the same image again makes no commit. Only RECIPE/BOARD/ is committed: other
staged or modified files in the repository are left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import appliancekit
from appliancekit.atomic import replace_dir
from appliancekit.digest import sha256_file
from appliancekit.errors import UserError
from appliancekit.hostcmd import run
from appliancekit.publish.image import (
    SHA256SUMS,
    VerifiedImage,
    open_image_dir,
    read_sha256sums,
    sha256sums_text,
)
from appliancekit.publish.sdcard import DEFAULT_LEVEL, SdcardRelease, release_names, write_release
from appliancekit.publish.update import UPDATE_JSON, write_update_artefacts
from appliancekit.release.signing import sign, signature_path

DEFAULT_MAX_ARTIFACT = 64 << 20
RELEASE_JSON = "release.json"


@dataclass
class GitResult:
    repo: str
    directory: str  # RECIPE/BOARD inside the repository
    commit: str  # HEAD after publishing
    committed: bool  # False: this release was already there
    artefacts: bool  # the compressed image is in the repository
    image_sha256: str
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"to": "git", **self.__dict__}


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return run(["git", "-C", repo, *args], env=env).stdout.strip()


def _identity_env(repo: Path) -> dict[str, str]:
    """Commit as the user; fall back to a fixed identity where git has none configured."""
    probe = subprocess.run(
        ["git", "-C", str(repo), "var", "GIT_COMMITTER_IDENT"], capture_output=True, text=True
    )
    if probe.returncode == 0:
        return {}
    ident = {"name": "appliancekit", "email": "appliancekit@localhost"}
    return {
        "GIT_AUTHOR_NAME": ident["name"],
        "GIT_AUTHOR_EMAIL": ident["email"],
        "GIT_COMMITTER_NAME": ident["name"],
        "GIT_COMMITTER_EMAIL": ident["email"],
    }


def repo_root(repo: Path) -> Path:
    repo = Path(repo)
    if not repo.is_dir():
        raise UserError(f"deploy repository {repo} does not exist (git init it first)", file=repo)
    proc = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--show-toplevel"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise UserError(f"{repo} is not a git work tree (git init it first)", file=repo)
    return Path(proc.stdout.strip())


def _already_published(directory: Path, image: VerifiedImage) -> bool:
    sums_file = directory / SHA256SUMS
    if not sums_file.is_file():
        return False
    try:
        sums = read_sha256sums(sums_file)
    except UserError:
        return False
    return sums.get(f"{image.manifest.name}.img") == image.sha256


def publish_git(
    image_dir: Path,
    repo: Path,
    *,
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT,
    level: int = DEFAULT_LEVEL,
    reporter: object | None = None,
    image: VerifiedImage | None = None,
    sign_key: Path | None = None,
) -> GitResult:
    """Commit the release into RECIPE/BOARD/ of `repo`. With `sign_key` (a minisign secret
    key from `appliancekit keygen`), SHA256SUMS is signed: SHA256SUMS.minisig covers the
    image, manifest and block map through their hashes."""
    from appliancekit.output import Reporter

    rep = reporter if isinstance(reporter, Reporter) else Reporter()
    top = repo_root(repo)
    if sign_key is not None and not Path(sign_key).is_file():
        raise UserError("no such secret key (create one with `appliancekit keygen`)", file=sign_key)
    if image is None:
        with rep.progress("verifying image", total=None) as task:
            image = open_image_dir(image_dir, progress=task)
    m = image.manifest
    rel = Path(m.recipe) / m.board
    directory = top / rel
    env = _identity_env(top)

    def clean() -> bool:
        return not _git(top, "status", "--porcelain", "--", str(rel))

    signed_already = sign_key is None or signature_path(directory / SHA256SUMS).exists()
    has_update = not m.slots or (directory / UPDATE_JSON).is_file()
    if _already_published(directory, image) and signed_already and has_update and clean():
        return GitResult(
            str(top),
            str(rel),
            _git(top, "rev-parse", "HEAD"),
            False,
            (directory / release_names(m.name)[0]).exists(),
            image.sha256,
            sorted(p.name for p in directory.iterdir()),
        )

    directory.parent.mkdir(parents=True, exist_ok=True)
    for leftover in directory.parent.glob(f".{m.board}.publishing-*"):
        shutil.rmtree(leftover, ignore_errors=True)  # from a publish that was killed
    # The release is written whole beside RECIPE/BOARD/ and swapped in with one rename: a
    # device polling the repository's tree meanwhile reads the old release or the new one.
    # (Between two of its requests the swap can still fall: the update agent tells that
    # from a forgery by reading SHA256SUMS again.)
    stage = Path(tempfile.mkdtemp(prefix=f".{m.board}.publishing-", dir=directory.parent))
    stage.chmod(0o755)  # mkdtemp's 0700 would hide the release from a web server's user
    try:
        release, include = _write_stage(stage, image, level, max_artifact_bytes, sign_key)
        replace_dir(stage, directory)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise

    _git(top, "add", "-A", "--", str(rel))
    staged = subprocess.run(
        ["git", "-C", str(top), "diff", "--cached", "--quiet", "--", str(rel)],
        env={**os.environ, **env},
    )
    committed = False
    if staged.returncode != 0:
        message = (
            f"{m.recipe} for {m.board}: sha256 {image.sha256}\n\n"
            f"image {m.name}.img, {image.size} bytes"
            + (f", verity root hash {m.verity.root_hash}" if m.verity else "")
            + (
                ""
                if include
                else f"\ncompressed image ({release.compressed_size} bytes) not included"
            )
            + "\n"
        )
        _git(top, "commit", "--quiet", "--no-verify", "-m", message, "--", str(rel), env=env)
        committed = True
    return GitResult(
        str(top),
        str(rel),
        _git(top, "rev-parse", "HEAD") if committed or _has_head(top) else "",
        committed,
        include,
        image.sha256,
        sorted(p.name for p in directory.iterdir()),
    )


def _write_stage(
    stage: Path,
    image: VerifiedImage,
    level: int,
    max_artifact_bytes: int,
    sign_key: Path | None,
) -> tuple[SdcardRelease, bool]:
    """Every file of the release directory, into the empty directory `stage`."""
    m = image.manifest
    with tempfile.TemporaryDirectory(prefix="ak-release-") as tmp:
        release = write_release(image, Path(tmp) / "release", level=level)
        include = release.compressed_size <= max_artifact_bytes
        zst_name, bmap_name = release_names(m.name)
        for name in ["manifest.json", SHA256SUMS, bmap_name] + ([zst_name] if include else []):
            shutil.copyfile(release.directory / name, stage / name)
    if m.slots:
        # what update agents range-read, covered by the (signed) SHA256SUMS
        update = write_update_artefacts(image, stage)
        sums = read_sha256sums(stage / SHA256SUMS)
        sums.update({name: sha256_file(stage / name) for name in update.names})
        (stage / SHA256SUMS).write_text(sha256sums_text(sums))
    if sign_key is not None:
        # Ed25519 is deterministic: signing the same sums again gives the same file
        sign(stage / SHA256SUMS, sign_key, comment=f"{m.name}.img sha256 {image.sha256}")
    info = {
        "name": m.name,
        "recipe": m.recipe,
        "board": m.board,
        "arch": m.arch,
        "image": f"{m.name}.img",
        "image_sha256": image.sha256,
        "image_size": image.size,
        "compressed_size": release.compressed_size,
        "artefacts_included": include,
        "signed": sign_key is not None,
        "verity_root_hash": m.verity.root_hash if m.verity else None,
        "version": m.source_date_epoch,
        "update": UPDATE_JSON if m.slots else None,
        "appliancekit": appliancekit.__version__,
    }
    (stage / RELEASE_JSON).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return release, include


def _has_head(top: Path) -> bool:
    return (
        subprocess.run(
            ["git", "-C", str(top), "rev-parse", "--verify", "--quiet", "HEAD"], capture_output=True
        ).returncode
        == 0
    )
