"""What the cloud fills in for each member: the settings its role needs, from the cloud.

A role names recipe settings, never recipes: any recipe that declares `domain`, `dkim_key`,
`dkim_selector` and `nameservers` can be the mail member. The member's own settings in the
cloud file win over these. Every member also gets its host name and its static address on
the cloud's network (the universal per-device settings the initramfs reads, see
`appliancekit/boot/templates/init.sh.j2`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence

from appliancekit.cloud.model import Cloud, CloudMonitoring, Member, Role
from appliancekit.cloud.secrets import CloudSecrets
from appliancekit.monitoring import CONTROL_TOKEN_SETTING, TOKEN_SETTING
from appliancekit.tomlsource import TomlSource

Value = Callable[[Cloud, Member, CloudSecrets], str]

# Universal per-device network settings (read by the initramfs of every image).
NET_ADDRESS = "net_address"  # ADDR/PREFIX, static, on NIC number net_interface
NET_ADDRESS6 = "net_address6"
NET_GATEWAY = "net_gateway"
NET_INTERFACE = "net_interface"  # 1-based NIC position; the default 1 replaces DHCP there

ROLE_SETTINGS: Mapping[Role, Mapping[str, Value]] = {
    Role.DNS: {
        "api_key": lambda cloud, member, secrets: secrets.pdns_api_key,
        "zones": lambda cloud, member, secrets: cloud.domain,
    },
    Role.MAIL: {
        "domain": lambda cloud, member, secrets: cloud.domain,
        # known before first boot, so its record is published before the first mail
        "dkim_key": lambda cloud, member, secrets: base64.b64encode(
            secrets.dkim_key_pem.encode()
        ).decode(),
        "dkim_selector": lambda cloud, member, secrets: cloud.dkim_selector,
        "nameservers": lambda cloud, member, secrets: str(cloud.dns.address),
    },
    Role.MATRIX: {
        "server_name": lambda cloud, member, secrets: cloud.domain,
    },
    Role.MONITORING: {
        "targets": lambda cloud, member, secrets: scrape_targets(cloud),
        "scrape_token": lambda cloud, member, secrets: secrets.monitoring_token,
        "scrape_interval": lambda cloud, member, secrets: _monitoring(cloud).scrape_interval,
        "alert_after": lambda cloud, member, secrets: _monitoring(cloud).alert_after,
    },
    Role.WEB: {},
    Role.NONE: {},
}


def _monitoring(cloud: Cloud) -> CloudMonitoring:
    return cloud.monitoring or CloudMonitoring()


def scrape_targets(cloud: Cloud) -> str:
    """The monitoring member's `targets`: NAME=ADDRESS:PORT of every member's agent."""
    return " ".join(
        f"{m.name}={m.address}:{m.recipe.monitoring.port}"
        for m in cloud.members
        if m.recipe.monitoring is not None
    )


def monitoring_settings(cloud: Cloud, member: Member, secrets: CloudSecrets) -> dict[str, str]:
    """The agent's tokens on every member of a cloud with [monitoring]."""
    if cloud.monitoring is None or member.recipe.monitoring is None:
        return {}
    values = {TOKEN_SETTING: secrets.monitoring_token}
    if cloud.monitoring.control:
        values[CONTROL_TOKEN_SETTING] = secrets.monitoring_control_token
    return values


# The TLS members' ACME settings (recipes/*/recipe.toml, "TLS (ACME)"): filled for every
# member whose recipe declares acme_url, with DNS-01 through the cloud's own DNS member.
ACME_URL = "acme_url"
TLS_CERT = "tls_cert"
MATRIX_TLS_PORT = 8448


def tls_names(cloud: Cloud, member: Member) -> list[str]:
    """The names in a member's certificate, the one its clients ask for first.

    One member per name: two members asking for one name would fight over its
    _acme-challenge TXT record. The web member holds the apex (and www, mta-sts); Matrix is
    delegated by /.well-known/matrix/server on it, so the Matrix member needs only its own
    names, unless there is no web member: then the SRV delegation needs the apex in its
    certificate."""
    names = [f"{host}.{cloud.domain}" for host in member.names]
    if member.role == Role.WEB:
        names = [cloud.domain, f"www.{cloud.domain}", f"mta-sts.{cloud.domain}", *names]
    if member.role == Role.MATRIX and cloud.with_role(Role.WEB) is None:
        names.append(cloud.domain)
    return list(dict.fromkeys(names))


def acme_settings(cloud: Cloud, member: Member, secrets: CloudSecrets) -> dict[str, str]:
    declared = {s.name for s in member.recipe.settings}
    if ACME_URL not in declared or TLS_CERT in dict(member.settings) or not cloud.acme_url:
        return {}  # no TLS, the member's own certificate, or ACME off for the cloud
    values = {
        ACME_URL: cloud.acme_url,
        "acme_names": ",".join(tls_names(cloud, member)),
        "acme_challenge": "dns-01",
        "acme_dns_api": f"http://{cloud.dns.address}:8081",
        "acme_dns_key": secrets.pdns_api_key,
        "acme_dns_zone": cloud.domain,
    }
    if cloud.acme_ca:
        values["acme_ca"] = cloud.acme_ca
    return {k: v for k, v in values.items() if k in declared}


def web_settings(cloud: Cloud) -> dict[str, str]:
    """What the web member serves for the others: the MTA-STS policy, Matrix delegation."""
    values: dict[str, str] = {}
    mail = cloud.with_role(Role.MAIL)
    if mail is not None and cloud.mta_sts_mode.value != "none":
        values["mta_sts_mode"] = cloud.mta_sts_mode.value
        values["mta_sts_mx"] = f"{mail.name}.{cloud.domain}"
    matrix = cloud.with_role(Role.MATRIX)
    if matrix is not None:
        values["matrix_server"] = f"{matrix.name}.{cloud.domain}:{MATRIX_TLS_PORT}"
    return values


def check_roles(members: Sequence[Member], src: TomlSource) -> None:
    """Each member's recipe declares the settings its role fills (else: one line)."""
    for index, member in enumerate(members):
        declared = {s.name for s in member.recipe.settings}
        missing = sorted(set(ROLE_SETTINGS[member.role]) - declared)
        if missing:
            src.fail(
                ("member", index, "role"),
                f"role {member.role.value!r} needs recipe settings {', '.join(missing)}, "
                f"which recipe {member.recipe.name!r} does not declare",
            )


def member_settings(
    cloud: Cloud, member: Member, secrets: CloudSecrets, *, net_interface: int = 1
) -> dict[str, str]:
    """Every setting the cloud gives `member`: role values, then the member's own."""
    values = {
        "hostname": member.name,
        NET_ADDRESS: f"{member.address}/{member.prefix}",
        NET_INTERFACE: str(net_interface),
    }
    if member.address6 is not None:
        values[NET_ADDRESS6] = f"{member.address6}/{member.prefix6}"
    if cloud.gateway is not None and net_interface == 1:
        # a real device's only NIC: its way out (the QEMU harness keeps DHCP's on NIC 1)
        values[NET_GATEWAY] = str(cloud.gateway)
    for name, value in ROLE_SETTINGS[member.role].items():
        values[name] = value(cloud, member, secrets)
    values.update(monitoring_settings(cloud, member, secrets))
    declared = {s.name for s in member.recipe.settings}
    if member.role == Role.WEB:
        values.update({k: v for k, v in web_settings(cloud).items() if k in declared})
    values.update(acme_settings(cloud, member, secrets))
    values.update(member.settings)
    return values


def split_settings(
    member: Member, values: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(build-time settings, per-device settings): per-device ones go on the card."""
    build_time = {s.name for s in member.recipe.settings if not s.per_device}
    build = {k: v for k, v in values.items() if k in build_time}
    device = {k: v for k, v in values.items() if k not in build_time}
    return build, device
