"""Where recipes, boards and images live: a project directory holding recipes/ and boards/."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import appliancekit


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def recipes_dir(self) -> Path:
        return self.root / "recipes"

    @property
    def boards_dir(self) -> Path:
        return self.root / "boards"

    @property
    def clouds_dir(self) -> Path:
        return self.root / "clouds"

    @property
    def images_dir(self) -> Path:
        if env := os.environ.get("APPLIANCEKIT_IMAGES"):
            return Path(env).resolve()
        return self.root / "images"


def find_project(start: Path | None = None) -> Project:
    """$APPLIANCEKIT_HOME, else the nearest directory upwards with recipes/ and boards/,
    else the checkout this package was installed from."""
    if env := os.environ.get("APPLIANCEKIT_HOME"):
        return Project(Path(env).resolve())
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "recipes").is_dir() and (candidate / "boards").is_dir():
            return Project(candidate)
    return Project(Path(appliancekit.__file__).resolve().parent.parent)
