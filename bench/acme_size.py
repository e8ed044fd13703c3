"""What the ACME client costs in a sealed root: uacme (+ curl for the DNS-01 hook) as the
recipes ship it, against lego (Debian's, Go, PowerDNS provider built in), each against the
same appliance without an ACME client, all three built in this run.

    python -m bench.acme_size [--recipe homepage] [--board qemu-virt-arm64] [--json]

Three builds of copies of the recipe (in a scratch directory, resolved with apt: the copies
have no lock): as shipped; without uacme and curl (the baseline: openssl, coreutils and the
scripts stay, they serve a user's own or a self-signed certificate too); without them and
with lego. The figure is the sealed root (erofs, lz4hc) of each.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from appliancekit.board import find_board
from appliancekit.build import BuildPlan, build
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.output import Reporter
from appliancekit.project import Project
from appliancekit.recipe import find_recipe, resolve_settings
from bench.figures import Figure, Unit

REPO = Path(__file__).resolve().parent.parent
CLIENT_PACKAGES = ('"uacme", ', '"curl", ', '    "uacme",\n', '    "curl",\n')
CLIENT_EXECUTABLES = ('    "/usr/bin/uacme",\n', '    "/usr/bin/curl",\n')


def variant(source: Path, dest: Path, *, lego: bool) -> Path:
    """A copy of the recipe without uacme and curl (with lego instead when `lego`)."""
    shutil.copytree(source, dest)
    for lock in dest.glob("debian-*.lock"):
        lock.unlink()
    toml = dest / "recipe.toml"
    text = toml.read_text()
    for word in (*CLIENT_PACKAGES, *CLIENT_EXECUTABLES):
        text = text.replace(word, "")
    if lego:
        text = re.sub(r"packages = \[", 'packages = ["lego", ', text, count=1)
        text = text.replace("executables = [\n", 'executables = [\n    "/usr/bin/lego",\n', 1)
    toml.write_text(text)
    return dest


def sealed_root(recipe_dir: Path, board: str, images: Path) -> int:
    project = Project(REPO)
    recipe = find_recipe(recipe_dir.name, recipe_dir.parent)
    plan = BuildPlan(
        recipe, find_board(board, project.boards_dir), resolve_settings(recipe, {}), images
    )
    result = build(plan, Cache(default_cache_dir()), Reporter())
    return int(result.manifest.sizes.sealed_root_bytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="homepage")
    parser.add_argument("--board", default="qemu-virt-arm64")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    source = REPO / "recipes" / args.recipe
    with tempfile.TemporaryDirectory(prefix="bench-acme.") as tmp:
        work = Path(tmp)
        sizes = {}
        for name, lego in (("without", False), ("lego", True)):
            recipe_dir = variant(source, work / name / args.recipe, lego=lego)
            sizes[name] = sealed_root(recipe_dir, args.board, work / f"images-{name}")
        sizes["uacme"] = sealed_root(source, args.board, work / "images-uacme")
    base = sizes["without"]
    figures = [
        Figure(
            f"{args.recipe} sealed root with uacme + curl",
            sizes["uacme"],
            Unit.BYTES,
            "the same without an ACME client",
            base,
        ),
        Figure(
            f"{args.recipe} sealed root with lego",
            sizes["lego"],
            Unit.BYTES,
            "the same without an ACME client",
            base,
        ),
        Figure(
            "uacme + curl, added",
            sizes["uacme"] - base,
            Unit.BYTES,
            "lego, added",
            sizes["lego"] - base,
        ),
    ]
    if args.json:
        print(json.dumps([f.to_json() for f in figures], indent=2))
    else:
        for f in figures:
            print(
                f"{f.name}: {f.unit.show(f.value)} | {f.baseline_name}: "
                f"{f.unit.show(f.baseline)} | {f.ratio:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
