"""The domain's zone, generated from the cloud's members.

Every member: A (and AAAA) for its name and aliases. By role:
- dns: A for ns1 (the NS name the DNS appliance gives every zone it creates);
- web: the apex and www, and mta-sts (the host serving the MTA-STS policy);
- mail: MX, SPF, DMARC, the DKIM TXT (from the key generated before first boot), the
  MTA-STS TXT and TLS-RPT;
- matrix: user IDs are @user:DOMAIN. With a web member, the delegation is its
  /.well-known/matrix/server (roles.web_settings), so the Matrix member's certificate needs
  only its own name; without one, the federation SRV records (_matrix-fed._tcp and the older
  _matrix._tcp) point at the member's TLS port;
- the apex: CAA for the CAs allowed to issue.

Records are RRsets (name, type) -> contents in PowerDNS's presentation format, because they
are applied through its HTTP API as whole RRsets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from appliancekit.cloud.model import Cloud, Member, MtaStsMode, Role
from appliancekit.cloud.secrets import CloudSecrets, dkim_public_key_b64

TXT_CHUNK = 250  # a TXT character-string holds 255 bytes


@dataclass(frozen=True, order=True)
class RRset:
    name: str  # fully qualified, with the trailing dot
    type: str
    contents: tuple[str, ...]  # sorted
    ttl: int = 300

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type,
            "ttl": self.ttl,
            "contents": list(self.contents),
        }


def txt(text: str) -> str:
    """One TXT record: the text as quoted character-strings of at most 250 bytes."""
    chunks = [text[i : i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def mta_sts_policy(cloud: Cloud) -> str:
    """The policy file served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461)."""
    mail = cloud.with_role(Role.MAIL)
    # the MX record's host (the web member serves exactly this: roles.web_settings)
    mx = [f"mx: {mail.name}.{cloud.domain}"] if mail else []
    return "\r\n".join(
        ["version: STSv1", f"mode: {cloud.mta_sts_mode.value}", *mx, "max_age: 86400", ""]
    )


def mta_sts_id(cloud: Cloud) -> str:
    """Changes whenever the policy does, so senders fetch the new one."""
    return hashlib.sha256(mta_sts_policy(cloud).encode()).hexdigest()[:20]


def matrix_port(member: Member) -> int:
    """Where the Matrix member serves federation over TLS: 8448 when its recipe declares it,
    else its first declared port."""
    ports = member.recipe.ports
    return 8448 if 8448 in ports or not ports else ports[0]


def dkim_record(cloud: Cloud, secrets: CloudSecrets) -> str:
    return f"v=DKIM1; k=rsa; p={dkim_public_key_b64(secrets.dkim_key_pem)}"


def generate(cloud: Cloud, secrets: CloudSecrets) -> list[RRset]:
    """Every RRset the cloud's members need, sorted by (name, type)."""
    wanted: dict[tuple[str, str], set[str]] = {}

    def add(host: str, rtype: str, content: str) -> None:
        wanted.setdefault((cloud.fqdn(host), rtype), set()).add(content)

    def addresses(host: str, member: Member) -> None:
        add(host, "A", str(member.address))
        if member.address6 is not None:
            add(host, "AAAA", str(member.address6))

    for member in cloud.members:
        for host in member.names:
            addresses(host, member)
    if (member := cloud.with_role(Role.DNS)) and "ns1" not in _hosts(cloud):
        addresses("ns1", member)
    if member := cloud.with_role(Role.WEB):
        for host in ("@", "www", "mta-sts"):
            if host == "@" or host not in _hosts(cloud):
                addresses(host, member)
    if member := cloud.with_role(Role.MAIL):
        domain = cloud.domain
        add("@", "MX", f"10 {cloud.fqdn(member.name)}")
        add("@", "TXT", txt("v=spf1 mx -all"))
        add("_dmarc", "TXT", txt(f"v=DMARC1; {cloud.dmarc}; rua=mailto:postmaster@{domain}"))
        add(f"{cloud.dkim_selector}._domainkey", "TXT", txt(dkim_record(cloud, secrets)))
        if cloud.mta_sts_mode != MtaStsMode.NONE:
            add("_mta-sts", "TXT", txt(f"v=STSv1; id={mta_sts_id(cloud)}"))
        add("_smtp._tls", "TXT", txt(f"v=TLSRPTv1; rua=mailto:postmaster@{domain}"))
    if (member := cloud.with_role(Role.MATRIX)) and cloud.with_role(Role.WEB) is None:
        target = f"10 0 {matrix_port(member)} {cloud.fqdn(member.name)}"
        add("_matrix-fed._tcp", "SRV", target)
        add("_matrix._tcp", "SRV", target)
    for issuer in cloud.caa:
        add("@", "CAA", f'0 issue "{issuer}"')
    return sorted(
        RRset(name, rtype, tuple(sorted(contents)), cloud.ttl)
        for (name, rtype), contents in wanted.items()
    )


def _hosts(cloud: Cloud) -> set[str]:
    return {host for member in cloud.members for host in member.names}
