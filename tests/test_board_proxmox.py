"""The proxmox board (q35 + OVMF + virtio-scsi, UKI boot path) and `publish --to proxmox`:
a qcow2 plus the `qm` command, boot-tested the way a Proxmox node starts that VM."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from appliancekit.boottest import boot_once, probes_from_manifest
from appliancekit.errors import UserError
from appliancekit.manifest import load_manifest
from appliancekit.probes import forwards_for
from appliancekit.publish.proxmox import OVMF_VARS, VmSpec, qemu_config, qm_create
from tests.conftest import ApplianceCache, run_cli


def _qm_options(argv: list[str]) -> dict[str, str]:
    options = argv[3:]
    return dict(zip(options[::2], options[1::2], strict=True))


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (VmSpec(vmid=99, name="ok"), "--vmid"),
        (VmSpec(vmid=100, name="bad_name!"), "--vm-name"),
        (VmSpec(vmid=100, name="ok", storage="local lvm"), "--storage"),
        (VmSpec(vmid=100, name="ok", bridge="vmbr0;reboot"), "--bridge"),
    ],
)
def test_vm_spec_refuses_what_qm_would_refuse(spec: VmSpec, field: str) -> None:
    with pytest.raises(UserError) as err:
        spec.check()
    assert err.value.field == field


def test_boot_test_machine_is_the_machine_qm_creates(tmp_path: Path) -> None:
    """The QEMU command line the test boots and the `qm create` a user runs come from one
    spec; they must agree on what decides whether the appliance boots."""
    vm = VmSpec(vmid=123, name="guest", memory_mib=768, cores=2)
    qm = _qm_options(qm_create(vm, "x.qcow2"))
    config = qemu_config(vm, tmp_path / "x.qcow2", tmp_path / "vars.fd")
    assert qm["--machine"] == "q35" and config.machine.split(",")[0] == "q35"
    assert qm["--bios"] == "ovmf" and "efitype=4m" in qm["--efidisk0"]
    assert "pre-enrolled-keys=0" in qm["--efidisk0"]  # the UKI is unsigned
    assert config.memory == f"{qm['--memory']}M" and config.smp == int(qm["--cores"])
    assert qm["--scsihw"] == "virtio-scsi-single"  # a controller per disk, as qemu.py adds
    assert qm["--boot"] == "order=scsi0" and config.drives[0].device == "scsi-hd"
    assert config.drives[0].format == "qcow2"
    assert qm["--net0"].startswith("virtio,") and config.net_device.startswith("virtio-net")
    assert qm["--serial0"] == "socket"  # the console the image's kernel writes to (ttyS0)


@pytest.mark.slow
def test_homepage_boots_on_the_proxmox_board(appliances: ApplianceCache) -> None:
    report = appliances.boot("homepage", "proxmox")
    assert report.passed, f"{report.failure}\n{report.serial_tail}"
    manifest = appliances.build("homepage", "proxmox").manifest
    assert "root=" not in manifest.kernel_cmdline or "/dev/sda" in manifest.kernel_cmdline


@pytest.mark.slow
def test_publish_proxmox_qcow2_boots_as_proxmox_starts_it(
    appliances: ApplianceCache, tmp_path: Path
) -> None:
    image = appliances.build("homepage", "proxmox").output_dir
    out = tmp_path / "release"
    result = run_cli(
        "publish", str(image), "--to", "proxmox", "--out", str(out), "--vmid", "321",
        "-s", "hostname=pve-guest", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    published = json.loads(result.stdout)
    assert published["vmid"] == 321 and published["settings"] == ["hostname"]
    manifest = load_manifest(image)
    qcow2 = out / f"{manifest.name}.qcow2"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["SHA256SUMS", qcow2.name, "manifest.json", "qm-create.sh"]
    )
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out, check=True)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(qcow2)],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == manifest.disk.size
    # zero blocks stay unallocated: the qcow2 is far smaller than the disk it holds
    assert qcow2.stat().st_size < manifest.disk.size // 4
    script = (out / "qm-create.sh").read_text()
    subprocess.run(["sh", "-n", str(out / "qm-create.sh")], check=True)
    assert "qm create 321 " in script and f"import-from=$PWD/{qcow2.name}" in script

    settings = {**manifest.settings, "hostname": "pve-guest"}
    probes = probes_from_manifest(manifest, settings)
    vm = VmSpec(vmid=321, name="pve-guest")
    vars_copy = tmp_path / "efidisk0.fd"
    shutil.copyfile(OVMF_VARS, vars_copy)
    # boot a copy: the published file stays as published
    disk = tmp_path / "vm-321-disk-0.qcow2"
    shutil.copyfile(qcow2, disk)
    config = qemu_config(vm, disk, vars_copy, forwards_for(probes, manifest.ports))
    boot = boot_once(config, tmp_path / "boot", probes, timeout=240)
    assert boot.passed, f"{boot.failure}\n{boot.tail}"
    assert "appliancekit: switching root" in boot.serial


@pytest.mark.slow
def test_publish_proxmox_refuses_an_arm_image(homepage_image: Path, tmp_path: Path) -> None:
    result = run_cli(
        "publish", str(homepage_image), "--to", "proxmox", "--out", str(tmp_path / "r")
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--board proxmox" in result.stderr
    assert not (tmp_path / "r").exists()
