"""Kernel modules built from source (appliancekit/sources/kmods): the Pi's ak_tryboot, built
for the kernel the rpi4 images boot, from the pinned toolchain."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.boot.kmod import _modinfo
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.sources import kmods
from appliancekit.sources.debian_lock import read_lock
from appliancekit.sources.kmods import toolchain
from tests.conftest import PROJECT
from tests.test_cli_errors import assert_clean_failure, build_in, scratch_project  # noqa: F401

RPI4 = find_board("rpi4", PROJECT.boards_dir)


def kernel_releases_of_rpi4() -> set[str]:
    """The kernel release each trixie/arm64 recipe lock pins (linux-image-RELEASE)."""
    releases = set()
    for lock_file in PROJECT.recipes_dir.glob("*/debian-trixie-arm64.lock"):
        for package in read_lock(lock_file).packages:
            name = package.name
            if re.fullmatch(r"linux-image-\d[^ ]*-arm64", name) and "cloud" not in name:
                releases.add(name.removeprefix("linux-image-"))
    return releases


def test_the_toolchain_lock_pins_every_kernel_the_recipes_lock() -> None:
    lock = read_lock(toolchain.toolchain_lock_path(RPI4.suite, "amd64"))
    requests = {(c.arch, c.request) for c in lock.closures}
    releases = kernel_releases_of_rpi4()
    assert releases
    for release in releases:
        kernel = toolchain.kernel_release(release, "arm64")
        pin = f"pin it: python -m appliancekit.sources.kmods {RPI4.suite} {release}"
        assert ("arm64", (kernel.headers,)) in requests, pin
        assert ("amd64", (kernel.common_headers, kernel.kbuild)) in requests, pin
    # the headers' own arm64 dependencies are never pinned: the host's kbuild runs
    assert {p.architecture for p in lock.packages} == {"amd64", "all", "arm64"}
    assert [p.name for p in lock.packages if p.architecture == "arm64"] == sorted(
        toolchain.kernel_release(r, "arm64").headers for r in releases
    )


@pytest.mark.parametrize(
    ("release", "abi"),
    [("6.12.118+deb13-arm64", "6.12.118+deb13"), ("6.12.115+deb13.1-cloud-arm64", "6.12.115+deb13.1")],
)
def test_kernel_release_names(release: str, abi: str) -> None:
    kernel = toolchain.kernel_release(release, "arm64")
    assert kernel.abi == abi and kernel.kbuild == f"linux-kbuild-{abi}"
    assert toolchain.kernel_arch(release) == "arm64"


def test_ak_tryboot_is_built_for_the_rpi4_kernel_the_same_every_time(tmp_path: Path) -> None:
    assert RPI4.kernel.built_modules == ("ak_tryboot",)
    (release,) = kernel_releases_of_rpi4()
    cache = Cache(default_cache_dir())
    (module,) = kmods.build_modules(RPI4.kernel.built_modules, RPI4.suite, release, "arm64", cache)
    data = module.path.read_bytes()
    info = _modinfo(data)
    # the kernel's own vermagic and symbol versions: it loads into exactly that kernel
    assert info["vermagic"][0].startswith(f"{release} SMP")
    assert info["license"] == ["GPL"]  # rpi_firmware_property is EXPORT_SYMBOL_GPL
    assert data[:4] == b"\x7fELF" and data[18] == 183  # EM_AARCH64
    assert b"/build/" not in data and b".debug_info" not in data  # stripped, no paths
    # built again from nothing: the same bytes
    tools = toolchain.prepare_toolchain(RPI4.suite, toolchain.kernel_release(release, "arm64"), cache)
    again = tmp_path / "again.ko"
    kmods._build("ak_tryboot", kmods.source_dir("ak_tryboot"), tools, again)
    assert again.read_bytes() == data


def test_a_board_naming_an_unknown_module_fails_on_its_line(scratch_project: Path) -> None:  # noqa: F811
    board = scratch_project / "boards/qemu-virt-arm64.toml"
    text = board.read_text()
    board.write_text(text.replace("[kernel]\n", '[kernel]\nbuilt_modules = ["nosuch"]\n', 1))
    line = board.read_text().splitlines().index('built_modules = ["nosuch"]') + 1
    result = build_in(scratch_project)
    assert_clean_failure(
        result, scratch_project, f"qemu-virt-arm64.toml:{line}", "nosuch", "ak_tryboot"
    )
