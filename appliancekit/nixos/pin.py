"""The nixpkgs revision every rendered flake is pinned to.

Provenance of the pin (no Nix binary cache or GitHub archive is reachable where this was
written, so nothing here was recomputed locally):

- rev 8fd9daa3db09ced9700431c5b7ad0e8ba199b575 is what `nix flake lock` resolved
  github:NixOS/nixpkgs/nixos-25.11 to on 2026-05-10 (lastModified 1778430510) in several
  independent public flake.lock files;
- their narHash sha256-Ti+ZBvW6yrWWAg2szExVTwCd4qOJ3KlVr1tFHfyfi8Q= agrees with a
  `fetchTarball { sha256 = "1i4bkzy1siavmxaskp49lgi9s02gam6crb0d0abbbjmsyl39jbsf"; }` of the
  same revision found in another public repository (the same NAR hash in base32; checked here
  with `nix-hash --to-base16`), and a public write-up reports Nix 2.34 computing it too.

If the hash were wrong, `nix build` stops with "mismatch in field 'narHash'" before building
anything; `nix flake prefetch --json github:NixOS/nixpkgs/REV` re-derives it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NixpkgsPin:
    rev: str
    nar_hash: str
    last_modified: int
    branch: str
    owner: str = "NixOS"
    repo: str = "nixpkgs"

    @property
    def url(self) -> str:
        return f"github:{self.owner}/{self.repo}/{self.rev}"

    @property
    def short(self) -> str:
        return self.rev[:7]

    def lock_node(self) -> dict[str, object]:
        return {
            "locked": {
                "lastModified": self.last_modified,
                "narHash": self.nar_hash,
                "owner": self.owner,
                "repo": self.repo,
                "rev": self.rev,
                "type": "github",
            },
            "original": {
                "owner": self.owner,
                "repo": self.repo,
                "rev": self.rev,
                "type": "github",
            },
        }


NIXPKGS = NixpkgsPin(
    rev="8fd9daa3db09ced9700431c5b7ad0e8ba199b575",
    nar_hash="sha256-Ti+ZBvW6yrWWAg2szExVTwCd4qOJ3KlVr1tFHfyfi8Q=",
    last_modified=1778430510,
    branch="nixos-25.11",
)

STATE_VERSION = "25.11"  # system.stateVersion of every rendered appliance
