"""The host's side of appliancekit: every tool and file it runs or reads, and the Debian
package that provides each. One table, read by hostcmd (a missing tool names its package)
and by `doctor` (which checks them all, plus what each board file names).

To check something new, add a row: a `HostTool` for a command on PATH, a `HostFile` for a
file, or a `HostCheck` with a function for anything else (a version, say).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CheckResult:
    name: str  # the tool, file or check
    package: str  # the Debian package (or what to install) that provides it
    purpose: str
    found: bool
    detail: str = ""  # why not, when it is more than "missing"
    required: bool = True  # False: reported, but its absence does not fail doctor

    def to_json(self) -> dict[str, object]:
        return {
            "tool": self.name,
            "package": self.package,
            "for": self.purpose,
            "found": self.found,
            "required": self.required,
            **({"detail": self.detail} if self.detail else {}),
        }


@dataclass(frozen=True)
class HostTool:
    name: str  # command on PATH
    package: str
    purpose: str

    def check(self) -> CheckResult:
        return CheckResult(
            self.name, self.package, self.purpose, shutil.which(self.name) is not None
        )


@dataclass(frozen=True)
class HostFile:
    path: str
    package: str
    purpose: str

    def check(self) -> CheckResult:
        return CheckResult(self.path, self.package, self.purpose, Path(self.path).exists())


@dataclass(frozen=True)
class HostCheck:
    """Anything else: `probe` returns None when all is well, else one line saying what is wrong."""

    name: str
    package: str
    purpose: str
    probe: Callable[[], str | None]
    required: bool = True

    def check(self) -> CheckResult:
        problem = self.probe()
        return CheckResult(
            self.name, self.package, self.purpose, problem is None, problem or "", self.required
        )


Row = HostTool | HostFile | HostCheck

TOOLS: tuple[HostTool, ...] = (
    HostTool("apt-get", "apt", "Debian packages for the target"),
    HostTool("apt-cache", "apt", "Debian packages for the target"),
    HostTool("dpkg-deb", "dpkg", "unpacking packages"),
    HostTool("mkfs.erofs", "erofs-utils", "sealed root"),
    HostTool("dump.erofs", "erofs-utils", "image scans"),
    HostTool("fsck.erofs", "erofs-utils", "image scans"),
    HostTool("veritysetup", "cryptsetup-bin", "dm-verity hash tree"),
    HostTool("sfdisk", "fdisk", "partition tables"),
    HostTool("mkfs.vfat", "dosfstools", "boot partitions"),
    HostTool("mcopy", "mtools", "boot partitions, settings.env"),
    HostTool("mmd", "mtools", "boot partitions"),
    HostTool("mdir", "mtools", "settings.env on a card"),
    HostTool("mtype", "mtools", "settings.env on a card"),
    HostTool("mkfs.ext4", "e2fsprogs", "data partitions"),
    HostTool("cpio", "cpio", "initramfs"),
    HostTool("depmod", "kmod", "initramfs modules"),
    HostTool("modprobe", "kmod", "initramfs modules"),
    HostTool("fdtput", "device-tree-compiler", "boot-test device trees"),
    HostTool("qemu-system-aarch64", "qemu-system-arm", "boot tests (arm64)"),
    HostTool("qemu-system-arm", "qemu-system-arm", "boot tests (armhf)"),
    HostTool("qemu-system-x86_64", "qemu-system-x86", "boot tests (amd64)"),
    HostTool("bmaptool", "bmap-tools", "checking .bmap files"),
    HostTool("zstd", "zstd", "release images"),
    HostTool("git", "git", "publishing to a deploy repository"),
    HostTool("go", "golang-go", "content-sync (recipes with [[content]])"),
    HostTool("minisign", "minisign", "signing releases; the update agent"),
    HostTool("openssl", "openssl", "cloud keys (DKIM)"),
    HostTool("go", "golang-go", "the monitoring agent (images with [monitoring])"),
    HostTool("lynis", "lynis", "audit --lynis"),
    HostTool("pebble", "pebble", "cloud test: the test ACME CA"),
)

FILES: tuple[HostFile, ...] = (
    HostFile(
        "/usr/share/keyrings/debian-archive-keyring.gpg",
        "debian-archive-keyring",
        "signature checks",
    ),
)

# Where a board file's firmware paths come from (longest prefix wins).
FILE_PACKAGES: dict[str, str] = {
    "/usr/share/OVMF/": "ovmf",
    "/usr/share/ovmf/": "ovmf",
    "/usr/share/qemu-efi-aarch64/": "qemu-efi-aarch64",
    "/usr/share/AAVMF/": "qemu-efi-aarch64",
    "/usr/share/qemu-efi-arm/": "qemu-efi-arm",
    "/usr/share/qemu/": "qemu-system-data",
}



def _nix_problem() -> str | None:
    from appliancekit.nixos.nixversion import nix_check

    problem = nix_check()["problem"]
    return str(problem) if problem else None


def _missing(tool: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(tool) else f"{tool} not found"


# Checks beyond presence (e.g. a tool's version), run by doctor after TOOLS and FILES. A probe
# that needs a heavy module imports it inside the function.
CHECKS: tuple[HostCheck, ...] = (
    # Informational: only the NixOS backend needs a Nix that can build (>= 2.18).
    HostCheck("nix", "nix-bin", "building NixOS-backend images", _nix_problem, required=False),
    # Informational: only the panel's browser tests drive chromium (through chromedriver).
    HostCheck("chromium", "chromium", "panel browser tests", _missing("chromium"), required=False),
    HostCheck(
        "chromedriver",
        "chromium-driver",
        "panel browser tests",
        _missing("chromedriver"),
        required=False,
    ),
)


def package_of_tool(tool: str) -> str:
    """The Debian package to install for a missing host tool (the tool's name if unknown)."""
    return next((t.package for t in TOOLS if t.name == tool), tool)


def package_of_file(path: str) -> str:
    matches = [prefix for prefix in FILE_PACKAGES if path.startswith(prefix)]
    return FILE_PACKAGES[max(matches, key=len)] if matches else "?"


def board_rows(boards: Iterable[object]) -> list[Row]:
    """What each board needs on the host to be boot-tested: its QEMU and the firmware files
    its QEMU command line reads (-bios, pflash drives)."""
    rows: list[Row] = []
    for board in boards:
        qemu = board.qemu  # type: ignore[attr-defined]
        name = board.name  # type: ignore[attr-defined]
        rows.append(HostTool(qemu.binary, package_of_tool(qemu.binary), f"boot tests ({name})"))
        if qemu.dtb_delete:
            rows.append(HostTool("fdtput", package_of_tool("fdtput"), f"boot tests ({name})"))
        paths = [qemu.firmware] if qemu.firmware else []
        for arg in qemu.extra_args:
            for option in str(arg).split(","):
                key, _, value = option.partition("=")
                if key == "file" and value.startswith("/"):
                    paths.append(value)
        for path in paths:
            rows.append(HostFile(path, package_of_file(path), f"boot tests ({name} firmware)"))
    return rows


def check_all(rows: Iterable[Row]) -> list[CheckResult]:
    """Each row checked once (a tool or file several boards need is one row, all purposes)."""
    merged: dict[str, tuple[Row, list[str]]] = {}
    for row in rows:
        key = row.path if isinstance(row, HostFile) else row.name
        if key in merged:
            purposes = merged[key][1]
            if row.purpose not in purposes:
                purposes.append(row.purpose)
        else:
            merged[key] = (row, [row.purpose])
    results = []
    for row, purposes in merged.values():
        result = row.check()
        purpose = _merge_purposes(purposes)
        results.append(
            CheckResult(
                result.name, result.package, purpose, result.found, result.detail, result.required
            )
        )
    return results


def _merge_purposes(purposes: list[str]) -> str:
    """["boot tests (arm64)", "boot tests (rpi4)"] -> "boot tests (arm64, rpi4)"."""
    grouped: dict[str, list[str]] = {}
    for purpose in purposes:
        label, paren, inner = purpose.partition(" (")
        if paren and inner.endswith(")"):
            grouped.setdefault(label, []).append(inner[:-1])
        else:
            grouped.setdefault(purpose, [])
    return "; ".join(f"{label} ({', '.join(inner)})" if inner else label for label, inner in grouped.items())
