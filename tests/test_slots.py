"""The two-slot layout and each board's slot switch (issue 12), without building an image."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from appliancekit import slots
from appliancekit.board import find_board
from appliancekit.boot import boot_path
from appliancekit.boot.initramfs import render_init
from appliancekit.boot.slotswitch import Mechanism, render_slots_json
from appliancekit.errors import UserError
from appliancekit.manifest import Manifest
from appliancekit.seal import seal_tree
from tests.conftest import PROJECT
from tests.test_publish_support import make_image

BOARDS = ("qemu-virt-arm64", "ec2-x86_64", "ec2-arm64", "cubieboard", "rpi4", "proxmox")


def test_slot_names_and_numbers() -> None:
    assert [slots.partition_name(s) for s in slots.SLOTS] == ["ak-root-a", "ak-root-b"]
    assert [slots.boot_dir(s) for s in slots.SLOTS] == ["slot-a", "slot-b"]
    assert slots.other("a") == "b" and slots.other("b") == "a"
    # four primary partitions: what an MBR card can hold
    assert sorted(slots.PARTITION_NUMBERS.values()) == [1, 2, 3, 4]
    with pytest.raises(UserError):
        slots.partition_name("c")


def test_slot_partition_leaves_room_to_grow() -> None:
    mib = 1 << 20
    assert slots.slot_partition_bytes(7 * mib) == 32 * mib  # the floor
    assert slots.slot_partition_bytes(100 * mib) == 166 * mib  # 1.5x + 16 MiB
    assert slots.slot_partition_bytes(100 * mib, minimum_mib=512) == 512 * mib


def test_one_partition_per_slot_verifies_with_the_hash_tree_behind_the_data(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hello").write_text("hello\n" * 5000)
    sealed = seal_tree(tree, tmp_path / "seal", "seed", epoch=1)
    image = slots.combine(sealed.erofs_image, sealed.verity_image, tmp_path / "slot.img")
    assert image.hash_offset == sealed.data_blocks * 4096
    assert image.hash_start_block == sealed.data_blocks + 1
    assert image.size == image.path.stat().st_size
    # what the initramfs asks of dm-verity: data and hash tree on the same device
    verify = [
        "veritysetup",
        "verify",
        f"--hash-offset={image.hash_offset}",
        str(image.path),
        str(image.path),
        sealed.root_hash,
    ]
    subprocess.run(verify, check=True, capture_output=True)
    with open(image.path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    assert subprocess.run(verify, capture_output=True).returncode != 0


@pytest.mark.parametrize("name", BOARDS)
def test_every_board_names_its_slot_switch(name: str) -> None:
    board = find_board(name, PROJECT.boards_dir)
    switch = boot_path(board).slot_switch(board)
    document = json.loads(render_slots_json(switch, board))
    assert document["slots"]["b"] == {
        "partition": "ak-root-b",
        "number": 3,
        "boot_dir": "slot-b",
    }
    assert document["mechanism"] == str(switch.mechanism)
    assert switch.arm and switch.commit and switch.fallback
    if switch.implemented:
        assert document["refuse_reason"] == ""
    else:
        # never pretends: the image says updates are refused, and why
        assert "not implemented" in document["refuse_reason"]
        assert "refused" in document["refuse_reason"]


def test_direct_boot_lets_the_initramfs_choose_with_a_watchdog() -> None:
    board = find_board("qemu-virt-arm64", PROJECT.boards_dir)
    switch = boot_path(board).slot_switch(board)
    assert switch.mechanism == Mechanism.INITRAMFS and switch.implemented
    assert switch.tries == 1
    assert switch.watchdog is not None and switch.watchdog.module == "i6300esb"
    init = render_init(board, "6.12.0-test", slots.PARTITION_NUMBERS)
    assert ".appliancekit/slots/state" in init
    assert "heartbeat=" in init
    assert "roothash=%s" in init  # the agent learns what it runs from /run
    # the try is taken off before the trial boots, by rename
    assert init.index("tries - 1") < init.index("find_partition ak-root-b")
    loader_chosen = find_board("cubieboard", PROJECT.boards_dir)
    other = render_init(loader_chosen, "6.12.0-test", slots.PARTITION_NUMBERS)
    assert ".appliancekit/slots/state" not in other and "ak-root-b" in other


def _direct_init(tmp_path: Path) -> Path:
    board = find_board("qemu-virt-arm64", PROJECT.boards_dir)
    script = tmp_path / "init"
    script.write_text(render_init(board, "6.12.0-test", slots.PARTITION_NUMBERS))
    return script


def _slot_choice(init: Path) -> str:
    text = init.read_text()
    return text[text.index("# >>> slot choice") : text.index("# <<< slot choice")]


@pytest.mark.parametrize(
    ("state", "slot", "after", "fell_back"),
    [
        (None, "a", None, ""),
        ("committed=a\ntrial=b\ntries=1\n", "b", "committed=a\ntrial=b\ntries=0\n", ""),
        ("committed=a\ntrial=b\ntries=0\n", "a", "committed=a\ntrial=b\ntries=0\n", "b"),
        ("committed=b\ntrial=\ntries=0\n", "b", "committed=b\ntrial=\ntries=0\n", ""),
        ("garbage", "a", "garbage", ""),
    ],
)
def test_the_initramfs_slot_choice_under_busybox(
    tmp_path: Path, state: str | None, slot: str, after: str | None, fell_back: str
) -> None:
    """The slot choice part of the real init script, run by busybox sh: one try is taken
    off before a trial slot boots; with none left, the committed slot boots."""
    data = tmp_path / "data"
    (data / ".appliancekit/slots").mkdir(parents=True)
    state_file = data / ".appliancekit/slots/state"
    if state is not None:
        state_file.write_text(state)
    boot = tmp_path / "boot"
    for s in ("a", "b"):
        (boot / f"slot-{s}").mkdir(parents=True)
        (boot / f"slot-{s}/cmdline.txt").write_text(
            f"console=x ak.roothash=hash{s} ak.salt=salt{s} ak.datablocks=1{s == 'b':d} ak.slot={s}\n"
        )
    part = _slot_choice(_direct_init(tmp_path)).replace(
        '[ -n "$BOOTPART" ] && umount "$BOOTPART"', ""
    )
    script = (
        "mark() { :; }\nfail() { echo FAIL; exit 1; }\n"
        f"DATA={data}\nBOOTPART={boot}\nSLOT=a\nROOTHASH=hasha\n"
        + part
        + '\necho "slot=$SLOT trial=$TRIAL fell=$FELLBACK hash=$ROOTHASH blocks=$DATABLOCKS"\n'
    )
    out = subprocess.run(
        ["busybox", "sh", "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert f"slot={slot} " in out and f"hash=hash{slot} " in out, out
    assert f"fell={fell_back} " in out
    assert ("trial=1 " in out) == (slot == "b" and state is not None and "tries=1" in state)
    if after is not None:
        assert state_file.read_text() == after
    assert not (state_file.parent / "state.new").exists()


def test_manifest_records_both_slots(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img")
    manifest = Manifest.from_json(json.loads((image / "manifest.json").read_text()))
    assert [s.name for s in manifest.slots] == ["a", "b"]
    assert manifest.slot("b").partition == "ak-root-b"
    assert manifest.root_partition().name == "ak-root-a"
    with pytest.raises(UserError, match="single-slot"):
        manifest.slot("c")
