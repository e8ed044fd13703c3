"""Which Nix can build the flakes we render, and one line saying what to install otherwise.

Facts this rests on (none could be re-measured here: nixpkgs is not reachable from these
machines):
- nixpkgs refuses to evaluate under a Nix older than its `lib/minver.nix`, which is "2.18" on
  nixos-25.11 (the pinned branch).
- Debian 12's nix-bin is 2.8.0 (what scripts/setup-host.sh installs: its nix-instantiate parses
  and evaluates the rendered files in the tests, but it cannot build them). Debian 13's nix-bin
  is 2.26.
- Public reports on the pinned revision: Nix 2.34.7 computes the narHash in our flake.lock;
  Nix 2.31.1 computes a different one and stops with "mismatch in field 'narHash'".
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

MINIMUM = (2, 18)  # nixpkgs lib/minver.nix at the pinned nixos-25.11
KNOWN_GOOD = ("2.34.7",)  # reported to compute the pinned narHash
# versions reported to fail on the pinned revision, and why
KNOWN_BAD = {"2.31.1": "computes a different narHash for the pinned nixpkgs"}
INSTALL = (
    "install Debian 13's nix-bin (2.26) or Nix from the upstream installer "
    f"({', '.join(KNOWN_GOOD)} is known to work with the pinned nixpkgs)"
)

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class NixVersion:
    text: str  # as `nix --version` prints it, e.g. "2.8.0"
    parts: tuple[int, int, int]

    @classmethod
    def parse(cls, output: str) -> NixVersion | None:
        """The version in `nix --version` output ("nix (Nix) 2.26.3"), None if there is none."""
        m = _VERSION.search(output)
        if m is None:
            return None
        major, minor, patch = m.group(1), m.group(2), m.group(3) or "0"
        return cls(m.group(0), (int(major), int(minor), int(patch)))


def installed_nix() -> tuple[str, NixVersion | None] | None:
    """(path of `nix`, its version) or None when nix is not on PATH."""
    nix = shutil.which("nix")
    if nix is None:
        return None
    try:
        proc = subprocess.run([nix, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return nix, None
    return nix, NixVersion.parse(proc.stdout) if proc.returncode == 0 else None


def version_problem(version: NixVersion | None) -> str | None:
    """None when this Nix can build the pinned nixpkgs; otherwise one line with what to install."""
    if version is None:
        return f"nix does not report its version; {INSTALL}"
    if version.parts[:2] < MINIMUM:
        return (
            f"nix {version.text} is too old: nixpkgs needs Nix >= "
            f"{MINIMUM[0]}.{MINIMUM[1]} (lib/minver.nix); {INSTALL}"
        )
    if version.text in KNOWN_BAD:
        return f"nix {version.text} {KNOWN_BAD[version.text]}; {INSTALL}"
    return None


def nix_check() -> dict[str, object]:
    """What `doctor` reports about Nix: found, version, ok, and the one-line problem."""
    found = installed_nix()
    if found is None:
        problem = f"nix is not on PATH; {INSTALL}"
        return {"found": False, "version": None, "ok": False, "problem": problem}
    path, version = found
    problem = version_problem(version)
    return {
        "found": True,
        "path": path,
        "version": version.text if version else None,
        "ok": problem is None,
        "problem": problem,
    }
