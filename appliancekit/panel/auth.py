"""The panel's one login: a password set at first start, stored only as a scrypt hash.

Both files live in the panel's state directory (images/panel/ by default), mode 0600:
`credentials.json` (the hash, never the password) and `session.key` (signs the session
cookie). The password is read from a terminal prompt or a file given on the command line,
never from an argument or the environment, so it does not reach shell history or `ps`.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from appliancekit.errors import UserError

CREDENTIALS = "credentials.json"
SESSION_KEY = "session.key"
MIN_PASSWORD = 8


@dataclass(frozen=True)
class Credentials:
    password_hash: str  # werkzeug's "scrypt:N:r:p$salt$hash"

    def verify(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def load_credentials(state: Path) -> Credentials | None:
    path = Path(state) / CREDENTIALS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise UserError(f"unreadable panel credentials: {exc}", file=path) from None
    value = data.get("password_hash") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value.startswith("scrypt:"):
        raise UserError("expected a scrypt password_hash", file=path, field="password_hash")
    return Credentials(value)


def check_new_password(password: str, *, where: str = "password") -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the panel password needs at least {MIN_PASSWORD} characters", field=where)
    if any(ord(c) < 0x20 for c in password):
        raise UserError("the panel password holds a control character", field=where)
    return password


def set_password(state: Path, password: str) -> Credentials:
    credentials = Credentials(generate_password_hash(check_new_password(password), "scrypt"))
    _write_private(
        Path(state) / CREDENTIALS,
        (json.dumps({"password_hash": credentials.password_hash}, indent=2) + "\n").encode(),
    )
    return credentials


def read_password_file(path: Path) -> str:
    """The first line of `path` (a trailing newline is not part of the password)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read the password file: {exc.strerror}", file=path) from None
    lines = text.splitlines()
    return check_new_password(lines[0] if lines else "", where=str(path))


def session_key(state: Path) -> bytes:
    """The key that signs session cookies, made once (a restart keeps people logged in)."""
    path = Path(state) / SESSION_KEY
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    _write_private(path, key)
    return key
