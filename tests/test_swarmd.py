"""The People's Cloud swarm daemon (recipes/peoples-cloud/swarmd, JavaScript run by the
image's Node): its decisions under `node --test` on the host (tests/swarmd/*.test.mjs)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import REPO


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_swarm_decisions() -> None:
    result = subprocess.run(
        ["node", "--test", str(REPO / "tests" / "swarmd" / "swarm.test.mjs")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
