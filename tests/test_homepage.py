"""The spine end to end: build, scan, boot, probe, tamper, rebuild the homepage appliance."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.boottest import boot_test
from appliancekit.build import BuildPlan, build
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.digest import sha256_file
from appliancekit.manifest import load_manifest
from appliancekit.output import Reporter
from appliancekit.recipe import find_recipe, resolve_settings
from appliancekit.seal import list_erofs_paths

from .conftest import PROJECT, boot_twice_on_a_bigger_disk, build_appliance, checkout, run_cli

pytestmark = pytest.mark.slow

FORBIDDEN = {
    "sh",
    "bash",
    "dash",
    "busybox",
    "getty",
    "agetty",
    "login",
    "sshd",
    "dpkg",
    "apt",
    "apt-get",
    "su",
    "sudo",
}


def extract_partition(image_dir: Path, name: str, dest: Path) -> Path:
    manifest = load_manifest(image_dir)
    part = manifest.partition(name)
    with open(image_dir / manifest.disk.path, "rb") as src, open(dest, "wb") as out:
        src.seek(part.offset)
        out.write(src.read(part.size))
    return dest


def test_build_outputs(homepage_image: Path) -> None:
    for name in ("disk.img", "manifest.json", "SHA256SUMS", "size-report.json", "size-report.txt"):
        assert (homepage_image / name).is_file(), name
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=homepage_image, check=True)
    manifest = load_manifest(homepage_image)
    assert manifest.recipe == "homepage" and manifest.board == "qemu-virt-arm64"
    assert manifest.suite == "trixie" and manifest.arch == "arm64"
    assert manifest.disk.sha256 == sha256_file(homepage_image / "disk.img")
    names = {p["name"] for p in manifest.packages}
    assert {"nginx", "libc6", "s6", "busybox-static"} <= names
    assert all(len(p["sha256"]) == 64 and p["version"] for p in manifest.packages)
    assert [p.name for p in manifest.disk.partitions] == [
        "ak-boot",
        "ak-root-a",
        "ak-root-b",
        "ak-data",
    ]
    assert [s.partition for s in manifest.slots] == ["ak-root-a", "ak-root-b"]
    assert manifest.sizes.slot_partition_bytes == manifest.partition("ak-root-b").size
    assert manifest.partition("ak-root-b").sha256 is None  # slot B waits for the first update
    assert f"ak.roothash={manifest.verity.root_hash}" in manifest.kernel_cmdline


def test_size_report_shows_minimisation(homepage_image: Path) -> None:
    report = json.loads((homepage_image / "size-report.json").read_text())
    per_package = {p["package"]: p for p in report["packages"]}
    # appliancekit's own programs (update agent, content-sync) are built for the image and
    # have nothing to minimise: the ratio is over what came from Debian packages
    ours = per_package["(appliancekit)"]
    assert ours["bytes_after"] == ours["bytes_before"] > 0
    debian_after = report["bytes_after"] - ours["bytes_after"]
    debian_before = report["bytes_before"] - ours["bytes_before"]
    assert debian_after < debian_before / 3
    assert per_package["nginx"]["bytes_after"] > 0
    assert per_package["debconf"]["bytes_after"] == 0  # no perl-side tooling in an appliance


def test_sealed_root_has_no_shell_or_package_manager(homepage_image: Path, tmp_path: Path) -> None:
    erofs = extract_partition(homepage_image, "ak-root-a", tmp_path / "root.erofs")
    paths = list_erofs_paths(erofs)
    basenames = {p.rsplit("/", 1)[-1] for p in paths}
    assert not (FORBIDDEN & basenames), FORBIDDEN & basenames
    assert "/usr/sbin/nginx" in paths
    # the site is content from git: the image holds its seed, and /srv/www is the link
    # content-sync flips (to the seed until a repository is set)
    assert "/usr/share/appliancekit/content/site/index.html" in paths
    assert "/srv/www" in paths
    assert "/usr/bin/s6-svscan" in paths
    assert {"/etc/hosts", "/etc/resolv.conf", "/etc/passwd", "/etc/os-release"} <= set(paths)
    assert not any(
        p.startswith(("/usr/share/doc", "/usr/share/man", "/usr/share/locale")) for p in paths
    )


def test_boot_test_passes_with_json(homepage_cli_test: dict) -> None:
    report = homepage_cli_test
    assert report["build"]["rebuilt"] is False  # the session's image was reused, not rebuilt
    boot = report["boot_test"]
    assert boot["passed"] is True
    assert boot["boot_to_healthy"] > 0
    assert boot["probes"][0]["ok"] and "HTTP 200" in boot["probes"][0]["detail"]
    assert {"initramfs", "root_mounted", "switch_root"} <= set(boot["markers"])
    assert "first boot: creating the data filesystem" in Path(boot["serial_log"]).read_text()


def _stat_or_none(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


def test_flipped_byte_in_root_fails_boot(homepage_image: Path, tmp_path: Path) -> None:
    manifest = load_manifest(homepage_image)
    image_log_before = _stat_or_none(homepage_image / "serial.log")
    tampered = tmp_path / "tampered.img"
    shutil.copyfile(homepage_image / "disk.img", tampered)
    root = manifest.partition("ak-root-a")
    with open(tampered, "r+b") as disk:
        disk.seek(root.offset + 1024 + 8)  # inside the erofs superblock: read at mount time
        byte = disk.read(1)
        disk.seek(-1, 1)
        disk.write(bytes([byte[0] ^ 0xFF]))
    report = boot_test(
        homepage_image,
        manifest,
        find_board("qemu-virt-arm64", PROJECT.boards_dir),
        disk=tampered,
        timeout=90,
    )
    assert not report.passed
    # the copy's log goes beside the copy, not over the image directory's serial.log
    assert report.serial_log == str(tmp_path / "tampered.img.serial.log")
    assert image_log_before == _stat_or_none(homepage_image / "serial.log")
    serial = Path(report.serial_log).read_text()
    assert "verity" in serial and "is corrupted" in serial, (report.failure, serial[-2000:])
    assert "switching root" not in serial


def test_rebuild_is_reproducible(homepage_image: Path, tmp_path: Path) -> None:
    first = load_manifest(homepage_image)
    again = build_appliance("homepage", "qemu-virt-arm64", tmp_path, force=True)
    assert again.rebuilt
    assert again.manifest.disk.sha256 == first.disk.sha256
    assert again.manifest.verity.root_hash == first.verity.root_hash


def test_unchanged_rebuild_is_a_no_op(homepage_image: Path) -> None:
    again = build_appliance("homepage", "qemu-virt-arm64", homepage_image.parent)
    assert not again.rebuilt


def test_site_setting_changes_the_image(tmp_path: Path) -> None:
    site = tmp_path / "public"
    site.mkdir()
    (site / "index.html").write_text("<p>my own site</p>\n")
    images = tmp_path / "images"
    result = run_cli(
        "build",
        "homepage",
        "--board",
        "qemu-virt-arm64",
        "-s",
        f"site={site}",
        "--images",
        str(images),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    erofs = extract_partition(Path(out["image_dir"]), "ak-root-a", tmp_path / "root.erofs")
    extracted = tmp_path / "x"
    subprocess.run(
        ["fsck.erofs", f"--extract={extracted}", str(erofs)], check=True, capture_output=True
    )
    seed = extracted / "usr/share/appliancekit/content/site"
    assert (seed / "index.html").read_text() == "<p>my own site</p>\n"
    assert os.readlink(extracted / "srv/www") == "/data/content/site/current"
    # the read-only root resolves names through what the initramfs writes at boot
    assert os.readlink(extracted / "etc/resolv.conf") == "../run/resolv.conf"
    assert "127.0.0.1 localhost" in (extracted / "etc/hosts").read_text()


def test_data_partition_grows_and_keeps_data(homepage_image: Path, tmp_path: Path) -> None:
    """A card bigger than the image: the first boot grows the data partition to fill it,
    the second boot finds the data the first one wrote (the boot counter on /data)."""
    boot_twice_on_a_bigger_disk(homepage_image, "qemu-virt-arm64", tmp_path)


def test_checkout_under_another_umask_path_and_tz_builds_the_same_image(
    homepage_image: Path, tmp_path: Path
) -> None:
    """The recipe checked out elsewhere under umask 002 (files 0664), dated as git dates the
    repository's copy, built under umask 002 in another time zone: the same disk, bit for
    bit (the build does not consult the package cache's path either: it is not an input)."""
    first = load_manifest(homepage_image)
    recipes = tmp_path / "elsewhere/recipes"
    recipe_dir = checkout(PROJECT.recipes_dir / "homepage", recipes / "homepage", 0o002)
    assert (recipe_dir / "recipe.toml").stat().st_mode & 0o777 == 0o664
    for path in [recipe_dir, *recipe_dir.rglob("*")]:
        os.utime(path, (first.source_date_epoch, first.source_date_epoch))
    recipe = find_recipe("homepage", recipes)
    plan = BuildPlan(
        recipe,
        find_board("qemu-virt-arm64", PROJECT.boards_dir),
        resolve_settings(recipe, {}),
        tmp_path / "images",
    )
    old_umask, old_tz = os.umask(0o002), os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"  # UTC+14
    time.tzset()
    try:
        again = build(plan, Cache(default_cache_dir()), Reporter())
    finally:
        os.umask(old_umask)
        if old_tz is None:
            os.environ.pop("TZ")
        else:
            os.environ["TZ"] = old_tz
        time.tzset()
    assert again.rebuilt
    assert again.manifest.source_date_epoch == first.source_date_epoch
    assert again.manifest.inputs == first.inputs
    assert again.manifest.disk.sha256 == first.disk.sha256


def _validators(report: dict, name: str = "homepage") -> dict[str, str]:
    """ETag and Last-Modified as the http probe saw them from the appliance's nginx."""
    detail = next(p["detail"] for p in report["probes"] if p["name"] == name)
    etag = re.search(r'ETag ("[^"]*")', detail)
    modified = re.search(r"Last-Modified ([^,]+, [^,]+ GMT)", detail)
    assert etag and modified, detail
    return {"ETag": etag.group(1), "Last-Modified": modified.group(1)}


def test_two_releases_of_equal_size_get_new_validators(
    homepage_cli_test: dict, homepage_image: Path, tmp_path: Path
) -> None:
    """nginx's ETag is "<mtime hex>-<size hex>": with every mtime 0, a new index.html of the
    same size kept the old ETag and Last-Modified 1970, and caches kept the old page. The
    session's image (the recipe's site, dated by its git commit) is release 1; release 2 is
    the same site, one page rewritten to the same size a day later, given with -s site=."""
    first = load_manifest(homepage_image)
    page = PROJECT.recipes_dir / "homepage/site/index.html"
    size = page.stat().st_size
    site = tmp_path / "public"
    shutil.copytree(page.parent, site)
    rewritten = page.read_text().replace("It works", "It moved")
    assert rewritten != page.read_text() and len(rewritten.encode()) == size
    (site / "index.html").write_text(rewritten)
    release = first.source_date_epoch + 86_400
    for path in site.rglob("*"):
        os.utime(path, (release, release))
    images = tmp_path / "images"
    second = build_appliance("homepage", "qemu-virt-arm64", images, {"site": str(site)})
    assert second.manifest.source_date_epoch == release
    # the same inputs again: the same epoch, so nothing to do
    assert not build_appliance("homepage", "qemu-virt-arm64", images, {"site": str(site)}).rebuilt

    report = boot_test(
        second.output_dir,
        second.manifest,
        find_board("qemu-virt-arm64", PROJECT.boards_dir),
        log_dir=tmp_path,
    )
    assert report.passed, f"{report.failure}\n{report.serial_tail}"
    old = _validators(homepage_cli_test["boot_test"])
    new = _validators(report.to_json())
    assert old == {
        "ETag": f'"{first.source_date_epoch:x}-{size:x}"',
        "Last-Modified": formatdate(first.source_date_epoch, usegmt=True),
    }
    assert new == {
        "ETag": f'"{release:x}-{size:x}"',
        "Last-Modified": formatdate(release, usegmt=True),
    }
