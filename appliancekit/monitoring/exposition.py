"""Reading what a monitoring agent serves: Prometheus' text exposition format (version
0.0.4), parsed into typed samples, and one scrape of an agent over HTTP with its bearer token.

Small on purpose (the host side has no Prometheus client library): comments and # HELP/# TYPE
lines are skipped, labels are unescaped (\\\\, \\", \\n), values are floats (NaN and ±Inf
included), an optional timestamp after the value is ignored. A line that is none of these
raises ValueError: a member answering with something else is not read as a value.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(?:,|$)')
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"n": "\n", "\\": "\\", '"': '"'}
MAX_BYTES = 8 << 20  # a node-exporter's page is ~100 KiB; anything far beyond is not one


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    value: float = 0.0


def _labels(text: str, line: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"bad labels in sample line: {line[:200]!r}")
        labels[match[1]] = _ESCAPE.sub(lambda m: _UNESCAPED.get(m[1], "\\" + m[1]), match[2])
        pos = match.end()
    return labels


def parse(text: str, prefix: str = "") -> list[Sample]:
    """The samples of an exposition, those whose name starts with `prefix`."""
    samples: list[Sample] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or not line.startswith(prefix):
            continue
        match = _SAMPLE.fullmatch(line)
        if match is None:
            raise ValueError(f"not a sample line: {line[:200]!r}")
        try:
            value = float(match[3])
        except ValueError:
            raise ValueError(f"not a sample value: {line[:200]!r}") from None
        samples.append(Sample(match[1], _labels(match[2] or "", line), value))
    return samples


def first(samples: Iterable[Sample], name: str) -> Sample | None:
    return next((s for s in samples if s.name == name), None)


def scrape(url: str, token: str | None, timeout: float, prefix: str = "") -> list[Sample]:
    """One scrape of `url`. Raises OSError (unreachable, refused, timed out, HTTP error) or
    ValueError (not the exposition format)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read(MAX_BYTES + 1)
    if len(body) > MAX_BYTES:
        raise ValueError(f"{url} answered with more than {MAX_BYTES} bytes")
    return parse(body.decode("utf-8", errors="replace"), prefix)
