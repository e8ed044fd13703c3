#!/usr/bin/env python3
"""Extract NixOS option names from nixpkgs' module files into appliancekit's option list.

    # from a checkout (or an unpacked source tarball / `nix flake prefetch` store path)
    scripts/refresh-nixos-options.py --nixpkgs ~/src/nixpkgs --rev REV
    # from a git mirror at one revision, without a work tree
    scripts/refresh-nixos-options.py --git-dir nixpkgs.git --rev REV
    # CI: every name in the committed list must be declared at the pinned revision
    scripts/refresh-nixos-options.py --nixpkgs "$src" --check appliancekit/nixos/data/nixos-options.txt

Writes appliancekit/nixos/data/nixos-options.txt.gz (or --out FILE; plain text unless it ends in
.gz): one option per line, `<name>` for attrsOf-submodule elements, a TAB + `o` for options
whose value is an open attribute set (see appliancekit/nixos/options.py for the format).

The extraction is static (no Nix evaluator needed): a small Nix tokenizer walks every
nixos/modules/**/*.nix, follows `options.a.b = { ... }` / `options = { a.b = ...; }` trees and
records each binding whose value is mkOption / mkEnableOption / mkPackageOption (and their
lib.* spellings), descending into inline `types.submodule { options = ...; }` types. Options
built by functions or spliced in from let-bound option sets are recorded down to the option
that holds them, which is then marked open. It finds the declarations a human would find by
reading the file; the evaluator's `optionAttrSetToDocList` would find the same set plus
options generated at evaluation time (e.g. per-package `enable` options from mapAttrs).
"""

from __future__ import annotations

import argparse
import gzip
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DECLARE = re.compile(
    r"(?:lib\.(?:options\.)?)?(?:mkOption|mkEnableOption|mkPackageOption|mkPackageOptionMD"
    r"|mkSinkUndeclaredOptions)"
)
OPEN_TYPES = re.compile(
    r"\b(?:attrsOf|lazyAttrsOf|attrs|anything|freeformType|raw|unspecified)\b|\.type\b"
)
ANY = "<name>"

# --------------------------------------------------------------------------- tokenizer

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*|/\*.*?\*/)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_'-]*)
  | (?P<path>[A-Za-z0-9._+-]*(?:/[A-Za-z0-9._+-]+)+/?|<[A-Za-z0-9._+/-]+>)
  | (?P<number>[0-9]+(?:\.[0-9]*)?)
  | (?P<op>\$\{|//|\+\+|==|!=|<=|>=|&&|\|\||->|\.\.\.|[{}\[\]();=.,:?@!<>+*/-])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Tok:
    kind: str  # ident | str | path | number | op
    text: str  # the identifier/op, or a string's value when it has no interpolation


def tokenize(src: str) -> list[Tok]:
    out: list[Tok] = []
    i, depth_stack = 0, [0]  # brace depth inside the current ${ ... } of a string
    n = len(src)
    while i < n:
        c = src[i]
        if c == '"':
            i, text = _string(src, i + 1)
            out.append(Tok("str", text))
            continue
        if src.startswith("''", i):
            i, text = _indented(src, i + 2)
            out.append(Tok("str", text))
            continue
        m = _TOKEN.match(src, i)
        if not m:
            i += 1
            continue
        i = m.end()
        kind = m.lastgroup or ""
        if kind in ("ws", "comment"):
            continue
        out.append(Tok(kind, m.group()))
    del depth_stack
    return out


def _skip_interpolation(src: str, i: int) -> int:
    """i is just after `${`; return the index after the matching `}`."""
    depth = 1
    while i < len(src) and depth:
        c = src[i]
        if c == '"':
            i, _ = _string(src, i + 1)
            continue
        if src.startswith("''", i):
            i, _ = _indented(src, i + 2)
            continue
        depth += {"{": 1, "}": -1}.get(c, 0)
        i += 1
    return i


def _string(src: str, i: int) -> tuple[int, str]:
    buf: list[str] = []
    interpolated = False
    while i < len(src):
        c = src[i]
        if c == "\\":
            buf.append(src[i + 1 : i + 2])
            i += 2
        elif c == '"':
            return i + 1, "" if interpolated else "".join(buf)
        elif src.startswith("${", i):
            interpolated = True
            i = _skip_interpolation(src, i + 2)
        else:
            buf.append(c)
            i += 1
    return i, ""


def _indented(src: str, i: int) -> tuple[int, str]:
    while i < len(src):
        if src.startswith("'''", i) or src.startswith("''$", i) or src.startswith("''\\", i):
            i += 3
        elif src.startswith("''", i):
            return i + 2, ""
        elif src.startswith("${", i):
            i = _skip_interpolation(src, i + 2)
        else:
            i += 1
    return i, ""


# --------------------------------------------------------------------------- walker

_OPEN = {"{": "}", "[": "]", "(": ")", "${": "}"}


class Walker:
    def __init__(self, toks: list[Tok]) -> None:
        self.t = toks
        self.found: dict[tuple[str, ...], bool] = {}  # option -> open

    def match(self, i: int) -> int:
        """Index after the bracket group starting at i."""
        want = [_OPEN[self.t[i].text]]
        i += 1
        while i < len(self.t) and want:
            text = self.t[i].text if self.t[i].kind == "op" else None
            if text in _OPEN:
                want.append(_OPEN[text])
            elif text == want[-1]:
                want.pop()
            i += 1
        return i

    def value_end(self, i: int) -> int:
        """Index of the `;` that ends the value starting at i."""
        while i < len(self.t):
            tok = self.t[i]
            if tok.kind == "op" and tok.text in _OPEN:
                i = self.match(i)
                continue
            if tok.kind == "op" and tok.text == ";":
                return i
            if tok.kind == "ident" and tok.text == "let":
                i = self._skip_let(i)
                continue
            i += 1
        return i

    def _skip_let(self, i: int) -> int:
        i += 1
        while i < len(self.t) and not (self.t[i].kind == "ident" and self.t[i].text == "in"):
            if self.t[i].kind == "op" and self.t[i].text in _OPEN:
                i = self.match(i)
            else:
                i += 1
        return i + 1

    def bindings(self, start: int, end: int) -> Iterator[tuple[list[str], int, int]]:
        """(attrpath, value start, value end) for each `a.b = value;` in the set body."""
        i = start
        while i < end:
            tok = self.t[i]
            if tok.kind == "ident" and tok.text == "inherit":
                i = self.value_end(i) + 1
                continue
            path: list[str] = []
            j = i
            while (
                j < end
                and self.t[j].kind in ("ident", "str")
                or (j < end and self.t[j].kind == "op" and self.t[j].text in (".", "${"))
            ):
                if self.t[j].kind == "op" and self.t[j].text == "${":
                    j = self.match(j)
                    path.append(ANY)
                    continue
                if self.t[j].kind != "op":
                    path.append(self.t[j].text or ANY)
                j += 1
            if path and j < end and self.t[j].kind == "op" and self.t[j].text == "=":
                vend = self.value_end(j + 1)
                yield path, j + 1, vend
                i = vend + 1
            else:
                i = (self.value_end(i) + 1) if i < end else end

    def strip(self, i: int, end: int) -> int:
        """Skip `with X;`, `let ... in` and `lib.mkIf c`-free prefixes of a value."""
        while i < end:
            tok = self.t[i]
            if tok.kind == "ident" and tok.text == "with":
                i = self.value_end(i) + 1
            elif tok.kind == "ident" and tok.text == "let":
                i = self._skip_let(i)
            elif tok.kind == "op" and tok.text == "(" and self.match(i) == end:
                i += 1
                end -= 1
            else:
                return i
        return i

    def head(self, i: int, end: int) -> str:
        parts = []
        while i < end and self.t[i].kind == "ident":
            parts.append(self.t[i].text)
            if not (i + 1 < end and self.t[i + 1].kind == "op" and self.t[i + 1].text == "."):
                break
            i += 2
        return ".".join(parts)

    # -- option trees

    def module(self) -> None:
        """Follow the `options...` bindings of the module's top-level attribute set."""
        i, end = 0, len(self.t)
        # the module function's arguments: `{ config, lib, ... }:` or `args@{ ... }:`
        if i < end and self.t[i].text == "{" and self.t[i].kind == "op":
            j = self.match(i)
            if j < end and self.t[j].text == ":":
                i = j + 1
        elif i + 1 < end and self.t[i].kind == "ident" and self.t[i + 1].text in (":", "@"):
            i += 2
            if self.t[i - 1].text == "@" and self.t[i].text == "{":
                i = self.match(i) + 1
        i = self.strip(i, end)
        if i < end and self.t[i].kind == "ident" and self.t[i].text == "rec":
            i += 1
        if not (i < end and self.t[i].kind == "op" and self.t[i].text == "{"):
            return
        close = self.match(i) - 1
        for path, vs, ve in self.bindings(i + 1, close):
            if path[0] == "options":
                self.tree(tuple(path[1:]), vs, ve)

    def tree(self, prefix: tuple[str, ...], start: int, end: int) -> None:
        i = self.strip(start, end)
        if i >= end:
            return
        tok = self.t[i]
        if tok.kind == "op" and tok.text == "{":
            close = self.match(i) - 1
            for path, vs, ve in self.bindings(i + 1, close):
                self.tree(prefix + tuple(path), vs, ve)
            return
        head = self.head(i, end)
        if DECLARE.fullmatch(head) and prefix:
            self.declare(prefix, i, end)

    def declare(self, name: tuple[str, ...], start: int, end: int) -> None:
        is_open = False
        for j in range(start, end):  # the mkOption { ... } argument set
            tok = self.t[j]
            if tok.kind == "op" and tok.text == "{":
                close = self.match(j) - 1
                for path, vs, ve in self.bindings(j + 1, close):
                    if path == ["type"]:
                        is_open = self.option_type(name, vs, ve)
                break
        self.found[name] = self.found.get(name, False) or is_open

    def option_type(self, name: tuple[str, ...], start: int, end: int) -> bool:
        """Record inline submodule options; return whether the option's value is open."""
        words = " ".join(t.text for t in self.t[start:end])
        sub = words.find("submodule")
        if sub < 0:
            return bool(OPEN_TYPES.search(words))
        prefix = words[:sub]
        element = name + ((ANY,) if re.search(r"\b(?:lazy)?[Aa]ttrsOf\b", prefix) else ())
        if re.search(r"\blistOf\b", prefix):
            return False  # list elements cannot be addressed by an option path
        inline = False
        j = start
        while j < end and not inline:  # the first set after `submodule` that is not `{ args }:`
            tok = self.t[j]
            if not (tok.kind == "op" and tok.text == "{"):
                j += 1
                continue
            after = self.match(j)
            if after < end and self.t[after].text == ":":
                j = after + 1
                continue
            for path, vs, ve in self.bindings(j + 1, after - 1):
                if path[0] == "options":
                    inline = True
                    self.tree(element + tuple(path[1:]), vs, ve)
            j = after
        return "freeformType" in words or not inline


def extract(files: dict[str, str]) -> dict[tuple[str, ...], bool]:
    found: dict[tuple[str, ...], bool] = {}
    for _name, text in sorted(files.items()):
        walker = Walker(tokenize(text))
        walker.module()
        for option, is_open in walker.found.items():
            found[option] = found.get(option, False) or is_open
    return found


# --------------------------------------------------------------------------- sources


def from_checkout(root: Path) -> dict[str, str]:
    base = root / "nixos" / "modules"
    if not base.is_dir():
        sys.exit(f"refresh-nixos-options: {base} is not a directory (not a nixpkgs tree?)")
    return {
        str(p.relative_to(root)): p.read_text(errors="replace")
        for p in sorted(base.rglob("*.nix"))
        if p.is_file()
    }


def from_git(git_dir: Path, rev: str) -> dict[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, text=True
        ).stdout

    names = [n for n in git("ls-tree", "-r", "--name-only", rev, "nixos/modules").split("\n")]
    return {n: git("show", f"{rev}:{n}") for n in names if n.endswith(".nix")}


def format_name(option: tuple[str, ...]) -> str:
    return ".".join(
        p if p == ANY or re.fullmatch(r"[A-Za-z0-9_'-]+", p) else f'"{p}"' for p in option
    )


def render(found: dict[tuple[str, ...], bool], header: dict[str, str]) -> str:
    lines = [f"# {k}: {v}" for k, v in header.items()]
    for option in sorted(found, key=format_name):
        lines.append(format_name(option) + ("\to" if found[option] else ""))
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    data = text.encode()
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def read_list(path: Path) -> list[str]:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return [
        line.split("\t")[0]
        for line in raw.decode().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--nixpkgs", type=Path, help="a nixpkgs checkout or source tree")
    source.add_argument("--git-dir", type=Path, help="a nixpkgs git directory (needs --rev)")
    parser.add_argument("--rev", default="", help="the nixpkgs revision (recorded in the header)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent
        / "appliancekit/nixos/data/nixos-options.txt.gz",
    )
    parser.add_argument("--check", type=Path, help="only check that every name in FILE exists")
    args = parser.parse_args(argv)
    if args.git_dir and not args.rev:
        parser.error("--git-dir needs --rev")
    files = from_git(args.git_dir, args.rev) if args.git_dir else from_checkout(args.nixpkgs)
    found = extract(files)
    if args.check:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from appliancekit.nixos.nixexpr import parse_option
        from appliancekit.nixos.options import OptionSet

        full = OptionSet.parse(render(found, {}).splitlines())
        missing = [n for n in read_list(args.check) if full.problem(parse_option(n)) is not None]
        for name in missing:
            print(f"not declared at {args.rev or 'this revision'}: {name}", file=sys.stderr)
        print(f"{len(read_list(args.check)) - len(missing)} ok, {len(missing)} missing")
        return 1 if missing else 0
    header = {
        "nixpkgs-rev": args.rev or "unknown",
        "source": f"all of nixos/modules ({len(files)} files), static extraction",
        "generated-by": "scripts/refresh-nixos-options.py",
        "options": str(len(found)),
    }
    write(args.out, render(found, header))
    print(f"{args.out}: {len(found)} options from {len(files)} module files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
