"""Reproducible, cached cross-builds of the Go programs that go into images (the update agent).

Debian's golang-go (host package) builds for the board's architecture with the standard
library only: CGO_ENABLED=0 (a static binary, no libc in the closure), -trimpath and an
empty build id (no host paths or random ids in the bytes), GOFLAGS/GOPROXY pinned so nothing
is fetched. The same source, Go version and architecture give the same bytes, so images stay
bit-for-bit reproducible; the result is cached under the cache root by that triple.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliancekit.digest import fingerprint, sha256_file
from appliancekit.errors import ToolError

# Debian architecture -> GOARCH and extra environment
GOARCH = {
    "arm64": ("arm64", {}),
    "armhf": ("arm", {"GOARM": "7"}),
    "amd64": ("amd64", {"GOAMD64": "v1"}),
}
LDFLAGS = "-s -w -buildid="


@dataclass(frozen=True)
class GoBinary:
    path: Path  # in the cache; copy it, never change it
    sha256: str
    size: int
    go_version: str
    arch: str


def go_version() -> str:
    """`go version` of the host toolchain (part of every cache key and image fingerprint)."""
    if shutil.which("go") is None:
        raise ToolError("the update agent needs Go: apt-get install golang-go")
    proc = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ToolError(f"go env GOVERSION failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def source_digest(source: Path) -> str:
    """Names and contents of the Go sources (go.mod and *.go, tests left out)."""
    files = sorted(p for p in Path(source).rglob("*") if p.is_file() and _is_build_input(p.name))
    return fingerprint([(str(p.relative_to(source)), sha256_file(p)) for p in files])


def _is_build_input(name: str) -> bool:
    return name == "go.mod" or (name.endswith(".go") and not name.endswith("_test.go"))


def build_go(
    source: Path, arch: str, cache_root: Path, *, name: str, gocache: Path | None = None
) -> GoBinary:
    """`go build` of the main package in `source` for Debian architecture `arch`.
    `gocache` (default: under cache_root) holds Go's own build cache: compiled packages,
    which never change the linked bytes."""
    if arch not in GOARCH:
        raise ToolError(f"no Go target for architecture {arch!r} (known: {', '.join(GOARCH)})")
    version = go_version()
    key = hashlib.sha256(
        fingerprint([source_digest(source), version, arch, LDFLAGS]).encode()
    ).hexdigest()
    out_dir = Path(cache_root) / "go" / key
    binary = out_dir / name
    if not binary.is_file():
        _compile(source, arch, binary, Path(cache_root), gocache)
    return GoBinary(binary, sha256_file(binary), binary.stat().st_size, version, arch)


def _compile(source: Path, arch: str, binary: Path, cache_root: Path, gocache: Path | None) -> None:
    goarch, extra = GOARCH[arch]
    gocache = gocache or cache_root / "go" / "gocache"
    gocache.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cache_root / "go"),
        "GOCACHE": str(gocache),
        "GOPATH": str(cache_root / "go" / "gopath"),
        "GOOS": "linux",
        "GOARCH": goarch,
        "CGO_ENABLED": "0",
        "GO111MODULE": "on",
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GOSUMDB": "off",
        "GOTOOLCHAIN": "local",
        **extra,
    }
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".build-") as tmp:
        output = Path(tmp) / binary.name
        proc = subprocess.run(
            [
                "go",
                "build",
                "-trimpath",
                "-buildvcs=false",
                f"-ldflags={LDFLAGS}",
                "-o",
                output,
                ".",
            ],
            cwd=source,
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            detail = proc.stderr.strip().splitlines()[-5:]
            raise ToolError(f"go build of {source} for {arch} failed: {' | '.join(detail)}")
        output.chmod(0o755)
        os.replace(output, binary)
