"""A cloud's generated secrets: the PowerDNS API key and the DKIM key.

Both must exist before the first boot (the DKIM record is published by the DNS member before
the mail server sends anything), so they are made once on the host, kept in the cloud's state
directory (`images/clouds/NAME/secrets.json`, mode 0600) and written onto each card as
per-device secrets. They never reach logs or `--json` output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets as random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliancekit.errors import UserError
from appliancekit.hostcmd import run

SECRETS_FILE = "secrets.json"


@dataclass(frozen=True)
class CloudSecrets:
    pdns_api_key: str
    dkim_key_pem: str  # RSA 2048, PKCS#8 PEM
    # the monitoring agents' bearer tokens: scraping, and (if the cloud allows) control
    monitoring_token: str = ""
    monitoring_control_token: str = ""

    def __repr__(self) -> str:  # never print the values
        return "CloudSecrets(<hidden>)"


def generate_dkim_key() -> str:
    with tempfile.TemporaryDirectory(prefix="ak-dkim-") as tmp:
        key = Path(tmp) / "dkim.key"
        run(
            [
                "openssl",
                "genpkey",
                "-quiet",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                str(key),
            ]
        )
        return key.read_text()


def dkim_public_key_b64(private_pem: str) -> str:
    """The p= value of the DKIM record: the DER SubjectPublicKeyInfo, base64."""
    out = run(["openssl", "pkey", "-pubout", "-outform", "PEM"], input=private_pem).stdout
    return "".join(line for line in out.splitlines() if not line.startswith("-----"))


def load(state_dir: Path) -> CloudSecrets | None:
    """The cloud's secrets as they were made; None when none are made yet (never makes
    them: readers such as the panel must not mint a DKIM key)."""
    path = state_dir / SECRETS_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return CloudSecrets(
            data["pdns_api_key"],
            data["dkim_key_pem"],
            data.get("monitoring_token", ""),
            data.get("monitoring_control_token", ""),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(
            f"not a cloud secrets file ({exc}); remove it to make new secrets", file=path
        ) from None


def load_or_create(state_dir: Path) -> CloudSecrets:
    """The cloud's secrets, made on first use and kept (a new DKIM key would break mail in
    flight and needs the record republished)."""
    path = state_dir / SECRETS_FILE
    made = load(state_dir)
    if made is not None:
        if made.monitoring_token and made.monitoring_control_token:
            return made
        # made before monitoring existed: add its tokens, keep the rest
        made = CloudSecrets(
            made.pdns_api_key,
            made.dkim_key_pem,
            made.monitoring_token or random.token_urlsafe(32),
            made.monitoring_control_token or random.token_urlsafe(32),
        )
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        made = CloudSecrets(
            pdns_api_key=random.token_urlsafe(32),
            dkim_key_pem=generate_dkim_key(),
            monitoring_token=random.token_urlsafe(32),
            monitoring_control_token=random.token_urlsafe(32),
        )
    fd, tmp = tempfile.mkstemp(prefix=".secrets.", dir=state_dir)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(dataclasses.asdict(made), out)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return made
