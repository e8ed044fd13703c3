"""The card form: a member's per-device settings asked the way Raspberry Pi Imager asks them.

The fields come from the image's manifest (its per-device setting records, the same ones
`flash` checks against) with the recipe's help text, grouped as an administrator thinks of
them: the host name, users, keys and secrets, network, Wi-Fi (only when the image has Wi-Fi
settings), the service's own, and the rarely needed rest. The cloud's values for the member
(its address, the DNS API key, the DKIM key...) are the defaults: a blank field keeps the
cloud's value, a filled one replaces it.

Users are asked as a name and a password, which is hashed here (`openssl passwd -6`, the
SHA512-CRYPT that the `users` kind takes), so nobody types a hash. Every value is then
checked by `devsettings.check_device_setting`, the conversion `flash` uses. A secret is
never put back into the form, and a refused secret's message never quotes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from appliancekit.devsettings import check_device_setting, device_records
from appliancekit.errors import UserError
from appliancekit.hostcmd import run
from appliancekit.manifest import Manifest
from appliancekit.recipe import UNIVERSAL_SETTINGS, Recipe
from appliancekit.settings_kinds import SYNTAX, SettingKind

GROUPS = ("General", "Users", "Keys and secrets", "Network", "Wi-Fi", "Service", "Advanced")
ADVANCED = ("net_interface", "data_volume")
LABELS = {
    "hostname": "Host name",
    "net_address": "IPv4 address (ADDR/PREFIX)",
    "net_address6": "IPv6 address (ADDR/PREFIX)",
    "net_gateway": "Gateway",
    "net_interface": "Network card number of the address",
    "data_volume": "Disk serial number holding /data",
}
ACRONYMS = {"tls": "TLS", "dkim": "DKIM", "api": "API", "dns": "DNS", "ip": "IP", "rpc": "RPC"}
USER_SUFFIX = "__user"
PASSWORD_SUFFIX = "__password"


@dataclass(frozen=True)
class CardField:
    name: str  # the setting
    kind: str
    label: str
    help: str
    group: str
    secret: bool
    value: str  # shown in the form (never a secret's)
    from_cloud: bool  # the cloud gives this member a value (a blank field keeps it)

    @property
    def input_type(self) -> str:
        if self.kind == SettingKind.USERS:
            return "users"
        if self.secret:
            return "password"
        if self.kind == SettingKind.INT:
            return "number"
        return "text"


def _label(name: str) -> str:
    words = [ACRONYMS.get(w, w) for w in name.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def _group(name: str, kind: str, secret: bool) -> str:
    if name == "hostname":
        return "General"
    if kind == SettingKind.USERS:
        return "Users"
    if name in ADVANCED:
        return "Advanced"
    if name.startswith("wifi_"):
        return "Wi-Fi"
    if secret:
        return "Keys and secrets"
    if name.startswith("net_"):
        return "Network"
    return "Service"


def card_fields(
    manifest: Manifest, recipe: Recipe | None, cloud_values: Mapping[str, str]
) -> list[CardField]:
    """The form's fields, in GROUPS order, prefilled with the cloud's non-secret values."""
    helps = {s.name: s.help for s in UNIVERSAL_SETTINGS}
    if recipe is not None:
        helps.update({s.name: s.help for s in recipe.settings})
    fields = []
    for record in device_records(manifest).values():
        secret = record.secret
        given = cloud_values.get(record.name)
        fields.append(
            CardField(
                name=record.name,
                kind=record.kind,
                label=LABELS.get(record.name) or _label(record.name),
                help=helps.get(record.name, ""),
                group=_group(record.name, record.kind, secret),
                secret=secret,
                value="" if secret or given is None else given,
                from_cloud=given is not None,
            )
        )
    return sorted(fields, key=lambda f: (GROUPS.index(f.group), f.name))


def hash_password(password: str) -> str:
    """SHA512-CRYPT, as `openssl passwd -6` makes it; the password goes in on stdin."""
    out = run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n").stdout.strip()
    if not out.startswith("$6$"):
        raise UserError("openssl passwd -6 did not return a SHA512-CRYPT hash")
    return "{SHA512-CRYPT}" + out


def _refusal(field: CardField, exc: UserError) -> str:
    if not field.secret:
        return exc.message
    if field.kind == SettingKind.USERS:
        return (
            "not accepted: a user name is lowercase letters, digits, '.', '_' or '-'"
            " (the password is not shown)"
        )
    return (
        "not accepted (the value is not shown): a secret is printable ASCII on one line,"
        f" without spaces at either end and without any of {SYNTAX}"
    )


def read_card_form(
    form: Mapping[str, str],
    fields: list[CardField],
    manifest: Manifest,
    cloud_values: Mapping[str, str],
) -> tuple[dict[str, str], dict[str, str]]:
    """(settings for the card, {field: why it was refused}). Blank fields keep the cloud's
    value or, without one, the image's own."""
    records = device_records(manifest)
    values: dict[str, str] = {}
    errors: dict[str, str] = {}
    for field in fields:
        if field.input_type == "users":
            user = form.get(field.name + USER_SUFFIX, "").strip()
            password = form.get(field.name + PASSWORD_SUFFIX, "")
            if bool(user) != bool(password):
                errors[field.name] = "give both a user name and a password (or neither)"
                continue
            raw = f"{user}:{hash_password(password)}" if user else ""
        else:
            raw = form.get(field.name, "").strip()
        if not raw:
            if field.name in cloud_values:
                raw = cloud_values[field.name]
            else:
                continue
        try:
            values[field.name] = check_device_setting(
                field.name, raw, records, recipe=manifest.recipe
            )
        except UserError as exc:
            errors[field.name] = _refusal(field, exc)
    return values, errors
