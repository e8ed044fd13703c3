"""Which nixpkgs image module builds a board, and how it is sealed: the board's `[nixos]`
table names the route (`image`) and the board's facts (console, disk, initrd modules, a
cross build system, a U-Boot defconfig); this module knows what each route means.

| image (`[nixos] image`) | nixpkgs module(s)                                 | image output            | seal |
|-------------------------|---------------------------------------------------|-------------------------|------|
| repart                  | image/repart.nix                                  | system.build.finalImage | verity store + UKI |
| amazon                  | virtualisation/amazon-image.nix (ec2.efi) + image/repart.nix | system.build.finalImage | verity store + UKI |
| raspberry-pi            | installer/sd-card/sd-image-aarch64.nix (firmware, kernel, U-Boot) + image/repart.nix | system.build.finalImage | verity store + UKI (Pi firmware -> U-Boot -> EFI) |
| sunxi                   | installer/sd-card/sd-image-armv7l-multiplatform.nix + U-Boot (`uboot_defconfig`) at 8 KiB | system.build.sdImage | read-only store, no dm-verity (see below) |

sunxi boards (Cubieboard) cannot use `image.repart.verityStore` at the pinned nixpkgs: the module only knows
the usr/usr-verity partition types of x86_64 and arm64 (evaluation fails on armv7l), and
systemd-repart writes GPT, whose partition entries (bytes 1024..17407) overlap the sunxi SPL
that the A10 boot ROM reads at 8 KiB. It gets the sd-image MBR layout with the store mounted
read-only from the ext4 partition, a tmpfs root and /data on a third partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliancekit.board import Architecture, Board, NixosImage, NixosSpec
from appliancekit.errors import UserError

VERITY = "verity-store"  # erofs store + dm-verity, root hash in the UKI's command line
READONLY = "read-only-store"  # store on a read-only ext4 partition, no verity
# the FAT partition that holds settings.env: the ESP of repart images (a GPT partition label
# the renderer sets), the FIRMWARE file system of sd-images (MBR: no partition labels)
ESP_LABEL = "ESP"
FIRMWARE_LABEL = "FIRMWARE"

_SYSTEMS = {
    Architecture.ARM64: "aarch64-linux",
    Architecture.AMD64: "x86_64-linux",
    Architecture.ARMHF: "armv7l-linux",
}


@dataclass(frozen=True)
class BoardMapping:
    spec: NixosSpec  # the board's [nixos] table: console, disk, initrd modules, U-Boot
    system: str  # nixpkgs.hostPlatform
    build_system: str  # the system that builds the image (flake packages.<build_system>.image)
    modules: tuple[str, ...]  # nixpkgs module files, relative to modulesPath
    image_attr: str  # attribute under config.system.build
    seal: str  # VERITY | READONLY

    @property
    def kind(self) -> NixosImage:
        return self.spec.image

    @property
    def cross(self) -> bool:
        return self.system != self.build_system

    @property
    def boot_partition(self) -> str:
        """The FAT partition holding settings.env, as the running image names it."""
        if self.seal == VERITY:
            return f"/dev/disk/by-partlabel/{ESP_LABEL}"
        return f"/dev/disk/by-label/{FIRMWARE_LABEL}"

    @property
    def efi_arch(self) -> str:
        return {"aarch64-linux": "AA64", "x86_64-linux": "X64", "armv7l-linux": "ARM"}[self.system]


_REPART = "image/repart.nix"
# route -> (modules, image attribute, seal, architectures it exists for)
_ROUTES: dict[NixosImage, tuple[tuple[str, ...], str, str, tuple[Architecture, ...]]] = {
    NixosImage.REPART: ((_REPART,), "finalImage", VERITY, (Architecture.ARM64, Architecture.AMD64)),
    NixosImage.AMAZON: (
        ("virtualisation/amazon-image.nix", _REPART),
        "finalImage",
        VERITY,
        (Architecture.ARM64, Architecture.AMD64),
    ),
    NixosImage.RASPBERRY_PI: (
        ("installer/sd-card/sd-image-aarch64.nix", _REPART),
        "finalImage",
        VERITY,
        (Architecture.ARM64,),
    ),
    NixosImage.SUNXI: (
        ("installer/sd-card/sd-image-armv7l-multiplatform.nix",),
        "sdImage",
        READONLY,
        (Architecture.ARMHF,),
    ),
}


def board_mapping(board: Board) -> BoardMapping:
    """The NixOS image recipe for `board`; UserError for a board it cannot build."""
    spec = board.nixos
    if spec is None:
        raise UserError(
            f"board {board.name} has no [nixos] table (image, console, disk): the NixOS "
            "backend does not know how to build it",
            file=board.source_file,
            field="nixos",
        )
    modules, image_attr, seal, arches = _ROUTES[spec.image]
    if board.arch not in arches:
        raise UserError(
            f"board {board.name}: NixOS image {spec.image.value!r} exists for "
            f"{', '.join(a.value for a in arches)}, not {board.arch.value}",
            file=board.source_file,
            field="nixos.image",
        )
    if spec.image == NixosImage.SUNXI and not spec.uboot_defconfig:
        raise UserError(
            "a sunxi NixOS image needs the board's U-Boot: set uboot_defconfig",
            file=board.source_file,
            field="nixos.uboot_defconfig",
        )
    system = _SYSTEMS[board.arch]
    return BoardMapping(
        spec=spec,
        system=system,
        build_system=spec.build_system or system,
        modules=modules,
        image_attr=image_attr,
        seal=seal,
    )
