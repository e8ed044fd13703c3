"""seal.py (erofs + dm-verity) and hostcmd.py, with the real host tools."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from appliancekit import hostcmd
from appliancekit.errors import ToolError
from appliancekit.seal import (
    SealedRoot,
    derive_salt,
    derive_uuid,
    list_erofs_paths,
    seal_tree,
    verify_sealed,
)

needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("mkfs.erofs", "fsck.erofs", "dump.erofs", "veritysetup")),
    reason="erofs-utils / cryptsetup-bin not installed",
)
is_root = os.geteuid() == 0

# (path, kind, payload); created in the listed order or reversed.
TREE = [
    ("usr", "dir", None),
    ("usr/bin", "dir", None),
    ("usr/lib", "dir", None),
    ("etc", "dir", None),
    ("etc/app", "dir", None),
    ("usr/bin/app", "file", b"\x7fELF" + bytes(range(256)) * 40),
    ("usr/lib/libbig.so", "file", b"lib" * 50000),
    ("etc/app/app.conf", "file", b"listen = 8080\n"),
    ("etc/passwd", "file", b"root:x:0:0::/:/nonexistent\napp:x:101:102::/:/nonexistent\n"),
    ("etc/app/secret", "file", b"s3cret\n"),
    ("bin", "symlink", "usr/bin"),
    ("usr/bin/app-alias", "hardlink", "usr/bin/app"),
] + [(f"usr/lib/mod{i:03d}.py", "file", f"x = {i}\n".encode() * i) for i in range(60)]


def make_tree(root: Path, *, reverse: bool, mtime: int) -> Path:
    root.mkdir(parents=True)
    entries = list(reversed(TREE)) if reverse else TREE
    for rel, kind, _ in entries:  # parents first, whatever the order
        if kind == "dir":
            (root / rel).mkdir(parents=True, exist_ok=True)
    for rel, kind, payload in entries:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "file":
            path.write_bytes(payload)
        elif kind == "symlink":
            path.symlink_to(payload)
    for rel, kind, payload in entries:
        if kind == "hardlink":
            os.link(root / payload, root / rel)
    os.chmod(root / "usr/bin/app", 0o755)
    os.chmod(root / "etc/app/secret", 0o600)
    if is_root:
        os.chown(root / "etc/app/secret", 101, 102)
        os.chown(root / "etc/app", 101, 102)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))
    return root


def second_tree_parent(tmp_path: Path) -> Path:
    """Somewhere whose readdir order differs from tmp_path's: tmpfs lists newest first."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import tempfile

        return Path(tempfile.mkdtemp(prefix="ak-test-seal-", dir=shm))
    return tmp_path / "other"


@pytest.fixture
def sealed(tmp_path: Path) -> SealedRoot:
    tree = make_tree(tmp_path / "tree", reverse=False, mtime=1_000_000)
    return seal_tree(tree, tmp_path / "work", "seed-1")


# --- pure parts -------------------------------------------------------------------------


def test_derive_uuid_is_deterministic_and_rfc4122_shaped():
    a = derive_uuid("seed", "erofs")
    assert a == derive_uuid("seed", "erofs")
    assert a != derive_uuid("seed", "verity")
    assert a != derive_uuid("other", "erofs")
    parsed = uuid.UUID(a)
    assert str(parsed) == a
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122
    assert a[:8] == hashlib.sha256(b"seederofs").hexdigest()[:8]


def test_salt_is_sha256_of_seed():
    assert derive_salt("s") == hashlib.sha256(b"sverity-salt").hexdigest()


def test_verity_table_and_cmdline():
    s = SealedRoot(
        erofs_image=Path("r.erofs"),
        verity_image=Path("r.verity"),
        root_hash="ab" * 32,
        salt="cd" * 32,
        erofs_uuid="u1",
        verity_uuid="u2",
        data_blocks=10,
    )
    assert s.verity_table("/dev/vda2", "/dev/vda3") == (
        f"0 80 verity 1 /dev/vda2 /dev/vda3 4096 4096 10 1 sha256 {'ab' * 32} {'cd' * 32}"
    )
    assert s.kernel_cmdline() == (
        f"ak.roothash={'ab' * 32}",
        f"ak.salt={'cd' * 32}",
        "ak.datablocks=10",
    )


# --- with the host tools ----------------------------------------------------------------


@needs_tools
def test_seal_tree_outputs(sealed: SealedRoot, tmp_path: Path):
    assert sealed.erofs_image == tmp_path / "work" / "root.erofs"
    size = sealed.erofs_image.stat().st_size
    assert size % 4096 == 0
    assert sealed.data_blocks == size // 4096
    assert len(sealed.root_hash) == 64
    assert sealed.salt == derive_salt("seed-1")
    assert sealed.erofs_uuid == derive_uuid("seed-1", "erofs")
    sb = subprocess.run(
        ["dump.erofs", "-s", sealed.erofs_image], capture_output=True, text=True, check=True
    ).stdout
    assert sealed.erofs_uuid in sb
    verity_header = subprocess.run(
        ["veritysetup", "dump", sealed.verity_image], capture_output=True, text=True, check=True
    ).stdout
    assert sealed.verity_uuid in verity_header
    assert sealed.salt in verity_header
    assert f"Data blocks:     \t{sealed.data_blocks}" in verity_header
    verify_sealed(sealed)


@needs_tools
def test_same_tree_gives_same_bytes_whatever_mtimes_and_creation_order(tmp_path: Path):
    other_parent = second_tree_parent(tmp_path)
    try:
        a = make_tree(tmp_path / "a", reverse=False, mtime=1_000_000)
        b = make_tree(other_parent / "b", reverse=True, mtime=1_700_000_000)
        if other_parent.parent == Path("/dev/shm"):  # the test really varies readdir order
            assert os.listdir(a / "usr/lib") != os.listdir(b / "usr/lib")
        sa = seal_tree(a, tmp_path / "wa", "seed")
        sb = seal_tree(b, tmp_path / "wb", "seed")
    finally:
        if other_parent.parent == Path("/dev/shm"):
            shutil.rmtree(other_parent)
    assert sa.erofs_image.read_bytes() == sb.erofs_image.read_bytes()
    assert sa.verity_image.read_bytes() == sb.verity_image.read_bytes()
    assert sa.root_hash == sb.root_hash
    # a different seed changes uuid + salt, hence bytes and root hash
    sc = seal_tree(a, tmp_path / "wc", "other-seed")
    assert sc.root_hash != sa.root_hash


@needs_tools
def test_seal_keeps_ownership_and_modes(sealed: SealedRoot):
    def inode(path: str) -> str:
        return subprocess.run(
            ["dump.erofs", f"--path={path}", sealed.erofs_image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    secret = inode("/etc/app/secret")
    assert "Access: 0600" in secret
    if is_root:
        assert "Uid: 101   Gid: 102" in secret
    assert "Access: 0755" in inode("/usr/bin/app")
    assert "1970-01-01 00:00:00" in inode("/usr/bin/app")


@needs_tools
def test_epoch_stamps_every_inode_and_changes_the_bytes(tmp_path: Path):
    """Services derive cache validators from mtimes (nginx: ETag, Last-Modified): the
    build's SOURCE_DATE_EPOCH, not the tree's mtimes, is what every inode carries."""
    tree = make_tree(tmp_path / "tree", reverse=False, mtime=1_000_000)
    release = seal_tree(tree, tmp_path / "w1", "seed", epoch=1_700_000_000)
    out = tmp_path / "x"
    argv = ["fsck.erofs", f"--extract={out}", *([] if is_root else ["--no-preserve"])]
    subprocess.run([*argv, release.erofs_image], check=True, capture_output=True)
    stamps = {
        (Path(d) / n).relative_to(out).as_posix(): os.lstat(Path(d) / n).st_mtime
        for d, dirs, files in os.walk(out)
        for n in dirs + files
        if not (Path(d) / n).is_symlink()  # fsck.erofs does not set a link's own time
    }
    assert len(stamps) > 60 and set(stamps.values()) == {1_700_000_000}
    again = seal_tree(tree, tmp_path / "w2", "seed", epoch=1_700_000_000)
    assert again.erofs_image.read_bytes() == release.erofs_image.read_bytes()
    later = seal_tree(tree, tmp_path / "w3", "seed", epoch=1_700_086_400)
    assert later.root_hash != release.root_hash


@needs_tools
def test_flipped_byte_fails_verification(sealed: SealedRoot):
    verify_sealed(sealed)
    with open(sealed.erofs_image, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ToolError, match="verification failed"):
        verify_sealed(sealed)


@needs_tools
def test_list_erofs_paths(sealed: SealedRoot):
    paths = list_erofs_paths(sealed.erofs_image)
    assert paths == sorted(paths)
    expected = {"/" + rel for rel, _, _ in TREE}
    assert set(paths) == expected
    assert "/bin" in paths and "/usr/bin/app" in paths
    assert not any(p in paths for p in ("/bin/sh", "/usr/bin/bash"))


@needs_tools
def test_seal_tree_missing_tree(tmp_path: Path):
    with pytest.raises(ToolError, match="not a directory"):
        seal_tree(tmp_path / "nope", tmp_path / "w", "s")


# --- hostcmd ----------------------------------------------------------------------------


def test_run_returns_output():
    proc = hostcmd.run(["sh", "-c", "echo out; echo err >&2"])
    assert proc.stdout == "out\n"
    assert proc.stderr == "err\n"


def test_run_env_is_added_to_environment():
    proc = hostcmd.run(["sh", "-c", 'echo "$AK_TEST_VAR:${PATH:+path}"'], env={"AK_TEST_VAR": "x"})
    assert proc.stdout == "x:path\n"


def test_run_failure_is_one_line_with_last_stderr_line():
    with pytest.raises(ToolError) as info:
        hostcmd.run(["sh", "-c", "echo first >&2; echo 'the reason' >&2; exit 3"])
    assert str(info.value) == "sh failed (exit 3): the reason"


def test_run_missing_tool_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolError) as info:
        hostcmd.run(["mkfs.erofs", "x"])
    assert str(info.value) == (
        "mkfs.erofs not found: install Debian package erofs-utils (or run make setup)"
    )
    with pytest.raises(ToolError, match="install Debian package bmap-tools"):
        hostcmd.run(["bmaptool", "copy"])
