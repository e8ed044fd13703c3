"""Per-device settings (`settings.env` at the top of the boot partition).

The appliance reads this file at boot. Format, kept deliberately tiny so that the boot side
needs no parser beyond "split at the first =":

    # comment lines start with '#'
    hostname=pi1
    domain=example.org

NAME matches [a-z][a-z0-9_]*; VALUE is printable ASCII (0x20-0x7e) without a newline and is
taken literally (no quotes, no backslash escapes). `hostname` is understood by every
appliance and must be an RFC 1123 host name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from appliancekit.errors import UserError
from appliancekit.tomlsource import TomlSource

SETTINGS_FILE = "settings.env"
NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# understood by every appliance's initramfs: its host name, and the serial number (an EBS
# volume id) of a disk that holds /data instead of the data partition
UNIVERSAL = ("hostname", "data_volume")
_VOLUME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
MAX_VALUE = 4096


def check_hostname(value: str) -> str:
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValueError(
            f"{value!r} is not a host name (RFC 1123: labels of letters, digits and '-',"
            " 1-63 characters, not starting or ending with '-', separated by dots)"
        )
    return name


def check_setting(
    name: str,
    value: str,
    *,
    field: str | None = None,
    file: Path | None = None,
    line: int | None = None,
) -> str:
    """Validate one NAME=VALUE; return the value to write (UserError otherwise)."""
    where = {"file": file, "line": line, "field": field or name}
    if not NAME_RE.fullmatch(name):
        raise UserError(f"setting name {name!r} must match [a-z][a-z0-9_]*", **where)
    if not isinstance(value, str):
        raise UserError(f"setting {name} must be a string, got {value!r}", **where)
    bad = next((c for c in value if not 0x20 <= ord(c) <= 0x7E), None)
    if bad is not None:
        raise UserError(
            f"setting {name}: value holds {bad!r}; only printable ASCII without newlines is allowed",
            **where,
        )
    if len(value) > MAX_VALUE:
        raise UserError(f"setting {name}: value is longer than {MAX_VALUE} characters", **where)
    if name == "hostname":
        try:
            value = check_hostname(value)
        except ValueError as exc:
            raise UserError(str(exc), **where) from None
    if name == "data_volume" and not _VOLUME.fullmatch(value):
        raise UserError(
            f"setting data_volume: {value!r} is not a disk serial number (e.g. vol-0123abcd)",
            **where,
        )
    return value


def parse_cli_settings(args: Iterable[str]) -> dict[str, str]:
    """["hostname=pi1", ...] from -s; a repeated NAME: the last one wins."""
    out: dict[str, str] = {}
    for arg in args:
        name, eq, value = arg.partition("=")
        if not eq:
            raise UserError(f"expected NAME=VALUE, got {arg!r}", field="-s")
        out[name] = check_setting(name, value, field=f"-s {name}")
    return out


def load_settings_toml(path: Path) -> dict[str, str]:
    """A flat TOML table of settings; strings, integers and booleans (written as
    true/false) are accepted, nested tables and arrays are not."""
    src = TomlSource.from_file(path)
    out: dict[str, str] = {}
    for name, raw in src.data.items():
        if isinstance(raw, bool):
            value = "true" if raw else "false"
        elif isinstance(raw, int | str):
            value = str(raw)
        else:
            raise src.error((name,), f"setting {name} must be a string, integer or boolean")
        try:
            out[name] = check_setting(name, value)
        except UserError as exc:
            raise src.error((name,), exc.message) from None
    return out


def render_settings_env(settings: Mapping[str, str]) -> str:
    lines = ["# per-device settings, written by appliancekit flash"]
    for name in sorted(settings):
        lines.append(f"{name}={check_setting(name, settings[name])}")
    return "\n".join(lines) + "\n"


def parse_settings_env(text: str, *, file: Path | None = None) -> dict[str, str]:
    """The inverse of render_settings_env (also what the appliance does at boot)."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, eq, value = line.partition("=")
        if not eq:
            raise UserError(f"expected NAME=VALUE, got {line!r}", file=file, line=number)
        out[name] = check_setting(name, value, file=file, line=number)
    return out
