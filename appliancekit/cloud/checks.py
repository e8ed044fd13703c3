"""Checks across a booted cloud's members, run from the host.

The host reaches each member through its user-mode NIC's forwarded ports; names are always
resolved at the DNS member, and an address it answers is mapped to the member holding it on
the cloud's network (the host itself is not on that network). Mail goes further: the mail
member checks the DKIM signature of a message re-sent to it from outside, which it can only
do by asking the DNS member over the cloud's network.

Each check returns a one-line detail or raises; `run_checks` retries each until its deadline.
"""

from __future__ import annotations

import contextlib
import imaplib
import smtplib
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import dns.message
import dns.query
import dns.rdata
import dns.rdatatype

from appliancekit.cloud import pdns, records
from appliancekit.cloud.boot import BootedCloud, BootedMember
from appliancekit.cloud.model import Role
from appliancekit.cloud.secrets import CloudSecrets
from appliancekit.probes._common import short, tls_context

ATTEMPT = 30.0  # one network operation; generous: 4 guests share the host under TCG


class CheckFailed(Exception):
    pass


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float  # since the cloud's first machine started
    attempts: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)


# --------------------------------------------------------------------------- DNS


def query(booted: BootedCloud, name: str, rtype: str) -> list[str]:
    """Ask the DNS member (over TCP: a lost UDP datagram would only time out)."""
    dns_member = booted.members[booted.cloud.dns.name]
    port = dns_member.host_port(53)
    answer = dns.query.tcp(
        dns.message.make_query(name, rtype), "127.0.0.1", port=port, timeout=ATTEMPT
    )
    wanted = dns.rdatatype.from_text(rtype)
    return sorted(rd.to_text() for rrset in answer.answer if rrset.rdtype == wanted for rd in rrset)


def resolve_member(booted: BootedCloud, name: str) -> tuple[str, BootedMember]:
    addresses = query(booted, name, "A")
    if not addresses:
        raise CheckFailed(f"{name} has no A record at the DNS member")
    member = booted.by_address(addresses[0])
    if member is None:
        raise CheckFailed(f"{name} resolves to {addresses[0]}, which no member holds")
    return addresses[0], member


def dkim_dns(booted: BootedCloud) -> Callable[..., bytes]:
    """dkimpy's dnsfunc, answered by the DNS member."""

    def lookup(name: bytes | str, timeout: float = 5) -> bytes:
        text = name.decode() if isinstance(name, bytes) else name
        answer = dns.query.tcp(
            dns.message.make_query(text, "TXT"),
            "127.0.0.1",
            port=booted.members[booted.cloud.dns.name].host_port(53),
            timeout=timeout,
        )
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(next(iter(rrset)).strings)
        return b""

    return lookup


# --------------------------------------------------------------------------- the checks


def apply_records(booted: BootedCloud, secrets: CloudSecrets) -> str:
    """The zone, through the DNS member's own API, as `cloud dns --apply` does."""
    cloud = booted.cloud
    api = booted.members[cloud.dns.name].host_port(8081)
    client = pdns.PowerDNS(f"http://127.0.0.1:{api}", secrets.pdns_api_key)
    wanted = records.generate(cloud, secrets)
    start = time.monotonic()
    result = pdns.apply(
        client, f"{cloud.domain}.", wanted, cloud.name, nameservers=[cloud.fqdn("ns1")]
    )
    # every record answers as generated at the DNS member (PowerDNS drops its caches on a
    # change through the API): the time from the apply to that is a bench figure
    pending = list(wanted)
    while pending:
        pending = [r for r in pending if query(booted, r.name, r.type) != _presented(r)]
        if pending and time.monotonic() - start > ATTEMPT:
            raise CheckFailed(f"{pending[0].name} {pending[0].type} does not answer as applied")
    booted.figures["dns_apply_to_resolving"] = time.monotonic() - start
    one = time.monotonic()
    query(booted, wanted[0].name, wanted[0].type)
    booted.figures["dns_one_query"] = time.monotonic() - one
    again = pdns.apply(client, f"{cloud.domain}.", wanted, cloud.name)
    if again.changes:
        raise CheckFailed(f"applying the records a second time changed {again.changes} RRsets")
    return f"{len(result.replace)} RRsets applied through the API; a second apply changed nothing"


def _presented(rrset: records.RRset) -> list[str]:
    """An RRset's contents as dnspython prints the answer."""
    rdtype = dns.rdatatype.from_text(rrset.type)
    return sorted(dns.rdata.from_text("IN", rdtype, c).to_text() for c in rrset.contents)


def listening(host_port: int) -> str:
    """Something in the guest accepted: it answered, or kept the connection open. (QEMU
    accepts every forwarded connection itself and closes it when the guest refuses.)"""
    with socket.create_connection(("127.0.0.1", host_port), timeout=ATTEMPT) as sock:
        sock.settimeout(1.0)
        try:
            data = sock.recv(64)
        except TimeoutError:
            return "accepted, waiting for the client"
        if not data:
            raise CheckFailed("closed at once: nothing listens there yet")
        return f"answered {short(data, 40)!r}"


def first_seen(booted: BootedCloud, what: str) -> None:
    """Record in the run's figures when `what` was first seen (seconds from the first QEMU
    start), for the per-member breakdown of a cloud test's time (docs/measurements.md)."""
    booted.figures.setdefault(what, round(booted.elapsed(), 1))


def members_by_name(booted: BootedCloud) -> str:
    """Every member's name resolves at the DNS member to the member's address, and a
    service answers there."""
    seen = []
    for member in booted.cloud.members:
        for host in member.names:
            name = booted.cloud.fqdn(host)
            address, found = resolve_member(booted, name)
            if found.card.member.name != member.name:
                raise CheckFailed(
                    f"{name} resolves to {address}: member {found.card.member.name}'s, not {member.name}'s"
                )
            if member.address6 is not None and query(booted, name, "AAAA") != [
                str(member.address6)
            ]:
                raise CheckFailed(f"{name} AAAA is not {member.address6}")
            # a declared service port ([network] ports), not one a probe only checks is closed
            port = next((p for p in found.card.member.recipe.ports if p != 53), 53)
            try:
                detail = listening(found.host_port(port))
            except (CheckFailed, OSError) as exc:
                raise CheckFailed(f"{name} ({address}) port {port}: {exc}") from None
            seen.append(f"{host}={address}:{port}")
            first_seen(booted, f"answering {member.name}")
            del detail
    return "resolved and answering: " + ", ".join(seen)


@dataclass(frozen=True)
class MailAccount:
    user: str
    password: str


def _imap(member: BootedMember, account: MailAccount) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", member.host_port(143), timeout=ATTEMPT)
    client.starttls(ssl_context=tls_context())
    client.login(account.user, account.password)
    return client


def _fetch(member: BootedMember, account: MailAccount, header: str, value: str) -> bytes:
    client = _imap(member, account)
    try:
        # a message from outside may be filed as spam: look in Junk too
        for mailbox in ("INBOX", "Junk"):
            status, _ = client.select(mailbox, readonly=True)
            if status != "OK":
                continue
            status, data = client.search(None, "HEADER", header, f'"{value}"')
            found = data[0].split() if status == "OK" and data and data[0] else []
            if found:
                status, data = client.fetch(found[-1], "(BODY.PEEK[])")
                return next(part[1] for part in data if isinstance(part, tuple))
        raise CheckFailed(f"no message with {header}: {value} in INBOX or Junk yet")
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()


class MailRoundTrip:
    """Submit a message, read it back DKIM-signed, verify the signature on the host against
    the DNS member's TXT record (dkimpy), then send the signed message to the mail member
    from outside: its own DKIM check asks the DNS member across the cloud's network."""

    def __init__(self, booted: BootedCloud, account: MailAccount) -> None:
        self.booted = booted
        self.account = account
        self.token = uuid.uuid4().hex
        self.sent = False
        self.resent = False
        self.signed: bytes | None = None

    @property
    def member(self) -> BootedMember:
        mail = self.booted.cloud.with_role(Role.MAIL)
        assert mail is not None
        return self.booted.members[mail.name]

    def address(self) -> str:
        return f"{self.account.user}@{self.booted.cloud.domain}"

    def submit_and_verify(self) -> str:
        import dkim

        if not self.sent:
            message = EmailMessage()
            message["From"] = message["To"] = self.address()
            message["Subject"] = f"cloud check {self.token}"
            message["Date"] = formatdate(localtime=False)
            message["Message-ID"] = make_msgid(domain=self.booted.cloud.domain)
            message["X-Cloud-Check"] = self.token
            message.set_content("Signed by the mail member, verified against the DNS member.\n")
            with smtplib.SMTP("127.0.0.1", self.member.host_port(587), timeout=ATTEMPT) as smtp:
                smtp.starttls(context=tls_context())
                smtp.login(self.account.user, self.account.password)
                smtp.send_message(message)
            self.sent = True
        raw = _fetch(self.member, self.account, "X-Cloud-Check", self.token)
        if b"DKIM-Signature:" not in raw:
            raise CheckFailed("the submitted message arrived without a DKIM-Signature")
        if not dkim.verify(raw, dnsfunc=dkim_dns(self.booted)):
            raise CheckFailed(
                "dkimpy: the DKIM signature does not verify against the DNS member's TXT record"
            )
        self.signed = raw
        selector = self.booted.cloud.dkim_selector
        return f"DKIM-signed by the mail member; verified by dkimpy against {selector}._domainkey.{self.booted.cloud.domain} at the DNS member"

    def resend_and_check(self) -> str:
        if self.signed is None:
            raise CheckFailed("no signed message yet")
        marker = f"resent-{self.token}"
        if not self.resent:
            # unsigned headers on top leave the signature intact
            body = f"X-Cloud-Resent: {marker}\r\n".encode() + self.signed.replace(
                b"\r\n", b"\n"
            ).replace(b"\n", b"\r\n")
            with smtplib.SMTP("127.0.0.1", self.member.host_port(25), timeout=ATTEMPT) as smtp:
                smtp.ehlo("outside.example.net")
                smtp.starttls(context=tls_context())
                smtp.ehlo("outside.example.net")
                smtp.sendmail(self.address(), [self.address()], body)
            self.resent = True
        raw = _fetch(self.member, self.account, "X-Cloud-Resent", marker)
        results = " ".join(
            " ".join(str(v).split())
            for v in message_from_bytes(raw).get_all("Authentication-Results", [])
        )
        if "dkim=pass" not in results:
            raise CheckFailed(
                f"the mail member's own DKIM check did not pass: {short(results or 'no Authentication-Results')}"
            )
        return "the mail member verified the signature through the DNS member: " + short(
            next((part for part in results.split(";") if "dkim=" in part), results).strip(), 80
        )


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], str]


def run_checks(
    booted: BootedCloud,
    checks: list[Check],
    deadline: float,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Each check in order, retried until it passes or `deadline` (monotonic) passes; stops
    at the first failure or when a machine dies."""
    results = []
    for check in checks:
        attempts = 0
        while True:
            attempts += 1
            dead = [name for name, running in booted.cluster.running().items() if not running]
            if dead:
                results.append(
                    CheckResult(
                        check.name,
                        False,
                        f"QEMU of {', '.join(dead)} exited",
                        booted.elapsed(),
                        attempts,
                    )
                )
                return results
            try:
                detail = check.run()
                results.append(CheckResult(check.name, True, detail, booted.elapsed(), attempts))
                if on_result is not None:
                    on_result(results[-1])
                break
            except Exception as exc:  # a check reports; the loop decides
                detail = str(exc) or type(exc).__name__
                if isinstance(
                    exc,
                    ConnectionRefusedError | ConnectionResetError | TimeoutError | socket.timeout,
                ):
                    detail = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    results.append(
                        CheckResult(check.name, False, detail, booted.elapsed(), attempts)
                    )
                    return results
            time.sleep(1.0)
    return results


def cloud_checks(
    booted: BootedCloud,
    secrets: CloudSecrets,
    account: MailAccount | None,
    tls_root: str | None = None,
    *,
    renewal: bool = True,
) -> list[Check]:
    """The checks in order. `tls_root`: the test ACME CA's root (PEM): chains are verified
    against it, and the certificates must be ACME's and be renewed; None: TLS is checked
    without verifying (self-signed, ACME off)."""
    from appliancekit.cloud.tlschecks import tls_checks

    cloud = booted.cloud
    checks = [
        Check(
            "records applied through the DNS member's API", lambda: apply_records(booted, secrets)
        ),
        Check(
            "every member resolved at the DNS member and answering", lambda: members_by_name(booted)
        ),
    ]
    tls_first, tls_last = tls_checks(booted, tls_root)
    checks += tls_first
    if cloud.with_role(Role.MAIL) and account is not None:
        trip = MailRoundTrip(booted, account)
        checks.append(
            Check(
                "mail DKIM-signed, verified against the DNS member (dkimpy)", trip.submit_and_verify
            )
        )
        checks.append(
            Check("mail member checks DKIM through the DNS member", trip.resend_and_check)
        )
    return checks + (tls_last if renewal else [])
