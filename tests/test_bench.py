"""bench/'s arithmetic and baselines: targets are printed beside ratios, never divided by, and
the plain-Debian baseline is sized as the build sizes its trees (no timings asserted)."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from bench.board_ab import EditError, edit_toml
from bench.debian_install import installed_packages, mmdebstrap_argv, tree_bytes
from bench.figures import MIB, Figure, Target, Unit, table
from bench.init_size import s6_bytes


def test_ratio_is_against_the_measured_baseline_and_targets_are_only_compared():
    size = Target(16.0 * MIB, on_ratio=False, source="test")
    share = Target(0.25, on_ratio=True, source="test")
    figure = Figure("sealed root", 8 * MIB, Unit.BYTES, "Debian install", 160 * MIB, (size, share))
    assert figure.ratio == 0.05
    data = figure.to_json()
    assert data["ratio"] == 0.05
    assert data["baseline"] == {"name": "Debian install", "value": 160 * MIB}
    assert [t["met"] for t in data["targets"]] == [True, True]
    too_big = Figure(
        "sealed root", 48 * MIB, Unit.BYTES, "Debian install", 160 * MIB, (size, share)
    )
    assert [t["met"] for t in too_big.to_json()["targets"]] == [False, False]


def test_table_prints_value_baseline_ratio_and_target_in_their_units():
    figures = [
        Figure("no-op rebuild", 0.5, Unit.SECONDS, "build", 4.0, (Target(3.0, False, "t"),)),
        Figure("boot to healthy", 5.0, Unit.SECONDS, "marker", 2.0, (Target(2.0, True, "t"),)),
        Figure("minimised tree", 3 * MIB, Unit.BYTES, "Debian install", 150 * MIB),
    ]
    lines = table(figures).splitlines()
    assert lines[0].startswith("| figure") and set(lines[1]) <= {"|", "-"}
    assert "| 0.50 s " in lines[2] and "build: 4.00 s" in lines[2] and "0.125" in lines[2]
    assert "≤ 3.00 s (met)" in lines[2]
    assert "2.500" in lines[3] and "≤ 2× (NOT met)" in lines[3]
    assert "3.0 MiB" in lines[4] and "Debian install: 150.0 MiB" in lines[4]
    assert lines[4].split("|")[-2].strip() == "-"  # no target set
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_tree_bytes_counts_regular_files_once_per_inode(tmp_path: Path):
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/a").write_bytes(b"x" * 1000)
    os.link(tmp_path / "usr/bin/a", tmp_path / "usr/bin/b")  # hard link: counted once
    (tmp_path / "usr/bin/c").symlink_to("a")  # symlink: not file content
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/conf").write_bytes(b"y" * 24)
    (tmp_path / "lib").symlink_to("usr/lib")
    assert tree_bytes(tmp_path) == 1024


def test_installed_packages_counts_installed_stanzas_only(tmp_path: Path):
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: a\nStatus: install ok installed\n\n"
        "Package: b\nStatus: deinstall ok config-files\n\n"
        "Package: c\nStatus: install ok installed\n"
    )
    assert installed_packages(tmp_path) == 2


def test_mmdebstrap_gets_the_builds_archive_lines_and_a_package_cache(tmp_path: Path):
    sources = ["deb [signed-by=/k.gpg] http://mirror/debian trixie main non-free-firmware"]
    argv = mmdebstrap_argv("trixie", "arm64", ["nginx"], sources, tmp_path / "t", tmp_path / "d")
    assert argv[0] == "mmdebstrap"
    assert "--variant=minbase" in argv and "--arch=arm64" in argv and "--include=nginx" in argv
    assert argv[-3:] == ["trixie", str(tmp_path / "t"), sources[0]]
    assert f"--setup-hook=sync-in {tmp_path / 'd'} /var/cache/apt/archives/" in argv
    assert f"--customize-hook=sync-out /var/cache/apt/archives {tmp_path / 'd'}" in argv
    assert "--skip=essential/unlink" in argv  # or the essential packages' .debs are not kept


def test_s6_share_sums_the_supervisors_packages_as_kept(tmp_path: Path):
    report = {
        "packages": [
            {"package": "s6", "bytes_before": 4000, "bytes_after": 200},
            {"package": "execline", "bytes_before": 3000, "bytes_after": 100},
            {"package": "libskarnet2.14t64", "bytes_before": 300, "bytes_after": 30},
            {"package": "libexecline2.9", "bytes_before": 70, "bytes_after": 7},
            {"package": "nginx", "bytes_before": 1600, "bytes_after": 1500},
        ]
    }
    (tmp_path / "size-report.json").write_text(json.dumps(report))
    assert s6_bytes(tmp_path) == 337


BOARD_TEXT = """[board]
name = "x"
[kernel]
modules = [
    "virtio_blk",
    "erofs",
]
strip_module_signatures = true
[firmware.config]
spl_offset = "8192"
"env.bootdelay" = "0"
[qemu]
net_device = "virtio-net-pci,romfile="
"""


def test_board_edit_sets_drops_and_adds_fields_and_checks_the_result():
    changed = edit_toml(BOARD_TEXT, "kernel.strip_module_signatures", "false")
    assert tomllib.loads(changed)["kernel"]["strip_module_signatures"] is False
    changed = edit_toml(BOARD_TEXT, "kernel.modules", '["erofs"]')
    assert tomllib.loads(changed)["kernel"] == {
        "modules": ["erofs"],
        "strip_module_signatures": True,
    }
    changed = edit_toml(BOARD_TEXT, "firmware.config.env.bootdelay", None)
    assert tomllib.loads(changed)["firmware"]["config"] == {"spl_offset": "8192"}
    changed = edit_toml(BOARD_TEXT, "qemu.smp", "2")
    assert tomllib.loads(changed)["qemu"]["smp"] == 2
    with pytest.raises(EditError):
        edit_toml(BOARD_TEXT, "kernel.no_such_field", None)
    with pytest.raises(EditError):
        edit_toml(BOARD_TEXT, "nosuchtable.field", "1")


def test_a_saved_run_prints_the_same_table():
    figures = [
        Figure("sealed root", 8 * MIB, Unit.BYTES, "Debian install", 160 * MIB,
               (Target(16.0 * MIB, False, "issue 3"), Target(0.25, True, "issue 5"))),
        Figure("boot to healthy", 5.0, Unit.SECONDS, "marker", 2.5, (Target(2.0, True, "t"),)),
    ]  # fmt: skip
    saved = json.loads(json.dumps([f.to_json() for f in figures]))
    assert table([Figure.from_json(f) for f in saved]) == table(figures)


def test_without_the_warm_install_the_warm_build_has_no_row_rather_than_a_wrong_baseline():
    from pathlib import Path as P

    from bench.builds import BuildTimes, TimedBuild
    from bench.debian_install import DebianInstall
    from bench.run import build_figures

    sizes = {"sealed_root_bytes": 8 * MIB, "minimised_root_bytes": 13 * MIB}
    builds = BuildTimes(*(TimedBuild(s, True, P("x"), sizes) for s in (300.0, 20.0, 1.0)))
    cold = DebianInstall(2000.0, 150 * MIB, 94)
    names = [f.name for f in build_figures("homepage", builds, cold, None)]
    assert "build, warm package cache" not in names and "cold build, empty cache" in names
    warm = DebianInstall(1900.0, 150 * MIB, 94)
    with_warm = {f.name: f for f in build_figures("homepage", builds, cold, warm)}
    assert with_warm["build, warm package cache"].baseline == 1900.0
    assert with_warm["no-op rebuild"].baseline == 20.0


def test_update_bench_counts_changed_bytes_and_a_longer_tail(tmp_path: Path):
    from bench.update import changed_bytes

    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 5000)
    b.write_bytes(b"x" * 100 + b"yy" + b"x" * 4898 + b"tail")
    assert changed_bytes(a, b) == 2 + 4
    assert changed_bytes(a, a) == 0


def _release_entry(recipe: str, board: str, build: float, boot: float, **flags: bool) -> dict:
    return {
        "recipe": recipe,
        "board": board,
        "built": flags.get("built", True),
        "boot_tested": flags.get("boot_tested", True),
        "seconds": {"build": build, "boot_test": boot, "publish": 1.0},
    }


def test_release_matrix_figures_are_against_the_demo_entry_and_the_full_run():
    from bench.release_matrix import figures, stage_totals

    full = {
        "wall_seconds": 300.0,
        "releases": [
            _release_entry("homepage", "qemu-virt-arm64", 20.0, 9.0),
            _release_entry("matrix", "rpi4", 80.0, 119.0),
        ],
    }
    whole, slowest, rerun = figures(full, {"wall_seconds": 6.0})
    assert (whole.value, whole.baseline) == (300.0, 30.0)
    assert "matrix on rpi4" in slowest.name and slowest.value == 200.0
    assert slowest.baseline == 300.0 and slowest.targets[0].met(200.0, slowest.ratio)
    assert rerun.ratio == 0.02
    assert stage_totals(full) == {"build": 100.0, "boot_test": 128.0, "publish": 2.0}


def test_release_matrix_refuses_a_run_that_reused_earlier_work():
    from bench.release_matrix import figures

    full = {
        "wall_seconds": 30.0,
        "releases": [_release_entry("homepage", "qemu-virt-arm64", 0.1, 0.0, built=False)],
    }
    with pytest.raises(SystemExit, match="reused"):
        figures(full, {"wall_seconds": 1.0})
