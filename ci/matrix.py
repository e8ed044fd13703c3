#!/usr/bin/env python3
"""Print the release matrices as GitHub Actions outputs (`debian=...`, `nixos=...`).

debian: every recipe with a [debian] section x every board in boards/, except boards whose
        architecture the recipe's python.lock lists as [unavailable] (PyPI has no wheels
        for it: the build would stop saying so)
nixos:  every recipe x every board, with the runner that builds that board's image natively
        (aarch64 on an arm64 runner; x86_64 and the cross-compiled armv7l on x86_64)
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # appliancekit.release.matrix is standard library only

from appliancekit.release.matrix import debian_matrix  # noqa: E402

RUNNERS = {"arm64": "ubuntu-24.04-arm", "amd64": "ubuntu-24.04", "armhf": "ubuntu-24.04"}


def main() -> None:
    recipes = {
        p.parent.name: tomllib.loads(p.read_text())
        for p in sorted((ROOT / "recipes").glob("*/recipe.toml"))
    }
    boards = {
        p.stem: tomllib.loads(p.read_text())["board"]
        for p in sorted((ROOT / "boards").glob("*.toml"))
    }
    debian = [
        {"recipe": e.recipe, "board": e.board}
        for e in debian_matrix(ROOT / "recipes", ROOT / "boards")
    ]
    nixos = [
        {"recipe": r, "board": b, "runner": RUNNERS[info["arch"]]}
        for r, data in recipes.items()
        if "nixos" in data
        for b, info in boards.items()
    ]
    print(f"debian={json.dumps({'include': debian})}")
    print(f"nixos={json.dumps({'include': nixos})}")


if __name__ == "__main__":
    main()
