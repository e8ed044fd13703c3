"""UEFI boot through a unified kernel image (UKI) on the EFI system partition.

The UKI is systemd's EFI stub (Debian's `systemd-boot-efi`, for the target architecture)
with the kernel, the initramfs and the kernel command line (carrying the verity root hash)
added as PE sections, so the firmware loads one file and everything that decides what
boots is in it. It sits at the removable-media path (EFI/BOOT/BOOTX64.EFI,
EFI/BOOT/BOOTAA64.EFI), which UEFI firmware boots when it has no boot entry: no boot
loader, no NVRAM variables.

Which stub and where the UKI goes is board data: a [firmware] files entry whose source is
a `*.efi.stub` names the destination of the UKI built from that stub, e.g.

    [firmware]
    packages = ["systemd-boot-efi"]
    files = { "EFI/BOOT/BOOTX64.EFI" = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub" }

Sections are appended the way systemd's ukify does it (pure Python with pefile, so an
x86 host builds arm64 UKIs, which its binutils cannot): after the stub's last section,
file offsets aligned to FileAlignment, virtual addresses to SectionAlignment, `.linux`
last with the kernel's own SizeOfImage as its virtual size, SizeOfImage updated, checksum
zeroed. Nothing time-dependent is written, so the UKI is reproducible.

The boot test gives QEMU only the firmware (the board's [qemu] firmware / pflash
arguments) and the disk: the firmware finds the UKI on the ESP by itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from appliancekit.board import Board
from appliancekit.boot import BootInputs, BootLayout, QemuBoot, firmware_files, sdboot
from appliancekit.boot.slotswitch import Mechanism, SlotSwitch, not_implemented
from appliancekit.disk import PartitionRole
from appliancekit.errors import UserError
from appliancekit.manifest import Manifest

STUB_SUFFIX = ".efi.stub"
# The order ukify uses: small metadata first, the kernel last (its virtual size may exceed
# its file size, so nothing may follow it).
SECTION_ORDER = (".osrel", ".cmdline", ".uname", ".initrd", ".linux")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def os_release(board: Board, seed: str) -> str:
    """The .osrel section: what boot menus and tools show for this image."""
    return (
        'NAME="appliancekit"\n'
        "ID=appliancekit\n"
        f'PRETTY_NAME="appliancekit appliance ({board.name})"\n'
        f"IMAGE_ID={board.name}\n"
        f"IMAGE_VERSION={seed[:12]}\n"
    )


def add_sections(stub: bytes, sections: Sequence[tuple[str, bytes]]) -> bytes:
    """Append PE sections to an EFI stub; returns the new image (ukify's layout).

    `.linux` (if present) gets the kernel's SizeOfImage as virtual size when the kernel is
    itself a PE image (EFI-stub kernels are), as the stub loads it in place.
    """
    import pefile

    pe = pefile.PE(data=stub, fast_load=True)
    opt = pe.OPTIONAL_HEADER
    if pe.FILE_HEADER.PointerToSymbolTable:
        raise UserError("the EFI stub still has a COFF symbol table; expected a stripped stub")
    security = opt.DATA_DIRECTORY[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]]
    if security.VirtualAddress:
        raise UserError("the EFI stub is signed; refusing to change it")
    file_align, section_align = opt.FileAlignment, opt.SectionAlignment
    existing = {s.Name.rstrip(b"\0").decode() for s in pe.sections}
    data = bytearray(pe.__data__)
    header_size = _round_up(opt.SizeOfHeaders, file_align)
    for name, content in sections:
        if not name.startswith(".") or len(name) > 8:
            raise UserError(f"bad UKI section name {name!r} (8 characters at most)")
        if name in existing:
            raise UserError(f"the EFI stub already has a {name} section")
        existing.add(name)
        header = pefile.SectionStructure(pe.__IMAGE_SECTION_HEADER_format__, pe=pe)
        header.__unpack__(bytes(header.sizeof()))
        offset = pe.sections[-1].get_file_offset() + header.sizeof()
        if offset + header.sizeof() > header_size:
            raise UserError(f"no room in the EFI stub's headers for section {name}")
        virtual_size = len(content)
        if name == ".linux" and content[:2] == b"MZ":
            with contextlib.suppress(pefile.PEFormatError):
                kernel_image_size = pefile.PE(
                    data=content, fast_load=True
                ).OPTIONAL_HEADER.SizeOfImage
                virtual_size = max(virtual_size, kernel_image_size)
        last = pe.sections[-1]
        header.set_file_offset(offset)
        header.Name = name.encode()
        header.Misc_VirtualSize = virtual_size
        header.PointerToRawData = _round_up(len(data), file_align)
        header.SizeOfRawData = _round_up(len(content), file_align)
        header.VirtualAddress = _round_up(
            last.VirtualAddress + max(last.Misc_VirtualSize, last.SizeOfRawData), section_align
        )
        header.IMAGE_SCN_MEM_READ = True
        if name == ".linux":
            header.IMAGE_SCN_CNT_CODE = True  # kernels using the EFI handover run in place
        else:
            header.IMAGE_SCN_CNT_INITIALIZED_DATA = True
        data += bytes(header.PointerToRawData - len(data))
        data += content
        data += bytes(header.SizeOfRawData - len(content))
        pe.FILE_HEADER.NumberOfSections += 1
        opt.SizeOfInitializedData += virtual_size
        pe.__structures__.append(header)
        pe.sections.append(header)
    last = pe.sections[-1]
    opt.SizeOfHeaders = header_size
    opt.CheckSum = 0
    opt.SizeOfImage = _round_up(last.VirtualAddress + last.Misc_VirtualSize, section_align)
    pe.__data__ = bytes(data)
    return bytes(pe.write())


def read_sections(path: Path) -> dict[str, bytes]:
    """A PE image's sections by name, each trimmed to its virtual size (for tests, inspect)."""
    import pefile

    pe = pefile.PE(str(path), fast_load=True)
    try:
        return {
            s.Name.rstrip(b"\0").decode(): s.get_data()[: s.Misc_VirtualSize] for s in pe.sections
        }
    finally:
        pe.close()


def build_uki(
    stub: Path,
    kernel: Path,
    initrd: Path,
    cmdline: str,
    output: Path,
    *,
    osrel: str,
    uname: str,
) -> Path:
    contents: Mapping[str, bytes] = {
        ".osrel": osrel.encode(),
        ".cmdline": cmdline.encode(),
        ".uname": uname.encode(),
        ".initrd": initrd.read_bytes(),
        ".linux": kernel.read_bytes(),
    }
    image = add_sections(stub.read_bytes(), [(n, contents[n]) for n in SECTION_ORDER])
    output.write_bytes(image)
    return output


def layout(inputs: BootInputs) -> BootLayout:
    files = firmware_files(inputs)
    stubs = {dest: src for dest, src in files.items() if src.name.endswith(STUB_SUFFIX)}
    if not stubs:
        raise UserError(
            f"a uki board needs a [firmware] files entry whose source is a *{STUB_SUFFIX}"
            ' (e.g. "EFI/BOOT/BOOTX64.EFI" = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub")',
            file=inputs.board.source_file,
            field="firmware.files",
        )
    osrel = os_release(inputs.board, inputs.seed)
    if sdboot.loader_destination(files) is not None:
        # systemd-boot chooses the slot (boot/sdboot.py): one UKI per slot directory
        return sdboot.layout(inputs, files, stubs, _uki_builder(inputs, osrel))
    slot_files: dict[str, Path] = {}
    for number, (destination, stub) in enumerate(sorted(stubs.items())):
        files[destination] = slot_files[destination.rsplit("/", 1)[-1]] = _uki_builder(
            inputs, osrel
        )(stub, inputs.workdir / f"uki{number}.efi")
    return BootLayout(files=files, slot_files=slot_files, role=PartitionRole.ESP)


def _uki_builder(inputs: BootInputs, osrel: str) -> Callable[[Path, Path], Path]:
    def build(stub: Path, output: Path) -> Path:
        return build_uki(
            stub,
            inputs.kernel.image,
            inputs.initramfs,
            inputs.cmdline,
            output,
            osrel=osrel,
            uname=inputs.kernel.version,
        )

    return build


def slot_switch(board: Board) -> SlotSwitch:
    if sdboot.board_loader(board) is not None:
        return sdboot.slot_switch(board)
    return not_implemented(
        Mechanism.SYSTEMD_BOOT,
        arm="the trial slot's UKI gets a boot counter (+1) in its file name, or BootNext",
        commit="the counter is dropped from the UKI's file name",
        fallback="systemd-boot skips an entry with no tries left and boots the committed one",
    )


def qemu_boot(disk: Path, manifest: Manifest, board: Board, workdir: Path) -> QemuBoot:
    # The firmware (board [qemu] firmware or pflash arguments) boots the ESP's UKI itself.
    return QemuBoot()
