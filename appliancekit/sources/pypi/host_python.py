"""The target suite's own Python for the build host, unpacked from Debian packages and run
in place (it compiles the bytecode)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.digest import fingerprint
from appliancekit.errors import ToolError
from appliancekit.sources.debian import AptSource, DebianSource, DebianSourceFor
from appliancekit.sources.pypi.store import pypi_dir
from appliancekit.sources.pypi.tags import MACHINES
from appliancekit.sources.unpack import unpack


def host_arch() -> str:
    machine = platform.machine()
    for arch, name in MACHINES.items():
        if name == machine or (arch == "arm64" and machine == "arm64"):
            return arch
    raise ToolError(f"no Debian Python for this build host's architecture ({machine})")


@dataclass(frozen=True)
class HostPython:
    home: Path  # a merged tree of the suite's python packages for the build host
    loader: Path
    library_path: str
    binary: Path


def host_python_packages(version: str) -> list[str]:
    """The Debian packages of the build host's Python (a Debian lock pins their closure)."""
    return [f"python{version}-minimal", f"libpython{version}-stdlib"]


def _apt_for(cache: Cache, suite: str) -> DebianSourceFor:
    def source(arch: str) -> DebianSource:
        apt = AptSource(cache, suite, arch)
        apt.update()
        return apt

    return source


def host_python(
    cache: Cache, suite: str, version: str, debian_for: DebianSourceFor | None = None
) -> HostPython:
    """The suite's own Python for the build host, unpacked from Debian packages and run
    through its own dynamic loader (the host's glibc may be older than the suite's).
    `debian_for` gives the build's source of Debian packages (its lock, when it has one)."""
    arch = host_arch()
    source = (debian_for or _apt_for(cache, suite))(arch)
    packages = source.resolve(host_python_packages(version))
    unpacked = [unpack(cache, f) for f in source.fetch(packages)]
    key = fingerprint(sorted(p.sha256 for p in packages))
    home = pypi_dir(cache) / "host-python" / key
    if not (home / ".complete").exists():
        with cache.staged_dir(home, "host-python-") as staging:
            for package in unpacked:
                for item in package.files:
                    target = staging / item.path.lstrip("/")
                    if item.kind == "dir":
                        target.mkdir(parents=True, exist_ok=True)
                    elif item.kind == "symlink":
                        target.parent.mkdir(parents=True, exist_ok=True)
                        if not target.is_symlink():
                            os.symlink(item.target, target)
                    elif not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(package.host_path(item.path), target)
            (staging / ".complete").touch()
    triplet = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[arch]
    loader_name = {"amd64": "ld-linux-x86-64.so.2", "arm64": "ld-linux-aarch64.so.1"}[arch]
    libdir = home / "usr/lib" / triplet
    return HostPython(home, libdir / loader_name, str(libdir), home / f"usr/bin/python{version}")


def run_host_python(python: HostPython, code: str, stdin: str) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONHOME": str(python.home / "usr"),
        "PYTHONHASHSEED": "0",  # frozenset constants are marshalled in hash order
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "LC_ALL": "C.UTF-8",
    }
    command = [
        str(python.loader),
        "--library-path",
        python.library_path,
        str(python.binary),
        "-S",
        "-c",
        code,
    ]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolError(f"compiling Python bytecode failed: {tail}")
    return result.stdout
