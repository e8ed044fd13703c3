"""TLS checks across a booted cloud: every TLS endpoint serves a chain that verifies against
the test CA's root for the name clients use, HTTP redirects to HTTPS, the MTA-STS policy and
the Matrix delegation come over verified HTTPS, and every certificate is renewed (a different
certificate, verifying again) before it expires.

Endpoints are reached through the members' forwarded ports with the name as SNI and the
hostname checked, as a client out there would see them.
"""

from __future__ import annotations

import hashlib
import http.client
import imaplib
import json
import smtplib
import socket
import ssl
from dataclasses import dataclass, field

from appliancekit.cloud import records
from appliancekit.cloud.boot import BootedCloud
from appliancekit.cloud.checks import (
    ATTEMPT,
    Check,
    CheckFailed,
    first_seen,
    query,
    resolve_member,
)
from appliancekit.cloud.model import Cloud, Member, MtaStsMode, Role
from appliancekit.cloud.roles import ACME_URL, MATRIX_TLS_PORT, TLS_CERT, tls_names


@dataclass(frozen=True)
class Endpoint:
    member: str
    name: str  # the host name clients connect to (SNI, and checked in the certificate)
    port: int  # guest port
    how: str  # "tls" (TLS from the first byte), "smtp" or "imap" (STARTTLS)

    def __str__(self) -> str:
        return f"{self.name}:{self.port}" + ("" if self.how == "tls" else f" ({self.how} STARTTLS)")


def acme_members(cloud: Cloud) -> list[Member]:
    """The members that get their certificate through ACME."""
    return [
        m
        for m in cloud.members
        if ACME_URL in {s.name for s in m.recipe.settings} and TLS_CERT not in dict(m.settings)
    ]


def endpoints(cloud: Cloud) -> list[Endpoint]:
    out = []
    for member in acme_members(cloud):
        name = tls_names(cloud, member)[0]
        ports = member.recipe.ports
        if member.role == Role.WEB or 443 in ports:
            out.append(Endpoint(member.name, name, 443, "tls"))
        if member.role == Role.MAIL:
            name = f"{member.name}.{cloud.domain}"
            out += [
                Endpoint(member.name, name, 25, "smtp"),
                Endpoint(member.name, name, 587, "smtp"),
                Endpoint(member.name, name, 993, "tls"),
            ]
        if member.role == Role.MATRIX or MATRIX_TLS_PORT in ports:
            out.append(
                Endpoint(member.name, f"{member.name}.{cloud.domain}", MATRIX_TLS_PORT, "tls")
            )
    return out


def served_certificate(booted: BootedCloud, endpoint: Endpoint, context: ssl.SSLContext) -> bytes:
    """The DER certificate the endpoint serves, after the handshake verified its chain and
    name (ssl raises otherwise)."""
    port = booted.members[endpoint.member].host_port(endpoint.port)
    if endpoint.how == "smtp":
        with smtplib.SMTP("127.0.0.1", port, timeout=ATTEMPT) as smtp:
            smtp.ehlo("probe.example.net")
            # smtplib sends SNI for the host it connected to: name the one we mean
            smtp._host = endpoint.name  # type: ignore[attr-defined]
            smtp.starttls(context=context)
            sock = smtp.sock
            assert isinstance(sock, ssl.SSLSocket)
            der = sock.getpeercert(binary_form=True)
    elif endpoint.how == "imap":
        client = imaplib.IMAP4("127.0.0.1", port, timeout=ATTEMPT)
        try:
            client.host = endpoint.name
            client.starttls(ssl_context=context)
            der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        finally:
            client.shutdown()
    else:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=ATTEMPT) as raw,
            context.wrap_socket(raw, server_hostname=endpoint.name) as sock,
        ):
            der = sock.getpeercert(binary_form=True)
    if not der:
        raise CheckFailed(f"{endpoint}: no certificate")
    return der


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:16]


@dataclass
class TlsState:
    """What the TLS checks saw: the first ACME certificate of each endpoint."""

    context: ssl.SSLContext
    first: dict[str, str] = field(default_factory=dict)  # str(endpoint) -> fingerprint
    renewed: dict[str, str] = field(default_factory=dict)


def context_for(root_pem: str) -> ssl.SSLContext:
    """Verifies chains against `root_pem` only, names included."""
    context = ssl.create_default_context(cadata=root_pem)
    context.check_hostname = True
    return context


def certificates_from_acme(booted: BootedCloud, state: TlsState) -> str:
    """Every endpoint's chain verifies against the CA's root (until ACME has been through,
    the self-signed one does not)."""
    seen = []
    failed: list[Exception] = []
    # every endpoint on each attempt, so each member's first ACME certificate is timed
    for endpoint in endpoints(booted.cloud):
        try:
            der = served_certificate(booted, endpoint, state.context)
        except ssl.SSLCertVerificationError as exc:
            failed.append(CheckFailed(f"{endpoint}: {exc.verify_message or exc}"))
            continue
        except OSError as exc:  # not answering yet
            failed.append(exc)
            continue
        state.first.setdefault(str(endpoint), fingerprint(der))
        first_seen(booted, f"ACME certificate served by {endpoint.member}")
        seen.append(str(endpoint))
    if failed:
        raise failed[0]
    return "chains verify against the ACME CA's root: " + ", ".join(seen)


def certificates_renewed(booted: BootedCloud, state: TlsState) -> str:
    """Every endpoint now serves another certificate than the first it served, verifying."""
    waiting = []
    for endpoint in endpoints(booted.cloud):
        key = str(endpoint)
        if key in state.renewed:
            continue
        der = served_certificate(booted, endpoint, state.context)
        if fingerprint(der) == state.first[key]:
            waiting.append(key)
        else:
            state.renewed[key] = fingerprint(der)
            first_seen(booted, f"renewed certificate served by {endpoint.member}")
    if waiting:
        raise CheckFailed(f"still the first certificate: {', '.join(waiting)}")
    return "renewed, new chains verify: " + ", ".join(
        f"{k} {state.first[k][:8]}->{v[:8]}" for k, v in state.renewed.items()
    )


def https_get(
    booted: BootedCloud, name: str, path: str, state: TlsState, port: int = 443
) -> tuple[str, int, bytes]:
    """GET https://NAME/PATH at the member NAME resolves to (at the DNS member), the chain
    verified for NAME."""
    address, member = resolve_member(booted, f"{name}.")
    with (
        socket.create_connection(("127.0.0.1", member.host_port(port)), timeout=ATTEMPT) as raw,
        state.context.wrap_socket(raw, server_hostname=name) as sock,
    ):
        request = f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        return address, response.status, response.read()


def homepage_over_https(booted: BootedCloud, state: TlsState) -> str:
    """http://www.DOMAIN/ redirects to https://, which serves the site with a verified chain."""
    cloud = booted.cloud
    name = f"www.{cloud.domain}"
    address, member = resolve_member(booted, f"{name}.")
    conn = http.client.HTTPConnection("127.0.0.1", member.host_port(80), timeout=ATTEMPT)
    try:
        conn.request("GET", "/", headers={"Host": name, "Connection": "close"})
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    location = response.getheader("Location", "")
    if response.status != 301 or location != f"https://{name}/":
        raise CheckFailed(
            f"http://{name}/ answered {response.status} {location!r}, not a redirect to https"
        )
    _address, status, body = https_get(booted, name, "/", state)
    if status != 200:
        raise CheckFailed(f"https://{name}/ answered {status}")
    return (
        f"http://{name}/ -> 301 https://{name}/ ({address}): 200, {len(body)} bytes, chain verified"
    )


def mta_sts_policy(booted: BootedCloud, state: TlsState) -> str:
    cloud = booted.cloud
    name = f"mta-sts.{cloud.domain}"
    _address, status, body = https_get(booted, name, "/.well-known/mta-sts.txt", state)
    expected = records.mta_sts_policy(cloud)
    if status != 200 or body.decode(errors="replace") != expected:
        raise CheckFailed(f"https://{name}/.well-known/mta-sts.txt: {status} {body[:120]!r}")
    return f"https://{name}/.well-known/mta-sts.txt (chain verified) is the policy the _mta-sts TXT id names"


def matrix_delegation(booted: BootedCloud, state: TlsState) -> str:
    """@user:DOMAIN: https://DOMAIN/.well-known/matrix/server names HOST:PORT; there the
    federation API answers over TLS with a chain verified for HOST."""
    cloud = booted.cloud
    _address, status, body = https_get(booted, cloud.domain, "/.well-known/matrix/server", state)
    if status != 200:
        raise CheckFailed(f"https://{cloud.domain}/.well-known/matrix/server answered {status}")
    host, _, port = json.loads(body)["m.server"].rpartition(":")
    address, status, body = https_get(
        booted, host, "/_matrix/federation/v1/version", state, port=int(port)
    )
    if status != 200 or b"server" not in body:
        raise CheckFailed(f"federation version at {host}:{port} answered {status} {body[:80]!r}")
    return (
        f"@user:{cloud.domain} -> {host}:{port} ({address}) over TLS, chain verified: {body[:60]!r}"
    )


def matrix_srv_delegation(booted: BootedCloud, state: TlsState) -> str:
    """Without a web member: the _matrix-fed._tcp SRV record names the member's TLS port,
    whose certificate holds the domain itself (roles.tls_names)."""
    cloud = booted.cloud
    srv = query(booted, f"_matrix-fed._tcp.{cloud.domain}.", "SRV")
    if not srv:
        raise CheckFailed(f"no _matrix-fed._tcp.{cloud.domain} SRV record")
    _priority, _weight, port, target = srv[0].split()
    address, member = resolve_member(booted, target)
    with (
        socket.create_connection(
            ("127.0.0.1", member.host_port(int(port))), timeout=ATTEMPT
        ) as raw,
        state.context.wrap_socket(raw, server_hostname=cloud.domain) as sock,
    ):
        sock.sendall(
            f"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: {cloud.domain}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
    if response.status != 200 or b"server" not in body:
        raise CheckFailed(f"federation version at {target}:{port} answered {response.status}")
    return f"@user:{cloud.domain} -> SRV {target}:{port} ({address}) over TLS: {body[:60]!r}"


def tls_checks(booted: BootedCloud, root_pem: str | None) -> tuple[list[Check], list[Check]]:
    """(checks to run with the others, the renewal check to run last). `root_pem` None: no
    test CA (ACME off): TLS is checked without verifying chains."""
    cloud = booted.cloud
    if root_pem is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = context_for(root_pem)
    state = TlsState(context)
    first: list[Check] = []
    last: list[Check] = []
    if root_pem is not None and endpoints(cloud):
        first.append(
            Check(
                "every TLS member serves an ACME certificate (chain verified)",
                lambda: certificates_from_acme(booted, state),
            )
        )
        last.append(
            Check(
                "every certificate renewed before expiry",
                lambda: certificates_renewed(booted, state),
            )
        )
    if cloud.with_role(Role.WEB) is not None:
        first.append(
            Check(
                "homepage by name: HTTP redirects to HTTPS",
                lambda: homepage_over_https(booted, state),
            )
        )
        if cloud.with_role(Role.MAIL) and cloud.mta_sts_mode != MtaStsMode.NONE:
            first.append(Check("MTA-STS policy over HTTPS", lambda: mta_sts_policy(booted, state)))
        if cloud.with_role(Role.MATRIX):
            first.append(
                Check(
                    "Matrix delegation (.well-known) over TLS",
                    lambda: matrix_delegation(booted, state),
                )
            )
    elif cloud.with_role(Role.MATRIX):
        first.append(
            Check("Matrix delegation (SRV) over TLS", lambda: matrix_srv_delegation(booted, state))
        )
    return first, last
