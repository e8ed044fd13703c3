"""The update agent's Go code: its unit tests (state machine, range planning, release
rules, snapshots) and reproducible cross-builds (appliancekit/agent/gobuild.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from appliancekit.agent.gobuild import build_go, source_digest
from appliancekit.cache import default_cache_dir

UPDATER = Path(__file__).resolve().parent.parent / "appliancekit" / "agent" / "updater"
pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs golang-go")


def test_go_unit_tests_pass(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GOCACHE": str(default_cache_dir() / "go" / "gocache-host"),  # compiled packages
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "CGO_ENABLED": "0",
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        ["go", "test", "-count=1", "."], cwd=UPDATER, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# arm64 only here: each architecture's first build compiles Go's standard library (minutes
# on a loaded machine); images for the other architectures build theirs the same way.
@pytest.mark.parametrize("arch", ["arm64"])
def test_cross_builds_are_static_and_reproducible(tmp_path: Path, arch: str) -> None:
    shared = default_cache_dir() / "go" / "gocache"  # compiled packages only, not outputs
    one = build_go(UPDATER, arch, tmp_path / "cache1", name="ak-update", gocache=shared)
    two = build_go(UPDATER, arch, tmp_path / "cache2", name="ak-update", gocache=shared)
    assert one.sha256 == two.sha256  # two cold builds, the same bytes
    again = build_go(UPDATER, arch, tmp_path / "cache1", name="ak-update", gocache=shared)
    assert again.path == one.path  # cached by source, Go version and architecture
    with open(one.path, "rb") as f:
        elf = ELFFile(f)
        assert not any(s.header.p_type == "PT_INTERP" for s in elf.iter_segments())
        assert elf.get_section_by_name(".dynamic") is None  # no libc: nothing to close over
        machine = {"arm64": "EM_AARCH64", "armhf": "EM_ARM", "amd64": "EM_X86_64"}[arch]
        assert elf.header.e_machine == machine
    assert str(UPDATER) not in one.path.read_bytes().decode("latin-1")  # -trimpath


def test_source_digest_ignores_tests(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(UPDATER, copy)
    before = source_digest(copy)
    (copy / "extra_test.go").write_text("package main\n")
    assert source_digest(copy) == before
    (copy / "extra.go").write_text("package main\n")
    assert source_digest(copy) != before
