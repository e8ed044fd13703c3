"""Setting kinds: the one place that decides what a setting's value may be.

Every path a value takes goes through `convert`: `build -s` and recipe defaults
(recipe.resolve_settings), `flash -s` / `--settings FILE`, EC2 user-data, the recipe's
[test] settings (devsettings), and the initramfs, which re-checks per-device values against
`boot_allowed` before substituting them (a settings.env edited by hand, or user-data typed
into a cloud console, never went through this module).

A value cannot break out of the configuration file it is rendered into: templates paste
values verbatim (per-device ones are substituted at boot, where no escaping for the file's
format is possible), so each kind's character set leaves out what is syntax in the formats
recipes render into (nginx, YAML, UCL, Postfix, pdns, shell-free execline data files):
quotes, backslash, backtick, '$', ';', '{', '}', '#', '<', '>', '|', '&' and every control
character (so no newline). Kinds with a structure (domain, hostname, email, users, ...) are
narrower still.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import string
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from appliancekit.errors import UserError

# Names a recipe may declare (usable as {{ settings.NAME }}), and the narrower ones that can
# be per device (what the initramfs accepts from settings.env and user-data).
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEVICE_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
MAX_VALUE = 16384  # characters; a Let's Encrypt full chain is 5-7.5 KB of base64
# EC2 caps user-data at 16 KB (before its own base64), and user-data is a settings.env
MAX_USER_DATA = 16384


class SettingKind(StrEnum):
    STRING = "string"  # free text without configuration-file syntax (see TEXT_ALLOWED)
    PATH = "path"  # a host directory or file; relative paths are relative to the recipe dir
    DOMAIN = "domain"
    SECRET = "secret"  # like string; never printed, masked in reports
    INT = "int"
    BOOL = "bool"
    EMAIL = "email"
    DOMAINS = "domains"  # comma-separated domain names (e.g. the zones a DNS server serves)
    USERS = "users"  # NAME:{SCHEME}HASH entries (mail users with password hashes)
    HOSTNAME = "hostname"  # an RFC 1123 host name (every appliance's `hostname`)
    ADDRESS = "address"  # an IPv4 or IPv6 address, optionally /PREFIX (static network set-up)
    SERIAL = "serial"  # a disk's serial number, such as an EBS volume id (vol-0123abcd)
    URL = "url"  # an http(s) URL, such as a git repository's (content from git)
    GITREF = "gitref"  # a git branch name (git check-ref-format's rules)
    SSHKEY = "sshkey"  # an Ed25519 public key as OpenSSH writes it: ssh-ed25519 AAAA... [comment]


# Values of these kinds are never shown on the console or in command output.
SECRET_KINDS = frozenset({SettingKind.SECRET, SettingKind.USERS})

SYNTAX = "\"'\\`$;{}#<>|&"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
TEXT_ALLOWED = "".join(c for c in PRINTABLE if c not in SYNTAX)
_DNS = string.ascii_letters + string.digits + ".-"
# The characters a value of each kind may hold: what the initramfs checks per-device values
# against, and what the hostile-value test compares with each file format's syntax.
ALLOWED: dict[SettingKind, str] = {
    SettingKind.STRING: TEXT_ALLOWED,
    SettingKind.SECRET: TEXT_ALLOWED,
    SettingKind.PATH: TEXT_ALLOWED,
    SettingKind.DOMAIN: _DNS,
    SettingKind.HOSTNAME: _DNS,
    SettingKind.DOMAINS: _DNS + ", ",
    SettingKind.EMAIL: _DNS + "_%+@",
    # crypt(3) and PHC hashes: [./A-Za-z0-9$], '=' and ',' (argon2), '+' (base64)
    SettingKind.USERS: string.ascii_letters + string.digits + "._-:{}/$=+, ",
    SettingKind.INT: string.digits + "+- ",
    SettingKind.BOOL: string.ascii_letters + string.digits,
    SettingKind.ADDRESS: string.hexdigits + ".:/",
    SettingKind.SERIAL: string.ascii_letters + string.digits + "-",
    # RFC 3986 unreserved and the delimiters a repository URL needs; not '&' (syntax)
    SettingKind.URL: string.ascii_letters + string.digits + "-._~:/?=%+@,!*()[]",
    SettingKind.GITREF: string.ascii_letters + string.digits + "._/-",
    SettingKind.SSHKEY: string.ascii_letters + string.digits + "+/=-._@ ",
}

_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9._%+-]{1,64}")
_USER_ENTRY = re.compile(
    r"(?P<name>[a-z0-9][a-z0-9._-]{0,63}):(?P<password>\{[A-Z0-9.-]+\}[A-Za-z0-9./$=+,_-]+)"
)


def _text(value: str, allowed: str = TEXT_ALLOWED) -> str:
    if len(value) > MAX_VALUE:
        raise ValueError(f"value is {len(value)} characters long; at most {MAX_VALUE} fit")
    bad = next((c for c in value if c not in allowed), None)
    if bad is not None:
        if bad not in PRINTABLE:
            raise ValueError(f"value holds {bad!r}; only printable ASCII on one line is allowed")
        shown = "".join(sorted(set(SYNTAX) - set(allowed))) if allowed == TEXT_ALLOWED else ""
        raise ValueError(
            f"value holds {bad!r}, which configuration files would read as syntax"
            + (f" (none of {shown} or control characters)" if shown else "")
        )
    if value != value.strip():
        raise ValueError(f"value {value!r} starts or ends with a space")
    return value


def check_hostname(value: str) -> str:
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(x) for x in labels):
        raise ValueError(
            f"{value!r} is not a host name (RFC 1123: labels of letters, digits and '-',"
            " 1-63 characters, not starting or ending with '-', separated by dots)"
        )
    return name


def _domain(value: str) -> str:
    name = value.lower()
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValueError(
            f"{value!r} is not a domain name (RFC 1123 labels separated by dots, e.g. example.org)"
        )
    return name


def _domains(value: str) -> str:
    names = [part.strip() for part in value.split(",")]
    try:
        return ",".join(_domain(name) for name in names)
    except ValueError as exc:
        if len(names) == 1:
            raise
        raise ValueError(f"in the comma-separated list {value!r}: {exc}") from None


def _users(value: str) -> str:
    """NAME:{SCHEME}HASH entries separated by commas or spaces (a hash may hold commas, as
    ARGON2's do: entries are split only where a new NAME: begins)."""
    entries = re.split(r"[\s,]+(?=[a-z0-9][a-z0-9._-]*:)", value.strip().strip(","))
    seen: set[str] = set()
    for entry in entries:
        m = _USER_ENTRY.fullmatch(entry)
        if not m:
            shown = entry.split(":", 1)[0] + (":..." if ":" in entry else "")
            raise ValueError(
                f"user entry {shown!r} is not NAME:{{SCHEME}}HASH (lowercase NAME, a password "
                "hash such as {SHA512-CRYPT}$6$... from `openssl passwd -6`)"
            )
        if m["name"] in seen:
            raise ValueError(f"user {m['name']!r} is listed twice")
        seen.add(m["name"])
    return ",".join(entries)


def _email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not _EMAIL_LOCAL.fullmatch(local) or local.startswith(".") or ".." in local:
        raise ValueError(
            f"{value!r} is not an email address (expected user@example.org; the user part"
            " of letters, digits and . _ % + -)"
        )
    try:
        return f"{local}@{_domain(domain)}"
    except ValueError:
        raise ValueError(f"{value!r} is not an email address (bad domain {domain!r})") from None


def _address(value: str) -> str:
    try:
        if "/" in value:
            return str(ipaddress.ip_interface(value))
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address (e.g. 192.0.2.10/24, 2001:db8::10/64 or 192.0.2.1)"
        ) from None


def _url(value: str) -> str:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ValueError(
            f"{_short(value)} is not an http(s) URL (e.g. https://git.example.org/site.git)"
        )
    return value


def _gitref(value: str) -> str:
    if (
        value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or ".." in value
        or "//" in value
        or "/." in value
        or value == "@"
    ):
        raise ValueError(f"{value!r} is not a git branch name (e.g. main or release/1.x)")
    return value


def _sshkey(value: str) -> str:
    fields = value.split()
    try:
        blob = base64.b64decode(fields[1], validate=True) if len(fields) >= 2 else b""
    except binascii.Error:
        blob = b""
    expected = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"
    if fields[:1] != ["ssh-ed25519"] or len(blob) != len(expected) + 32 or not blob.startswith(
        expected
    ):
        raise ValueError(
            "expected an Ed25519 public key as OpenSSH writes it (ssh-ed25519 AAAA... [comment],"
            " the .pub file of `ssh-keygen -t ed25519`)"
        )
    return value


def convert(kind: SettingKind, raw: str | int | bool, base: Path | None = None) -> str | int | bool:
    """A setting value in its typed form (str, int or bool); ValueError with a readable
    message otherwise. `base` resolves relative paths. An empty value is refused: a setting
    not given is left out (per-device ones then take the image's build-time value)."""
    if kind == SettingKind.INT:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", raw):
            return int(raw)
        raise ValueError(f"expected an int, got {_short(raw)}")
    if kind == SettingKind.BOOL:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _BOOLS:
            return _BOOLS[raw.strip().lower()]
        raise ValueError(f"expected a bool (true/false/yes/no/1/0), got {_short(raw)}")
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {_short(raw)}")
    if not raw:
        raise ValueError(f"expected a non-empty {kind} value")
    if kind == SettingKind.PATH:
        if any(not c.isprintable() for c in raw):
            raise ValueError(f"path {raw!r} holds a control character")
        path = Path(raw).expanduser()
        path = Path(os.path.abspath((base or Path.cwd()) / path))  # base ignored if absolute
        if not path.exists():
            raise ValueError(f"path {str(path)!r} does not exist")
        return str(path)
    if kind in (SettingKind.STRING, SettingKind.SECRET):
        return _text(raw)
    _text(raw, ALLOWED[kind] if kind == SettingKind.USERS else PRINTABLE)
    if kind == SettingKind.DOMAIN:
        return _domain(raw)
    if kind == SettingKind.HOSTNAME:
        return check_hostname(raw)
    if kind == SettingKind.EMAIL:
        return _email(raw)
    if kind == SettingKind.USERS:
        return _users(raw)
    if kind == SettingKind.DOMAINS:
        return _domains(raw)
    if kind == SettingKind.ADDRESS:
        return _address(raw)
    if kind in (SettingKind.URL, SettingKind.GITREF, SettingKind.SSHKEY):
        _text(raw, ALLOWED[kind])
        return {SettingKind.URL: _url, SettingKind.GITREF: _gitref, SettingKind.SSHKEY: _sshkey}[
            kind
        ](raw)
    if kind == SettingKind.SERIAL:
        if not _SERIAL.fullmatch(raw):
            raise ValueError(f"{raw!r} is not a disk serial number (e.g. vol-0123abcd)")
        return raw
    raise AssertionError(f"unhandled setting kind {kind}")


def as_text(value: str | int | bool) -> str:
    """The settings.env form of a typed value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _short(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def boot_glob(kind: SettingKind) -> str:
    """A shell `case` pattern matching any value holding a character `kind` does not allow
    (used unquoted from a variable in the initramfs, so no shell quoting is needed)."""
    allowed = set(ALLOWED[kind])
    assert not allowed & {"'", "\\"}, "the pattern is single-quoted in init.sh"
    # ']' is literal first in a bracket, '-' last; '!' and '^' anywhere but first
    ordered = (
        (["]"] if "]" in allowed else [])
        + sorted(allowed - {"]", "-"}, key=lambda c: (c in "!^", c))
        + (["-"] if "-" in allowed else [])
    )
    return "*[!" + "".join(ordered) + "]*"


def parse_assignments(args: Iterable[str], *, option: str = "-s") -> dict[str, str]:
    """["site=./public", ...] from -s -> {"site": "./public"}: only the first '=' separates,
    a repeated NAME: the last one wins. The one NAME=VALUE parser of every command; what a
    value may be is for `convert` to say once the setting's kind is known."""
    out: dict[str, str] = {}
    for arg in args:
        name, eq, value = arg.partition("=")
        if not eq or not NAME_RE.fullmatch(name):
            raise UserError(f"expected NAME=VALUE, got {_short(arg)}", field=option)
        out[name] = value
    return out
