"""python -m appliancekit.sources.npm lock RECIPE_DIR: (re)generate a recipe's npm lock."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from appliancekit.errors import ToolError, UserError
from appliancekit.sources.npm.lockfile import format_lock, parse_pin
from appliancekit.sources.npm.resolve import NotInRegistry, lock
from appliancekit.tomlsource import TomlSource


def main(argv: Sequence[str]) -> int:
    """python -m appliancekit.sources.npm lock RECIPE_DIR [--registry URL]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m appliancekit.sources.npm")
    sub = parser.add_subparsers(dest="command", required=True)
    lock_cmd = sub.add_parser("lock", help="(re)generate a recipe's npm lock file")
    lock_cmd.add_argument("recipe_dir", type=Path)
    lock_cmd.add_argument("--registry", help="default: the host's npm configuration")
    args = parser.parse_args(argv)
    try:
        write_lock(args.recipe_dir, args.registry, log=lambda m: print(m, file=sys.stderr))
    except (UserError, ToolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def write_lock(recipe_dir: Path, registry: str | None = None, log=None) -> Path:  # type: ignore[no-untyped-def]
    """Resolve the recipe's [npm] requirements and write its lock; returns the lock's path.

    Only the [npm] table is read: the rest of the recipe may not be valid without a lock."""
    source = TomlSource.from_file(recipe_dir / "recipe.toml")
    section = source.data.get("npm")
    if not isinstance(section, dict) or not section.get("requirements"):
        raise UserError("the recipe has no [npm] requirements", file=source.file, field="npm")
    requirements = section["requirements"]
    if not isinstance(requirements, list):
        source.fail(("npm", "requirements"), "expected a list of NAME@VERSION")
    for i, requirement in enumerate(requirements):
        try:
            parse_pin(str(requirement))
        except ValueError as exc:
            source.fail(("npm", "requirements", i), str(exc))
    overrides = section.get("overrides", {})
    if not isinstance(overrides, dict) or not all(isinstance(v, str) for v in overrides.values()):
        source.fail(("npm", "overrides"), 'expected NAME = "VERSION" entries')
    try:
        result = lock(tuple(requirements), registry, tuple(sorted(overrides.items())), log=log)
    except NotInRegistry as exc:
        index = requirements.index(exc.requirement) if exc.requirement in requirements else None
        where = ("npm", "requirements", index) if index is not None else ("npm", "requirements")
        source.fail(where, f"the registry has no {exc.requirement}")
    target = recipe_dir / str(section.get("lock", "npm.lock"))
    target.write_text(format_lock(result))
    if log is not None:
        log(f"{target}: {len(result.packages)} packages")
    return target
