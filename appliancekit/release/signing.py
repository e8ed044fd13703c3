"""Ed25519 signatures with minisign (Debian's `minisign`): a key pair, sign(file, key),
verify(file, pubkey).

The API is small on purpose: releases sign their SHA256SUMS, and an update agent verifies
what it downloads with the same calls. A signature is `FILE.minisig` beside the file; its
trusted comment (covered by the signature) names what was signed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from appliancekit.errors import ToolError, UserError

SIGNATURE_SUFFIX = ".minisig"
SECRET_KEY = "appliancekit.key"
PUBLIC_KEY = "appliancekit.pub"


class SignatureError(UserError):
    """A signature is missing, malformed, or does not verify with the given public key."""


@dataclass(frozen=True)
class KeyPair:
    secret: Path
    public: Path

    def public_key(self) -> str:
        """The base64 key line of the public key file (what `minisign -P` takes)."""
        return public_key_line(self.public)


def _minisign(args: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["minisign", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise ToolError(f"{what} needs minisign: apt-get install minisign") from None


def _detail(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit code {result.returncode}"


def keygen(directory: Path, *, force: bool = False) -> KeyPair:
    """A new Ed25519 key pair in `directory` (appliancekit.key, mode 0600; appliancekit.pub).

    The secret key is not password-protected: it is meant for a CI secret or a hardware-
    backed store, and a release must sign without a prompt. An existing pair is kept
    unless `force`."""
    directory = Path(directory)
    pair = KeyPair(directory / SECRET_KEY, directory / PUBLIC_KEY)
    if (pair.secret.exists() or pair.public.exists()) and not force:
        raise UserError(
            "a key pair already exists there (keep it, or pass --force to replace it)",
            file=pair.secret if pair.secret.exists() else pair.public,
        )
    directory.mkdir(parents=True, exist_ok=True)
    args = ["-G", "-W", "-p", str(pair.public), "-s", str(pair.secret)]
    result = _minisign([*args, "-f"] if force else args, "keygen")
    if result.returncode != 0:
        raise ToolError(f"minisign could not create a key pair: {_detail(result)}")
    pair.secret.chmod(0o600)
    return pair


def signature_path(file: Path) -> Path:
    return file.with_name(file.name + SIGNATURE_SUFFIX)


def sign(file: Path, key: Path, *, comment: str | None = None) -> Path:
    """Sign `file` with the secret key `key`; returns FILE.minisig. The trusted comment
    (default: the file's name) is covered by the signature."""
    file, key = Path(file), Path(key)
    if not key.is_file():
        raise UserError("no such secret key (create one with `appliancekit keygen`)", file=key)
    if not file.is_file():
        raise UserError("no such file to sign", file=file)
    signature = signature_path(file)
    result = _minisign(
        [
            "-S",
            "-s",
            str(key),
            "-m",
            str(file),
            "-x",
            str(signature),
            "-t",
            comment or file.name,
        ],
        "signing",
    )
    if result.returncode != 0:
        raise UserError(f"cannot sign {file.name}: {_detail(result)}", file=key)
    return signature


def verify(file: Path, pubkey: Path | str, signature: Path | None = None) -> str:
    """Check FILE.minisig (or `signature`) against `pubkey` (a .pub file, or its base64 key
    line). Returns the trusted comment; raises SignatureError naming the file otherwise."""
    file = Path(file)
    signature = signature or signature_path(file)
    if not signature.is_file():
        raise SignatureError("not signed: no signature file", file=signature)
    key_args = (
        ["-p", str(pubkey)]
        if isinstance(pubkey, Path) or Path(str(pubkey)).is_file()
        else ["-P", str(pubkey)]
    )
    result = _minisign(["-V", *key_args, "-m", str(file), "-x", str(signature)], "verifying")
    if result.returncode != 0:
        raise SignatureError(f"signature does not verify: {_detail(result)}", file=file)
    return _trusted_comment(signature)


def public_key_line(pubkey: Path) -> str:
    lines = [line for line in Path(pubkey).read_text().splitlines() if line.strip()]
    if len(lines) < 2 or lines[0].startswith("untrusted comment:") is False:
        raise UserError("not a minisign public key file", file=pubkey)
    return lines[1].strip()


def _trusted_comment(signature: Path) -> str:
    for line in signature.read_text().splitlines():
        if line.startswith("trusted comment: "):
            return line[len("trusted comment: ") :]
    return ""
