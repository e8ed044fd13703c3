"""Which nixpkgs image module builds which board, and how each board is sealed.

Keyed on the board name first (the boards appliancekit ships), then on architecture + boot
path for boards added later. Everything is derived from the `Board` dataclass alone.

| board            | nixpkgs module(s)                               | image output              | seal |
|------------------|-------------------------------------------------|---------------------------|------|
| qemu-virt-arm64  | image/repart.nix                                | system.build.finalImage   | verity store + UKI |
| rpi4             | installer/sd-card/sd-image-aarch64.nix (firmware, kernel, U-Boot) + image/repart.nix | system.build.finalImage | verity store + UKI (Pi firmware -> U-Boot -> EFI) |
| ec2-x86_64/arm64 | virtualisation/amazon-image.nix (ec2.efi) + image/repart.nix | system.build.finalImage | verity store + UKI |
| cubieboard       | installer/sd-card/sd-image-armv7l-multiplatform.nix + U-Boot (Cubieboard_defconfig) at 8 KiB | system.build.sdImage | read-only store, no dm-verity (see below) |

Cubieboard cannot use `image.repart.verityStore` at the pinned nixpkgs: the module only knows
the usr/usr-verity partition types of x86_64 and arm64 (evaluation fails on armv7l), and
systemd-repart writes GPT, whose partition entries (bytes 1024..17407) overlap the sunxi SPL
that the A10 boot ROM reads at 8 KiB. It gets the sd-image MBR layout with the store mounted
read-only from the ext4 partition, a tmpfs root and /data on a third partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliancekit.board import Architecture, Board, BootPath
from appliancekit.errors import UserError

VERITY = "verity-store"  # erofs store + dm-verity, root hash in the UKI's command line
READONLY = "read-only-store"  # store on a read-only ext4 partition, no verity

_SYSTEMS = {
    Architecture.ARM64: "aarch64-linux",
    Architecture.AMD64: "x86_64-linux",
    Architecture.ARMHF: "armv7l-linux",
}


@dataclass(frozen=True)
class BoardMapping:
    kind: str  # repart | ec2 | rpi4 | cubieboard
    system: str  # nixpkgs.hostPlatform
    build_system: str  # the system that builds the image (flake packages.<build_system>.image)
    modules: tuple[str, ...]  # nixpkgs module files, relative to modulesPath
    image_attr: str  # attribute under config.system.build
    seal: str  # VERITY | READONLY
    console: str  # serial console device
    disk_device: str  # whole-disk device the data partition is grown on at first boot
    initrd_modules: tuple[str, ...] = ()

    @property
    def cross(self) -> bool:
        return self.system != self.build_system

    @property
    def efi_arch(self) -> str:
        return {"aarch64-linux": "AA64", "x86_64-linux": "X64", "armv7l-linux": "ARM"}[self.system]


_REPART = "image/repart.nix"


def board_mapping(board: Board) -> BoardMapping:
    """The NixOS image recipe for `board`; UserError for a board it cannot build."""
    system = _SYSTEMS[board.arch]
    name = board.name
    if name == "rpi4" or (board.boot == BootPath.RPI and board.arch == Architecture.ARM64):
        return BoardMapping(
            kind="rpi4",
            system=system,
            build_system=system,
            modules=("installer/sd-card/sd-image-aarch64.nix", _REPART),
            image_attr="finalImage",
            seal=VERITY,
            console="ttyS1,115200",  # the Pi 4's mini UART on GPIO 14/15 with mainline DTBs
            disk_device="/dev/mmcblk0",
            initrd_modules=("mmc_block", "sdhci_iproc", "vc4", "pcie_brcmstb", "reset-raspberrypi"),
        )
    if name == "cubieboard" or (board.arch == Architecture.ARMHF and board.boot == BootPath.UBOOT):
        return BoardMapping(
            kind="cubieboard",
            system=system,
            # nothing for armv7l is in the binary cache: cross-compile from x86_64
            build_system="x86_64-linux",
            modules=("installer/sd-card/sd-image-armv7l-multiplatform.nix",),
            image_attr="sdImage",
            seal=READONLY,
            console="ttyS0,115200",
            disk_device="/dev/mmcblk0",
            initrd_modules=("sunxi-mmc", "mmc_block", "ext4"),
        )
    if name.startswith("ec2-"):
        if board.arch == Architecture.ARMHF:
            raise UserError(
                f"board {name}: EC2 has no 32-bit ARM instances", file=board.source_file
            )
        return BoardMapping(
            kind="ec2",
            system=system,
            build_system=system,
            modules=("virtualisation/amazon-image.nix", _REPART),
            image_attr="finalImage",
            seal=VERITY,
            console="ttyS0,115200n8",
            disk_device="/dev/nvme0n1",
            initrd_modules=("nvme", "ena"),
        )
    if board.arch in (Architecture.ARM64, Architecture.AMD64) and board.boot in (
        BootPath.DIRECT,
        BootPath.UKI,
    ):
        return BoardMapping(
            kind="repart",
            system=system,
            build_system=system,
            modules=(_REPART,),
            image_attr="finalImage",
            seal=VERITY,
            console="ttyAMA0" if board.arch == Architecture.ARM64 else "ttyS0,115200",
            disk_device="/dev/vda",
            initrd_modules=("virtio_pci", "virtio_blk", "virtio_scsi"),
        )
    raise UserError(
        f"board {name}: the NixOS backend has no image module for arch {board.arch.value} "
        f"with boot path {board.boot.value}",
        file=board.source_file,
    )
