"""manifest.json: what an image is made of and how it is laid out; read by test, inspect,
publish and flash, so those never need the recipe or board files again."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliancekit.errors import UserError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    name: str
    recipe: str
    board: str
    arch: str
    suite: str
    boot: str
    inputs: str  # fingerprint of every build input
    appliancekit: str
    settings: dict[str, str]
    packages: list[dict[str, Any]]
    kernel_version: str
    kernel_cmdline: str
    initramfs_modules: list[str]
    verity: dict[str, Any]
    disk: dict[str, Any]
    sizes: dict[str, int]
    probes: list[dict[str, Any]]
    ports: list[int]
    format: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def partition(self, name: str) -> dict[str, Any]:
        for part in self.disk["partitions"]:
            if part["name"] == name:
                return part
        raise UserError(f"image has no partition {name!r}", field="disk.partitions")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    path = directory / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(directory: Path) -> Manifest | None:
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT_VERSION:
            return None
        return Manifest(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise UserError(f"unreadable manifest: {exc}", file=path) from exc


def load_manifest(directory: Path) -> Manifest:
    manifest = read_manifest(directory)
    if manifest is None:
        raise UserError(
            f"{directory} is not an appliancekit image directory (no {MANIFEST})", file=directory
        )
    return manifest
