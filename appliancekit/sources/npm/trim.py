"""What a server does not need from an npm package: tests, docs, type definitions,
TypeScript sources and source maps, and prebuilt binaries for other platforms.

Classified per path relative to its package's root (a nested node_modules is a package of
its own); LICENSE files always stay. The build reports the bytes per category."""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from appliancekit.sources.npm.platform import other_platform_binary

TESTS = "tests"
DOCS = "docs"
TYPES = "type definitions"
TS_SOURCES = "TypeScript sources"
SOURCE_MAPS = "source maps"
OTHER_PLATFORMS = "other platforms' binaries"
BROWSER_BUNDLES = "browser bundles"
CATEGORIES = (TESTS, DOCS, TYPES, TS_SOURCES, SOURCE_MAPS, OTHER_PLATFORMS, BROWSER_BUNDLES)

_TEST_DIRS = frozenset(
    {"test", "tests", "__tests__", "__mocks__", "__fixtures__", "benchmark", "benchmarks"}
)
_TEST_FILES = ("*.test.js", "*.spec.js", "*.test.mjs", "*.spec.mjs", "*.test.cjs", "*.spec.cjs")
_DOC_DIRS = frozenset({"doc", "docs", "example", "examples"})
_DOC_FILES = (
    "*.md",
    "*.markdown",
    "*.mkd",
    "readme",
    "readme.*",
    "changelog",
    "changelog.*",
    "history",
    "history.*",
    "authors",
    "contributing",
    "contributors",
    ".npmignore",
    ".travis.yml",
    ".eslintrc*",
    ".editorconfig",
    ".prettierrc*",
)
_TYPE_FILES = ("*.d.ts", "*.d.mts", "*.d.cts", "*.d.ts.map", "*.tsbuildinfo", "tsconfig*.json")
# minified single-file builds for browsers (a <script> tag or a CDN), unless package.json
# names the file as what Node loads
_BUNDLE_FILES = ("*.min.js", "*.min.mjs", "*.min.cjs", "*.umd.js", "*.bundle.js")
_CODE = (".js", ".mjs", ".cjs", ".json", ".node", ".wasm")
_KEEP = ("license", "license.*", "licence", "licence.*", "copying", "notice", "notice.*")


def category(rel: str, arch: str, entry_points: frozenset[str] = frozenset()) -> str | None:
    """The trimming category of `rel` (a file's path relative to its package), or None: kept.

    `entry_points`: the files the package's package.json names (never trimmed as bundles)."""
    parts = rel.split("/")
    name = parts[-1].lower()
    if any(fnmatch.fnmatchcase(name, p) for p in _KEEP):
        return None
    if other_platform_binary(rel, arch):
        return OTHER_PLATFORMS
    directories = {p.lower() for p in parts[:-1]}
    if directories & _TEST_DIRS or any(fnmatch.fnmatchcase(name, p) for p in _TEST_FILES):
        return TESTS
    if any(fnmatch.fnmatchcase(name, p) for p in _TYPE_FILES):
        return TYPES
    if name.endswith((".ts", ".mts", ".cts", ".tsx")):
        return TS_SOURCES  # Node 20 does not run TypeScript; the package ships its .js too
    if name.endswith(".map"):
        return SOURCE_MAPS
    if any(fnmatch.fnmatchcase(name, p) for p in _BUNDLE_FILES) and rel not in entry_points:
        return BROWSER_BUNDLES
    # docs: a package's top-level doc/ or examples/, and text files by name (readme.js in
    # ipfs-core-config's init-docs is code: names with a code extension are never docs)
    if len(parts) > 1 and parts[0].lower() in _DOC_DIRS:
        return DOCS
    if not name.endswith(_CODE) and any(fnmatch.fnmatchcase(name, p) for p in _DOC_FILES):
        return DOCS
    return None


def excluded(path: str, patterns: Iterable[str]) -> bool:
    """Whether `path` or one of its parent directories matches a recipe's exclude pattern."""
    candidates = [path]
    parent = posixpath.dirname(path)
    while parent not in ("/", ""):
        candidates.append(parent)
        parent = posixpath.dirname(parent)
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns)


@dataclass(frozen=True)
class TrimReport:
    """Bytes and files of the npm packages, and what trimming left out, per category."""

    packages: int
    bytes_before: int
    bytes_after: int
    files_before: int
    files_after: int
    by_category: tuple[tuple[str, int, int], ...]  # (category, files, bytes)

    def to_json(self) -> dict[str, object]:
        return {
            "packages": self.packages,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "files_before": self.files_before,
            "files_after": self.files_after,
            "trimmed": [
                {"category": name, "files": files, "bytes": size}
                for name, files, size in self.by_category
            ],
        }

    def to_text(self) -> str:
        lines = [
            f"npm: {self.packages} packages, {self.files_before} files, "
            f"{self.bytes_before} bytes unpacked; {self.files_after} files, "
            f"{self.bytes_after} bytes after trimming"
        ]
        for name, files, size in self.by_category:
            lines.append(f"  trimmed {name:28} {files:7d} files {size:12d} bytes")
        return "\n".join(lines) + "\n"


def trim_report(
    packages: int, sizes: Mapping[str, int], trimmed: Mapping[str, str | None]
) -> TrimReport:
    """`sizes`: every file's bytes; `trimmed`: each file's category (None: kept)."""
    per: dict[str, list[int]] = {name: [0, 0] for name in CATEGORIES}
    other = "recipe's exclude"
    for path, why in trimmed.items():
        if why is None:
            continue
        slot = per.setdefault(why, [0, 0]) if why in per else per.setdefault(other, [0, 0])
        slot[0] += 1
        slot[1] += sizes[path]
    kept = [p for p, why in trimmed.items() if why is None]
    return TrimReport(
        packages=packages,
        bytes_before=sum(sizes.values()),
        bytes_after=sum(sizes[p] for p in kept),
        files_before=len(sizes),
        files_after=len(kept),
        by_category=tuple((name, v[0], v[1]) for name, v in per.items() if v[0]),
    )
