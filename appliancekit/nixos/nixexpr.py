"""Python values -> Nix expression text, and NixOS option paths.

Only what the renderer needs: strings (escaped for "..." literals), ints, floats, bools, null,
lists, attribute sets and `Raw` expressions passed through verbatim. Output is deterministic
(attribute names sorted) so rendered flakes diff cleanly and golden tests are stable.

Option paths are tuples of attribute names. In recipe files an option is written the way Nix
writes an attribute path: `services.nginx.virtualHosts."example.org".root` — dots separate
names, a double-quoted segment keeps its dots.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

OptionPath = tuple[str, ...]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_'-]*")
_KEYWORDS = frozenset(
    {"if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or", "true", "false"}
)
_SEGMENT = re.compile(r'\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^".\s]+))\s*')


@dataclass(frozen=True)
class Raw:
    """A Nix expression written out verbatim (e.g. `pkgs.garage`, `config.x.y`)."""

    text: str


def string(value: str) -> str:
    """A double-quoted Nix string literal; `\\`, `"` and `${` are escaped."""
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


def attr_name(name: str) -> str:
    """An attribute name, quoted unless it is a plain identifier."""
    if _IDENT.fullmatch(name) and name not in _KEYWORDS:
        return name
    return string(name)


def attr_path(path: Sequence[str]) -> str:
    return ".".join(attr_name(p) for p in path)


def format_option(path: Sequence[str]) -> str:
    """The option as NixOS documents it: services.nginx.virtualHosts."a.b".root."""
    return ".".join(p if "." not in p and p else json.dumps(p) for p in path)


def parse_option(text: str) -> OptionPath:
    """'services.nginx.virtualHosts."a.b".root' -> ('services', 'nginx', 'virtualHosts', 'a.b',
    'root'). Raises ValueError on empty segments or unbalanced quotes."""
    parts: list[str] = []
    pos = 0
    while True:
        m = _SEGMENT.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad option path {text!r} at offset {pos}")
        if m.group("quoted") is not None:
            parts.append(json.loads(f'"{m.group("quoted")}"'))
        else:
            parts.append(m.group("bare"))
        pos = m.end()
        if pos == len(text):
            return tuple(parts)
        if text[pos] != ".":
            raise ValueError(f"bad option path {text!r} at offset {pos}")
        pos += 1


def expr(value: object, indent: int = 0) -> str:
    """Render a Python value as a Nix expression (multi-line for non-empty sets and lists)."""
    pad = "  " * indent
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return string(value)
    if isinstance(value, Mapping):
        if not value:
            return "{ }"
        lines = [
            f"{pad}  {attr_name(str(k))} = {expr(v, indent + 1)};"
            for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        ]
        return "{\n" + "\n".join(lines) + f"\n{pad}}}"
    if isinstance(value, list | tuple):
        if not value:
            return "[ ]"
        scalar = (str, int, float, bool, Raw, type(None))
        if all(isinstance(v, scalar) for v in value) and len(value) <= 4:
            inner = " ".join(_list_item(v, indent) for v in value)
            if len(inner) < 72:
                return f"[ {inner} ]"
        lines = [f"{pad}  {_list_item(v, indent + 1)}" for v in value]
        return "[\n" + "\n".join(lines) + f"\n{pad}]"
    raise TypeError(f"cannot render {type(value).__name__} as Nix")


def _list_item(value: object, indent: int) -> str:
    text = expr(value, indent)
    # a function application must be parenthesised inside a list
    if isinstance(value, Raw) and " " in text and not text.startswith(('"', "(", "[", "{")):
        return f"({text})"
    # so must a negative number: `[ 1 -2 ]` is not a list of two numbers in Nix
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        return f"({text})"
    return text


def assignments(options: Sequence[tuple[OptionPath, object]], indent: int = 1) -> str:
    """`a.b.c = value;` lines, one per option, in the given order."""
    pad = "  " * indent
    return "\n".join(f"{pad}{attr_path(p)} = {expr(v, indent)};" for p, v in options)
