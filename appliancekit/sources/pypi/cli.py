"""python -m appliancekit.sources.pypi lock RECIPE_DIR: (re)generate a recipe's lock file."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from appliancekit.errors import ToolError, UserError
from appliancekit.sources.pypi.lockfile import format_lock, parse_pin
from appliancekit.sources.pypi.resolve import lock
from appliancekit.sources.pypi.tags import ARCHES


def main(argv: Sequence[str]) -> int:
    """python -m appliancekit.sources.pypi lock RECIPE_DIR [--glibc 2.41] [--arch A ...]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m appliancekit.sources.pypi")
    sub = parser.add_subparsers(dest="command", required=True)
    lock_cmd = sub.add_parser("lock", help="(re)generate a recipe's Python lock file")
    lock_cmd.add_argument("recipe_dir", type=Path)
    lock_cmd.add_argument("--glibc", default="2.41", help="newest glibc of the target suites")
    lock_cmd.add_argument("--arch", action="append", choices=ARCHES, help="default: all")
    args = parser.parse_args(argv)
    try:
        # the [python] table only: the rest of the recipe may not be valid without a lock yet
        recipe_file = args.recipe_dir / "recipe.toml"
        try:
            section = tomllib.loads(recipe_file.read_text()).get("python")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"cannot read the recipe: {exc}", file=recipe_file) from None
        if not isinstance(section, dict) or not section.get("requirements"):
            raise UserError("the recipe has no [python] requirements", file=recipe_file)
        for requirement in section["requirements"]:
            try:
                parse_pin(requirement)
            except ValueError as exc:
                raise UserError(str(exc), file=recipe_file, field="python.requirements") from None
        major, minor = (int(x) for x in args.glibc.split("."))
        if section.get("arches") and not args.arch:
            args.arch = list(section["arches"])
        result = lock(
            tuple(section["requirements"]),
            str(section.get("version", "3.13")),
            (major, minor),
            tuple(args.arch or ARCHES),
            log=lambda msg: print(msg, file=sys.stderr),
            deps=bool(section.get("deps", True)),
        )
        target = args.recipe_dir / str(section.get("lock", "python.lock"))
        target.write_text(format_lock(result))
        print(f"{target}: {len(result.wheels)} wheels", file=sys.stderr)
        for arch, names in result.unavailable:
            print(f"  {arch}: no wheel for {', '.join(names)}", file=sys.stderr)
    except (UserError, ToolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
