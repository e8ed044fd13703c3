"""The commands as a user runs them: list, inspect, doctor, run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, run_cli


def test_list_boards_json() -> None:
    result = run_cli("list", "boards", "--json", check=True)
    boards = {b["name"]: b for b in json.loads(result.stdout)}
    assert boards["qemu-virt-arm64"]["arch"] == "arm64"
    assert boards["qemu-virt-arm64"]["boot"] == "direct"
    # every board the issue names, with its boot path, Debian suite and NixOS image route
    shapes = {name: (b["arch"], b["boot"]) for name, b in boards.items()}
    assert {
        "qemu-virt-arm64": ("arm64", "direct"),
        "rpi4": ("arm64", "rpi"),
        "cubieboard": ("armhf", "uboot"),
        "ec2-x86_64": ("amd64", "uki"),
        "ec2-arm64": ("arm64", "uki"),
    }.items() <= shapes.items()
    assert boards["cubieboard"]["suite"] == "trixie" and boards["rpi4"]["nixos"] == "raspberry-pi"


def test_list_boards_text() -> None:
    lines = run_cli("list", "boards", check=True).stdout.splitlines()
    assert lines[0].split() == ["NAME", "ARCH", "BOOT", "SUITE", "NIXOS", "QEMU", "SUMMARY"]
    assert any(line.split()[:5] == ["cubieboard", "armhf", "uboot", "trixie", "sunxi"] for line in lines)


def test_list_recipes_text() -> None:
    result = run_cli("list", "recipes", check=True)
    assert result.stdout.splitlines()[0].split() == ["NAME", "BACKEND", "SUMMARY"]
    assert any(line.startswith("homepage ") for line in result.stdout.splitlines())


def test_doctor_json_reports_every_tool() -> None:
    result = run_cli("doctor", "--json")
    report = json.loads(result.stdout)
    checks = {c["tool"]: c for c in report["checks"]}
    assert set(checks) >= {
        "mkfs.erofs",
        "veritysetup",
        "qemu-system-aarch64",
        "qemu-system-arm",
        "qemu-system-x86_64",
        "fdtput",
        "nix",
        # the firmware files the boards' QEMU command lines read
        "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    }
    assert checks["/usr/share/OVMF/OVMF_CODE.fd"]["package"] == "ovmf"
    assert "rpi4" in checks["fdtput"]["for"] and "cubieboard" in checks["qemu-system-arm"]["for"]
    assert len(checks) == len(report["checks"])  # one row per tool or file
    assert result.returncode == (0 if report["ok"] else 1)


def test_doctor_names_what_is_missing_and_its_package(tmp_path: Path) -> None:
    """A host without the tools (PATH holds none of them): every tool MISSING, exit 1, and
    one install line naming the packages."""
    result = run_cli("doctor", env={"PATH": str(tmp_path)})
    assert result.returncode == 1
    assert "MISSING fdtput" in result.stdout
    install = result.stdout.strip().splitlines()[-1]
    assert install.startswith("install with: apt-get install ")
    assert {"device-tree-compiler", "erofs-utils", "qemu-system-arm"} <= set(install.split())
    assert "nix-bin" not in install.split()
    assert "NOTE    nix " in result.stdout  # reported, optional: only the NixOS backend needs it


def test_inspect_rejects_a_non_image(tmp_path: Path) -> None:
    result = run_cli("inspect", str(tmp_path))
    assert result.returncode == 2 and "no manifest.json" in result.stderr


@pytest.mark.slow
def test_inspect_verifies_the_image(homepage_image: Path) -> None:
    result = run_cli("inspect", str(homepage_image), "--verify", "--json", check=True)
    report = json.loads(result.stdout)
    assert report["verified"] is True
    assert report["manifest"]["recipe"] == "homepage"
    assert report["size_report"]["bytes_after"] > 0


@pytest.mark.slow
def test_run_gives_an_interactive_console(homepage_image: Path, session_images: Path) -> None:
    """`run` boots with the console on stdio; Ctrl-A x quits QEMU."""
    env = dict(os.environ, APPLIANCEKIT_IMAGES=str(session_images))
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliancekit", "run", "homepage", "--board", "qemu-virt-arm64"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    assert proc.stdin and proc.stdout
    seen = b""
    deadline = time.monotonic() + 120
    try:
        os.set_blocking(proc.stdout.fileno(), False)
        while b"switching root" not in seen and time.monotonic() < deadline:
            chunk = proc.stdout.read() or b""
            seen += chunk
            time.sleep(0.2)
        assert b"switching root" in seen, seen[-2000:]
        proc.stdin.write(b"\x01x")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert b"guest port 80/tcp -> 127.0.0.1:" in proc.stderr.read()


def test_nixos_flake_reads_the_project_from_any_directory(tmp_path: Path) -> None:
    """Like every other command: not ./recipes relative to where it runs."""
    out = tmp_path / "flake"
    result = run_cli("nixos-flake", "homepage", "--board", "rpi4", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (out / "flake.nix").is_file()
