"""SMTP probes: the greeting and EHLO, and sending a message (STARTTLS, AUTH)."""

from __future__ import annotations

import contextlib
import smtplib

from appliancekit.probes._common import credentials, short, tls_context
from appliancekit.probes.runner import ProbeFailed, probe_kind
from appliancekit.recipe import Probe


@probe_kind("smtp")
def check_smtp(probe: Probe, host: str, port: int, timeout: float) -> str:
    client = smtplib.SMTP(timeout=timeout)
    try:
        code, greeting = client.connect(host, port)
        if code != 220:
            raise ProbeFailed(f"SMTP greeting {code} {short(greeting)!r}, expected 220")
        ehlo_code, ehlo = client.ehlo("appliancekit.probe")
        if ehlo_code != 250:
            raise ProbeFailed(f"EHLO answered {ehlo_code} {short(ehlo)!r}")
        seen = greeting + b"\n" + ehlo
        if probe.contains and probe.contains.encode() not in seen:
            raise ProbeFailed(
                f"SMTP greeting/EHLO lacks {probe.contains!r} (greeting: {short(greeting)!r})"
            )
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        return f"220 {short(greeting)}"
    except smtplib.SMTPServerDisconnected as e:
        raise ProbeFailed(f"SMTP server at {host}:{port} closed the connection: {e}") from e
    finally:
        client.close()


def _smtp_send_describe(probe: Probe) -> str:
    return f"{probe.param('subject') or 'a message'!r} to {probe.param('to')}"


@probe_kind("smtp-send", describe=_smtp_send_describe)
def check_smtp_send(probe: Probe, host: str, port: int, timeout: float) -> str:
    """Send params.subject (plus the "Name: value" lines of params.headers) from params.from
    to params.to over SMTP, after STARTTLS (unless params.tls = "none"). With params.user,
    AUTH is required -- and must not be offered before STARTTLS -- as on a submission port;
    without, the message arrives as from the Internet (port 25)."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    user = probe.param("user")
    if user:
        user, password = credentials(probe)
    sender, recipient = probe.param("from") or user, probe.param("to")
    if not (sender and recipient):
        raise ProbeFailed("an smtp-send probe needs params.from (or user) and params.to")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = probe.param("subject") or "appliancekit probe"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    for line in probe.param("headers").splitlines():  # extra "Name: value" header lines
        name, colon, value = line.partition(":")
        if colon and name.strip():
            message[name.strip()] = value.strip()
    message.set_content(probe.param("body") or "Sent by the appliancekit boot test.\n")
    client = smtplib.SMTP(timeout=timeout)
    try:
        code, greeting = client.connect(host, port)
        if code != 220:
            raise ProbeFailed(f"SMTP greeting {code} {short(greeting)!r}, expected 220")
        client._host = host  # connect() does not record it; starttls() sends it as SNI
        client.ehlo("appliancekit.probe")
        if user and client.has_extn("auth"):
            raise ProbeFailed("AUTH is offered before STARTTLS (passwords would travel in clear)")
        if probe.param("tls") != "none":
            if not client.has_extn("starttls"):
                raise ProbeFailed("STARTTLS is not offered")
            client.starttls(context=tls_context())
            client.ehlo("appliancekit.probe")
        if user:
            if not client.has_extn("auth"):
                raise ProbeFailed("AUTH is not offered after STARTTLS")
            try:
                client.login(user, password)
            except smtplib.SMTPAuthenticationError as e:
                raise ProbeFailed(
                    f"AUTH as {user} refused: {e.smtp_code} {short(e.smtp_error)}"
                ) from e
        code, answer = client.mail(sender)
        if code != 250:
            raise ProbeFailed(f"MAIL FROM:<{sender}> answered {code} {short(answer)}")
        code, answer = client.rcpt(recipient)
        if code not in (250, 251):
            raise ProbeFailed(f"RCPT TO:<{recipient}> answered {code} {short(answer)}")
        code, answer = client.data(message.as_bytes())
        if code != 250:
            raise ProbeFailed(f"DATA answered {code} {short(answer)}")
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        return f"sent{f' as {user}' if user else ''}: {code} {short(answer)}"
    except smtplib.SMTPServerDisconnected as e:
        raise ProbeFailed(f"SMTP server at {host}:{port} closed the connection: {e}") from e
    finally:
        client.close()
