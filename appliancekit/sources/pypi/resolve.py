"""Making a lock: resolve the closure with pip once, then find each pinned wheel for every
architecture."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from appliancekit.errors import ToolError
from appliancekit.sources.pypi.lockfile import Lock, LockedWheel, canonical_name, parse_pin
from appliancekit.sources.pypi.pip import pip_error, pip_target_args, run_pip
from appliancekit.sources.pypi.tags import ARCHES

_MISSING_RE = re.compile(r"No matching distribution found for (\S+)")


def _pip_report(
    requirements: Sequence[str], arch: str, python: str, glibc: tuple[int, int], *, deps: bool
) -> dict[str, object]:
    """pip's --dry-run installation report for the target platform (metadata only)."""
    with tempfile.TemporaryDirectory(prefix="ak-pip-") as tmp:
        report = Path(tmp) / "report.json"
        args = [
            "install",
            "--dry-run",
            "--ignore-installed",
            "--target",
            str(Path(tmp) / "target"),
            "--report",
            str(report),
            "--quiet",
            *pip_target_args(arch, python, glibc),
        ]
        if not deps:
            args.append("--no-deps")
        result = run_pip([*args, *requirements], f"resolving wheels for {arch}")
        if result.returncode != 0:
            raise _ResolveError(pip_error(result), _pip_missing(result))
        return json.loads(report.read_text())


def _pip_missing(result: subprocess.CompletedProcess[str]) -> str | None:
    match = _MISSING_RE.search(result.stderr + result.stdout)
    return match.group(1) if match else None


class _ResolveError(Exception):
    def __init__(self, message: str, missing: str | None) -> None:
        super().__init__(message)
        self.missing = missing


def _report_wheels(report: Mapping[str, object]) -> list[tuple[str, str, str, str]]:
    """(name, version, filename, sha256) of each wheel in a pip report."""
    out = []
    for item in report["install"]:  # type: ignore[attr-defined]
        metadata = item["metadata"]
        info = item["download_info"]
        url = info["url"]
        filename = url.rsplit("/", 1)[-1].split("#", 1)[0]
        sha = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        if not sha:
            raise ToolError(f"pip's report gives no sha256 for {filename}")
        out.append((canonical_name(metadata["name"]), metadata["version"], filename, sha))
    return out


def lock(
    requirements: Sequence[str],
    python: str,
    glibc: tuple[int, int],
    arches: Sequence[str] = ARCHES,
    log: object = None,
    deps: bool = True,
) -> Lock:
    """Resolve the closure once (on the first architecture that has it all) and find each
    pinned wheel for every architecture; wheels PyPI lacks are listed as unavailable.
    `deps=False`: the requirements alone, without their dependencies."""
    say = log if callable(log) else (lambda _msg: None)
    closure: list[tuple[str, str, str, str]] | None = None
    reference = ""
    for arch in arches:
        say(f"resolving {', '.join(requirements)} for {arch}")
        try:
            closure = _report_wheels(_pip_report(requirements, arch, python, glibc, deps=deps))
            reference = arch
            break
        except _ResolveError as exc:
            say(f"  {arch}: {exc}")
    if closure is None:
        raise ToolError(f"no architecture has every wheel of {', '.join(requirements)}")
    pins = sorted({(name, version) for name, version, _, _ in closure})
    found: dict[tuple[str, str, str, str], list[str]] = {}
    unavailable: dict[str, list[str]] = {}
    for arch in arches:
        if arch == reference:
            files = closure
        else:
            files, missing = _files_for(pins, arch, python, glibc, say)
            if missing:
                unavailable[arch] = missing
        for wheel in files:
            found.setdefault(wheel, []).append(arch)
    wheels = tuple(
        LockedWheel(name, version, filename, sha, tuple(sorted(archs)))
        for (name, version, filename, sha), archs in sorted(found.items())
    )
    return Lock(
        python=python,
        requirements=tuple(requirements),
        wheels=wheels,
        unavailable=tuple((a, tuple(sorted(n))) for a, n in sorted(unavailable.items())),
    )


def _files_for(
    pins: Sequence[tuple[str, str]], arch: str, python: str, glibc: tuple[int, int], say: object
) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    """The wheel of each pin for `arch`; pins without one are dropped and returned."""
    todo = [f"{name}=={version}" for name, version in pins]
    missing: list[str] = []
    while todo:
        try:
            files = _report_wheels(_pip_report(todo, arch, python, glibc, deps=False))
            return files, missing
        except _ResolveError as exc:
            if exc.missing is None or exc.missing not in todo:
                raise ToolError(f"resolving wheels for {arch}: {exc}") from None
            todo.remove(exc.missing)
            name, version = parse_pin(exc.missing)
            missing.append(f"{name} {version}")
            say(f"  {arch}: no wheel for {name} {version}")  # type: ignore[operator]
    return [], missing
