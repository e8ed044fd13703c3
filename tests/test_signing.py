"""Ed25519 signing with the real minisign: keygen, sign, verify; and a signed git release."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliancekit.errors import UserError
from appliancekit.publish.git import publish_git
from appliancekit.release.signing import SignatureError, keygen, sign, verify
from tests.test_publish_git import git, images, repo  # noqa: F401 (fixtures)
from tests.test_publish_support import needs_disk_tools

needs_minisign = pytest.mark.skipif(
    shutil.which("minisign") is None, reason="minisign missing (scripts/setup-host.sh)"
)
pytestmark = needs_minisign


def test_sign_and_verify_round_trip(tmp_path: Path) -> None:
    pair = keygen(tmp_path / "keys")
    assert pair.secret.stat().st_mode & 0o077 == 0
    payload = tmp_path / "SHA256SUMS"
    payload.write_text("abc  x.img\n")
    signature = sign(payload, pair.secret, comment="x.img sha256 abc")
    assert signature.name == "SHA256SUMS.minisig"
    assert verify(payload, pair.public) == "x.img sha256 abc"
    assert verify(payload, pair.public_key()) == "x.img sha256 abc"  # the key as a string
    # deterministic: signing again gives the same bytes (republishing changes nothing)
    before = signature.read_bytes()
    sign(payload, pair.secret, comment="x.img sha256 abc")
    assert signature.read_bytes() == before


def test_tampered_file_and_wrong_key_fail(tmp_path: Path) -> None:
    pair = keygen(tmp_path / "a")
    other = keygen(tmp_path / "b")
    payload = tmp_path / "f"
    payload.write_text("one\n")
    sign(payload, pair.secret)
    with pytest.raises(SignatureError, match="does not verify"):
        verify(payload, other.public)
    payload.write_text("two\n")
    with pytest.raises(SignatureError, match="does not verify"):
        verify(payload, pair.public)
    with pytest.raises(SignatureError, match="not signed"):
        verify(tmp_path / "a" / "appliancekit.pub", pair.public)


def test_keygen_keeps_an_existing_pair_unless_forced(tmp_path: Path) -> None:
    first = keygen(tmp_path)
    public = first.public.read_text()
    with pytest.raises(UserError, match="already exists"):
        keygen(tmp_path)
    assert keygen(tmp_path, force=True).public.read_text() != public


def test_keygen_command(cli: Any, tmp_path: Path) -> None:
    proc = cli("keygen", "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    again = cli("keygen", "--out", str(tmp_path))
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1


@needs_disk_tools
def test_signed_git_release(
    cli: Any,
    repo: Path,  # noqa: F811
    images: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    pair = keygen(tmp_path / "keys")
    proc = cli(
        "publish",
        str(images["v1"]),
        "--to",
        "git",
        "--repo",
        str(repo),
        "--sign",
        str(pair.secret),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    directory = repo / "synthetic/rpi4"
    files = git(repo, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert "synthetic/rpi4/SHA256SUMS.minisig" in files
    comment = verify(directory / "SHA256SUMS", pair.public)
    assert "syn-git.img sha256" in comment
    check = subprocess.run(
        ["minisign", "-V", "-p", str(pair.public), "-m", "SHA256SUMS"],
        cwd=directory,
        capture_output=True,
    )
    assert check.returncode == 0  # what a user runs by hand
    count = git(repo, "rev-list", "--count", "HEAD")
    again = publish_git(images["v1"], repo, sign_key=pair.secret)
    assert not again.committed and git(repo, "rev-list", "--count", "HEAD") == count
    with pytest.raises(UserError, match="secret key"):
        publish_git(images["v2"], repo, sign_key=tmp_path / "nokey")
    assert git(repo, "status", "--porcelain") == ""
