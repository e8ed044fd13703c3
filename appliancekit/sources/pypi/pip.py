"""Running the build host's pip for a target platform (--platform/--abi, binary wheels only)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from appliancekit.errors import ToolError
from appliancekit.sources.pypi.tags import platform_tags


def pip_target_args(arch: str, python: str, glibc: tuple[int, int]) -> list[str]:
    nodot = python.replace(".", "")
    args = ["--only-binary=:all:"]
    for tag in platform_tags(arch, glibc):
        args += ["--platform", tag]
    return args + ["--python-version", python, "--implementation", "cp", "--abi", f"cp{nodot}"]


def run_pip(args: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"]
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:  # pragma: no cover - the running interpreter exists
        raise ToolError(f"{what}: cannot run pip: {exc}") from exc


def pip_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors[-1] if errors else next((x for x in reversed(lines) if x), "")) or (
        f"exit status {result.returncode}"
    )
