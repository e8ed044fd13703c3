"""manifest.json: what an image is made of and how it is laid out; read by test, inspect,
publish and flash, so those never need the recipe or board files again.

The manifest is typed: disk, partitions, verity and sizes are records, and `backend` says
which pipeline made the image ("debian": built here; "nixos": built by Nix from a rendered
flake). Commands dispatch on `backend` instead of guessing from which keys are present.

Reading is strict about what the code uses and lenient about the rest: a missing or mistyped
field is one line naming manifest.json and the field (never a KeyError), and keys this
version does not know are ignored. A manifest written before `backend` existed is read as
"debian" (or "nixos" when its extra said so). To add a field: add it to a record below with a
default, so that older manifests still load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from appliancekit.errors import UserError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

Backend = Literal["debian", "nixos"]
BACKENDS: tuple[str, ...] = get_args(Backend)


@dataclass(frozen=True)
class PartitionRecord:
    name: str  # GPT name, e.g. "ak-root"
    role: str  # boot, esp, root, verity, data, raw
    number: int
    offset: int  # bytes from the start of the disk
    size: int  # bytes
    uuid: str = ""
    type_id: str = ""
    sha256: str | None = None  # of the written content; None for an empty partition

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class DiskRecord:
    path: str  # relative to the image directory
    size: int  # bytes
    sha256: str
    table: str | None = None  # "gpt" | "mbr"; None when the builder (Nix) does not say
    disk_id: str | None = None
    partitions: tuple[PartitionRecord, ...] = ()

    def partition(self, name: str) -> PartitionRecord:
        for part in self.partitions:
            if part.name == name:
                return part
        known = ", ".join(p.name for p in self.partitions) or "none recorded"
        raise UserError(f"image has no partition {name!r} ({known})", field="disk.partitions")

    def by_role(self, *roles: str) -> PartitionRecord | None:
        return next((p for p in self.partitions if p.role in roles), None)

    @classmethod
    def of(cls, image: Any, path: str) -> DiskRecord:
        """The record of a disk.DiskImage, stored at `path` in the image directory."""
        return cls(
            path=path,
            size=image.size,
            sha256=image.sha256,
            table=image.table,
            disk_id=image.disk_id,
            partitions=tuple(
                PartitionRecord(
                    name=p.name,
                    role=str(p.role),
                    number=p.number,
                    offset=p.offset,
                    size=p.size,
                    uuid=p.uuid,
                    type_id=p.type_id,
                    sha256=p.sha256,
                )
                for p in image.partitions
            ),
        )


@dataclass(frozen=True)
class VerityRecord:
    root_hash: str
    salt: str
    data_blocks: int  # 4 KiB blocks of the erofs image the hash tree covers
    erofs_uuid: str = ""
    verity_uuid: str = ""
    # Where the hash image starts inside the root slot partition (erofs then verity, one
    # partition per slot: slots.py) and its size. 0: a separate verity partition (images
    # built before two slots).
    hash_offset: int = 0
    hash_bytes: int = 0


@dataclass(frozen=True)
class SlotRecord:
    """One of the two slots: its root partition and its boot files' directory on the boot
    partition or ESP. `written`: the build put a release in it (slot A)."""

    name: str  # "a" | "b"
    partition: str  # "ak-root-a"
    boot_dir: str  # "slot-a"
    boot_files: tuple[str, ...] = ()  # names inside boot_dir
    written: bool = False
    # the FAT partition holding boot_dir: "ak-boot", or the slot's own ("ak-boot-a") where the
    # loader picks partitions (the Pi's autoboot.txt; boot_dir is then "")
    boot_partition: str = "ak-boot"


@dataclass(frozen=True)
class ServiceRecord:
    """A supervised service as its recipe declares it (checked by `appliancekit audit`)."""

    name: str
    user: str  # "root" or a [[user]] of the recipe
    root_reason: str = ""  # the recipe's reason, for a service that runs as root


@dataclass(frozen=True)
class SizeRecord:
    disk_bytes: int
    # Known for images built here; None for a Nix-built image (Nix does not report them).
    unminimised_root_bytes: int | None = None
    minimised_root_bytes: int | None = None
    sealed_root_bytes: int | None = None
    initramfs_bytes: int | None = None
    kernel_bytes: int | None = None
    slot_partition_bytes: int | None = None  # each root slot partition
    slot_root_bytes: int | None = None  # the release's slot content: erofs + verity
    slot_boot_bytes: int | None = None  # the release's boot files in one slot directory
    agent_bytes: int | None = None  # the update agent in the minimised root


@dataclass(frozen=True)
class SettingRecord:
    """A recipe setting as flash, user-data and the boot test need it (no recipe at hand):
    what it is called, which kind checks its values (settings_kinds), whether it is given
    per device (settings.env, user-data) or baked in, and whether it is never shown."""

    name: str
    kind: str  # a settings_kinds.SettingKind value
    per_device: bool = False
    secret: bool = False


@dataclass(frozen=True)
class Manifest:
    name: str
    recipe: str
    board: str
    arch: str
    suite: str  # Debian suite, or the nixpkgs branch for the NixOS backend
    boot: str
    inputs: str  # fingerprint of every build input
    appliancekit: str
    settings: dict[str, str]
    packages: list[dict[str, Any]]
    kernel_version: str
    kernel_cmdline: str
    initramfs_modules: list[str]
    verity: VerityRecord | None  # None: the builder did not seal the root with dm-verity
    disk: DiskRecord
    sizes: SizeRecord
    probes: list[dict[str, Any]]
    ports: list[int]
    backend: Backend = "debian"
    services: tuple[ServiceRecord, ...] = ()  # empty in manifests written before it existed
    format: int = FORMAT_VERSION
    # every file's mtime in the sealed root and on the boot partition (UTC seconds; see
    # sourcedate.py)
    source_date_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # empty in manifests written before settings had records (devsettings asks to rebuild)
    setting_records: tuple[SettingRecord, ...] = ()
    # two slots (issue 12); empty in manifests of single-slot images
    slots: tuple[SlotRecord, ...] = ()
    slot_switch: str = ""  # boot/slotswitch.py Mechanism of the board

    def partition(self, name: str) -> PartitionRecord:
        return self.disk.partition(name)

    def slot(self, name: str) -> SlotRecord:
        for slot in self.slots:
            if slot.name == name:
                return slot
        raise UserError(
            f"image has no slot {name!r} (a single-slot image: reflash it once)", field="slots"
        )

    def root_partition(self) -> PartitionRecord:
        """The partition holding this image's own sealed root (slot A's, or the single
        root of an older image)."""
        if self.slots:
            return self.partition(self.slots[0].partition)
        part = self.disk.by_role("root")
        if part is None:
            raise UserError("image has no root partition", field="disk.partitions")
        return part

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples): what manifest.json holds."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: Any, *, file: Path | str | None = None) -> Manifest:
        """Parse a manifest.json document; raise one-line UserErrors naming the field."""
        if not isinstance(data, dict):
            raise UserError("expected a JSON object", file=file)
        data = _upgrade(data)
        return _decode(cls, data, "", file)


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Fill in what manifests written before the typed records did not carry."""
    data = dict(data)
    extra = data.get("extra") if isinstance(data.get("extra"), dict) else {}
    if "backend" not in data:
        data["backend"] = "nixos" if extra.get("backend") == "nixos" else "debian"
    disk = data.get("disk")
    sizes = data.get("sizes")
    if isinstance(disk, dict) and isinstance(sizes, dict):
        if "size" not in disk and isinstance(sizes.get("disk_bytes"), int):
            data["disk"] = {**disk, "size": sizes["disk_bytes"]}
        if "disk_bytes" not in sizes and isinstance(disk.get("size"), int):
            data["sizes"] = {**sizes, "disk_bytes": disk["size"]}
    if data.get("verity") == {}:
        data["verity"] = None
    return data


def _decode(tp: Any, value: Any, where: str, file: Path | str | None) -> Any:
    """`value` (parsed JSON) as type `tp`, checked; `where` is the dotted field path."""

    def fail(message: str) -> UserError:
        return UserError(message, file=file, field=where or None)

    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise fail(f"expected an object, got {type(value).__name__}")
        hints = get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            name = f"{where}.{f.name}" if where else f.name
            if f.name not in value:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise UserError("missing", file=file, field=name)
                continue
            kwargs[f.name] = _decode(hints[f.name], value[f.name], name, file)
        return tp(**kwargs)
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, value, where, file)
            except UserError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if value not in get_args(tp):
            raise fail(f"{value!r} is not one of {', '.join(map(str, get_args(tp)))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise fail(f"expected a list, got {type(value).__name__}")
        item = get_args(tp)[0]
        return tuple(_decode(item, v, f"{where}[{i}]", file) for i, v in enumerate(value))
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise fail(f"expected a list, got {type(value).__name__}")
        return list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise fail(f"expected an object, got {type(value).__name__}")
        return dict(value)
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(f"expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise fail(f"expected a string, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise fail(f"expected true or false, got {value!r}")
        return value
    return value  # Any


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    path = directory / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(directory: Path) -> Manifest | None:
    """The image directory's manifest; None if there is none or it is of another format
    version (the build then treats the image as absent and rebuilds it)."""
    path = Path(directory) / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", file=path) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"unreadable manifest: {exc}", file=path, line=exc.lineno) from exc
    if isinstance(data, dict) and data.get("format") != FORMAT_VERSION:
        return None
    return Manifest.from_json(data, file=path)


def load_manifest(directory: Path) -> Manifest:
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        if (directory / "flake").is_dir():
            raise UserError(
                f"{directory} holds only a rendered NixOS flake (no {MANIFEST}): build it with"
                f" nix build {directory / 'flake'}#image",
                file=directory,
            )
        if not directory.is_dir():
            raise UserError("no such image directory", file=directory)
        raise UserError(
            f"{directory} is not an appliancekit image directory (no {MANIFEST})", file=directory
        )
    return manifest
