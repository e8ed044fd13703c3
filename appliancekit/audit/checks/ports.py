"""Only the recipe's declared ports ([network] ports) appear as listening ports in the
configuration files of the root. Listeners bound to loopback only are not reachable from
outside and are allowed."""

from __future__ import annotations

import re

from appliancekit.audit.image import AuditImage
from appliancekit.audit.registry import audit_check

# files that name ports without listening on them
IGNORED = ("/etc/services", "/etc/protocols", "/etc/nginx/mime.types")
LOOPBACK = re.compile(r"\b(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])\b|unix:|\.sock\b")
# postfix master.cf names services by their /etc/services name
SERVICE_PORTS = {
    "smtp": 25, "submission": 587, "submissions": 465, "smtps": 465, "imap": 143, "imap2": 143,
    "imaps": 993, "pop3": 110, "pop3s": 995, "sieve": 4190, "http": 80, "https": 443,
}  # fmt: skip
_NGINX_LISTEN = re.compile(r"^\s*listen\s+([^\s;]+)")
_KEY_PORT = re.compile(r"^\s*-?\s*([\w.-]*port)\s*[=:]\s*[\"']?(\d+)[\"']?\s*[;,]?\s*$", re.I)
_MASTER_INET = re.compile(r"^([\w.:\[\]-]+)\s+inet\s")
_COMMENT = re.compile(r"^\s*(#|;|//)")


def listening_ports(text: str) -> list[tuple[int, int, str]]:
    """(line number, port, line) of each non-loopback listener a configuration text names."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if _COMMENT.match(line) or LOOPBACK.search(line):
            continue
        port: int | None = None
        if match := _NGINX_LISTEN.match(line):
            tail = match[1].rsplit(":", 1)[-1]
            port = int(tail) if tail.isdigit() else None
        elif match := _KEY_PORT.match(line):
            port = int(match[2])
        elif match := _MASTER_INET.match(line):
            tail = match[1].rsplit(":", 1)[-1]
            port = int(tail) if tail.isdigit() else SERVICE_PORTS.get(tail)
        if port:  # 0 disables a listener
            found.append((number, port, line.strip()))
    return found


@audit_check("declared-ports", "only declared ports appear in the configuration")
def check_declared_ports(image: AuditImage) -> list[str]:
    declared = set(image.manifest.ports)
    findings = []
    for entry in image.entries():
        if not entry.is_file or not entry.path.startswith("/etc/") or entry.path in IGNORED:
            continue
        text = image.read_text(entry.path)
        if text is None:
            continue
        for number, port, line in listening_ports(text):
            if port not in declared:
                findings.append(f"{entry.path}:{number}: port {port} is not declared: {line[:100]}")
    return findings
