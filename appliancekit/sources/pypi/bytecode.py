"""Compiling the kept sources to unchecked-hash .pyc files once per input set, into the cache."""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.digest import fingerprint
from appliancekit.sources.debian import DebianSourceFor, DebPackage
from appliancekit.sources.pypi.host_python import host_python, run_host_python
from appliancekit.sources.pypi.keep import excluded, kept_files
from appliancekit.sources.pypi.plan import PythonPlan
from appliancekit.sources.pypi.store import pypi_dir
from appliancekit.sources.unpack import LISTING, PackageFile, UnpackedPackage

BYTECODE_PACKAGE = "python-bytecode"
BYTECODE_VERSION = 1  # bump when the compiler driver changes its output


_COMPILER = r"""
import json, py_compile, sys
done = failed = 0
for source, runtime, output in json.load(sys.stdin):
    try:
        py_compile.compile(source, cfile=output, dfile=runtime, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        done += 1
    except (py_compile.PyCompileError, SyntaxError, ValueError):
        failed += 1
print(json.dumps({"compiled": done, "failed": failed}))
"""


def compile_bytecode(
    cache: Cache,
    python: PythonPlan,
    suite: str,
    packages: Sequence[UnpackedPackage],
    debian_for: DebianSourceFor | None = None,
) -> UnpackedPackage | None:
    """Unchecked-hash .pyc for every kept .py, compiled once per input set into the cache
    by the suite's Python for the build host (bytecode is the same on every architecture)."""
    if not python.section.bytecode:  # type: ignore[attr-defined]
        return None
    by_path: dict[str, Path] = {}
    for package in sorted(packages, key=lambda p: p.package.name):
        for item in package.files:
            if item.kind == "file":
                by_path[item.path] = package.host_path(item.path)
    sources = [p for p in kept_files(python, packages) if p.endswith(".py") and p in by_path]
    tag = f"cpython-{python.version.replace('.', '')}"
    sourceless = not python.section.sources  # type: ignore[attr-defined]
    keep_sources = tuple(python.section.keep_sources)  # type: ignore[attr-defined]
    key = fingerprint(
        BYTECODE_VERSION,
        python.version,
        sourceless,
        keep_sources,
        sorted({p.package.sha256 for p in packages}),
        sources,
    )
    destination = pypi_dir(cache) / "bytecode" / key
    listing = destination / LISTING
    if not listing.exists():
        interpreter = host_python(cache, suite, python.version, debian_for)
        with cache.staged_dir(destination, "bytecode-") as staging:
            jobs = []
            for path in sources:
                directory, name = posixpath.split(path)
                if sourceless and not excluded(path, keep_sources):
                    # X.pyc in place of X.py, found by the sourceless loader
                    pyc = posixpath.join(directory, f"{name[:-3]}.pyc")
                else:
                    pyc = posixpath.join(directory, "__pycache__", f"{name[:-3]}.{tag}.pyc")
                output = staging / pyc.lstrip("/")
                jobs.append((str(by_path[path]), path, str(output)))
            run_host_python(interpreter, _COMPILER, json.dumps(jobs))
            entries = _scan_generated(staging)
            (staging / LISTING).write_text(json.dumps(entries))
    files = tuple(PackageFile(**entry) for entry in json.loads(listing.read_text()))
    package = DebPackage(BYTECODE_PACKAGE, python.version, "all", key, 0, "")
    return UnpackedPackage(package, destination, files)


def _scan_generated(tree: Path) -> list[dict[str, object]]:
    entries = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            is_dir = full.is_dir()
            entries.append(
                {
                    "path": "/" + str(full.relative_to(tree)),
                    "kind": "dir" if is_dir else "file",
                    "mode": 0o755 if is_dir else 0o644,
                    "uid": 0,
                    "gid": 0,
                    "size": 0 if is_dir else full.stat().st_size,
                    "target": "",
                }
            )
    return entries
