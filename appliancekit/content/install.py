"""What a recipe's [[content]] trees put into the root: the content-sync program, one
configuration file per tree (per device: the repository, branch, interval and signing key
are filled in at boot), the image's seed copy of each tree, the link the service reads
through, the state directory on /data, and the s6 service that runs the program.

    PATH (e.g. /srv/www) -> /data/content/NAME/current -> trees/COMMIT   (after a sync)
                                                        -> /usr/share/appliancekit/content/NAME
                                                           (the seed, until the first sync)

content-sync flips `current` with one rename, so the service reads the whole old tree or
the whole new one. It runs as its own user, which owns /data/content and nothing else.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from appliancekit.board import Architecture
from appliancekit.content.gobuild import go_build
from appliancekit.content.spec import ContentTree
from appliancekit.errors import UserError
from appliancekit.recipe import Recipe, Service, User
from appliancekit.tree import Entry, RootTree

PROGRAM_SOURCE = Path(__file__).parent / "program"
PROGRAM = "/usr/lib/appliancekit/content-sync"
CONFIG_DIR = "/etc/appliancekit/content"
SEED_DIR = "/usr/share/appliancekit/content"
STATE_DIR = "/data/content"
SERVICE = "content-sync"
USER = User("content", 990, 990, STATE_DIR)


@dataclass
class ContentParts:
    """What rootfs adds beside the recipe's own declarations."""

    users: tuple[User, ...] = ()
    services: tuple[Service, ...] = ()
    boot_dirs: list[str] = field(default_factory=list)  # "PATH UID GID MODE"
    # (path, text, owner) of configuration files rendered like the recipe's [[file]]s
    files: list[tuple[str, str, str]] = field(default_factory=list)


def content_users(recipe: Recipe) -> tuple[User, ...]:
    if not recipe.content:
        return ()
    for user in recipe.users:
        if user.name == USER.name or user.uid == USER.uid:
            raise UserError(
                f"user {user.name!r} (uid {user.uid}) clashes with content-sync's own user"
                f" {USER.name} (uid {USER.uid})",
                file=recipe.source_file,
                field="user",
            )
    return (USER,)


def config_text(tree: ContentTree, settings: Mapping[str, object]) -> str:
    """content-sync's configuration of one tree. The settings it names are per device, so
    `settings` holds their placeholders, which the initramfs fills in at boot."""

    def setting(name: str | None) -> str:
        return str(settings[name]) if name else ""

    lines = [
        f"name={tree.name}",
        f"dir={STATE_DIR}/{tree.name}",
        f"seed={SEED_DIR}/{tree.name}" if tree.seed else "seed=",
        f"repo={setting(tree.repo)}",
        f"branch={setting(tree.branch)}",
        f"interval={setting(tree.interval)}",
        f"signer={setting(tree.signer)}",
        *(f"check={c}" for c in tree.checks),
    ]
    return "\n".join(lines) + "\n"


def config_files(recipe: Recipe, settings: Mapping[str, object]) -> list[tuple[str, str]]:
    """(path, text) of content-sync's configuration file for each tree."""
    return [(f"{CONFIG_DIR}/{t.name}.conf", config_text(t, settings)) for t in recipe.content]


def install(
    tree: RootTree,
    recipe: Recipe,
    arch: Architecture,
    render_seed: Callable[[int, str], str],
    settings: Mapping[str, object],
) -> ContentParts:
    """Add the program, seeds and links; return the users, service, boot directories and
    configuration files for rootfs to place. `render_seed(index, template)` renders a seed
    expression against the settings (the same way [[tree]] sources are)."""
    if not recipe.content:
        return ContentParts()
    binary = go_build(PROGRAM_SOURCE, "content-sync", arch)
    tree.add(Entry(PROGRAM, "file", 0o755, size=binary.stat().st_size, source=binary))
    parts = ContentParts(users=content_users(recipe))
    parts.boot_dirs.append(f"{STATE_DIR} {USER.uid} {USER.gid} 0755")
    for index, item in enumerate(recipe.content):
        if item.seed:
            source = Path(render_seed(index, item.seed).strip())
            if not source.is_absolute():
                source = recipe.directory / source
            if not source.is_dir():
                raise UserError(
                    f"{source} is not a directory",
                    file=recipe.source_file,
                    field=f"content[{index}].seed",
                )
            _copy_seed(tree, source, f"{SEED_DIR}/{item.name}")
        for child in tree.walk(item.path) if item.path in tree else ():
            tree.entries.pop(child, None)
        tree.add_symlink(item.path, f"{STATE_DIR}/{item.name}/current")
        parts.boot_dirs.append(f"{STATE_DIR}/{item.name} {USER.uid} {USER.gid} 0755")
    parts.files = [(path, text, "root") for path, text in config_files(recipe, settings)]
    parts.services = (Service(name=SERVICE, exec=(PROGRAM, "run", CONFIG_DIR), user=USER.name),)
    return parts


def _copy_seed(tree: RootTree, source: Path, dest: str) -> None:
    """The image's copy, root-owned and world-readable (the service reads it, nobody writes)."""
    tree.ensure_dir(dest)
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        rel = os.path.relpath(dirpath, source)
        base = posixpath.normpath(posixpath.join(dest, rel))
        tree.ensure_dir(base)
        for name in sorted(filenames):
            host = Path(dirpath) / name
            if host.is_symlink() or not host.is_file():
                continue
            tree.add(
                Entry(
                    posixpath.join(base, name), "file", 0o644, size=host.stat().st_size, source=host
                )
            )
