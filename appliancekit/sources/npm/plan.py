"""A target's npm packages: the recipe's [npm] section checked against its lock, and the
packages that fit the architecture picked (fails fast, no network)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliancekit.errors import UserError
from appliancekit.sources.npm.lockfile import LockedPackage, NpmLock, read_lock
from appliancekit.sources.npm.platform import NPM_CPU, fits


@dataclass(frozen=True)
class NpmPlan:
    section: object  # recipe.NpmSection
    arch: str
    lock_file: Path
    lock: NpmLock
    packages: tuple[LockedPackage, ...]  # what this architecture installs
    skipped: tuple[LockedPackage, ...]  # optional packages left out (other platforms, omitted)

    @property
    def prefix(self) -> str:
        return str(self.section.prefix)  # type: ignore[attr-defined]


def plan(recipe: object, arch: str) -> NpmPlan | None:
    """Read the lock of `recipe`'s [npm] section and pick `arch`'s packages.

    One-line UserErrors for a stale lock and for a package npm requires that has no build
    for the architecture. None for a recipe without [npm]."""
    section = getattr(recipe, "npm", None)
    if section is None:
        return None
    lock_file = Path(recipe.directory) / section.lock  # type: ignore[attr-defined]
    lock = read_lock(lock_file)
    regenerate = f"regenerate it with `python -m appliancekit.sources.npm lock {lock_file.parent}`"
    if tuple(lock.requirements) != tuple(section.requirements) or tuple(lock.overrides) != tuple(
        sorted(section.overrides)
    ):
        message = (
            f"lock is for {list(lock.requirements)} (overrides {dict(lock.overrides)}), the "
            f"recipe asks for {list(section.requirements)} (overrides "
            f"{dict(section.overrides)}): {regenerate}"
        )
        if lock.source is not None:
            raise lock.source.error(("requirements",), message)
        raise UserError(message, file=lock_file, field="requirements")
    if arch not in NPM_CPU:
        raise UserError(f"no npm platform for architecture {arch!r}", file=lock_file)
    omit_optional = bool(section.omit_optional)
    packages, skipped = [], []
    for package in lock.packages:
        if package.optional and (omit_optional or not fits(package, arch)):
            skipped.append(package)
        elif not fits(package, arch):
            raise lock.error(
                package,
                "cpu" if package.cpu else "os",
                f"{package.name} {package.version} has no build for linux-{NPM_CPU[arch]} "
                f"(os {list(package.os)}, cpu {list(package.cpu)}): recipe "
                f"{recipe.name!r} cannot be built for {arch}",  # type: ignore[attr-defined]
            )
        else:
            packages.append(package)
    if not packages:
        raise UserError(f"lock has no packages for {arch}: {regenerate}", file=lock_file)
    return NpmPlan(section, arch, lock_file, lock, tuple(packages), tuple(skipped))
