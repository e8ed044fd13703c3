"""A data volume of its own (the `data_volume` setting `appliancekit deploy` puts in EC2
user-data): the initramfs finds the disk by its serial number, as EBS names an NVMe volume,
and keeps /data there, so a replaced instance (a new root disk) finds the old one's data."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.boottest import boot_once, probes_from_manifest, qemu_config
from appliancekit.devsettings import render_user_data
from appliancekit.imds import ImdsServer
from appliancekit.probes import forwards_for
from appliancekit.qemu import Drive
from tests.conftest import PROJECT, ApplianceCache

VOLUME_ID = "vol-0a1b2c3d4e5f60718"


@pytest.mark.slow
def test_a_replaced_instance_finds_its_data_on_the_volume(
    appliances: ApplianceCache, tmp_path: Path
) -> None:
    board = find_board("ec2-x86_64", PROJECT.boards_dir)
    result = appliances.build("homepage", "ec2-x86_64")
    manifest = result.manifest
    volume = tmp_path / "volume.img"
    volume.write_bytes(b"")
    subprocess.run(["truncate", "-s", "64M", str(volume)], check=True)
    settings = {"hostname": "web", "data_volume": VOLUME_ID}
    probes = probes_from_manifest(manifest, {**manifest.settings, **settings})
    forwards = forwards_for(probes, manifest.ports)
    serials = []
    with ImdsServer(render_user_data(settings, manifest)) as imds:
        # two instances, each with a fresh root disk from the image, one volume between them
        for number in (1, 2):
            root = tmp_path / f"root{number}.img"
            subprocess.run(
                ["cp", "--sparse=always", str(result.output_dir / "disk.img"), str(root)],
                check=True,
            )
            config = qemu_config(board, root, manifest, tmp_path, forwards, snapshot=False)
            config = replace(
                config,
                net_options=imds.netdev_options(),
                drives=(
                    *config.drives,
                    Drive(volume, device="nvme", snapshot=False, serial=VOLUME_ID.replace("-", "")),
                ),
            )
            boot = boot_once(config, tmp_path / f"boot{number}", probes, 240, settle=5.5)
            assert boot.passed, f"{boot.failure}\n{boot.tail}"
            serials.append(boot.serial)
    for serial in serials:
        assert re.search(rf"data on volume {VOLUME_ID} \(nvme\d+n1\)", serial), serial[-2000:]
    assert "first boot: creating the data filesystem" in serials[0]
    assert "creating the data filesystem" not in serials[1]
    # the boot counter lives on /data: the second instance continues the first one's
    assert re.search(r"boot number 1,", serials[0]) and re.search(r"boot number 2,", serials[1])
