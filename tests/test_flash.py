"""`appliancekit flash` to regular files (and a loop device when one can be set up):
only mapped blocks written, read back, settings.env on the boot partition, refusals
before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliancekit.disk import extract_fat_file
from appliancekit.errors import UserError
from appliancekit.flash import flash, flash_to_file, read_device_settings
from appliancekit.manifest import load_manifest
from appliancekit.publish.image import open_image_dir
from appliancekit.publish.sdcard import publish_sdcard
from tests.test_publish_support import (
    MIB,
    cli_inprocess,
    copy_image_dir,
    flip_byte,
    make_image,
    needs_disk_tools,
    sha256_of,
)

pytestmark = needs_disk_tools


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image(tmp_path_factory.mktemp("flash") / "img")


@pytest.fixture(scope="module")
def release_dir(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return publish_sdcard(image_dir, tmp_path_factory.mktemp("rel") / "release", level=3).directory


def partition_sha(path: Path, image_dir: Path, name: str) -> str:
    part = load_manifest(image_dir).partition(name)
    return sha256_of(path, part.offset, part.size)


def test_flash_an_image_dir_to_a_file_writes_an_identical_image(
    image_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "card.img"
    result = flash(image_dir, target, yes=True)
    manifest = load_manifest(image_dir)
    assert sha256_of(target) == manifest.disk.sha256 == result.image_sha256
    assert result.verified and result.target_kind == "file" and result.source_kind == "image"
    assert result.written_bytes == result.mapped_bytes < result.image_size // 4
    assert os.stat(target).st_size == manifest.disk.size


def test_flash_a_release_dir_and_truncate_an_existing_file(
    release_dir: Path, image_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "card.img"
    target.write_bytes(b"\xff" * (3 * MIB))  # stale content must not survive in a file target
    result = flash(release_dir, target, yes=True)
    assert result.source_kind == "release"
    assert sha256_of(target) == load_manifest(image_dir).disk.sha256


def test_settings_go_to_settings_env_and_sealed_partitions_stay_identical(
    image_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "card.img"
    result = flash_to_file(image_dir, target, {"hostname": "pi-7", "domain": "example.net"})
    assert result.settings == {"hostname": "pi-7", "domain": "example.net"}
    manifest = load_manifest(image_dir)
    boot = manifest.partition("ak-boot")
    extract_fat_file(target, boot.offset, "settings.env", tmp_path / "settings.env")
    text = (tmp_path / "settings.env").read_text()
    assert "hostname=pi-7\n" in text and "domain=example.net\n" in text
    for name in ("ak-root-a", "ak-root-b"):
        assert partition_sha(target, image_dir, name) == partition_sha(
            image_dir / "disk.img", image_dir, name
        )
    # the GPT is untouched too
    assert sha256_of(target, 0, boot.offset) == sha256_of(
        image_dir / "disk.img", 0, boot.offset
    )
    # the boot partition's other files are still there
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{target}@@{boot.offset}", "::/"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    ).stdout
    assert "vmlinuz" in listing and "cmdline.txt" in listing


def test_settings_merge_over_a_settings_env_baked_into_the_image(tmp_path: Path) -> None:
    image = make_image(
        tmp_path / "baked",
        boot_files={
            "vmlinuz": b"k" * 5000,
            "settings.env": b"# defaults\ndomain=old.example\nntp=pool.ntp.org\n",
        },
    )
    target = tmp_path / "card.img"
    flash(image, target, settings={"domain": "new.example", "hostname": "h1"}, yes=True)
    assert read_device_settings(target, load_manifest(image)) == {
        "domain": "new.example",
        "hostname": "h1",
        "ntp": "pool.ntp.org",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-s", "Hostname=x"], "'Hostname' is not a per-device setting of synthetic"),
        (["-s", "site=/etc"], "(per-device: data_volume, domain, hostname, motd, net_address, net_address6, net_gateway, net_interface, port, token, update_allow_downgrade, update_interval, update_status_port, update_url, update_window)"),
        (["-s", "hostname=-bad-"], "not a host name"),
        (["-s", "hostname=a..b"], "not a host name"),
        (["-s", "domain=not_a_domain", "-s", "port=garbage"], "is not a domain name"),
        (["-s", "port=garbage"], "-s port: int setting: expected an int"),
        (["-s", "motd=caf\u00e9"], "printable ASCII"),
        (["-s", "motd=a b;}"], "which configuration files would read as syntax"),
        (["-s", "nothing"], "NAME=VALUE"),
    ],
)
def test_bad_settings_are_refused_before_writing(
    image_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    target = tmp_path / "card.img"
    result = cli_inprocess("flash", str(image_dir), str(target), "--yes", *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not target.exists()


def test_settings_toml_file(image_dir: Path, tmp_path: Path) -> None:
    toml = tmp_path / "pi.toml"
    toml.write_text('hostname = "from-toml"\ndomain = "example.org"\nport = 8080\n')
    target = tmp_path / "card.img"
    proc = cli_inprocess(
        "flash",
        str(image_dir),
        str(target),
        "--settings",
        str(toml),
        "-s",
        "hostname=from-cli",
        "--json",
    )
    assert proc.exit_code == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["settings"] == {"hostname": "from-cli", "domain": "example.org", "port": "8080"}
    assert read_device_settings(target, load_manifest(image_dir))["hostname"] == "from-cli"
    bad = tmp_path / "bad.toml"
    bad.write_text('hostname = "ok"\n[nested]\nx = 1\n')
    proc = cli_inprocess(
        "flash", str(image_dir), str(tmp_path / "other.img"), "--settings", str(bad)
    )
    assert proc.exit_code == 2 and "bad.toml:2" in proc.stderr and "nested" in proc.stderr
    assert not (tmp_path / "other.img").exists()


def test_a_corrupt_image_is_refused_before_anything_is_written(
    image_dir: Path, tmp_path: Path
) -> None:
    bad = copy_image_dir(image_dir, tmp_path / "bad")
    flip_byte(bad / "disk.img", load_manifest(bad).partition("ak-root-a").offset + 4242)
    target = tmp_path / "card.img"
    target.write_bytes(b"precious")
    with pytest.raises(UserError, match="checksum mismatch"):
        flash(bad, target, yes=True)
    assert target.read_bytes() == b"precious"


def test_a_tampered_release_is_refused_before_anything_is_written(
    release_dir: Path, tmp_path: Path
) -> None:
    for victim in ("img.zst", "img.bmap"):
        bad = copy_image_dir(release_dir, tmp_path / victim)
        path = next(bad.glob(f"*.{victim}"))
        flip_byte(path, path.stat().st_size // 2)
        target = tmp_path / f"{victim}.card"
        with pytest.raises(UserError, match="checksum mismatch"):
            flash(bad, target, yes=True)
        assert not target.exists()


def test_dry_run_writes_nothing_and_shows_the_ranges(image_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "card.img"
    proc = cli_inprocess("flash", str(image_dir), str(target), "--dry-run", "-s", "hostname=dry")
    assert proc.exit_code == 0, proc.stderr
    assert (
        "would write" in proc.stdout and "ranges" in proc.stdout and "hostname=dry" in proc.stdout
    )
    bmap = open_image_dir(image_dir).bmap
    assert f"would write {bmap.mapped_bytes} bytes" in proc.stdout
    assert not target.exists()


def test_refuses_to_overwrite_its_own_source(image_dir: Path, tmp_path: Path) -> None:
    copy = copy_image_dir(image_dir, tmp_path / "self")
    with pytest.raises(UserError, match="source image itself"):
        flash(copy, copy / "disk.img", yes=True)


def test_cli_flash_prints_throughput_and_verification(
    cli: object, release_dir: Path, tmp_path: Path
) -> None:
    proc = cli("flash", str(release_dir), str(tmp_path / "c.img"), "-s", "hostname=cli")  # type: ignore[operator]
    assert proc.returncode == 0, proc.stderr
    assert "MiB/s" in proc.stdout and "verified" in proc.stdout and "hostname=cli" in proc.stdout


# --- a real block device, when this environment lets us make a loop device -----------


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("needs root and losetup")
    backing = tmp_path / "loop-backing.img"
    with open(backing, "wb") as f:
        f.truncate(256 * MIB)
    proc = subprocess.run(
        ["losetup", "-f", "-P", "--show", str(backing)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"no loop device: {proc.stderr.strip()}")
    device = Path(proc.stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["partx", "-d", str(device)], capture_output=True)
        subprocess.run(["losetup", "-d", str(device)], check=False)


def test_flash_a_loop_device(image_dir: Path, loop_device: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a removable device"):
        flash(image_dir, loop_device, yes=True)
    with pytest.raises(UserError, match="pass --yes"):
        flash(image_dir, loop_device, force=True, interactive=False)
    result = flash(image_dir, loop_device, force=True, yes=True, settings={"hostname": "loopy"})
    assert result.target_kind == "block" and result.verified
    manifest = load_manifest(image_dir)
    for name in ("ak-root-a",):
        assert partition_sha(loop_device, image_dir, name) == partition_sha(
            image_dir / "disk.img", image_dir, name
        )
    assert read_device_settings(loop_device, manifest) == {"hostname": "loopy"}
    # put ext4 on its data partition and mount it: now the device is refused as mounted.
    # (Without udev there may be no /dev node for the partition, and the kernel may lack
    # GPT support: partx adds the partitions, mknod makes a node.)
    subprocess.run(["partx", "-a", str(loop_device)], capture_output=True)
    dev_file = Path("/sys/class/block") / f"{loop_device.name}p4" / "dev"
    if not dev_file.exists():
        pytest.skip("the kernel shows no partitions on the loop device")
    major, minor = (int(x) for x in dev_file.read_text().split(":"))
    node = tmp_path / "p4"
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
    subprocess.run(["mkfs.ext4", "-q", "-F", str(node)], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-o", "ro", str(node), str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount the loop partition here")
    try:
        with pytest.raises(UserError, match=f"{loop_device.name}p4 is mounted at {mnt}"):
            flash(image_dir, loop_device, force=True, yes=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --- real-sized secrets and EC2 user-data ----------------------------------------------


def pem_chain(tmp_path: Path) -> bytes:
    """A full chain as a CA hands it out (leaf + two intermediates, RSA 4096 like Let's
    Encrypt's): 5-6 KB of PEM."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:4096",
        "-nodes",
        "-keyout",
        "root.key",
        "-out",
        "root.pem",
        "-subj",
        "/CN=Test Root",
        "-days",
        "30",
    )
    chain = b""
    issuer = "root"
    for name in ("int1", "int2", "leaf"):
        openssl(
            "req",
            "-new",
            "-key",
            "root.key",  # one 4096-bit key for all: the chain's size is the same, keygen slow
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}.example.org",
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{issuer}.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "30",
        )
        chain = (tmp_path / f"{name}.pem").read_bytes() + chain
        issuer = name
    return chain


def test_a_real_sized_certificate_chain_is_flashed_and_fits_user_data(
    image_dir: Path, tmp_path: Path
) -> None:
    import base64

    chain = pem_chain(tmp_path)
    value = base64.b64encode(chain).decode()
    assert len(chain) >= 3500 and 5000 <= len(value) <= 7500 + 2000, (len(chain), len(value))
    toml = tmp_path / "device.toml"  # a secret: kept off the command line
    toml.write_text(f'hostname = "mx1"\ntoken = "{value}"\n')
    target = tmp_path / "card.img"
    proc = cli_inprocess("flash", str(image_dir), str(target), "--settings", str(toml), "--json")
    assert proc.exit_code == 0, proc.stderr
    shown = json.loads(proc.stdout)["settings"]
    assert shown["token"] == f"(secret, {len(value)} characters)" and value not in proc.stdout
    on_card = read_device_settings(target, load_manifest(image_dir))
    assert on_card is not None and base64.b64decode(on_card["token"]) == chain
    out = tmp_path / "user-data"
    proc = cli_inprocess("user-data", str(image_dir), "--settings", str(toml), "-o", str(out))
    assert proc.exit_code == 0, proc.stderr
    assert value not in proc.stdout and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert f"token={value}\n" in out.read_text() and "hostname=mx1\n" in out.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-s", "domain=not_a_domain"], "-s domain: domain setting: 'not_a_domain' is not a"),
        (["-s", "site=/etc"], "'site' is not a per-device setting of synthetic"),
        (["-s", "motd=" + "x" * 9000, "-s", "token=" + "y" * 9000], "EC2 takes at most 16384"),
    ],
)
def test_user_data_refuses_what_flash_refuses(
    image_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "user-data"
    proc = cli_inprocess("user-data", str(image_dir), "-o", str(out), *args)
    assert proc.exit_code == 2 and message in proc.stderr and proc.stderr.count("\n") == 1
    assert not out.exists()


def test_user_data_to_stdout(image_dir: Path) -> None:
    proc = cli_inprocess("user-data", str(image_dir), "-s", "hostname=web-1", "-s", "port=80")
    assert proc.exit_code == 0, proc.stderr
    assert proc.stdout.splitlines()[1:] == ["hostname=web-1", "port=80"]
