"""Seal a root tree: a reproducible erofs image plus its dm-verity hash image.

Reproducibility (measured with erofs-utils 1.5 on Debian 12): `mkfs.erofs -T EPOCH` stamps
every inode and the superblock with EPOCH whatever the tree's mtimes are, and the image
layout does not depend on the order in which files were created (readdir order): the same
contents, ownership, modes and EPOCH give the same bytes. The tree is therefore left
untouched (no mtime normalisation needed). EPOCH is the build's SOURCE_DATE_EPOCH
(sourcedate.py), not 0: services derive cache validators from mtimes (nginx's ETag and
Last-Modified), which must change from one release to the next. `--all-root`/`--force-uid` are never used: the ownership
in the tree is what the services run with. `veritysetup format` is deterministic given a
fixed salt and UUID.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from appliancekit.errors import ToolError
from appliancekit.hostcmd import run

BLOCK_SIZE = 4096


@dataclass(frozen=True)
class SealedRoot:
    erofs_image: Path
    verity_image: Path
    root_hash: str
    salt: str
    erofs_uuid: str
    verity_uuid: str
    data_blocks: int  # 4096-byte blocks in the erofs image (image padded to a multiple of 4096)
    data_block_size: int = BLOCK_SIZE
    hash_block_size: int = BLOCK_SIZE
    hash_start_block: int = 1  # `veritysetup format` writes a superblock in block 0

    @property
    def data_sectors(self) -> int:
        return self.data_blocks * self.data_block_size // 512

    def verity_table(self, data_dev: str, hash_dev: str) -> str:
        """The device-mapper table line for `dmsetup create --table`."""
        return (
            f"0 {self.data_sectors} verity 1 {data_dev} {hash_dev} "
            f"{self.data_block_size} {self.hash_block_size} {self.data_blocks} "
            f"{self.hash_start_block} sha256 {self.root_hash} {self.salt}"
        )

    def kernel_cmdline(self) -> tuple[str, ...]:
        """Kernel command line words the initramfs reads to open verity."""
        return (
            f"ak.roothash={self.root_hash}",
            f"ak.salt={self.salt}",
            f"ak.datablocks={self.data_blocks}",
        )

    def to_json(self) -> dict:
        return {
            "erofs_image": str(self.erofs_image),
            "verity_image": str(self.verity_image),
            "root_hash": self.root_hash,
            "salt": self.salt,
            "erofs_uuid": self.erofs_uuid,
            "verity_uuid": self.verity_uuid,
            "data_blocks": self.data_blocks,
            "data_block_size": self.data_block_size,
            "hash_block_size": self.hash_block_size,
            "hash_start_block": self.hash_start_block,
        }


def _digest(seed: str, purpose: str) -> bytes:
    return hashlib.sha256((seed + purpose).encode()).digest()


def derive_uuid(seed: str, purpose: str) -> str:
    """A deterministic RFC 4122-shaped (version 4 bits, RFC variant) UUID from seed+purpose."""
    return str(uuid.UUID(bytes=_digest(seed, purpose)[:16], version=4))


def derive_salt(seed: str) -> str:
    """The verity salt: hex sha256 of seed + "verity-salt"."""
    return _digest(seed, "verity-salt").hex()


_ROOT_HASH_RE = re.compile(r"^Root hash:\s*([0-9a-f]+)\s*$", re.MULTILINE)


def seal_tree(tree: Path, workdir: Path, seed: str, *, epoch: int = 0) -> SealedRoot:
    """Build workdir/root.erofs from `tree` (every file stamped with `epoch`) and
    workdir/root.verity (its hash tree)."""
    tree = Path(tree)
    workdir = Path(workdir)
    if not tree.is_dir():
        raise ToolError(f"{tree}: root tree is not a directory")
    workdir.mkdir(parents=True, exist_ok=True)
    erofs_image = workdir / "root.erofs"
    verity_image = workdir / "root.verity"
    for stale in (erofs_image, verity_image):
        stale.unlink(missing_ok=True)
    erofs_uuid = derive_uuid(seed, "erofs")
    verity_uuid = derive_uuid(seed, "verity")
    salt = derive_salt(seed)

    run(["mkfs.erofs", "--quiet", "-zlz4hc", f"-T{epoch}", f"-U{erofs_uuid}", erofs_image, tree])
    size = erofs_image.stat().st_size
    padded = -(-size // BLOCK_SIZE) * BLOCK_SIZE
    if padded != size:
        os.truncate(erofs_image, padded)
    data_blocks = padded // BLOCK_SIZE

    proc = run(
        [
            "veritysetup",
            "format",
            f"--salt={salt}",
            f"--uuid={verity_uuid}",
            "--data-block-size",
            str(BLOCK_SIZE),
            "--hash-block-size",
            str(BLOCK_SIZE),
            erofs_image,
            verity_image,
        ]
    )
    match = _ROOT_HASH_RE.search(proc.stdout)
    if not match:
        raise ToolError(f"veritysetup format printed no root hash for {erofs_image}")
    os.chmod(verity_image, 0o644)  # veritysetup creates it 0600
    return SealedRoot(
        erofs_image=erofs_image,
        verity_image=verity_image,
        root_hash=match.group(1),
        salt=salt,
        erofs_uuid=erofs_uuid,
        verity_uuid=verity_uuid,
        data_blocks=data_blocks,
    )


def verify_sealed(sealed: SealedRoot) -> None:
    """Check the erofs image against its hash tree and root hash; ToolError on mismatch."""
    try:
        run(["veritysetup", "verify", sealed.erofs_image, sealed.verity_image, sealed.root_hash])
    except ToolError as exc:
        raise ToolError(f"{sealed.erofs_image}: dm-verity verification failed ({exc})") from None


def list_erofs_paths(image: Path) -> list[str]:
    """Every path in an erofs image ("/etc", "/etc/passwd", ...; sorted; "/" itself omitted).

    Extracts with `fsck.erofs --extract` (which also checks the image) into a temporary
    directory; erofs-utils 1.5's dump.erofs can only list one directory per call. Run as
    non-root, fsck.erofs cannot create device nodes and skips them.
    """
    image = Path(image)
    with tempfile.TemporaryDirectory(prefix="ak-erofs-list-") as tmp:
        dest = Path(tmp) / "x"
        argv: list[str | Path] = ["fsck.erofs", f"--extract={dest}"]
        if os.geteuid() != 0:
            argv.append("--no-preserve")
        run([*argv, image])
        paths: list[str] = []
        for dirpath, dirnames, filenames in os.walk(dest):
            rel = Path(dirpath).relative_to(dest)
            for name in dirnames + filenames:
                paths.append("/" + (rel / name).as_posix())
    return sorted(paths)
