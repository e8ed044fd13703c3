"""The unminimised root tree: unpacked packages plus everything generated from the recipe.

Generated here: merged-/usr links, passwd/group, os-release, the recipe's configuration
files (jinja2 templates with the resolved settings), copied trees (e.g. the site), the
supervisor's service directories, mount points, and the links that put declared state on
the data partition. Nothing per-device is baked in.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from appliancekit import supervisor
from appliancekit.board import Board
from appliancekit.content.install import content_users
from appliancekit.content.install import install as install_content
from appliancekit.errors import UserError
from appliancekit.minimise import ClosureRequest
from appliancekit.recipe import Recipe, ResolvedSettings, Service, User
from appliancekit.settings_kinds import as_text
from appliancekit.sources.unpack import UnpackedPackage
from appliancekit.templating import render_string, template_error
from appliancekit.tomlsource import KeyPath, TomlSource
from appliancekit.tree import Entry, RootTree

DATA_MOUNT = "/data"
# Per-device settings are not known at build time: templates get a placeholder for them,
# the rendered file is kept under PER_DEVICE_SOURCE and the initramfs fills the values in
# (from settings.env on the boot partition) into PER_DEVICE_TARGET, where the real path links.
PER_DEVICE_SOURCE = "/etc/appliancekit/per-device"
PER_DEVICE_TARGET = "/run/appliancekit/per-device"
PER_DEVICE_FILES = "/etc/appliancekit/per-device-files"
SETTINGS_DEFAULTS = "/etc/appliancekit/settings.defaults"
# "NAME KIND" of each per-device setting: the initramfs takes only these from settings.env
# and user-data, and only values of their kind's characters (settings_kinds.boot_glob)
SETTINGS_KINDS = "/etc/appliancekit/settings.kinds"
# Directories the initramfs creates at every boot (state on /data, runtime dirs on /run):
# "PATH UID GID MODE" lines.
BOOT_DIRS_FILE = "/etc/appliancekit/boot-dirs"
# the release's SOURCE_DATE_EPOCH: the initramfs never lets the clock start before it
CLOCK_FLOOR_FILE = "/etc/appliancekit/clock-floor"
# on /data: the update agent keeps the time in this file's modification time, and the
# initramfs never lets the clock start before it either (a Pi resumes after a power cut
# where it was, not at the build time)
SAVED_CLOCK = ".appliancekit/clock"
MOUNT_POINTS = {
    "/proc": 0o555,
    "/sys": 0o555,
    "/dev": 0o755,
    "/run": 0o755,
    "/tmp": 0o1777,
    DATA_MOUNT: 0o755,
}
ROOT_USER = User("root", 0, 0, "/root")


@dataclass(frozen=True)
class RootPlan:
    """The full tree, what minimise must keep from it, and every service it supervises (the
    recipe's and those its [[content]] trees add), for the manifest and the audit."""

    tree: RootTree
    requests: tuple[ClosureRequest, ...]
    services: tuple[Service, ...] = ()


def package_tree(packages: Sequence[UnpackedPackage]) -> RootTree:
    tree = RootTree()
    tree.ensure_dir("/")
    for unpacked in sorted(packages, key=lambda u: u.package.name):
        for item in unpacked.files:
            tree.add(
                Entry(
                    path=item.path,
                    kind=item.kind,
                    mode=item.mode,
                    uid=item.uid,
                    gid=item.gid,
                    size=item.size,
                    source=unpacked.host_path(item.path) if item.kind == "file" else None,
                    target=item.target,
                    package=unpacked.package.name,
                )
            )
    return tree


def build_root(
    packages: Sequence[UnpackedPackage], recipe: Recipe, settings: ResolvedSettings, board: Board
) -> RootPlan:
    tree = package_tree(packages)
    users = {u.name: u for u in (ROOT_USER, *recipe.users, *content_users(recipe))}
    _merged_usr_links(tree)
    _library_alternatives(tree, board)
    _identity(tree, recipe, users)
    context = template_context(recipe, settings, board, users)
    per_device = generated_files(tree, recipe, context, users)
    content = install_content(
        tree,
        recipe,
        board.arch,
        lambda index, expression: render(
            recipe,
            context,
            template=None,
            content=expression,
            what=f"content[{index}]",
            key="seed",
        ),
        context["settings"],  # type: ignore[arg-type]
    )
    for path, text, owner in content.files:
        line = place_file(tree, path, text, 0o644, users[owner])
        if line is not None:
            per_device.append(line)
    tree.add_file(PER_DEVICE_FILES, "".join(f"{line}\n" for line in per_device))
    tree.add_file(SETTINGS_DEFAULTS, settings_defaults(recipe, settings))
    tree.add_file(SETTINGS_KINDS, settings_kinds_text(recipe))
    _copied_trees(tree, recipe, context, users)
    services = (*recipe.services, *content.services)
    boot_dirs = (
        _data_links(tree, recipe, users) + _runtime_dirs(services, users) + content.boot_dirs
    )
    tree.add_file(BOOT_DIRS_FILE, "".join(f"{line}\n" for line in boot_dirs))
    for path, mode in MOUNT_POINTS.items():
        tree.entries.pop(path, None)
        tree.add(Entry(path, "dir", mode))
    supervisor_request = supervisor.install(tree, services, users)
    recipe_request = ClosureRequest(
        executables=tuple(
            dict.fromkeys((*(s.exec[0] for s in recipe.services), *recipe.debian.executables))
        ),
        keep=recipe.debian.keep,
        libraries=recipe.debian.libraries,
        origin=f"{recipe.source_file}: debian",
        source=recipe.source_file,
        fields=_declarations(recipe),
    )
    return RootPlan(tree, (supervisor_request, recipe_request), services)


def _declarations(recipe: Recipe) -> tuple[tuple[str, KeyPath], ...]:
    """Where in recipe.toml each path the root must hold is declared (the first place)."""
    where: dict[str, KeyPath] = {}
    for i, service in enumerate(recipe.services):
        where.setdefault(service.exec[0], ("service", i, "exec", 0))
    for key in ("executables", "keep", "libraries"):
        for j, path in enumerate(getattr(recipe.debian, key)):
            where.setdefault(path, ("debian", key, j))
    return tuple(where.items())


def placeholder(name: str) -> str:
    return f"@@AK:{name}@@"


def template_context(
    recipe: Recipe, settings: ResolvedSettings, board: Board, users: Mapping[str, User]
) -> dict[str, object]:
    values = settings.as_dict()
    for setting in recipe.settings:
        if setting.per_device:
            values[setting.name] = placeholder(setting.name)
    return {
        "settings": values,
        "recipe": recipe,
        "board": board,
        "users": users,
        "data": DATA_MOUNT,
    }


def _environment(recipe: Recipe) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(recipe.directory)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(
    recipe: Recipe,
    context: Mapping[str, object],
    *,
    template: str | None,
    content: str | None,
    what: str,
    key: str = "content",
) -> str:
    """Render a [[file]] template (or the inline text at `what`.`key` of recipe.toml); an
    error is one line naming the template's file and line."""
    env = _environment(recipe)
    if template is None:
        first_line = TomlSource.from_file(recipe.source_file).value_line(f"{what}.{key}")
        return render_string(
            content or "",
            dict(context),
            file=recipe.source_file,
            field=f"{what}.{key}",
            first_line=first_line,
            environment=env,
        )
    try:
        return env.get_template(template).render(**context)
    except jinja2.TemplateError as exc:
        raise template_error(exc, file=recipe.directory / template, field=what) from None


def _merged_usr_links(tree: RootTree) -> None:
    for name in ("bin", "sbin", "lib", "lib64"):
        if f"/usr/{name}" in tree:
            tree.entries.pop(f"/{name}", None)
            tree.add_symlink(f"/{name}", f"usr/{name}")


# Debian's BLAS and LAPACK packages put their library in a subdirectory, and their maintainer
# script (never run here) links it where ld.so looks, through update-alternatives: nmap's
# liblinear needs libblas.so.3 that way.
ALTERNATIVE_LIBRARY_DIRS = ("blas", "lapack")


def _library_alternatives(tree: RootTree, board: Board) -> None:
    libdir = f"/usr/lib/{board.arch.gnu_triplet}"
    for sub in ALTERNATIVE_LIBRARY_DIRS:
        prefix = f"{libdir}/{sub}/"
        for path in sorted(tree.entries):
            name = path[len(prefix) :]
            linked = f"{libdir}/{name}"
            if path.startswith(prefix) and "/" not in name and ".so." in name and linked not in tree:
                tree.add_symlink(linked, f"{sub}/{name}")


def _identity(tree: RootTree, recipe: Recipe, users: Mapping[str, User]) -> None:
    by_gid = {u.gid: u.name for u in users.values()}
    passwd = "".join(
        f"{u.name}:x:{u.uid}:{u.gid}::{u.home}:/nonexistent\n"
        for u in sorted(users.values(), key=lambda u: u.uid)
    )
    members: dict[str, list[str]] = {}
    for user in users.values():
        for group in user.groups:
            members.setdefault(group, []).append(user.name)
    group = "".join(
        f"{name}:x:{gid}:{','.join(sorted(members.get(name, [])))}\n"
        for gid, name in sorted(by_gid.items())
    )
    tree.add_file("/etc/passwd", passwd)
    tree.add_file("/etc/group", group)
    # name resolution: the initramfs writes DHCP's servers to /run/resolv.conf (the root is
    # read-only); a recipe's own [[file]] for either path replaces these
    tree.add_symlink("/etc/resolv.conf", "../run/resolv.conf")
    tree.add_file("/etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    tree.add_file(
        "/etc/os-release",
        f'NAME="appliancekit {recipe.name}"\nID=appliancekit\nVARIANT_ID={recipe.name}\n'
        f'PRETTY_NAME="{recipe.summary}"\n',
    )


def _owner(users: Mapping[str, User], name: str, what: str) -> User:
    if name not in users:
        raise UserError(f"unknown owner {name!r}", field=what)
    return users[name]


def generated_files(
    tree: RootTree, recipe: Recipe, context: Mapping[str, object], users: Mapping[str, User]
) -> list[str]:
    """Render the recipe's files; returns the per-device ones as "PATH UID GID MODE" lines."""
    per_device: list[str] = []
    for index, item in enumerate(recipe.files):
        what = f"file[{index}]"
        text = render(recipe, context, template=item.template, content=item.content, what=what)
        owner = _owner(users, item.owner, f"{what}.owner")
        line = place_file(tree, item.path, text, item.mode, owner)
        if line is not None:
            per_device.append(line)
    return per_device


def place_file(tree: RootTree, path: str, text: str, mode: int, owner: User) -> str | None:
    """A rendered file into the tree. One holding per-device placeholders goes under
    PER_DEVICE_SOURCE, linked from `path`; its "PATH UID GID MODE" line is returned."""
    tree.entries.pop(path, None)
    if "@@AK:" in text:
        tree.add_file(PER_DEVICE_SOURCE + path, text, mode=0o644)
        tree.add_symlink(path, PER_DEVICE_TARGET + path)
        return f"{path} {owner.uid} {owner.gid} {mode:04o}"
    tree.add_file(path, text, mode=mode, uid=owner.uid, gid=owner.gid)
    return None


def settings_kinds_text(recipe: Recipe) -> str:
    return "".join(sorted(f"{s.name} {s.kind}\n" for s in recipe.settings if s.per_device))


def settings_defaults(recipe: Recipe, settings: ResolvedSettings) -> str:
    """Build-time values of the per-device settings: used where settings.env is silent."""
    values = settings.as_dict()
    lines = []
    for setting in recipe.settings:
        if setting.per_device:
            lines.append(f"{setting.name}={as_text(values.get(setting.name, ''))}\n")
    return "".join(sorted(lines))


def _copied_trees(
    tree: RootTree, recipe: Recipe, context: Mapping[str, object], users: Mapping[str, User]
) -> None:
    for index, item in enumerate(recipe.trees):
        what = f"tree[{index}].source"
        source = Path(
            render(
                recipe,
                context,
                template=None,
                content=item.source,
                what=f"tree[{index}]",
                key="source",
            ).strip()
        )
        if not source.is_absolute():
            source = recipe.directory / source
        if not source.is_dir():
            raise UserError(f"{source} is not a directory", file=recipe.source_file, field=what)
        owner = _owner(users, item.owner, f"tree[{index}].owner")
        tree.ensure_dir(item.path)
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            rel = os.path.relpath(dirpath, source)
            base = posixpath.normpath(posixpath.join(item.path, rel))
            tree.ensure_dir(base, uid=owner.uid, gid=owner.gid)
            for name in sorted(filenames):
                host = Path(dirpath) / name
                if host.is_symlink() or not host.is_file():
                    continue
                tree.add(
                    Entry(
                        posixpath.join(base, name),
                        "file",
                        0o644,
                        owner.uid,
                        owner.gid,
                        host.stat().st_size,
                        source=host,
                    )
                )


def _runtime_dirs(services: Sequence[Service], users: Mapping[str, User]) -> list[str]:
    """/run/SERVICE, owned by the service's user: its pid files and sockets go there."""
    return [f"/run/{s.name} {users[s.user].uid} {users[s.user].gid} 0755" for s in services]


def _data_links(tree: RootTree, recipe: Recipe, users: Mapping[str, User]) -> list[str]:
    """Each declared state path becomes a link to /data/BASENAME, created at boot."""
    service_users = [users[s.user] for s in recipe.services if s.user != "root"]
    default_owner = service_users[0] if service_users else ROOT_USER
    lines: list[str] = []
    seen: dict[str, str] = {}
    owners = dict(recipe.data_owners)
    for path in owners:
        if path not in recipe.data_paths:
            raise UserError(
                f"{path} is not one of [data] paths", file=recipe.source_file, field="data.owners"
            )
    for path in recipe.data_paths:
        name = posixpath.basename(path.rstrip("/"))
        if name in seen:
            raise UserError(
                f"{path} and {seen[name]} would both live at {DATA_MOUNT}/{name}",
                file=recipe.source_file,
                field="data.paths",
            )
        seen[name] = path
        existing = tree.get(path)
        owner = default_owner
        if existing is not None and existing.uid != 0:
            owner = next((u for u in users.values() if u.uid == existing.uid), default_owner)
        if path in owners:
            owner = _owner(users, owners[path], f"data.owners.{path}")
        for child in tree.walk(path):
            tree.entries.pop(child, None)
        tree.add_symlink(path, f"{DATA_MOUNT}/{name}")
        lines.append(f"{DATA_MOUNT}/{name} {owner.uid} {owner.gid} 0750")
    return lines
