"""Boards: boards/NAME.toml as frozen dataclasses (architecture, boot path, disk, QEMU model).

Format (keys marked *required* must be present; unknown keys are errors)::

    [board]                      # required
    name = "qemu-virt-arm64"     # required; must equal the file name without .toml
    summary = "..."              # required
    arch = "arm64"               # required: arm64 | armhf | amd64
    boot = "direct"              # required: direct | rpi | uboot | uki
    suite = "trixie"             # Debian suite, default trixie

    [kernel]                     # required
    package = "linux-image-arm64"    # required (resolved through apt)
    modules = ["virtio_blk"]     # required: loaded by the initramfs (plus their dependencies)
    console = "ttyAMA0"          # required
    cmdline = []                 # extra kernel command line words

    [disk]                       # required
    table = "gpt"                # required: gpt | mbr
    boot_size_mib = 64           # >= 1
    data_size_mib = 64           # >= 1
    device_prefix = "/dev/vda"   # absolute; MBR partitions are PREFIXn (a glob: /dev/mmcblk*p)

    [qemu]                       # required
    binary = "qemu-system-aarch64"   # required
    machine = "virt"             # required
    cpu = "cortex-a72"           # "" or absent: QEMU's default
    memory = "512M"              # QEMU -m syntax: digits with an optional K/M/G/T suffix
    smp = 1                      # >= 1
    disk_device = "virtio-blk-pci"
    net_device = "virtio-net-pci"
    firmware = ""                # "" or absent -> None; UEFI firmware path otherwise
    extra_args = []              # extra QEMU arguments
    imds = false                 # boot tests serve EC2 user-data (IMDSv2) at 169.254.169.254
    append = []                  # kernel words the boot test adds for what QEMU does not emulate
    dtb_delete = []              # "/node:property"s the boot test deletes from the device tree

    [firmware]                   # optional
    packages = ["raspi-firmware"]    # Debian packages holding firmware / boot loader files
    files = { "start4.elf" = "/usr/lib/raspi-firmware/start4.elf" }  # see FirmwareSpec
    config = { arm_64bit = "1" } # boot path settings: config.txt lines on the Pi, the SPL
                                 # and U-Boot environment for uboot (boot/rpi.py, boot/uboot.py)

    [ec2]                        # optional: `appliancekit deploy` launches it on EC2
    instance_type = "t4g.micro"  # required: the instance type members on this board get
    data_volume_gib = 8          # the member's EBS data volume, kept across replacements

    [nixos]                      # optional: how the NixOS backend builds this board
    image = "repart"             # required: repart | amazon | raspberry-pi | sunxi
                                 # (the nixpkgs image module route, appliancekit/nixos/boards.py)
    console = "ttyAMA0"          # required: the kernel's serial console
    disk = "/dev/vda"            # required: the whole disk the data partition is on
    initrd_modules = []          # modules the NixOS initrd needs to find that disk
    build_system = ""            # "" or absent: built natively; else e.g. x86_64-linux (cross)
    uboot_defconfig = ""         # sunxi: the U-Boot defconfig written at 8 KiB
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from appliancekit.errors import UserError
from appliancekit.tomlsource import (
    Field,
    TomlSource,
    abs_path,
    boolean,
    check_table,
    choice,
    did_you_mean,
    integer,
    list_of,
    optional_string,
    string,
    string_table,
    table,
)


class Architecture(StrEnum):
    ARM64 = "arm64"
    ARMHF = "armhf"
    AMD64 = "amd64"

    @property
    def gnu_triplet(self) -> str:
        return {
            Architecture.ARM64: "aarch64-linux-gnu",
            Architecture.ARMHF: "arm-linux-gnueabihf",
            Architecture.AMD64: "x86_64-linux-gnu",
        }[self]

    @property
    def elf_machine(self) -> str:
        """pyelftools' e_machine name for this architecture."""
        return {
            Architecture.ARM64: "EM_AARCH64",
            Architecture.ARMHF: "EM_ARM",
            Architecture.AMD64: "EM_X86_64",
        }[self]


class BootPath(StrEnum):
    DIRECT = "direct"  # kernel + initramfs + cmdline from the boot partition, loaded by QEMU
    RPI = "rpi"  # Raspberry Pi firmware on a FAT partition
    UBOOT = "uboot"  # U-Boot SPL + boot.scr
    UKI = "uki"  # UEFI -> unified kernel image on an ESP


class PartitionTable(StrEnum):
    GPT = "gpt"
    MBR = "mbr"


@dataclass(frozen=True)
class KernelSpec:
    package: str  # e.g. linux-image-arm64 (resolved through apt)
    modules: tuple[str, ...]  # modules the initramfs loads, in addition to their dependencies
    console: str  # e.g. ttyAMA0
    cmdline: tuple[str, ...] = ()  # extra kernel command line words
    # Modules ride in the initramfs, whose integrity the boot chain already covers; their
    # signature checks cost ~1 s under TCG. Keep them where Secure Boot lockdown may apply.
    strip_module_signatures: bool = False
    # out-of-tree modules built from source against this kernel (appliancekit/sources/kmods/),
    # loaded by the initramfs after `modules`
    built_modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiskSpec:
    table: PartitionTable
    boot_size_mib: int = 64
    data_size_mib: int = 64
    device_prefix: str = "/dev/vda"  # partitions are found by GPT name; this is the MBR fallback


@dataclass(frozen=True)
class QemuSpec:
    binary: str  # qemu-system-aarch64
    machine: str  # virt
    cpu: str | None = None
    memory: str = "512M"
    smp: int = 1
    disk_device: str = "virtio-blk-pci"  # -device used for the disk
    net_device: str = "virtio-net-pci"
    firmware: str | None = None  # UEFI firmware path, if the boot path needs one
    extra_args: tuple[str, ...] = ()
    # boot tests serve EC2 user-data (IMDSv2) at 169.254.169.254 (boottest.USER_DATA)
    imds: bool = False
    # The boot test's stand-ins for what a board's firmware does to the command line and device
    # tree, limited to QEMU's gaps (e.g. no firmware GPIO expander on raspi4b): never shipped.
    append: tuple[str, ...] = ()
    dtb_delete: tuple[str, ...] = ()  # "/node/path:property"


@dataclass(frozen=True)
class FirmwareSpec:
    """What the boot path reads besides kernel and initramfs: Debian packages (Pi firmware,
    U-Boot, an EFI stub) and which of their files go where on the boot partition."""

    packages: tuple[str, ...] = ()
    # boot-partition path -> path in the firmware or kernel packages (globs allowed;
    # a destination ending in "/" receives every match)
    files: tuple[tuple[str, str], ...] = ()
    # boot loader configuration entries, rendered by the boot path (config.txt on the Pi)
    config: tuple[tuple[str, str], ...] = ()


class NixosImage(StrEnum):
    REPART = "repart"  # image/repart.nix
    AMAZON = "amazon"  # virtualisation/amazon-image.nix + repart
    RASPBERRY_PI = "raspberry-pi"  # the aarch64 sd-image's firmware + repart
    SUNXI = "sunxi"  # the armv7l sd-image + the board's U-Boot at 8 KiB


@dataclass(frozen=True)
class NixosSpec:
    """How the NixOS backend builds the board (appliancekit/nixos/boards.py)."""

    image: NixosImage
    console: str
    disk: str
    initrd_modules: tuple[str, ...] = ()
    build_system: str | None = None
    uboot_defconfig: str | None = None


@dataclass(frozen=True)
class Ec2Spec:
    """How `appliancekit deploy` runs the board on EC2 (appliancekit/deploy/)."""

    instance_type: str
    data_volume_gib: int = 8


@dataclass(frozen=True)
class Board:
    name: str
    summary: str
    source_file: Path
    arch: Architecture
    boot: BootPath
    kernel: KernelSpec
    disk: DiskSpec
    qemu: QemuSpec
    suite: str = "trixie"
    firmware: FirmwareSpec = FirmwareSpec()
    nixos: NixosSpec | None = None
    ec2: Ec2Spec | None = None


# --------------------------------------------------------------------------- loading

_BOARD = (
    Field(
        "name",
        string(pattern=r"[a-z0-9][a-z0-9_-]*", hint="use lowercase letters, digits, '-' and '_'"),
        required=True,
    ),
    Field("summary", string(), required=True),
    Field("arch", choice(Architecture, what="architecture"), required=True),
    Field("boot", choice(BootPath, what="boot path"), required=True),
    Field("suite", string(), default="trixie"),
)
_KERNEL = (
    Field("package", string(), required=True),
    Field("modules", list_of(string()), required=True),
    Field("console", string(), required=True),
    Field("cmdline", list_of(string()), default=()),
    Field("strip_module_signatures", boolean(), default=False),
    Field("built_modules", list_of(string(pattern=r"[a-z0-9_]+")), default=()),
)
_DISK = (
    Field("table", choice(PartitionTable, what="partition table"), required=True),
    Field("boot_size_mib", integer(1, 1 << 20), default=64),
    Field("data_size_mib", integer(1, 1 << 20), default=64),
    Field("device_prefix", abs_path(), default="/dev/vda"),
)
_QEMU = (
    Field("binary", string(), required=True),
    Field("machine", string(), required=True),
    Field("cpu", optional_string(), default=None),
    Field(
        "memory",
        string(pattern=r"[0-9]+[KMGT]?", hint='expected QEMU -m syntax like "512M" or "2G"'),
        default="512M",
    ),
    Field("smp", integer(1, 1024), default=1),
    Field("disk_device", string(), default="virtio-blk-pci"),
    Field("net_device", string(), default="virtio-net-pci"),
    Field("firmware", optional_string(), default=None),
    Field("extra_args", list_of(string(nonempty=False)), default=()),
    Field("imds", boolean(), default=False),
    Field("append", list_of(string()), default=()),
    Field(
        "dtb_delete",
        list_of(string(pattern=r"/[^:]*:[^:]+", hint='expected "/node/path:property"')),
        default=(),
    ),
)
_FIRMWARE = (
    Field("packages", list_of(string()), default=()),
    Field("files", string_table(), default=()),
    Field("config", string_table(), default=()),
)
_NIXOS = (
    Field("image", choice(NixosImage, what="NixOS image"), required=True),
    Field("console", string(), required=True),
    Field("disk", abs_path(), required=True),
    Field("initrd_modules", list_of(string()), default=()),
    Field("build_system", optional_string(), default=None),
    Field("uboot_defconfig", optional_string(), default=None),
)
_EC2 = (
    Field(
        "instance_type",
        string(pattern=r"[a-z][a-z0-9-]*\.[a-z0-9]+", hint='expected an EC2 type like "t4g.micro"'),
        required=True,
    ),
    Field("data_volume_gib", integer(1, 16384), default=8),
)
_TOP = (
    Field("board", table(_BOARD), required=True),
    Field("ec2", table(_EC2), default=None),
    Field("firmware", table(_FIRMWARE), default=None),
    Field("nixos", table(_NIXOS), default=None),
    Field("kernel", table(_KERNEL), required=True),
    Field("disk", table(_DISK), required=True),
    Field("qemu", table(_QEMU), required=True),
)


def load_board(path: Path) -> Board:
    """Load and validate boards/NAME.toml; `source_file` is made absolute."""
    src = TomlSource.from_file(Path(os.path.abspath(path)))
    top = check_table(src, src.data, (), _TOP)
    board = top["board"]
    if board["name"] != src.file.stem:
        src.fail(
            ("board", "name"),
            f"{board['name']!r} must equal the file name {src.file.stem!r} (without .toml)",
        )
    return Board(
        source_file=src.file,
        kernel=KernelSpec(**top["kernel"]),
        disk=DiskSpec(**top["disk"]),
        qemu=QemuSpec(**top["qemu"]),
        firmware=FirmwareSpec(**top["firmware"]) if top["firmware"] else FirmwareSpec(),
        nixos=NixosSpec(**top["nixos"]) if top["nixos"] else None,
        ec2=Ec2Spec(**top["ec2"]) if top["ec2"] else None,
        **board,
    )


def list_boards(boards_dir: Path) -> list[str]:
    """Names of the boards in `boards_dir` (NAME.toml files), sorted."""
    boards_dir = Path(boards_dir)
    if not boards_dir.is_dir():
        return []
    return sorted(p.stem for p in boards_dir.glob("*.toml") if p.is_file())


def find_board(name: str, boards_dir: Path) -> Board:
    """Load boards_dir/NAME.toml; an unknown name lists the known ones."""
    boards_dir = Path(boards_dir)
    known = list_boards(boards_dir)
    if name not in known:
        listing = f"known boards: {', '.join(known)}" if known else "there are no boards there"
        raise UserError(
            f"unknown board {name!r} in {boards_dir}{did_you_mean(name, known)}; {listing}"
        )
    return load_board(boards_dir / f"{name}.toml")
