"""EC2 boards (ec2-x86_64, ec2-arm64): UKI on an ESP, user-data over IMDSv2.

Fast tests: the PE section appender on synthetic stubs, the IMDSv2 server and its relay,
the boards and the initramfs block they switch on. Slow tests build the homepage appliance
for each board (layout: GPT, ESP, the UKI's sections and command line) and boot it under
QEMU through UEFI firmware from an NVMe disk, with user-data served at 169.254.169.254.
"""

from __future__ import annotations

import gzip
import http.client
import json
import struct
import subprocess
import sys
from pathlib import Path

import pefile
import pytest

from appliancekit.board import Architecture, BootPath, find_board
from appliancekit.boot import boot_path, sdboot, uki
from appliancekit.boot.initramfs import render_init
from appliancekit.boottest import BootTestReport
from appliancekit.build import PARTITION_NUMBERS
from appliancekit.disk import ESP_GUID, PartitionRole, extract_fat_file, read_partition_table
from appliancekit.errors import UserError
from appliancekit.imds import (
    ADDRESS,
    TOKEN_HEADER,
    TTL_HEADER,
    ImdsServer,
)
from appliancekit.manifest import load_manifest
from appliancekit.qemu import PortForward, QemuConfig, build_command

from .conftest import PROJECT, boot_twice_on_a_bigger_disk

BOARDS = {
    "ec2-x86_64": ("EFI/BOOT/BOOTX64.EFI", pefile.MACHINE_TYPE["IMAGE_FILE_MACHINE_AMD64"]),
    "ec2-arm64": ("EFI/BOOT/BOOTAA64.EFI", pefile.MACHINE_TYPE["IMAGE_FILE_MACHINE_ARM64"]),
}
MIB = 1 << 20


# -- the PE section appender (synthetic stubs) -----------------------------------------------


def tiny_pe(
    *,
    machine: int = 0xAA64,
    header_size: int = 0x400,
    file_align: int = 0x200,
    section_align: int = 0x1000,
    text: bytes = b"\xc3" * 0x123,
    image_size: int | None = None,
) -> bytes:
    """A minimal PE32+ EFI application with one .text section."""
    raw = -(-len(text) // file_align) * file_align
    text_va = section_align
    size_of_image = image_size or text_va + -(-len(text) // section_align) * section_align
    dos = b"MZ" + bytes(0x3A) + struct.pack("<I", 0x40)
    coff = struct.pack("<HHIIIHH", machine, 1, 0, 0, 0, 240, 0x0206)
    optional = struct.pack(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        0x20B,  # PE32+
        0,
        0,
        raw,  # SizeOfCode
        0,
        0,
        text_va,  # AddressOfEntryPoint
        text_va,  # BaseOfCode
        0,  # ImageBase
        section_align,
        file_align,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        size_of_image,
        header_size,
        0,  # CheckSum
        10,  # EFI application
        0,
        0,
        0,
        0,
        0,
        0,
        16,
    ) + bytes(16 * 8)
    section = struct.pack(
        "<8sIIIIIIHHI", b".text", len(text), text_va, raw, header_size, 0, 0, 0, 0, 0x60000020
    )
    headers = dos + b"PE\0\0" + coff + optional + section
    assert len(headers) <= header_size
    return headers + bytes(header_size - len(headers)) + text + bytes(raw - len(text))


def parse(image: bytes) -> pefile.PE:
    pe = pefile.PE(data=image)
    assert not pe.get_warnings(), pe.get_warnings()
    return pe


SECTIONS = [
    (".osrel", b"ID=appliancekit\n"),
    (".cmdline", b"console=ttyS0 ak.roothash=" + b"ab" * 32),
    (".uname", b"6.12.0-test"),
    (".initrd", bytes(range(256)) * 40 + b"tail"),
]


def test_sections_appended_after_the_stub_aligned_as_ukify_does() -> None:
    kernel = tiny_pe(text=b"\x90" * 0x700, image_size=0x20000)  # SizeOfImage > file size
    stub = tiny_pe()
    pe = parse(uki.add_sections(stub, [*SECTIONS, (".linux", kernel)]))
    opt = pe.OPTIONAL_HEADER
    names = [s.Name.rstrip(b"\0").decode() for s in pe.sections]
    assert names == [".text", ".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
    assert pe.FILE_HEADER.NumberOfSections == 6
    previous_end = 0
    for section in pe.sections:
        assert section.VirtualAddress % opt.SectionAlignment == 0
        assert section.PointerToRawData % opt.FileAlignment == 0
        assert section.SizeOfRawData % opt.FileAlignment == 0
        assert section.VirtualAddress >= previous_end  # no overlap in memory
        previous_end = section.VirtualAddress + max(section.Misc_VirtualSize, section.SizeOfRawData)
    contents = dict(SECTIONS) | {".linux": kernel}
    for section in pe.sections[1:]:
        name = section.Name.rstrip(b"\0").decode()
        data = section.get_data()
        assert data[: len(contents[name])] == contents[name]
        assert not data[len(contents[name]) :].strip(b"\0")  # only padding after the content
    linux = pe.sections[-1]
    assert linux.Misc_VirtualSize == 0x20000  # the kernel's own SizeOfImage
    assert linux.IMAGE_SCN_CNT_CODE and linux.IMAGE_SCN_MEM_READ
    assert pe.sections[2].IMAGE_SCN_CNT_INITIALIZED_DATA
    assert opt.SizeOfImage == linux.VirtualAddress + 0x20000
    assert opt.CheckSum == 0
    assert pe.FILE_HEADER.Machine == 0xAA64  # the stub's machine is kept
    # the stub's own code is untouched
    assert pe.sections[0].get_data()[:0x123] == b"\xc3" * 0x123


def test_section_appender_is_deterministic() -> None:
    stub = tiny_pe(machine=0x8664)
    first = uki.add_sections(stub, SECTIONS)
    assert uki.add_sections(stub, SECTIONS) == first


def test_read_sections_roundtrip(tmp_path: Path) -> None:
    image = tmp_path / "uki.efi"
    image.write_bytes(uki.add_sections(tiny_pe(), SECTIONS))
    sections = uki.read_sections(image)
    for name, content in SECTIONS:
        assert sections[name] == content


@pytest.mark.parametrize(
    ("stub", "sections", "message"),
    [
        (tiny_pe(header_size=0x200), SECTIONS, "no room"),
        (tiny_pe(), [(".text", b"x")], "already has a .text"),
        (tiny_pe(), [(".toolongname", b"x")], "8 characters"),
    ],
)
def test_section_appender_refuses(stub: bytes, sections: list, message: str) -> None:
    with pytest.raises(UserError, match=message):
        uki.add_sections(stub, sections)


# -- boards and the initramfs block they switch on -------------------------------------------


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_files(name: str) -> None:
    board = find_board(name, PROJECT.boards_dir)
    assert board.boot == BootPath.UKI
    assert boot_path(board) is uki
    assert board.arch == (Architecture.AMD64 if "x86" in name else Architecture.ARM64)
    assert board.kernel.package.startswith("linux-image-cloud-")
    assert {"nvme", "ena"} <= set(board.kernel.modules)
    assert "ak.userdata=imds" in board.kernel.cmdline
    assert board.firmware.packages == ("systemd-boot-efi",)
    # systemd-boot at the removable-media path; the UKI, one per slot, from the stub
    files = dict(board.firmware.files)
    assert sdboot.LOADER_NAME.fullmatch(files[BOARDS[name][0]].rsplit("/", 1)[-1])
    assert files["appliance.efi"].endswith(uki.STUB_SUFFIX)
    assert sdboot.board_loader(board) == (BOARDS[name][0], files[BOARDS[name][0]])
    assert uki.slot_switch(board).mechanism == "systemd-boot" and uki.slot_switch(board).implemented
    assert board.qemu.disk_device == "nvme" and board.qemu.imds
    consoles = [board.kernel.console] + [
        w.split("=", 1)[1] for w in board.kernel.cmdline if w.startswith("console=")
    ]
    assert "ttyS0" in consoles  # the port EC2's system log and serial console show


def test_user_data_block_is_in_the_initramfs_and_data_driven() -> None:
    board = find_board("ec2-arm64", PROJECT.boards_dir)
    init = render_init(board, "6.12.0-test", PARTITION_NUMBERS)
    block = init[init.index("# >>> board data") : init.index("# <<< board data")]
    assert '*" ak.userdata=imds "*)' in block
    assert "PUT /latest/api/token" in block and "X-aws-ec2-metadata-token-ttl-seconds" in block
    assert "GET /latest/user-data" in block and "X-aws-ec2-metadata-token:" in block
    assert not any(name in block for name in BOARDS)  # no board-name conditionals
    # user-data goes in before the boot partition's settings.env (first definition wins)
    assert init.index(": > /run/settings.env") < init.index("# >>> board data")
    assert init.index("# <<< board data") < init.index("/bootpart/settings.env")


# -- the IMDSv2 server --------------------------------------------------------------------------


def request(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_imds_v2_token_then_user_data() -> None:
    user_data = b"domain=example.org\nhostname=web-1\n"
    with ImdsServer(user_data) as imds:
        port = imds.port
        assert request(port, "GET", "/latest/user-data", {})[0] == 401  # IMDSv1 refused
        assert request(port, "PUT", "/latest/api/token", {})[0] == 400  # TTL header required
        assert request(port, "PUT", "/latest/api/token", {TTL_HEADER: "0"})[0] == 400
        status, token = request(port, "PUT", "/latest/api/token", {TTL_HEADER: "60"})
        assert status == 200 and token.decode() == imds.token
        assert not imds.served_user_data()
        bad = {TOKEN_HEADER: "not-the-token"}
        assert request(port, "GET", "/latest/user-data", bad)[0] == 401
        good = {TOKEN_HEADER: token.decode()}
        assert request(port, "GET", "/latest/meta-data/nothing", good)[0] == 404
        assert request(port, "GET", "/latest/user-data", good) == (200, user_data)
        assert imds.served_user_data()
    with ImdsServer(None) as empty:
        _, token = request(empty.port, "PUT", "/latest/api/token", {TTL_HEADER: "60"})
        no_data = request(empty.port, "GET", "/latest/user-data", {TOKEN_HEADER: token.decode()})
        assert no_data[0] == 404  # an instance launched without user-data


def test_relay_pipes_one_connection_to_the_server() -> None:
    """What QEMU's guestfwd runs per guest connection: HTTP/1.0 in on stdin, out on stdout."""
    with ImdsServer(b"hostname=relayed\n") as imds:
        put = (
            f"PUT /latest/api/token HTTP/1.0\r\nHost: {ADDRESS}\r\n{TTL_HEADER}: 60\r\n\r\n"
        ).encode()
        relay = [sys.executable, "-m", "appliancekit.imds", "relay", "127.0.0.1", str(imds.port)]
        out = subprocess.run(relay, input=put, capture_output=True, timeout=30, check=True)
        head, _, token = out.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") and token.decode() == imds.token
        get = (
            f"GET /latest/user-data HTTP/1.0\r\nHost: {ADDRESS}\r\n"
            f"{TOKEN_HEADER}: {token.decode()}\r\n\r\n"
        ).encode()
        out = subprocess.run(relay, input=get, capture_output=True, timeout=30, check=True)
        assert out.stdout.endswith(b"\r\n\r\nhostname=relayed\n")
        assert out.stderr == b""  # stderr is the guest's connection too


def test_imds_options_reach_the_user_network() -> None:
    with ImdsServer(b"") as imds:
        options = imds.netdev_options(python="/opt/py,thon")
    assert options[0] == "net=169.254.0.0/16"  # slirp forwards only inside its network
    assert options[1].startswith(f"guestfwd=tcp:{ADDRESS}:80-cmd:/opt/py,,thon -m ")
    assert options[1].endswith(f"relay 127.0.0.1 {imds.port}")
    config = QemuConfig(
        binary="qemu-system-x86_64",
        machine="q35",
        net_device="virtio-net-pci,romfile=",
        forwards=(PortForward(80, 8080),),
        net_options=options,
    )
    argv = build_command(config, qmp_socket=Path("/q"), serial_log=Path("/s"))
    netdev = argv[argv.index("-netdev") + 1]
    assert netdev.startswith("user,id=net0,net=169.254.0.0/16,guestfwd=tcp:169.254.169.254:80-cmd:")
    assert netdev.endswith(",hostfwd=tcp:127.0.0.1:8080-:80")
    assert argv[argv.index("-device", argv.index("-netdev")) + 1] == (
        "virtio-net-pci,romfile=,netdev=net0"
    )


# -- built images: layout without booting (slow: builds) ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BOARDS))
def test_image_layout(name: str, appliances, tmp_path: Path) -> None:
    result = appliances.build("homepage", name)
    image = result.output_dir
    manifest = load_manifest(image)
    disk = image / manifest.disk.path
    table = read_partition_table(disk)
    assert table["label"] == "gpt"
    parts = {p["name"]: p for p in table["partitions"]}
    assert list(parts) == ["ak-boot", "ak-root-a", "ak-root-b", "ak-data"]
    assert parts["ak-boot"]["type"].lower() == ESP_GUID  # an EFI system partition
    esp = manifest.partition("ak-boot")
    assert esp.role == PartitionRole.ESP.value
    assert esp.size >= 64 * MIB

    path, machine = BOARDS[name]
    # systemd-boot at the removable-media path, choosing among the slots' entries
    extract_fat_file(disk, esp.offset, path, tmp_path / "loader.efi")
    assert (
        b"#### LoaderInfo: systemd-boot" in uki.read_sections(tmp_path / "loader.efi")[".sdmagic"]
    )
    extract_fat_file(disk, esp.offset, sdboot.LOADER_CONF, tmp_path / "loader.conf")
    assert (tmp_path / "loader.conf").read_text() == sdboot.render_loader_conf()
    entry_path = f"{sdboot.ENTRIES_DIR}/ak-slot-a.conf"  # committed: no boot counter
    extract_fat_file(disk, esp.offset, entry_path, tmp_path / "entry.conf")
    entry = sdboot.parse_entry((tmp_path / "entry.conf").read_text())
    assert entry["efi"] == "/slot-a/appliance.efi" and entry["version"] == "1"
    assert entry["options"] == manifest.kernel_cmdline  # ak.slot=a: the build's own
    efi = tmp_path / "uki.efi"
    extract_fat_file(disk, esp.offset, "slot-a/appliance.efi", efi)
    assert efi.stat().st_size < esp.size
    pe = pefile.PE(str(efi), fast_load=True)
    assert pe.FILE_HEADER.Machine == machine
    assert pe.OPTIONAL_HEADER.Subsystem == 10  # EFI application
    sections = uki.read_sections(efi)
    assert {".osrel", ".cmdline", ".uname", ".initrd", ".linux", ".sdmagic"} <= set(sections)
    cmdline = sections[".cmdline"].decode()
    assert cmdline == manifest.kernel_cmdline
    assert f"ak.roothash={manifest.verity.root_hash}" in cmdline.split()
    assert "ak.userdata=imds" in cmdline.split() and "console=ttyS0" in cmdline.split()
    assert sections[".uname"].decode() == manifest.kernel_version
    assert b"ID=appliancekit" in sections[".osrel"]
    assert sections[".linux"][:2] == b"MZ"  # an EFI-stub kernel
    assert len(sections[".linux"]) >= manifest.sizes.kernel_bytes
    initrd = gzip.decompress(sections[".initrd"])
    assert b"ak.userdata=imds" in initrd and b"/latest/api/token" in initrd
    assert b"ena.ko" in initrd
    assert json.loads((image / "manifest.json").read_text())["boot"] == "uki"


# -- booting through UEFI (slow) ---------------------------------------------------------------


def assert_booted_through_uefi_with_user_data(report: BootTestReport) -> str:
    """What every EC2 boot must show; returns the serial log."""
    assert report.passed, f"{report.failure}\n{report.serial_tail}"
    serial = Path(report.serial_log).read_text(errors="replace")
    assert "BdsDxe: starting" in serial  # UEFI firmware found and started the UKI
    assert "per-instance settings read from user-data (IMDSv2): hostname" in serial
    assert any("fetched with an IMDSv2 token" in note for note in report.notes), report.notes
    hostname = next(p for p in report.probes if p.name == "per-device hostname")
    assert hostname.ok  # the probe expects the user-data's hostname, not the image's
    assert {"initramfs", "root_mounted", "switch_root"} <= set(report.markers)
    return serial


@pytest.mark.slow
def test_boots_through_uefi_with_user_data(appliances) -> None:
    """ec2-x86_64 (OVMF); ec2-arm64's boot is the one below, on a larger volume."""
    assert_booted_through_uefi_with_user_data(appliances.boot("homepage", "ec2-x86_64"))


@pytest.mark.slow
def test_boots_through_uefi_with_user_data_and_grows_on_a_larger_volume(
    appliances, tmp_path: Path
) -> None:
    """ec2-arm64 (AAVMF): an EBS volume is usually larger than the AMI's snapshot: the first
    boot grows the data partition over NVMe, the second finds the first one's data."""
    result = appliances.build("homepage", "ec2-arm64")
    report, _ = boot_twice_on_a_bigger_disk(result.output_dir, "ec2-arm64", tmp_path)
    serial = assert_booted_through_uefi_with_user_data(report)
    assert serial.count("per-instance settings read from user-data (IMDSv2)") == 2
