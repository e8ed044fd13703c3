"""Build a Go program of appliancekit (standard library only) for a board's architecture.

Static (CGO off), so the image needs no libc for it and minimise has nothing to follow;
reproducible (-trimpath, no build id, no VCS stamping), so equal sources and Go give equal
bytes, and the result is cached under the build cache by that digest. Go comes from Debian's
golang-go on the host (scripts/setup-host.sh); nothing is downloaded (GOPROXY=off,
GOFLAGS=-mod=mod with a go.mod that requires nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from appliancekit.board import Architecture
from appliancekit.cache import default_cache_dir
from appliancekit.digest import fingerprint, sha256_file
from appliancekit.errors import ToolError

GOARCH = {
    Architecture.ARM64: ("arm64", ""),
    Architecture.ARMHF: ("arm", "7"),
    Architecture.AMD64: ("amd64", ""),
}


def go_version() -> str:
    """`go version` (the compiler decides the bytes); ToolError if Go is missing."""
    if shutil.which("go") is None:
        raise ToolError("go not found: install golang-go (scripts/setup-host.sh)")
    out = subprocess.run(["go", "version"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ToolError(f"go version failed: {out.stderr.strip()[:200]}")
    return out.stdout.strip()


def source_digest(source: Path) -> str:
    files = sorted(p for p in source.iterdir() if p.suffix == ".go" or p.name == "go.mod")
    return fingerprint([(p.name, sha256_file(p)) for p in files])


def go_build(source: Path, name: str, arch: Architecture | str, cache: Path | None = None) -> Path:
    """The program in `source` (package main) built for `arch` ("host" for this machine)."""
    version = go_version()
    key = fingerprint([source_digest(source), version, str(arch)])
    out_dir = (cache or default_cache_dir()) / "go" / key[:32]
    binary = out_dir / name
    if binary.is_file():
        return binary
    env = dict(os.environ)
    go_cache = (cache or default_cache_dir()) / "go" / "build-cache"
    env.update(
        CGO_ENABLED="0",
        GOPROXY="off",
        GOFLAGS="-mod=mod",
        GOCACHE=str(go_cache),
        GOPATH=str((cache or default_cache_dir()) / "go" / "path"),
        GO111MODULE="on",
        GOTOOLCHAIN="local",
    )
    if arch != "host":
        goarch, goarm = GOARCH[Architecture(arch)]
        env.update(GOOS="linux", GOARCH=goarch)
        if goarm:
            env["GOARM"] = goarm
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build.") as tmp:
        partial = Path(tmp) / name
        result = subprocess.run(
            [
                "go",
                "build",
                "-trimpath",
                "-buildvcs=false",
                "-ldflags=-s -w -buildid=",
                "-o",
                str(partial),
                ".",
            ],
            cwd=source,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            detail = " ".join(result.stderr.split())[:300]
            raise ToolError(f"go build of {name} for {arch} failed: {detail}")
        os.replace(partial, binary)
    return binary
