"""DNS probes over UDP and TCP (dnspython): NAME TYPE resolves, the answer holds a string."""

from __future__ import annotations

from appliancekit.probes._common import short
from appliancekit.probes.runner import ProbeFailed, probe_kind
from appliancekit.recipe import Probe


def _dns_query(probe: Probe) -> tuple[str, str]:
    words = probe.query.split()
    if not words or len(words) > 2:
        raise ProbeFailed(f"dns probe query must be 'NAME TYPE', not {probe.query!r}")
    return words[0], (words[1] if len(words) == 2 else "A")


def _dns_describe(probe: Probe) -> str:
    return probe.query


@probe_kind("dns", protocol="udp", describe=_dns_describe)
def check_dns(probe: Probe, host: str, port: int, timeout: float) -> str:
    try:
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode
    except ImportError as e:  # pragma: no cover - dnspython is a declared dependency
        raise ProbeFailed("dns probes need dnspython (pip install dnspython)") from e
    name, rdtype = _dns_query(probe)
    query = dns.message.make_query(name, rdtype)
    try:
        response = dns.query.udp(query, host, port=port, timeout=timeout)
    except dns.exception.Timeout as e:
        raise ProbeFailed(f"no DNS answer from {host}:{port} within {timeout:.1f}s") from e
    rcode = dns.rcode.to_text(response.rcode())
    answer = " | ".join(rrset.to_text() for rrset in response.answer)
    if response.rcode() != dns.rcode.NOERROR:
        raise ProbeFailed(f"{name} {rdtype}: {rcode}")
    if not response.answer:
        raise ProbeFailed(f"{name} {rdtype}: NOERROR but no answer records")
    expect = probe.expect or probe.contains
    if expect and expect not in answer:
        raise ProbeFailed(f"{name} {rdtype}: answer lacks {expect!r} (answer: {short(answer)})")
    return f"{rcode}: {short(answer)}"


@probe_kind("dns-tcp", describe=_dns_describe)
def check_dns_tcp(probe: Probe, host: str, port: int, timeout: float) -> str:
    """The dns probe over TCP (zone transfers, large answers and truncated UDP use it)."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    name, rdtype = _dns_query(probe)
    try:
        response = dns.query.tcp(
            dns.message.make_query(name, rdtype), host, port=port, timeout=timeout
        )
    except dns.exception.Timeout as e:
        raise ProbeFailed(f"no DNS answer over TCP from {host}:{port} within {timeout:.1f}s") from e
    except EOFError as e:  # QEMU accepted, nothing in the guest answered
        raise ProbeFailed(f"DNS over TCP: {host}:{port} closed the connection") from e
    rcode = dns.rcode.to_text(response.rcode())
    answer = " | ".join(rrset.to_text() for rrset in response.answer)
    if response.rcode() != dns.rcode.NOERROR:
        raise ProbeFailed(f"{name} {rdtype} over TCP: {rcode}")
    expect = probe.expect or probe.contains
    if not response.answer or (expect and expect not in answer):
        raise ProbeFailed(
            f"{name} {rdtype} over TCP: answer lacks {expect or 'records'!r} "
            f"(answer: {short(answer) or 'none'})"
        )
    return f"{rcode} over TCP: {short(answer)}"
