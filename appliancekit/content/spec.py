"""[[content]] in recipe.toml: a tree the appliance takes from a git branch instead of the
image, kept in step by content-sync (appliancekit/content/program/) and switched atomically.

    [[content]]
    name = "site"                 # required, unique; state in /data/content/NAME
    path = "/srv/www"             # required: where the service reads the tree (a link to
                                  # the tree in use; /data/content/NAME/current)
    seed = "{{ settings.site }}"  # the image's copy (jinja2, like [[tree]] source), served
                                  # until the first commit is applied; empty tree without it
    repo = "site_repo"            # required: per-device setting (kind url) with the repository
    branch = "site_branch"        # required: per-device setting (kind gitref)
    interval = "site_interval"    # required: per-device setting (kind int), seconds
    signer = "site_signer"        # per-device setting (kind sshkey): when set on a device,
                                  # only commits signed by that key are applied
    checks = ["require:index.html"]  # what a commit must pass to be applied:
                                  # require:PATH, zone:GLOB, aliases:PATH

The service must read the tree through the link on each use (nginx reads files per request;
Postfix's daemons reopen their tables when they restart on their own). Signalling a service
after a switch is not offered: content-sync runs as its own user, which may not control
other services' supervisors.

Settings are named, not templated: the names are checked here (declared, per device, the
right kind), so a typo is one line of recipe.toml, not a device that never syncs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliancekit.settings_kinds import SettingKind
from appliancekit.tomlsource import (
    Field,
    KeyPath,
    TomlSource,
    abs_path,
    list_of,
    string,
    suggest,
)

CHECK_KINDS = ("require", "zone", "aliases")
_NAME_RE = r"[a-z][a-z0-9-]*"
_CHECK_RE = re.compile(r"(?P<kind>[a-z]+):(?P<arg>[A-Za-z0-9._*?/\[\]-]+)")
# Which kind each setting reference must have.
SETTING_KINDS = {
    "repo": SettingKind.URL,
    "branch": SettingKind.GITREF,
    "interval": SettingKind.INT,
    "signer": SettingKind.SSHKEY,
}


@dataclass(frozen=True)
class ContentTree:
    name: str
    path: str  # where the service reads it (a link into /data)
    repo: str  # names of per-device settings
    branch: str
    interval: str
    seed: str | None = None  # jinja2 over the settings: a host directory
    signer: str | None = None
    checks: tuple[str, ...] = ()  # KIND:ARGUMENT


def _check(src: TomlSource, value: Any, path: KeyPath) -> str:
    value = string()(src, value, path)
    m = _CHECK_RE.fullmatch(value)
    if not m or m["kind"] not in CHECK_KINDS:
        src.fail(
            path,
            f"invalid check {value!r}; expected KIND:ARGUMENT with KIND one of "
            f"{', '.join(CHECK_KINDS)} (e.g. require:index.html, zone:*.zone)",
        )
    arg = m["arg"]
    if arg.startswith("/") or ".." in arg.split("/"):
        src.fail(path, f"{value!r}: the path is relative to the content tree")
    return value


FIELDS = (
    Field(
        "name",
        string(pattern=_NAME_RE, hint="use lowercase letters, digits and '-'"),
        required=True,
    ),
    Field("path", abs_path(), required=True),
    Field("seed", string(), default=None),
    Field("repo", string(), required=True),
    Field("branch", string(), required=True),
    Field("interval", string(), required=True),
    Field("signer", string(), default=None),
    Field("checks", list_of(_check), default=()),
)


def build_content(
    src: TomlSource,
    raw: Sequence[Mapping[str, Any]],
    settings: Mapping[str, tuple[SettingKind, bool]],
    reserved_paths: Sequence[str],
) -> tuple[ContentTree, ...]:
    """The [[content]] tables, checked against the recipe's settings (name -> (kind,
    per_device)) and the paths other declarations already use."""
    trees = []
    seen: dict[str, int] = {}
    paths: dict[str, int] = {}
    for i, item in enumerate(raw):
        where = ("content", i)
        if item["name"] in seen:
            src.fail(
                (*where, "name"),
                f"duplicate content name {item['name']!r} (also content[{seen[item['name']]}])",
            )
        seen[item["name"]] = i
        if item["path"] in paths:
            src.fail(
                (*where, "path"),
                f"duplicate content path {item['path']!r} (also content[{paths[item['path']]}])",
            )
        paths[item["path"]] = i
        if item["path"] in reserved_paths:
            src.fail((*where, "path"), f"{item['path']} is also a [[tree]] or [data] path")
        for key, kind in SETTING_KINDS.items():
            name = item[key]
            if name is None:
                continue
            if name not in settings:
                src.fail(
                    (*where, key),
                    f"{name!r} is not a setting of this recipe{suggest(name, settings)}"
                    f' (declare [settings.{name}] with kind = "{kind}" and per_device = true)',
                )
            declared_kind, per_device = settings[name]
            if declared_kind != kind or not per_device:
                src.fail(
                    (*where, key),
                    f'setting {name!r} must have kind = "{kind}" and per_device = true'
                    f" (it is {declared_kind}{', per device' if per_device else ', baked in'})",
                )
        trees.append(ContentTree(**item))
    return tuple(trees)
