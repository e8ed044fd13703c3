"""The NixOS option list at the pinned nixpkgs, and render-time checks against it.

The list (data/nixos-options.txt, or .txt.gz) has one declared option per line::

    services.pixelfed.enable
    services.pixelfed.settings<TAB>o
    services.nginx.virtualHosts.<name>.root

`<name>` stands for any attribute name (attrsOf submodule); the flag `o` marks an option whose
value is an open attribute set (attrsOf, freeform `settings`, JSON/TOML formats), under which
any further path is a key of the value, not an option. Lines starting with `#` are comments;
`# key: value` comments at the top describe where the list came from.

A path is accepted when it walks the tree of declared names down to a declared option (or to a
whole `<name>` element), taking `<name>` for a name that is not declared, and stopping early
only at an open option or at an option with no declared sub-options.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from appliancekit.nixos.nixexpr import OptionPath, format_option, parse_option
from appliancekit.tomlsource import closest

ANY = "<name>"
DATA_NAMES = ("nixos-options.txt.gz", "nixos-options.txt")


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    option: bool = False
    open: bool = False


@dataclass
class OptionSet:
    root: _Node
    meta: dict[str, str]
    count: int

    @classmethod
    def parse(cls, lines: Iterable[str]) -> OptionSet:
        root = _Node()
        meta: dict[str, str] = {}
        count = 0
        for raw in lines:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            if line.startswith("#"):
                key, sep, value = line[1:].partition(":")
                if sep and " " not in key.strip():
                    meta.setdefault(key.strip(), value.strip())
                continue
            name, _, flags = line.partition("\t")
            node = root
            for part in parse_option(name):
                node = node.children.setdefault(part, _Node())
            node.option = True
            node.open = node.open or "o" in flags
            count += 1
        return cls(root=root, meta=meta, count=count)

    def problem(self, path: OptionPath) -> str | None:
        """None if `path` may be set; otherwise why not, with a suggestion when one is close."""
        node = self.root
        via_any = False
        for i, part in enumerate(path):
            child = node.children.get(part)
            via_any = child is None and ANY in node.children
            child = child or node.children.get(ANY)
            if child is None:
                if node.option and (node.open or not node.children):
                    return None  # a key inside the option's value
                return self._unknown(path, i, node)
            node = child
        if node.option or via_any:  # an option, or a whole element of an attrsOf submodule
            return None
        near = sorted(k for k in node.children if k != ANY)[:6]
        hint = f"; it has {', '.join(near)}{', ...' if len(node.children) > 6 else ''}"
        return f"{format_option(path)!r} is a group of options, not an option{hint}"

    def _unknown(self, path: OptionPath, i: int, node: _Node) -> str:
        where = format_option(path)
        names = [k for k in node.children if k != ANY]
        guess = closest(path[i], names)
        if guess is not None:
            better = format_option((*path[:i], guess, *path[i + 1 :]))
            return f"unknown NixOS option {where!r} (did you mean {better!r}?)"
        if i == 0:
            return f"unknown NixOS option {where!r}"
        return f"unknown NixOS option {where!r}: {format_option(path[:i])!r} has no {path[i]!r}"

    def __contains__(self, path: OptionPath) -> bool:
        return self.problem(path) is None


@lru_cache(maxsize=1)
def bundled_options() -> OptionSet:
    """The option list shipped with appliancekit (for the pinned nixpkgs)."""
    data = resources.files("appliancekit.nixos") / "data"
    for name in DATA_NAMES:
        entry = data / name
        if entry.is_file():
            raw = entry.read_bytes()
            if name.endswith(".gz"):
                raw = gzip.decompress(raw)
            return OptionSet.parse(raw.decode().splitlines())
    raise FileNotFoundError(f"no NixOS option list in {data}")
