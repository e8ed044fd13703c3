"""TOML documents that remember line numbers, plus a small declarative validator over them.

tomllib gives values but no positions. `TomlSource` keeps the text next to the parsed data and
finds the line of any key path on demand (only when an error is reported): a light scanner
walks the document the way TOML does -- ``[table]`` headers, ``[[array.of.tables]]`` (the N-th
occurrence is index N-1), ``dotted.keys = ...``, ``"quoted.keys"``, inline tables and arrays
(elements are indexed) -- and records the line where each path is first defined. A path that
was never written (a missing required key) falls back to its closest written ancestor, so
"missing key" errors point at the table header.

Key paths are tuples of str (table keys) and int (array indices); `format_path` renders them as
``service[1].exec`` or ``nixos."services.nginx.enable"`` and `parse_path` reads that back.

The validator is a table of `Field`s per TOML table (key, parser, required, default), in the
spirit of mkosi's SETTINGS table: `check_table` rejects unknown keys (suggesting the closest
known one), reports missing required keys, applies defaults and runs each field's parser.
Parsers are small composable callables ``(source, value, path) -> converted`` that call
`TomlSource.fail` on bad input; every error is a one-line `UserError` with file, line and the
dotted field path.
"""

from __future__ import annotations

import bisect
import difflib
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

from appliancekit.errors import UserError

KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


# --------------------------------------------------------------------------- key paths


def format_path(path: Sequence[str | int]) -> str:
    """("service", 1, "exec") -> 'service[1].exec'; keys that are not bare are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            out += f".{text}" if out else text
    return out


_PATH_TOKEN = re.compile(
    r'\s*(?:(?P<bare>[A-Za-z0-9_-]+)|(?P<quoted>"(?:[^"\\]|\\.)*")|(?P<literal>\'[^\']*\'))'
)


def parse_path(text: str) -> KeyPath:
    """'service[1].exec' -> ("service", 1, "exec"); the inverse of `format_path`."""
    parts: list[str | int] = []
    pos = 0
    expect_key = True
    while pos < len(text):
        if text[pos] == "[":
            end = text.index("]", pos)
            parts.append(int(text[pos + 1 : end]))
            pos = end + 1
            expect_key = False
            continue
        if not expect_key:
            if text[pos] != ".":
                raise ValueError(f"bad key path {text!r} at offset {pos}")
            pos += 1
        m = _PATH_TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"bad key path {text!r} at offset {pos}")
        if m["bare"] is not None:
            parts.append(m["bare"])
        elif m["quoted"] is not None:
            parts.append(json.loads(m["quoted"]))
        else:
            parts.append(m["literal"][1:-1])
        pos = m.end()
        expect_key = False
    return tuple(parts)


def _as_path(path: Sequence[str | int] | str) -> KeyPath:
    return parse_path(path) if isinstance(path, str) else tuple(path)


# --------------------------------------------------------------------------- locator


class _Locator:
    """Scans TOML text (already validated by tomllib) and records key path -> first line."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[KeyPath, int] = {}
        self.aot_last: dict[KeyPath, int] = {}  # resolved array-of-tables path -> last index
        self.line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self._scan()

    def line_at(self, pos: int) -> int:
        return bisect.bisect_right(self.line_starts, pos)

    # -- low level
    def _eof(self) -> bool:
        return self.pos >= len(self.text)

    def _skip_blank(self, newlines: bool) -> None:
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c in " \t\r" or (newlines and c == "\n"):
                self.pos += 1
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def _key(self) -> list[str]:
        parts: list[str] = []
        text = self.text
        while True:
            self._skip_blank(newlines=False)
            c = text[self.pos] if not self._eof() else ""
            if c == '"':
                end = self._basic_string_end(self.pos)
                raw = text[self.pos : end]
                parts.append(tomllib.loads(f"k = {raw}")["k"])
                self.pos = end
            elif c == "'":
                end = text.index("'", self.pos + 1) + 1
                parts.append(text[self.pos + 1 : end - 1])
                self.pos = end
            else:
                m = _BARE_KEY.match(text, self.pos)
                if not m:  # not valid TOML; tomllib would have refused it
                    self.pos += 1
                    return parts
                parts.append(m.group())
                self.pos = m.end()
            self._skip_blank(newlines=False)
            if not self._eof() and text[self.pos] == ".":
                self.pos += 1
                continue
            return parts

    def _basic_string_end(self, start: int) -> int:
        i = start + 1
        text = self.text
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2
            elif c == '"':
                return i + 1
            else:
                i += 1
        return len(text)

    def _multiline_end(self, start: int, quote: str) -> int:
        delim = quote * 3
        i = start + 3
        text = self.text
        while i < len(text):
            if quote == '"' and text[i] == "\\":
                i += 2
            elif text.startswith(delim, i):
                i += 3
                extra = 0  # up to two quotes right before the delimiter belong to the content
                while extra < 2 and i < len(text) and text[i] == quote:
                    i += 1
                    extra += 1
                return i
            else:
                i += 1
        return len(text)

    def _record(self, path: KeyPath, line: int, *, override: bool) -> None:
        for n in range(1, len(path)):
            self.lines.setdefault(path[:n], line)
        if override:
            self.lines[path] = line
        else:
            self.lines.setdefault(path, line)

    # -- structure
    def _scan(self) -> None:
        text = self.text
        current: KeyPath = ()
        while True:
            self._skip_blank(newlines=True)
            if self._eof():
                return
            line = self.line_at(self.pos)
            if text.startswith("[[", self.pos):
                self.pos += 2
                keys = self._key()
                self.pos = text.find("]]", self.pos) + 2
                base = self._resolve(keys[:-1]) + (keys[-1],)
                index = self.aot_last.get(base, -1) + 1
                self.aot_last[base] = index
                current = base + (index,)
                self._record(base, line, override=False)
                self._record(current, line, override=True)
            elif text[self.pos] == "[":
                self.pos += 1
                keys = self._key()
                self.pos = text.find("]", self.pos) + 1
                current = self._resolve(keys)
                self._record(current, line, override=True)
            else:
                keys = self._key()
                if not keys:
                    continue
                path = current + tuple(keys)
                self._record(path, line, override=True)
                self._skip_blank(newlines=False)
                if not self._eof() and text[self.pos] == "=":
                    self.pos += 1
                self._value(path)

    def _resolve(self, keys: Iterable[str]) -> KeyPath:
        """Header keys -> path, stepping into the latest element of arrays of tables."""
        path: KeyPath = ()
        for key in keys:
            path += (key,)
            if path in self.aot_last:
                path += (self.aot_last[path],)
        return path

    def _value(self, path: KeyPath) -> None:
        self._skip_blank(newlines=False)
        if self._eof():
            return
        text = self.text
        c = text[self.pos]
        if text.startswith('"""', self.pos):
            self.pos = self._multiline_end(self.pos, '"')
        elif text.startswith("'''", self.pos):
            self.pos = self._multiline_end(self.pos, "'")
        elif c == '"':
            self.pos = self._basic_string_end(self.pos)
        elif c == "'":
            self.pos = text.index("'", self.pos + 1) + 1
        elif c == "[":
            self.pos += 1
            index = 0
            while True:
                self._skip_blank(newlines=True)
                if self._eof() or text[self.pos] == "]":
                    self.pos += 1
                    return
                if text[self.pos] == ",":
                    self.pos += 1
                    continue
                element = path + (index,)
                self._record(element, self.line_at(self.pos), override=True)
                self._value(element)
                index += 1
        elif c == "{":
            self.pos += 1
            while True:
                self._skip_blank(newlines=True)
                if self._eof() or text[self.pos] == "}":
                    self.pos += 1
                    return
                if text[self.pos] == ",":
                    self.pos += 1
                    continue
                line = self.line_at(self.pos)
                keys = self._key()
                if not keys:
                    continue
                inner = path + tuple(keys)
                self._record(inner, line, override=True)
                self._skip_blank(newlines=False)
                if not self._eof() and text[self.pos] == "=":
                    self.pos += 1
                self._value(inner)
        else:  # number, bool, date/time: up to a delimiter
            start = self.pos
            while not self._eof() and text[self.pos] not in ",]}#\n\r":
                self.pos += 1
            if self.pos == start:
                self.pos += 1


def locate_lines(text: str) -> dict[KeyPath, int]:
    """Every key path written in `text` -> the (1-based) line where it is first defined."""
    return dict(_Locator(text).lines)


# --------------------------------------------------------------------------- source


_DECODE_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)$")
_DECODE_END = re.compile(r"\s*\(at end of document\)$")


@dataclass
class TomlSource:
    """A parsed TOML document plus the text it came from, for error positions."""

    file: Path
    text: str
    data: dict[str, Any]
    _lines: dict[KeyPath, int] | None = field(default=None, repr=False)

    @classmethod
    def from_text(cls, text: str, file: Path | str) -> TomlSource:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            line: int | None = getattr(exc, "lineno", None)
            m = _DECODE_POSITION.search(message)
            if m:
                line = line or int(m.group(1))
                message = message[: m.start()]
            elif _DECODE_END.search(message):
                line = line or max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
                message = _DECODE_END.sub("", message) + " (at end of document)"
            raise UserError(f"TOML syntax error: {message}", file=file, line=line) from None
        return cls(file=Path(file), text=text, data=data)

    @classmethod
    def from_file(cls, file: Path | str) -> TomlSource:
        file = Path(file)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            raise UserError("file not found", file=file) from None
        except OSError as exc:
            raise UserError(f"cannot read: {exc.strerror}", file=file) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise UserError("not valid UTF-8", file=file, line=line) from None
        return cls.from_text(text, file)

    @property
    def lines(self) -> dict[KeyPath, int]:
        if self._lines is None:
            self._lines = locate_lines(self.text)
        return self._lines

    def line_of(self, path: Sequence[str | int] | str) -> int | None:
        """Line of `path`, or of its closest written ancestor; None if nothing matches."""
        key = _as_path(path)
        for n in range(len(key), 0, -1):
            line = self.lines.get(key[:n])
            if line is not None:
                return line
        return None

    def value_line(self, path: Sequence[str | int] | str) -> int | None:
        """The line a string value's text starts on: its key's line, or the next one when a
        multi-line string opens at the end of it (TOML drops that first newline)."""
        line = self.line_of(path)
        if line is None:
            return None
        raw = self.text.splitlines()[line - 1].rstrip() if line <= self.text.count("\n") + 1 else ""
        opens = next((q for q in ('"""', "'''") if raw.endswith(q)), None)
        return line + 1 if opens and raw.count(opens) == 1 else line

    def error(self, path: Sequence[str | int] | str, message: str) -> UserError:
        key = _as_path(path)
        return UserError(
            message, file=self.file, line=self.line_of(key), field=format_path(key) or None
        )

    def fail(self, path: Sequence[str | int] | str, message: str) -> NoReturn:
        raise self.error(path, message)


# --------------------------------------------------------------------------- validator

Parser = Callable[[TomlSource, Any, KeyPath], Any]


@dataclass(frozen=True)
class Field:
    """One key of a TOML table: how to parse it and what happens when it is absent."""

    key: str
    parse: Parser
    required: bool = False
    default: Any = None
    attr: str = ""  # name in the result (the dataclass field); defaults to `key`

    @property
    def name(self) -> str:
        return self.attr or self.key


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, datetime | date | time):
        return "datetime"
    return type(value).__name__


def closest(word: str, known: Iterable[str]) -> str | None:
    """The known word closest to `word` (difflib), if any is close enough."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """Return " (did you mean 'X'?)" for the closest known word, else ""."""
    close = closest(word, known)
    return f" (did you mean {close!r}?)" if close else ""


def suggest(word: str, known: Iterable[str]) -> str:
    """Return "; did you mean 'X'?" for the closest known word, else "; known: a, b, c"."""
    known = sorted(known)
    close = closest(word, known)
    if close:
        return f"; did you mean {close!r}?"
    return f"; known: {', '.join(known)}" if known else ""


def check_table(
    src: TomlSource, value: Any, path: KeyPath, fields: Sequence[Field], *, what: str = ""
) -> dict[str, Any]:
    """Validate a TOML table against its field table; returns {field.name: parsed value}."""
    if not isinstance(value, dict):
        src.fail(path, f"expected a table{what}, got {type_name(value)}")
    by_key = {f.key: f for f in fields}
    for key in value:
        if key not in by_key:
            src.fail(path + (key,), f"unknown key {key!r}{suggest(key, by_key)}")
    out: dict[str, Any] = {}
    for f in fields:
        if f.key in value:
            out[f.name] = f.parse(src, value[f.key], path + (f.key,))
        elif f.required:
            if path:
                src.fail(path + (f.key,), f"required key {f.key!r} is missing")
            src.fail((f.key,), f"required section [{f.key}] is missing")
        else:
            out[f.name] = f.default
    return out


# -- parsers (each factory returns a Parser)


def string(*, nonempty: bool = True, pattern: str | None = None, hint: str = "") -> Parser:
    regex = re.compile(pattern) if pattern else None

    def parse(src: TomlSource, value: Any, path: KeyPath) -> str:
        if not isinstance(value, str):
            src.fail(path, f"expected a string, got {type_name(value)}")
        if nonempty and not value:
            src.fail(path, "must not be empty")
        if regex and not regex.fullmatch(value):
            src.fail(path, f"invalid value {value!r}{'; ' + hint if hint else ''}")
        return value

    return parse


def optional_string() -> Parser:
    """A string where "" means None (not set)."""

    def parse(src: TomlSource, value: Any, path: KeyPath) -> str | None:
        return string(nonempty=False)(src, value, path) or None

    return parse


def abs_path() -> Parser:
    def parse(src: TomlSource, value: Any, path: KeyPath) -> str:
        value = string()(src, value, path)
        if not value.startswith("/"):
            src.fail(path, f"must be an absolute path, got {value!r}")
        if "\0" in value:
            src.fail(path, "must not contain NUL")
        return value

    return parse


def integer(lo: int | None = None, hi: int | None = None) -> Parser:
    def parse(src: TomlSource, value: Any, path: KeyPath) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            src.fail(path, f"expected an int, got {type_name(value)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            low = "" if lo is None else str(lo)
            high = "" if hi is None else str(hi)
            src.fail(path, f"{value} is out of range {low}..{high}")
        return value

    return parse


def number(*, positive: bool = True) -> Parser:
    def parse(src: TomlSource, value: Any, path: KeyPath) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            src.fail(path, f"expected a number, got {type_name(value)}")
        if positive and not value > 0:
            src.fail(path, f"must be greater than 0, got {value}")
        return float(value)

    return parse


def boolean() -> Parser:
    def parse(src: TomlSource, value: Any, path: KeyPath) -> bool:
        if not isinstance(value, bool):
            src.fail(path, f"expected a bool (true/false), got {type_name(value)}")
        return value

    return parse


def choice(enum: type[Enum] | Sequence[str], *, what: str = "value") -> Parser:
    """One of a fixed set of strings; with an Enum class the member is returned."""
    values = [str(m.value) for m in enum] if isinstance(enum, type) else list(enum)

    def parse(src: TomlSource, value: Any, path: KeyPath) -> Any:
        if not isinstance(value, str):
            src.fail(path, f"expected a string, got {type_name(value)}")
        if value not in values:
            src.fail(path, f"unknown {what} {value!r}; expected one of: {', '.join(values)}")
        return enum(value) if isinstance(enum, type) else value

    return parse


_PLURAL = {"string": "strings", "int": "ints", "number": "numbers", "bool": "bools"}


def list_of(item: Parser, *, item_type: str = "string", nonempty: bool = False) -> Parser:
    """A TOML array; every element goes through `item`. Returns a tuple."""

    def parse(src: TomlSource, value: Any, path: KeyPath) -> tuple[Any, ...]:
        if not isinstance(value, list):
            src.fail(
                path,
                f"expected a list of {_PLURAL.get(item_type, item_type)}, got {type_name(value)}",
            )
        if nonempty and not value:
            src.fail(path, "must not be an empty list")
        return tuple(item(src, v, path + (i,)) for i, v in enumerate(value))

    return parse


def string_table() -> Parser:
    """A table of string -> string, returned as sorted (key, value) pairs."""

    def parse(src: TomlSource, value: Any, path: KeyPath) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            src.fail(path, f"expected a table of strings, got {type_name(value)}")
        for k, v in value.items():
            if not isinstance(v, str):
                src.fail(path + (k,), f"expected a string, got {type_name(v)}")
        return tuple(sorted(value.items()))

    return parse


def table(fields: Sequence[Field]) -> Parser:
    def parse(src: TomlSource, value: Any, path: KeyPath) -> dict[str, Any]:
        return check_table(src, value, path, fields)

    return parse


def array_of_tables(fields: Sequence[Field]) -> Parser:
    """``[[name]]`` blocks; returns a tuple of field dicts, in file order."""

    def parse(src: TomlSource, value: Any, path: KeyPath) -> tuple[dict[str, Any], ...]:
        header = f" ([[{format_path(path)}]])"
        if not isinstance(value, list):
            src.fail(path, f"expected an array of tables{header}, got {type_name(value)}")
        return tuple(
            check_table(src, v, path + (i,), fields, what=header) for i, v in enumerate(value)
        )

    return parse


def map_of(fields: Sequence[Field], *, key_pattern: str, key_hint: str) -> Parser:
    """``[name.KEY]`` tables with user-chosen KEYs; returns {KEY: field dict} in file order."""
    regex = re.compile(key_pattern)

    def parse(src: TomlSource, value: Any, path: KeyPath) -> dict[str, dict[str, Any]]:
        if not isinstance(value, dict):
            src.fail(path, f"expected a table, got {type_name(value)}")
        out = {}
        for key, sub in value.items():
            if not regex.fullmatch(key):
                src.fail(path + (key,), f"invalid name {key!r}; {key_hint}")
            out[key] = check_table(src, sub, path + (key,), fields)
        return out

    return parse


def anything() -> Parser:
    def parse(src: TomlSource, value: Any, path: KeyPath) -> Any:
        return value

    return parse


def freeze(value: Any) -> Any:
    """Lists -> tuples (recursively) so parsed values can live in frozen dataclasses."""
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping):
        return {k: freeze(v) for k, v in value.items()}
    return value


def source_error(file: Path | str, path: Sequence[str | int] | str, message: str) -> UserError:
    """A one-line error at `path` of an already loaded TOML file (recipe or board), for
    problems found after loading: the file is read again only to find the line."""
    try:
        return TomlSource.from_file(file).error(path, message)
    except UserError:  # the file changed or vanished since it was loaded: no line then
        key = _as_path(path)
        return UserError(message, file=file, field=format_path(key) or None)


def find_in_list(
    src_file: Path | str, path: Sequence[str | int], item: object
) -> tuple[str | int, ...]:
    """The key path of `item` inside the list at `path` of a TOML file (the list's own path
    when the item is not found), so an error about one element points at its line."""
    try:
        data: Any = TomlSource.from_file(src_file).data
        for key in path:
            data = data[key]
        return (*path, list(data).index(item))
    except (UserError, KeyError, IndexError, TypeError, ValueError):
        return tuple(path)
