"""Per-device settings: `settings.env` on the boot partition, and EC2 user-data.

The appliance reads this format at boot (boot/templates/init.sh.j2). It is kept
deliberately tiny so that the boot side needs no parser beyond "split at the first =":

    # comment lines start with '#'
    hostname=pi1
    domain=example.org

NAME matches [a-z][a-z0-9_]*; VALUE is taken literally (no quotes, no backslash escapes).

Every value that reaches a device goes through `check_device_settings`: the name must be a
per-device setting of the image's recipe (its manifest's setting records) and the value
must pass its kind's conversion (settings_kinds.convert, the same code `build` uses).
`flash -s` / `--settings FILE`, `user-data`, the boot test's [test] settings and its EC2
user-data all come through here, so a value refused by one is refused by all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from appliancekit.errors import UserError
from appliancekit.manifest import Manifest, SettingRecord
from appliancekit.recipe import UNIVERSAL_SETTINGS, Recipe
from appliancekit.settings_kinds import (
    DEVICE_NAME_RE,
    MAX_USER_DATA,
    PRINTABLE,
    SettingKind,
    as_text,
    convert,
    parse_assignments,
)
from appliancekit.tomlsource import TomlSource

SETTINGS_FILE = "settings.env"
# per-device settings every appliance has (recipe.UNIVERSAL_SETTINGS)
UNIVERSAL = tuple(s.name for s in UNIVERSAL_SETTINGS)
MASK = "(secret)"


def setting_records(recipe: Recipe) -> tuple[SettingRecord, ...]:
    """What the manifest records of the recipe's settings."""
    return tuple(
        SettingRecord(s.name, str(s.kind), per_device=s.per_device, secret=s.secret)
        for s in sorted(recipe.settings, key=lambda s: s.name)
    )


def device_records(manifest: Manifest) -> dict[str, SettingRecord]:
    """The image's per-device settings by name."""
    if not manifest.setting_records:
        raise UserError(
            f"the manifest of {manifest.name} does not record its settings' kinds (built by"
            " an older appliancekit): rebuild the image to set per-device settings",
            field="setting_records",
        )
    return {r.name: r for r in manifest.setting_records if r.per_device}


def check_device_setting(
    name: str,
    value: object,
    records: Mapping[str, SettingRecord],
    *,
    recipe: str = "this image",
    file: Path | str | None = None,
    line: int | None = None,
    field: str | None = None,
) -> str:
    """One per-device value, checked and converted as `build` converts it; the text to write."""
    where = {"file": file, "line": line, "field": field or name}
    record = records.get(name)
    if record is None:
        known = ", ".join(sorted(records)) or "none"
        raise UserError(
            f"{name!r} is not a per-device setting of {recipe} (per-device: {known})", **where
        )
    if isinstance(value, bool | int) and record.kind in (SettingKind.INT, SettingKind.BOOL):
        raw: str | int | bool = value
    elif isinstance(value, str):
        raw = value
    else:
        raise UserError(f"setting {name} must be a string, got {type(value).__name__}", **where)
    try:
        return as_text(convert(SettingKind(record.kind), raw))
    except ValueError as exc:
        raise UserError(f"{record.kind} setting: {exc}", **where) from None


def check_device_settings(
    values: Mapping[str, object], manifest: Manifest, *, field: str = "-s {name}"
) -> dict[str, str]:
    if not values:
        return {}
    records = device_records(manifest)
    return {
        name: check_device_setting(
            name, value, records, recipe=manifest.recipe, field=field.format(name=name)
        )
        for name, value in values.items()
    }


def parse_cli_settings(args: Iterable[str], manifest: Manifest) -> dict[str, str]:
    """-s NAME=VALUE arguments for a device of this image; a repeated NAME: the last wins."""
    return check_device_settings(parse_assignments(args), manifest)


def load_settings_toml(path: Path, manifest: Manifest) -> dict[str, str]:
    """A flat TOML table of per-device settings (strings; integers and booleans for those
    kinds); errors name the file, line and setting."""
    src = TomlSource.from_file(path)
    records = device_records(manifest)
    out: dict[str, str] = {}
    for name, raw in src.data.items():
        if isinstance(raw, dict | list):
            raise src.error((name,), f"setting {name} must be a string, integer or boolean")
        try:
            out[name] = check_device_setting(name, raw, records, recipe=manifest.recipe)
        except UserError as exc:
            raise src.error((name,), exc.message) from None
    return out


def masked(settings: Mapping[str, str], manifest: Manifest) -> dict[str, str]:
    """`settings` as they may be shown: secret values replaced (their length kept)."""
    secret = {r.name for r in manifest.setting_records if r.secret}
    return {
        name: (f"{MASK[:-1]}, {len(value)} characters)" if name in secret and value else value)
        for name, value in settings.items()
    }


def render_settings_env(
    settings: Mapping[str, str], *, header: str = "per-device settings, written by appliancekit"
) -> str:
    """settings.env text. Values must have been checked (check_device_settings); this only
    refuses what would break the format itself."""
    lines = [f"# {header}"]
    for name in sorted(settings):
        value = settings[name]
        if not DEVICE_NAME_RE.fullmatch(name) or any(c not in PRINTABLE for c in value):
            raise UserError(f"setting {name}: cannot be written to {SETTINGS_FILE}", field=name)
        lines.append(f"{name}={value}")
    return "\n".join(lines) + "\n"


def render_user_data(settings: Mapping[str, str], manifest: Manifest) -> bytes:
    """EC2 user-data for an instance of this image: settings.env lines, checked like flash's
    and within EC2's 16 KB."""
    checked = check_device_settings(settings, manifest, field="user-data {name}")
    data = render_settings_env(checked, header=f"user-data for {manifest.name}").encode()
    if len(data) > MAX_USER_DATA:
        raise UserError(
            f"user-data is {len(data)} bytes; EC2 takes at most {MAX_USER_DATA}",
            field="user-data",
        )
    return data


def parse_settings_env(text: str, *, file: Path | None = None) -> dict[str, str]:
    """The inverse of render_settings_env, as the appliance reads it at boot: a line that is
    not NAME=VALUE is an error here (it would be ignored at boot)."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, eq, value = line.partition("=")
        if not eq or not DEVICE_NAME_RE.fullmatch(name):
            raise UserError(
                f"expected NAME=VALUE, got {line[:60]!r}", file=file, line=number, field=name
            )
        if re.search(r"[^\x20-\x7e]", value):
            raise UserError("value holds a non-printable character", file=file, line=number)
        out[name] = value
    return out
