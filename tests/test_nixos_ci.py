"""The release workflow in ci/ is a valid GitHub Actions workflow (schema bundled, offline)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "ci" / "release.yml"


def _check_jsonschema() -> str:
    exe = Path(sys.executable).with_name("check-jsonschema")
    if exe.exists():
        return str(exe)
    found = shutil.which("check-jsonschema")
    if not found:
        pytest.skip("check-jsonschema is not installed (pip install -e '.[test]')")
    return found


def test_release_workflow_matches_the_github_workflow_schema() -> None:
    proc = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_release_workflow_builds_with_a_nix_that_builds_the_pin() -> None:
    """Every Nix the workflow installs is pinned to a version the NixOS backend accepts and
    that is known to compute the pinned narHash (an unpinned installer follows upstream)."""
    from appliancekit.nixos import NIXPKGS
    from appliancekit.nixos.nixversion import KNOWN_GOOD, NixVersion, version_problem

    text = WORKFLOW.read_text()
    installs = text.count("uses: cachix/install-nix-action")
    versions = re.findall(r"install_url: \S+/nix-(\d+\.\d+\.\d+)/install", text)
    assert installs >= 2 and len(versions) == installs
    for version in versions:
        assert version_problem(NixVersion.parse(version)) is None and version in KNOWN_GOOD
    assert re.search(rf"NIXPKGS_REV: {NIXPKGS.rev}\b", text)  # the option check's revision


def test_release_workflow_publishes_through_appliancekit_release() -> None:
    """The Debian jobs call `appliancekit release` (per runner, then once to deploy, signed)
    instead of repeating build, test and publish steps inline."""
    text = WORKFLOW.read_text()
    assert text.count("appliancekit release") >= 2
    assert "--repo deploy" in text and "--sign" in text
    assert "appliancekit test" not in text and "appliancekit publish" not in text
    assert "push origin" in text and "action-gh-release" in text


def test_matrix_lists_nixos_recipes_on_every_board() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "ci" / "matrix.py")], capture_output=True, text=True, check=True
    )
    outputs = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert set(outputs) == {"debian", "nixos"}
    import json

    nixos = json.loads(outputs["nixos"])["include"]
    assert {"pixelfed", "mastodon", "peertube", "garage", "homepage"} <= {
        e["recipe"] for e in nixos
    }
    assert all(e["runner"].startswith("ubuntu-") for e in nixos)
    debian = {(e["recipe"], e["board"]) for e in json.loads(outputs["debian"])["include"]}
    assert ("homepage", "cubieboard") in debian and ("matrix", "rpi4") in debian
    # PyPI has no armv7l wheels for Synapse's compiled dependencies (recipes/matrix/python.lock)
    assert ("matrix", "cubieboard") not in debian
