"""Board loading and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliancekit.board import (
    Architecture,
    Board,
    BootPath,
    DiskSpec,
    KernelSpec,
    NixosImage,
    NixosSpec,
    PartitionTable,
    QemuSpec,
    find_board,
    list_boards,
    load_board,
)
from appliancekit.errors import UserError

BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"
BOARD_FILE = BOARDS_DIR / "qemu-virt-arm64.toml"
TEXT = BOARD_FILE.read_text()


def line_no(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def write_board(tmp_path: Path, text: str, name: str = "qemu-virt-arm64") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_repo_board_loads_with_exact_values() -> None:
    board = find_board("qemu-virt-arm64", BOARDS_DIR)
    assert board == Board(
        name="qemu-virt-arm64",
        summary="QEMU virt machine, arm64, kernel loaded directly by QEMU",
        source_file=BOARD_FILE,
        arch=Architecture.ARM64,
        boot=BootPath.DIRECT,
        suite="trixie",
        kernel=KernelSpec(
            package="linux-image-arm64",
            modules=("virtio_blk", "virtio_net", "erofs", "dm_verity", "ext4", "i6300esb"),
            console="ttyAMA0",
            cmdline=(),
            strip_module_signatures=True,
        ),
        disk=DiskSpec(
            table=PartitionTable.GPT, boot_size_mib=64, data_size_mib=64, device_prefix="/dev/vda"
        ),
        qemu=QemuSpec(
            binary="qemu-system-aarch64",
            machine="virt",
            cpu="cortex-a72",
            memory="512M",
            smp=1,
            disk_device="virtio-blk-pci",
            net_device="virtio-net-pci",
            firmware=None,
            extra_args=("-device", "i6300esb"),
        ),
        nixos=NixosSpec(
            image=NixosImage.REPART,
            console="ttyAMA0",
            disk="/dev/vda",
            initrd_modules=("virtio_pci", "virtio_blk", "virtio_scsi"),
        ),
    )
    assert "qemu-virt-arm64" in list_boards(BOARDS_DIR)


def test_defaults_and_firmware(tmp_path: Path) -> None:
    text = (
        TEXT.replace('suite = "trixie"\n', "")
        .replace('cpu = "cortex-a72"\n', "")
        .replace('firmware = ""', 'firmware = "/usr/share/AAVMF/AAVMF_CODE.fd"')
        .replace('extra_args = ["-device", "i6300esb"]', 'extra_args = ["-rtc", "base=utc"]')
    )
    board = load_board(write_board(tmp_path, text))
    assert board.suite == "trixie" and board.qemu.cpu is None
    assert board.qemu.firmware == "/usr/share/AAVMF/AAVMF_CODE.fd"
    assert board.qemu.extra_args == ("-rtc", "base=utc")


def test_list_and_find(tmp_path: Path) -> None:
    write_board(tmp_path, TEXT)
    write_board(tmp_path, TEXT.replace('"qemu-virt-arm64"', '"other"', 1), "other")
    assert list_boards(tmp_path) == ["other", "qemu-virt-arm64"]
    assert list_boards(tmp_path / "nope") == []
    with pytest.raises(UserError) as info:
        find_board("qemu-virt", tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"unknown board 'qemu-virt' in {tmp_path}")
    assert "did you mean 'qemu-virt-arm64'" in msg and "known boards: other, qemu-virt-arm64" in msg


ERRORS = [
    pytest.param(
        'arch = "arm64"',
        'arch = "aarch64"',
        "board.arch",
        "arch = ",
        "unknown architecture 'aarch64'; expected one of: arm64, armhf, amd64",
        id="arch",
    ),
    pytest.param(
        'boot = "direct"',
        'boot = "efi"',
        "board.boot",
        "boot = ",
        "expected one of: direct, rpi, uboot, uki",
        id="boot",
    ),
    pytest.param(
        'table = "gpt"',
        'table = "dos"',
        "disk.table",
        "table = ",
        "expected one of: gpt, mbr",
        id="table",
    ),
    pytest.param(
        'name = "qemu-virt-arm64"',
        'name = "qemu-virt"',
        "board.name",
        'name = "qemu-virt"',
        "must equal the file name 'qemu-virt-arm64'",
        id="name-mismatch",
    ),
    pytest.param(
        "smp = 1", 'smp = "1"', "qemu.smp", "smp = ", "expected an int, got string", id="smp-type"
    ),
    pytest.param("smp = 1", "smp = 0", "qemu.smp", "smp = ", "out of range", id="smp-range"),
    pytest.param(
        'memory = "512M"',
        'memory = "lots"',
        "qemu.memory",
        "memory = ",
        "invalid value 'lots'",
        id="memory",
    ),
    pytest.param(
        "boot_size_mib = 64",
        "boot_size = 64",
        "disk.boot_size",
        "boot_size = ",
        "did you mean 'boot_size_mib'",
        id="unknown-key",
    ),
    pytest.param(
        'modules = ["virtio_blk", "virtio_net", "erofs", "dm_verity", "ext4", "i6300esb"]',
        'modules = "virtio_blk"',
        "kernel.modules",
        "modules = ",
        "expected a list of strings, got string",
        id="modules-type",
    ),
    pytest.param(
        'package = "linux-image-arm64"\n',
        "",
        "kernel.package",
        "[kernel]",
        "required key 'package' is missing",
        id="missing-key",
    ),
    pytest.param(
        'device_prefix = "/dev/vda"',
        'device_prefix = "vda"',
        "disk.device_prefix",
        "device_prefix",
        "must be an absolute path",
        id="device-prefix",
    ),
    pytest.param(
        "[qemu]",
        "[qemu]\n[qemux]\nfoo = 1",
        "qemux",
        "[qemux]",
        "did you mean 'qemu'",
        id="section",
    ),
]


@pytest.mark.parametrize(("old", "new", "field", "marker", "fragment"), ERRORS)
def test_validation_errors(
    tmp_path: Path, old: str, new: str, field: str, marker: str, fragment: str
) -> None:
    assert old in TEXT
    text = TEXT.replace(old, new, 1)
    path = write_board(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_board(path)
    assert str(info.value).startswith(f"{path}:{line_no(text, marker)}: {field}: "), info.value
    assert fragment in str(info.value)


def test_missing_section(tmp_path: Path) -> None:
    path = write_board(tmp_path, TEXT[: TEXT.index("[qemu]")])
    with pytest.raises(UserError) as info:
        load_board(path)
    assert str(info.value) == f"{path}: qemu: required section [qemu] is missing"


def test_syntax_error(tmp_path: Path) -> None:
    text = TEXT.replace("smp = 1", "smp = ")
    path = write_board(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_board(path)
    assert str(info.value).startswith(f"{path}:{line_no(text, 'smp = ')}: TOML syntax error: ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="file not found"):
        load_board(tmp_path / "nope.toml")
