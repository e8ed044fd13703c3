"""`publish --to git --sign` writes the update artefacts an appliance range-reads
(publish/update.py): raw slot root and boot files, their chunk lists, update.json, all in
the signed SHA256SUMS."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from appliancekit.manifest import load_manifest
from appliancekit.publish.git import publish_git
from appliancekit.publish.image import read_sha256sums
from appliancekit.publish.update import CHUNK, UPDATE_JSON
from appliancekit.release.signing import keygen, verify
from tests.test_publish_support import KIB, make_image, noise


def _image_with_slot_boot_files(directory: Path) -> Path:
    image = make_image(
        directory,
        boot_files={
            "slot-a/Image": noise(300 * KIB + 17, 5),
            "slot-a/cmdline.txt": b"console=ttyAMA0 ak.slot=a\n",
            "Image": noise(300 * KIB + 17, 5),
        },
    )
    manifest_file = image / "manifest.json"
    data = json.loads(manifest_file.read_text())
    data["slots"][0]["boot_files"] = ["Image", "cmdline.txt"]
    manifest_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sums = "".join(
        f"{hashlib.sha256((image / n).read_bytes()).hexdigest()}  {n}\n"
        for n in ("disk.img", "manifest.json")
    )
    (image / "SHA256SUMS").write_text(sums)
    return image


def test_update_artefacts_are_signed_and_range_readable(tmp_path: Path) -> None:
    image = _image_with_slot_boot_files(tmp_path / "img")
    manifest = load_manifest(image)
    repo = tmp_path / "deploy"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    key = keygen(tmp_path / "key")
    result = publish_git(image, repo, sign_key=key.secret, max_artifact_bytes=0)
    release = repo / result.directory
    sums = read_sha256sums(release / "SHA256SUMS")
    verify(release / "SHA256SUMS", key.public)
    doc = json.loads((release / UPDATE_JSON).read_text())
    assert sums[UPDATE_JSON] == hashlib.sha256((release / UPDATE_JSON).read_bytes()).hexdigest()
    assert doc["recipe"] == "synthetic" and doc["board"] == manifest.board
    assert doc["root_hash"] == manifest.verity.root_hash
    assert doc["version"] == manifest.source_date_epoch and doc["chunk_size"] == CHUNK
    # the root artefact is slot A's content: erofs then hash tree, nothing after
    part = manifest.partition("ak-root-a")
    size = manifest.verity.hash_offset + manifest.verity.hash_bytes
    with open(image / "disk.img", "rb") as disk:
        disk.seek(part.offset)
        expected = disk.read(size)
    root = (release / doc["root"]["path"]).read_bytes()
    assert root == expected and doc["root"]["size"] == size
    for item in (doc["root"], *doc["boot"]):
        data = (release / item["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == item["sha256"] == sums[item["path"]]
        chunks = (release / item["chunks"]).read_bytes()
        assert hashlib.sha256(chunks).hexdigest() == item["chunks_sha256"]
        assert len(chunks) == 32 * -(-len(data) // CHUNK)
        assert chunks[:32] == hashlib.sha256(data[:CHUNK]).digest()
    assert [b["name"] for b in doc["boot"]] == ["Image", "cmdline.txt"]
    assert (release / "update/boot/cmdline.txt").read_bytes() == b"console=ttyAMA0 ak.slot=a\n"
    # publishing the same release again changes nothing
    again = publish_git(image, repo, sign_key=key.secret, max_artifact_bytes=0)
    assert not again.committed
