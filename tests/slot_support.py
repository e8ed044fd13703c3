"""Host-side helpers for the loader slot tests: write a built disk image the way the update
agent writes a device (slot B from slot A's release, then arm or commit through the board's
own loader files), and boot it until the initramfs says which slot the loader started.

Everything goes through mtools on the image file and plain writes at partition offsets, so
the loader (systemd-boot under OVMF, U-Boot on QEMU's cubieboard) finds exactly the files
the agent would leave on hardware.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from appliancekit.board import Board, BootPath
from appliancekit.boot import rpi, sdboot, tryboot, ubootcount
from appliancekit.boottest import qemu_config
from appliancekit.imds import ImdsServer
from appliancekit.manifest import Manifest
from appliancekit.qemu import Drive, Machine, QemuConfig

MIB = 1 << 20
# what the initramfs prints once the slot's sealed root is mounted (the U-Boot script's own
# "appliancekit: slot X (upgrade_available ...)" line does not match)
SLOT_MARKER = re.compile(
    r"appliancekit: slot ([ab]) \(root hash|appliancekit: FATAL.*|Kernel panic.*"
)
_MTOOLS = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}


@dataclass(frozen=True)
class Fat:
    """The boot partition (FAT) inside a disk image."""

    disk: Path
    offset: int

    @property
    def spec(self) -> str:
        return f"{self.disk}@@{self.offset}"

    def listdir(self, directory: str) -> list[str]:
        out = subprocess.run(
            ["mdir", "-b", "-i", self.spec, f"::/{directory}".rstrip("/") or "::/"],
            capture_output=True,
            text=True,
            env=_MTOOLS,
            check=True,
        ).stdout
        return sorted(line.rstrip("/").rsplit("/", 1)[-1] for line in out.split())

    def read(self, path: str) -> bytes:
        out = subprocess.run(
            ["mcopy", "-n", "-i", self.spec, f"::/{path}", "-"],
            capture_output=True,
            env=_MTOOLS,
            check=True,
        )
        return out.stdout

    def write(self, path: str, data: bytes, scratch: Path) -> None:
        """A new file beside the target, then a rename over it, as the agent does."""
        scratch.write_bytes(data)
        directory, _, name = path.rpartition("/")
        if directory:
            subprocess.run(["mmd", "-D", "s", "-i", self.spec, f"::/{directory}"], env=_MTOOLS)
        temporary = f"{directory}/.{name}.new" if directory else f".{name}.new"
        self._run("mcopy", "-o", scratch, f"::/{temporary}")
        self.delete(path)
        self.rename(temporary, path)

    def rename(self, old: str, new: str) -> None:
        """Rename within a directory: `new` is a name or a path in the same directory."""
        directory = old.rpartition("/")[0]
        name = new.rsplit("/", 1)[-1]
        self._run("mren", f"::/{old}", f"::/{directory}/{name}" if directory else f"::/{name}")

    def delete(self, path: str) -> None:
        subprocess.run(["mdel", "-i", self.spec, f"::/{path}"], env=_MTOOLS, capture_output=True)

    def _run(self, tool: str, *args: object) -> None:
        subprocess.run([tool, "-i", self.spec, *map(str, args)], env=_MTOOLS, check=True)


def boot_fat(disk: Path, manifest: Manifest) -> Fat:
    return Fat(disk, manifest.partition("ak-boot").offset)


def copy_root_slot(disk: Path, manifest: Manifest, source: str, target: str) -> None:
    """The agent's slot write: slot `source`'s root partition content into slot `target`."""
    src = manifest.partition(manifest.slot(source).partition)
    dst = manifest.partition(manifest.slot(target).partition)
    assert dst.size >= src.size
    with open(disk, "r+b") as f:
        for done in range(0, src.size, MIB):
            f.seek(src.offset + done)
            chunk = f.read(min(MIB, src.size - done))
            f.seek(dst.offset + done)
            f.write(chunk)


def copy_slot_files(fat: Fat, manifest: Manifest, source: str, target: str, scratch: Path) -> None:
    """Slot `source`'s boot files into slot `target`'s directory, unchanged: the release's
    files as the agent writes them (the loader tells the kernel which slot it booted)."""
    src_dir, dst_dir = manifest.slot(source).boot_dir, manifest.slot(target).boot_dir
    for name in fat.listdir(src_dir):
        fat.write(f"{dst_dir}/{name}", fat.read(f"{src_dir}/{name}"), scratch / name)


# -- the loaders' files, written as the agent writes them ---------------------------------------


class SystemdBoot:
    """Arm: the slot's entry with a boot counter and a newer version. Commit: the rename
    systemd-bless-boot does."""

    def __init__(self, fat: Fat, manifest: Manifest, board: Board, scratch: Path) -> None:
        self.fat, self.manifest, self.board, self.scratch = fat, manifest, board, scratch

    def entries(self) -> list[str]:
        return self.fat.listdir(sdboot.ENTRIES_DIR)

    def arm(self, slot: str) -> None:
        versions = [
            int(
                sdboot.parse_entry(self.fat.read(f"{sdboot.ENTRIES_DIR}/{name}").decode())[
                    "version"
                ]
            )
            for name in self.entries()
        ]
        for name in self.entries():
            if sdboot.parse_entry_name(name).slot == slot:
                self.fat.delete(f"{sdboot.ENTRIES_DIR}/{name}")
        entry = sdboot.render_entry(
            slot,
            max(versions, default=0) + 1,
            self.manifest.kernel_cmdline,
            f"appliancekit {self.board.name}",
            sdboot.uki_name(self.board),
        )
        name = sdboot.EntryName(sdboot.entry_id(slot), tries_left=1).file_name
        self.fat.write(f"{sdboot.ENTRIES_DIR}/{name}", entry.encode(), self.scratch / name)

    def commit(self, slot: str) -> None:
        for name in self.entries():
            parsed = sdboot.parse_entry_name(name)
            if parsed.slot == slot and parsed.tries_left is not None:
                self.fat.rename(f"{sdboot.ENTRIES_DIR}/{name}", parsed.blessed().file_name)

    def state(self) -> str:
        return " ".join(self.entries())


class UbootCount:
    """Arm: slot=NEW altslot=OLD upgrade_available=1 bootcount=0. Commit:
    upgrade_available=0 bootcount=0."""

    def __init__(self, fat: Fat, manifest: Manifest, board: Board, scratch: Path) -> None:
        self.fat, self.scratch = fat, scratch

    def read(self) -> ubootcount.BootCount:
        return ubootcount.parse_state(self.fat.read(ubootcount.STATE).decode())

    def _write(self, state: ubootcount.BootCount) -> None:
        self.fat.write(ubootcount.STATE, state.render().encode(), self.scratch / "state")

    def arm(self, slot: str) -> None:
        other = "a" if slot == "b" else "b"
        self._write(ubootcount.BootCount(slot, other, upgrade_available=True))

    def commit(self, slot: str) -> None:
        self._write(replace(self.read(), slot=slot, upgrade_available=False, bootcount=0))

    def state(self) -> str:
        return self.read().render().replace("\n", " ").strip()


class RpiTryboot:
    """Arm: the slot's boot partition (its cmdline.txt naming the slot), then autoboot.txt's
    [tryboot] section; the reboot's tryboot flag is the boot's `tryboot_flag`. Commit:
    autoboot.txt's [all] section."""

    def __init__(self, fat: Fat, manifest: Manifest, board: Board, scratch: Path) -> None:
        self.fat, self.manifest, self.scratch = fat, manifest, scratch

    def partition(self, slot: str) -> Fat:
        return Fat(self.fat.disk, self.manifest.partition(tryboot.slot_partition_name(slot)).offset)

    def autoboot(self) -> tryboot.Autoboot:
        return tryboot.parse_autoboot(self.fat.read(tryboot.AUTOBOOT).decode())

    def write_slot(self, source: str, target: str) -> None:
        src, dst = self.partition(source), self.partition(target)
        for name in src.listdir(""):
            data = src.read(name)
            if name == "cmdline.txt":  # the firmware passes it as it is
                data = data.replace(f"ak.slot={source}".encode(), f"ak.slot={target}".encode())
            dst.write(name, data, self.scratch / name)

    def arm(self, slot: str) -> None:
        autoboot = replace(self.autoboot(), trial=tryboot.slot_partition(slot))
        self.fat.write(tryboot.AUTOBOOT, autoboot.render().encode(), self.scratch / "autoboot")

    def commit(self, slot: str) -> None:
        autoboot = tryboot.Autoboot(committed=tryboot.slot_partition(slot))
        self.fat.write(tryboot.AUTOBOOT, autoboot.render().encode(), self.scratch / "autoboot")

    def state(self) -> str:
        return self.fat.read(tryboot.AUTOBOOT).decode().split("\n", 1)[1].replace("\n", " ")


LOADERS = {"systemd-boot": SystemdBoot, "uboot-bootcount": UbootCount, "rpi-tryboot": RpiTryboot}


# -- booting ------------------------------------------------------------------------------------


def writable_uefi_vars(board: Board, vars_copy: Path) -> tuple[str, ...]:
    """The board's QEMU arguments with its UEFI variable store as a persistent, writable
    copy (the boards' own arguments throw writes away with snapshot=on)."""
    args = list(board.qemu.extra_args)
    for i, arg in enumerate(args):
        match = re.fullmatch(r"if=pflash,format=raw,snapshot=on,file=(.+)", arg)
        if match:
            if not vars_copy.exists():
                shutil.copyfile(match.group(1), vars_copy)
            args[i] = f"if=pflash,format=raw,file={vars_copy}"
    return tuple(args)


def boot_to_slot(
    board: Board,
    disk: Path,
    manifest: Manifest,
    workdir: Path,
    timeout: float = 900.0,
    *,
    tryboot_flag: bool = False,
) -> tuple[str, str, float]:
    """Power on the (writable) disk, wait until the initramfs has mounted a slot's root,
    pull the plug. Returns (slot, serial log, seconds). `tryboot_flag`: the Pi firmware
    stand-in applies autoboot.txt's [tryboot] section, as after `reboot "0 tryboot"`."""
    workdir.mkdir(parents=True, exist_ok=True)
    if board.boot == BootPath.RPI:
        boot = rpi.qemu_boot(disk, manifest, board, workdir, tryboot_flag=tryboot_flag)
        drive = Drive(disk, device=board.qemu.disk_device, snapshot=False)
        config = QemuConfig.from_spec(
            board.qemu,
            kernel=boot.kernel,
            initrd=boot.initrd,
            append=boot.append,
            dtb=boot.dtb,
            drives=(drive,),
        )
    else:
        config = qemu_config(board, disk, manifest, workdir, (), snapshot=False)
    config = replace(config, extra_args=writable_uefi_vars(board, workdir.parent / "vars.fd"))
    with ImdsServer(None) as imds, Machine(config, workdir) as machine:
        if board.qemu.imds:
            machine.config = replace(config, net_options=imds.netdev_options())
        start = time.monotonic()
        machine.start()
        machine.wait_for_serial(SLOT_MARKER, timeout)
        seconds = time.monotonic() - start
        serial = machine.serial_text()
    match = SLOT_MARKER.search(serial)
    assert match and match.group(1), serial[-3000:]
    return match.group(1), serial, seconds
