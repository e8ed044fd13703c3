"""The monitoring agent (agent/main.go) compiled for the image's architecture.

Go, standard library only, built with CGO off: one static executable with no interpreter
and no library to keep, which the ELF closure takes as it is. The build is reproducible
(-trimpath, no build id, no VCS stamp), and cached by (source, Go version, architecture).
The result joins the root like an unpacked package, and the manifest records it with its
sha256 (role "appliancekit"), so `audit` finds every file of the root accounted for.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from appliancekit.cache import Cache
from appliancekit.digest import fingerprint, sha256_file
from appliancekit.errors import ToolError
from appliancekit.hostcmd import run
from appliancekit.monitoring import AGENT
from appliancekit.sources.debian import DebPackage
from appliancekit.sources.unpack import PackageFile, UnpackedPackage

SOURCE = Path(__file__).parent / "agent"
NAME = "ak-monitor"
# Debian architecture -> GOARCH (and GOARM for armhf: ARMv7 with hardware floating point)
GOARCH = {"arm64": ("arm64", ""), "armhf": ("arm", "7"), "amd64": ("amd64", "")}


@dataclass(frozen=True)
class AgentInstall:
    """What the build adds for monitoring: the agent as a package-like tree."""

    packages: tuple[UnpackedPackage, ...] = ()
    manifest: tuple[dict[str, object], ...] = field(default_factory=tuple)


def go_version() -> str:
    if shutil.which("go") is None:
        raise ToolError(
            "monitoring needs Go to build its agent: install golang-go (scripts/setup-host.sh)"
        )
    return run(["go", "env", "GOVERSION"]).stdout.strip()


def source_digest() -> str:
    return fingerprint(
        [(p.name, sha256_file(p)) for p in sorted(SOURCE.iterdir()) if p.suffix in (".go", ".mod")]
    )


def build_agent(cache: Cache, arch: str) -> Path:
    """The agent's executable for `arch`, built once per (source, Go version, arch)."""
    if arch not in GOARCH:
        raise ToolError(f"no Go architecture for {arch}")
    version = go_version()
    key = fingerprint({"source": source_digest(), "go": version, "arch": arch})
    out_dir = cache.root / "agent" / key
    binary = out_dir / NAME
    if binary.exists():
        return binary
    goarch, goarm = GOARCH[arch]
    tmp = out_dir.with_name(f".{key}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = {
        "CGO_ENABLED": "0",
        "GOOS": "linux",
        "GOARCH": goarch,
        "GOFLAGS": "-buildvcs=false -trimpath",
        "GOCACHE": str(cache.root / "go-build"),
        "GOPATH": str(cache.root / "go"),
        "GO111MODULE": "on",
        "GOPROXY": "off",  # standard library only: nothing is downloaded
        "GOTOOLCHAIN": "local",
    }
    if goarm:
        env["GOARM"] = goarm
    run(
        ["go", "build", "-ldflags=-s -w -buildid=", "-o", str(tmp / NAME), "."],
        cwd=SOURCE,
        env=env,
    )
    (tmp / "go-version").write_text(version + "\n")
    try:
        tmp.rename(out_dir)
    except OSError:  # built meanwhile by another build: theirs is the same bytes
        shutil.rmtree(tmp, ignore_errors=True)
    return binary


def install(cache: Cache, enabled: bool, arch: str) -> AgentInstall:
    if not enabled:
        return AgentInstall()
    binary = build_agent(cache, arch)
    version = (binary.parent / "go-version").read_text().strip()
    sha = sha256_file(binary)
    size = binary.stat().st_size
    package = DebPackage(
        name=NAME,
        version=f"{source_digest()[:12]}+{version}",
        architecture=arch,
        sha256=sha,
        size=size,
        filename="",
    )
    stage = binary.parent / "root"
    target = stage / AGENT.lstrip("/")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(binary, target)
        os.chmod(target, 0o755)
    parts = AGENT.strip("/").split("/")
    dirs = ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
    files = tuple(PackageFile(d, "dir", 0o755, 0, 0, 0) for d in dirs) + (
        PackageFile(AGENT, "file", 0o755, 0, 0, size),
    )
    record = package.to_json() | {"role": "appliancekit"}
    return AgentInstall((UnpackedPackage(package, stage, files),), (record,))
