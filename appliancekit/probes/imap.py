"""IMAP probes: the greeting, and logging in to find a message and check a header."""

from __future__ import annotations

import contextlib
import imaplib

from appliancekit.probes._common import credentials, short, tls_context
from appliancekit.probes.runner import ProbeFailed, probe_kind
from appliancekit.recipe import Probe


@probe_kind("imap")
def check_imap(probe: Probe, host: str, port: int, timeout: float) -> str:
    try:
        client = imaplib.IMAP4(host, port, timeout=timeout)
    except imaplib.IMAP4.abort as e:
        raise ProbeFailed(f"IMAP server at {host}:{port} hung up: {e}") from e
    except imaplib.IMAP4.error as e:
        raise ProbeFailed(f"IMAP greeting rejected: {e}") from e
    try:
        greeting = client.welcome
        if probe.contains and probe.contains.encode() not in greeting:
            raise ProbeFailed(f"IMAP greeting lacks {probe.contains!r} (got {short(greeting)!r})")
        return short(greeting)
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()


def _imap_message_describe(probe: Probe) -> str:
    return f"{probe.param('subject')!r} in {probe.param('mailbox') or 'INBOX'}"


def _imap_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@probe_kind("imap-message", describe=_imap_message_describe)
def check_imap_message(probe: Probe, host: str, port: int, timeout: float) -> str:
    """IMAP (params.tls: starttls (default), implicit or none): log in, find the newest
    message with params.subject in params.mailbox; if params.header is set, that header must
    be there, and one of its instances must contain every comma-separated string of
    params.header_contains."""
    from email import message_from_bytes

    user, password = credentials(probe)
    mailbox, subject = probe.param("mailbox") or "INBOX", probe.param("subject")
    if not subject:
        raise ProbeFailed("an imap-message probe needs params.subject")
    tls = probe.param("tls") or "starttls"
    try:
        if tls == "implicit":
            client = imaplib.IMAP4_SSL(host, port, ssl_context=tls_context(), timeout=timeout)
        else:
            client = imaplib.IMAP4(host, port, timeout=timeout)
            if tls == "starttls":
                client.starttls(ssl_context=tls_context())
    except imaplib.IMAP4.abort as e:
        raise ProbeFailed(f"IMAP server at {host}:{port} hung up: {e}") from e
    try:
        try:
            client.login(user, password)
        except imaplib.IMAP4.error as e:
            raise ProbeFailed(f"IMAP LOGIN as {user} refused: {e}") from e
        status, data = client.select(_imap_quote(mailbox), readonly=True)
        if status != "OK":
            raise ProbeFailed(f"cannot select mailbox {mailbox!r}: {short(data[0] or b'')}")
        total = int(data[0] or 0)
        status, data = client.search(None, "SUBJECT", _imap_quote(subject))
        found = data[0].split() if status == "OK" and data and data[0] else []
        if not found:
            raise ProbeFailed(f"no message {subject!r} in {mailbox} ({total} messages there)")
        status, data = client.fetch(found[-1], "(BODY.PEEK[HEADER])")
        raw = next((part[1] for part in data if isinstance(part, tuple)), b"")
        detail = f"{mailbox}: {len(found)} message(s) {subject!r}"
        header = probe.param("header")
        if header:
            values = [" ".join(str(v).split()) for v in message_from_bytes(raw).get_all(header, [])]
            if not values:
                raise ProbeFailed(f"message {subject!r} in {mailbox} has no {header} header")
            wanted = [w.strip() for w in probe.param("header_contains").split(",") if w.strip()]
            if not any(all(w in value for w in wanted) for value in values):
                raise ProbeFailed(f"{header} lacks {wanted}: {short(' | '.join(values))}")
            detail += f"; {header}: {short(values[0], 80)}"
        return detail
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()
