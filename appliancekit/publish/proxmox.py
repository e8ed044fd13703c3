"""`publish --to proxmox`: a qcow2 disk and the `qm` commands that make a Proxmox VM of it.

    NAME.qcow2      the image (with any per-device settings in settings.env on its ESP),
                    converted by qemu-img; zero blocks stay unallocated
    qm-create.sh    the `qm` command that creates the VM and imports the disk (run it on
                    the Proxmox node, next to NAME.qcow2)
    manifest.json   the image's manifest, unchanged
    SHA256SUMS      of the files above

One `VmSpec` describes the VM. It renders both the `qm` command and the QEMU command line
Proxmox starts for that configuration (q35, OVMF with a 4 MiB EFI disk and no enrolled
keys, a virtio-scsi controller with the disk as scsi0, a virtio NIC, the serial console), so
the boot test runs the published qcow2 the way the Proxmox node will, from the same data.
Uploading through the Proxmox API is not done: it cannot be tested without a Proxmox server.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from appliancekit.digest import sha256_file
from appliancekit.errors import ToolError, UserError
from appliancekit.flash import flash_to_file
from appliancekit.manifest import load_manifest
from appliancekit.publish.image import SHA256SUMS, sha256sums_text
from appliancekit.qemu import Drive, PortForward, QemuConfig

# Proxmox's OVMF for `efitype=4m`: the Secure-Boot-capable code with an empty variable store
# (pre-enrolled-keys=0), so the unsigned UKI boots. The code needs SMM and a secure pflash.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
QM_SCRIPT = "qm-create.sh"
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$")
_STORAGE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class VmSpec:
    """A Proxmox VM for one appliance image."""

    vmid: int
    name: str
    memory_mib: int = 512
    cores: int = 1
    storage: str = "local-lvm"  # where the EFI disk and the imported disk go
    bridge: str = "vmbr0"

    def check(self) -> VmSpec:
        if not 100 <= self.vmid <= 999_999_999:
            raise UserError(f"VM id {self.vmid} is outside Proxmox's 100..999999999", field="--vmid")
        if not _NAME.match(self.name):
            raise UserError(f"VM name {self.name!r} is not a DNS name", field="--vm-name")
        for option, value in (("--storage", self.storage), ("--bridge", self.bridge)):
            if not _STORAGE.match(value):
                raise UserError(f"{option} {value!r} is not a Proxmox identifier", field=option)
        return self


def qm_create(vm: VmSpec, qcow2_name: str) -> list[str]:
    """The `qm create` argv: the VM and its disks in one call (`import-from`, Proxmox VE
    >= 7.2, copies the qcow2 into the storage)."""
    return [
        "qm", "create", str(vm.vmid),
        "--name", vm.name,
        "--ostype", "l26",
        "--machine", "q35",
        "--bios", "ovmf",
        "--efidisk0", f"{vm.storage}:1,efitype=4m,pre-enrolled-keys=0",
        "--memory", str(vm.memory_mib),
        "--cores", str(vm.cores),
        "--scsihw", "virtio-scsi-single",
        "--scsi0", f"{vm.storage}:0,import-from=$PWD/{qcow2_name}",
        "--boot", "order=scsi0",
        "--net0", f"virtio,bridge={vm.bridge}",
        "--serial0", "socket",
        "--vga", "serial0",
    ]  # fmt: skip


def qm_script(vm: VmSpec, qcow2_name: str, image_sha256: str) -> str:
    argv = qm_create(vm, qcow2_name)
    # $PWD must expand on the node: quote everything else
    rendered = " ".join(
        f'"{a}"' if "$PWD" in a else shlex.quote(a) for a in argv
    )
    return (
        "#!/bin/sh\n"
        f"# Creates Proxmox VM {vm.vmid} ({vm.name}) from {qcow2_name}; run on the Proxmox node\n"
        "# in the directory holding the qcow2. Then: qm start "
        f"{vm.vmid} && qm terminal {vm.vmid}\n"
        "set -eu\n"
        f"echo '{image_sha256}  {qcow2_name}' | sha256sum -c -\n"
        f"{rendered}\n"
    )


def qemu_config(
    vm: VmSpec, disk: Path, vars_copy: Path, forwards: tuple[PortForward, ...] = ()
) -> QemuConfig:
    """What Proxmox runs for `qm_create(vm)`, with user-mode networking standing in for the
    bridge so the host can probe the guest. `vars_copy` is the VM's EFI disk (a copy of the
    empty variable store, as `efidisk0` is)."""
    return QemuConfig(
        binary="qemu-system-x86_64",
        machine="q35,smm=on",
        cpu="max",
        memory=f"{vm.memory_mib}M",
        smp=vm.cores,
        drives=(Drive(disk, device="scsi-hd", format="qcow2"),),
        net_device="virtio-net-pci,romfile=",
        forwards=forwards,
        extra_args=(
            "-global", "driver=cfi.pflash01,property=secure,value=on",
            "-drive", f"if=pflash,unit=0,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,unit=1,format=raw,file={vars_copy}",
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class ProxmoxRelease:
    directory: Path
    qcow2: Path
    script: Path
    image_sha256: str  # of the raw image the qcow2 holds (settings included)
    qcow2_sha256: str
    qcow2_size: int
    vm: VmSpec
    settings: dict[str, str]

    def to_json(self) -> dict:
        return {
            "to": "proxmox",
            "directory": str(self.directory),
            "qcow2": str(self.qcow2),
            "qcow2_sha256": self.qcow2_sha256,
            "qcow2_size": self.qcow2_size,
            "image_sha256": self.image_sha256,
            "script": str(self.script),
            "qm": qm_create(self.vm, self.qcow2.name),
            "vmid": self.vm.vmid,
            "settings": sorted(self.settings),  # names only: values may be secrets
        }


def publish_proxmox(
    image_dir: Path,
    out_dir: Path,
    vm: VmSpec,
    *,
    settings: Mapping[str, str] | None = None,
) -> ProxmoxRelease:
    """Write out_dir/{NAME.qcow2, qm-create.sh, manifest.json, SHA256SUMS}. The image is
    verified (flash's checks: SHA256SUMS, block map, settings) before anything is written,
    and out_dir appears whole or not at all."""
    vm.check()
    manifest = load_manifest(Path(image_dir))
    if (manifest.arch, manifest.boot) != ("amd64", "uki"):
        raise UserError(
            f"{image_dir} is not a UEFI x86_64 image (board {manifest.board}): build it for"
            " --board proxmox",
            file=Path(image_dir) / "manifest.json",
        )
    if shutil.which("qemu-img") is None:
        raise ToolError("qemu-img not found: apt-get install qemu-utils")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    qcow2_name = f"{manifest.name}.qcow2"
    with tempfile.TemporaryDirectory(prefix=".proxmox-", dir=out_dir.parent) as tmp:
        stage = Path(tmp) / "release"
        stage.mkdir()
        raw = Path(tmp) / "disk.img"
        flashed = flash_to_file(Path(image_dir), raw, dict(settings or {}))
        image_sha256 = sha256_file(raw)
        qcow2 = stage / qcow2_name
        _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-c", str(raw), str(qcow2)])
        _run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", str(raw), str(qcow2)])
        qcow2_sha256 = sha256_file(qcow2)
        script = stage / QM_SCRIPT
        script.write_text(qm_script(vm, qcow2_name, qcow2_sha256))
        script.chmod(0o755)
        shutil.copyfile(Path(image_dir) / "manifest.json", stage / "manifest.json")
        sums = {
            name: sha256_file(stage / name) for name in (qcow2_name, QM_SCRIPT, "manifest.json")
        }
        (stage / SHA256SUMS).write_text(sha256sums_text(sums))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        stage.rename(out_dir)
    qcow2 = out_dir / qcow2_name
    return ProxmoxRelease(
        directory=out_dir,
        qcow2=qcow2,
        script=out_dir / QM_SCRIPT,
        image_sha256=image_sha256,
        qcow2_sha256=sums[qcow2_name],
        qcow2_size=qcow2.stat().st_size,
        vm=vm,
        settings=flashed.settings,
    )


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ToolError(f"{argv[0]} {argv[1]} failed: {detail[-1] if detail else result.returncode}")
