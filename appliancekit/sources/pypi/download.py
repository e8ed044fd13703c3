"""Downloading the plan's wheels with pip and storing them by sha256 after checking it again."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.digest import sha256_file
from appliancekit.errors import ToolError
from appliancekit.sources.debian import DebPackage
from appliancekit.sources.pypi.pip import pip_error, pip_target_args, run_pip
from appliancekit.sources.pypi.plan import PythonPlan
from appliancekit.sources.pypi.store import wheel_path


def fetch(cache: Cache, python: PythonPlan, glibc: tuple[int, int]) -> dict[DebPackage, Path]:
    """Download the plan's wheels that are not cached yet (pip checks the hashes) and store
    them by sha256 after checking again."""
    todo = [w for w in python.wheels if not wheel_path(cache, w).exists()]
    if todo:
        tmp_root = cache.tmp_dir()
        with tempfile.TemporaryDirectory(prefix="wheels-", dir=tmp_root) as tmp:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text(
                "".join(f"{w.name}=={w.version} --hash=sha256:{w.sha256}\n" for w in todo)
            )
            download = Path(tmp) / "download"
            result = run_pip(
                [
                    "download",
                    "--no-deps",
                    "--require-hashes",
                    "--progress-bar",
                    "off",
                    "--quiet",
                    *pip_target_args(python.arch, python.version, glibc),
                    "-r",
                    str(requirements),
                    "-d",
                    str(download),
                ],
                "downloading wheels",
            )
            if result.returncode != 0:
                raise ToolError(
                    f"pip download of {len(todo)} wheels for {python.arch} failed: "
                    f"{pip_error(result)}"
                )
            by_name = {w.filename: w for w in todo}
            for path in sorted(download.glob("*.whl")):
                wheel = by_name.pop(path.name, None)
                if wheel is None:
                    continue
                digest = sha256_file(path)
                if digest != wheel.sha256:
                    raise ToolError(
                        f"{path.name}: sha256 {digest} does not match the lock ({wheel.sha256})"
                    )
                target = wheel_path(cache, wheel)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, target.with_suffix(".part"))
                os.replace(target.with_suffix(".part"), target)
            if by_name:
                raise ToolError(f"pip download did not produce {sorted(by_name)}")
    return {w: wheel_path(cache, w) for w in python.wheels}
