"""Run host tools (mkfs.erofs, veritysetup, sfdisk, mtools, qemu, ...) with one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from appliancekit.errors import ToolError
from appliancekit.hosttools import package_of_tool


def require_tools(*tools: str) -> None:
    """Fail (one line naming the package) before starting work that needs these tools."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise ToolError(
                f"{tool} not found: install Debian package {package_of_tool(tool)}"
                " (or run make setup)"
            )


def _last_line(text: str | None) -> str:
    for line in reversed((text or "").splitlines()):
        if line.strip():
            return line.strip()
    return "(no output)"


def run(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    input: str | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a host tool; raise ToolError (one line) if it is missing or exits non-zero.

    `env` is added to the current environment (it does not replace it).
    """
    args = [str(a) for a in argv]
    tool = os.path.basename(args[0])
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run(
            args,
            env=full_env,
            cwd=cwd,
            input=input,
            capture_output=capture,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        if cwd is not None and not Path(cwd).is_dir():
            raise ToolError(f"{tool}: working directory {cwd} does not exist") from None
        package = package_of_tool(tool)
        raise ToolError(
            f"{tool} not found: install Debian package {package} (or run make setup)"
        ) from None
    if proc.returncode != 0:
        detail = _last_line(proc.stderr) if capture else "see output above"
        if capture and detail == "(no output)":
            detail = _last_line(proc.stdout)
        raise ToolError(f"{tool} failed (exit {proc.returncode}): {detail}")
    return proc


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 10) -> None:
    """End a server a test or bench started: SIGTERM, then SIGKILL after `grace` seconds."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
