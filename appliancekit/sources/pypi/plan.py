"""The build plan: the wheels one architecture gets, from the lock alone, checked against the
recipe's [python] section."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliancekit.errors import UserError
from appliancekit.sources.debian import DebPackage
from appliancekit.sources.pypi.lockfile import read_lock
from appliancekit.sources.pypi.tags import MACHINES, wheel_glibc


@dataclass(frozen=True)
class PythonPlan:
    """The wheels one architecture gets, from the lock alone (no network)."""

    section: object  # recipe.PythonSection
    arch: str
    lock_file: Path
    wheels: tuple[DebPackage, ...]  # DebPackage-shaped: name, version, sha256, filename

    @property
    def version(self) -> str:
        return self.section.version  # type: ignore[attr-defined,no-any-return]

    @property
    def site(self) -> str:
        return self.section.site  # type: ignore[attr-defined,no-any-return]


def plan(recipe: object, arch: str) -> PythonPlan | None:
    """Check the recipe's lock against its [python] section and pick `arch`'s wheels.

    Raises a one-line UserError for a stale lock or an architecture PyPI has no wheel of
    some package for. Returns None for a recipe without [python]."""
    section = getattr(recipe, "python", None)
    if section is None:
        return None
    lock_file = Path(recipe.directory) / section.lock  # type: ignore[attr-defined]
    lock_data = read_lock(lock_file)
    regenerate = f"regenerate it with `python -m appliancekit.sources.pypi lock {lock_file.parent}`"
    if tuple(lock_data.requirements) != tuple(section.requirements):
        raise UserError(
            f"lock is for {list(lock_data.requirements)}, the recipe asks for "
            f"{list(section.requirements)}: {regenerate}",
            file=lock_file,
        )
    if lock_data.python != section.version:
        raise UserError(
            f"lock is for Python {lock_data.python}, the recipe's [python] version is "
            f"{section.version}: {regenerate}",
            file=lock_file,
        )
    if arch not in MACHINES:
        raise UserError(f"no Python wheels for architecture {arch!r}", file=lock_file)
    only = tuple(getattr(section, "arches", ()))
    if only and arch not in only:
        raise UserError(
            f"[python] arches is {', '.join(only)}: recipe {recipe.name!r} "  # type: ignore[attr-defined]
            f"cannot be built for {arch}",
            file=Path(recipe.directory) / "recipe.toml",  # type: ignore[attr-defined]
            field="python.arches",
        )
    missing = lock_data.missing(arch)
    if missing:
        more = f" (and {len(missing) - 1} more: {', '.join(missing[1:])})" if missing[1:] else ""
        raise UserError(
            f"PyPI has no {MACHINES[arch]} wheel of {missing[0]} for CPython {section.version}"
            f"{more}: recipe {recipe.name!r} cannot be built for {arch}",  # type: ignore[attr-defined]
            file=lock_file,
            field="python.requirements",
        )
    wheels = tuple(
        DebPackage(
            name=w.name,
            version=w.version,
            architecture=arch if wheel_glibc(w.filename) else "all",
            sha256=w.sha256,
            size=0,
            filename=w.filename,
        )
        for w in lock_data.for_arch(arch)
    )
    if not wheels:
        raise UserError(f"lock has no wheels for {arch}: {regenerate}", file=lock_file)
    return PythonPlan(section=section, arch=arch, lock_file=lock_file, wheels=wheels)
