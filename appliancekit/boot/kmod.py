"""Kernel modules: find the ones a board needs plus their dependencies, in load order.

Debian's kernel .deb ships no modules.dep, so dependencies come from each module's own
.modinfo section (`depends=` and `softdep=pre:`), read with pyelftools. Modules are stored
decompressed in the initramfs: it is compressed as a whole, and busybox's insmod then needs
no xz support.
"""

from __future__ import annotations

import io
import lzma
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from appliancekit.errors import UserError

try:
    import zstandard
except ImportError:  # pragma: no cover - zstandard is a dependency; keep kmod importable
    zstandard = None


@dataclass(frozen=True)
class KernelModule:
    name: str  # normalised: dashes become underscores
    relpath: str  # path below lib/modules/KVER, without the compression suffix
    source: Path  # file in the unpacked kernel package (maybe compressed)
    depends: tuple[str, ...]

    def read(self, strip_signature: bool = False) -> bytes:
        data = decompress_module(self.source)
        return strip_module_signature(data) if strip_signature else data


@dataclass(frozen=True)
class KernelTree:
    version: str  # e.g. 6.12.117+deb13-arm64
    image: Path  # the kernel image (vmlinuz)
    modules_dir: Path  # .../lib/modules/KVER in the unpacked package
    config: dict[str, str]


SIGNATURE_MAGIC = b"~Module signature appended~\n"
SIGNATURE_INFO_SIZE = 12  # struct module_signature, ending in the big-endian signature length


def strip_module_signature(data: bytes) -> bytes:
    """The module without its appended PKCS#7 signature (unchanged if it has none)."""
    if not data.endswith(SIGNATURE_MAGIC):
        return data
    end = len(data) - len(SIGNATURE_MAGIC)
    sig_len = int.from_bytes(data[end - 4 : end], "big")
    return data[: end - SIGNATURE_INFO_SIZE - sig_len]


def normalise(name: str) -> str:
    return name.replace("-", "_")


def find_kernel(unpacked_root: Path) -> KernelTree:
    modules_root = unpacked_root / "usr/lib/modules"
    versions = sorted(p.name for p in modules_root.iterdir()) if modules_root.is_dir() else []
    if len(versions) != 1:
        raise UserError(f"kernel package must hold exactly one kernel version, found {versions}")
    version = versions[0]
    image = unpacked_root / "boot" / f"vmlinuz-{version}"
    config_path = unpacked_root / "boot" / f"config-{version}"
    config: dict[str, str] = {}
    if config_path.exists():
        for line in config_path.read_text().splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                key, value = line.split("=", 1)
                config[key] = value
    return KernelTree(version, image, modules_root / version, config)


def decompress_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        if zstandard is None:
            raise UserError(f"{path}: zstd-compressed module but the zstandard module is missing")
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if path.suffix == ".gz":
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    return data


_SUFFIX_RE = re.compile(r"\.ko(\.xz|\.zst|\.gz)?$")


def index_modules(kernel: KernelTree) -> dict[str, Path]:
    """Module name -> file, for every module the package ships."""
    index: dict[str, Path] = {}
    for path in sorted((kernel.modules_dir / "kernel").rglob("*.ko*")):
        if _SUFFIX_RE.search(path.name):
            index[normalise(_SUFFIX_RE.sub("", path.name))] = path
    return index


def builtin_modules(kernel: KernelTree) -> set[str]:
    listing = kernel.modules_dir / "modules.builtin"
    if not listing.exists():
        return set()
    return {
        normalise(Path(line.strip()).name.removesuffix(".ko"))
        for line in listing.read_text().splitlines()
        if line.strip()
    }


def _modinfo(data: bytes) -> dict[str, list[str]]:
    elf = ELFFile(io.BytesIO(data))
    section = elf.get_section_by_name(".modinfo")
    info: dict[str, list[str]] = {}
    if section is None:
        return info
    for item in section.data().split(b"\0"):
        if b"=" in item:
            key, value = item.decode(errors="replace").split("=", 1)
            info.setdefault(key, []).append(value)
    return info


def _dependencies(info: dict[str, list[str]]) -> list[str]:
    deps = [d for field in info.get("depends", []) for d in field.split(",") if d]
    for softdep in info.get("softdep", []):
        # "pre: crc32c post: foo" - only pre-dependencies must be loaded first
        match = re.search(r"pre:\s*(.*?)(?:\s+post:|$)", softdep)
        if match:
            deps.extend(match.group(1).split())
    return [normalise(d) for d in deps]


class MissingModuleError(UserError):
    """A wanted kernel module the kernel does not have; `module` names it, so the caller can
    point at the board file line that asks for it."""

    def __init__(self, message: str, *, module: str) -> None:
        super().__init__(message, field="kernel.modules")
        self.module = module


def resolve_modules(kernel: KernelTree, wanted: Iterable[str]) -> list[KernelModule]:
    """The wanted modules and their dependencies, dependencies first; built-ins skipped."""
    index = index_modules(kernel)
    builtin = builtin_modules(kernel)
    resolved: dict[str, KernelModule] = {}
    order: list[KernelModule] = []
    visiting: set[str] = set()

    def visit(name: str, required: bool) -> None:
        if name in resolved or name in builtin or name in visiting:
            return
        # Crypto soft dependencies name the algorithm ("crc32c"), shipped as NAME_generic.
        path = index.get(name) or index.get(f"{name}_generic")
        if path is None:
            if required:
                raise MissingModuleError(
                    f"kernel {kernel.version} has no module {name!r} (neither loadable nor built in)",
                    module=name,
                )
            return  # a soft dependency the kernel does not ship
        visiting.add(name)
        deps = _dependencies(_modinfo(decompress_module(path)))
        for dep in deps:
            visit(dep, required=False)
        relpath = str(path.relative_to(kernel.modules_dir))
        module = KernelModule(name, _SUFFIX_RE.sub(".ko", relpath), path, tuple(deps))
        resolved[name] = module
        order.append(module)
        visiting.discard(name)

    for name in wanted:
        visit(normalise(name), required=True)
    return order
