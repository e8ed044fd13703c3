"""Keep only what the service needs: the ELF closure of its entry points plus declared data.

Closure = each entry executable, its interpreter (PT_INTERP and #! lines), its DT_NEEDED
libraries found through DT_RPATH/DT_RUNPATH and the default multiarch directories, the
symlinks on the way, and the same for every library found, transitively. Declared data
paths (files or whole directories) and generated files are kept as they are.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from appliancekit.board import Architecture
from appliancekit.errors import UserError
from appliancekit.tomlsource import KeyPath, source_error
from appliancekit.tree import GENERATED, Entry, RootTree

ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class ClosureRequest:
    executables: tuple[str, ...]  # entry points: absolute paths in the tree
    keep: tuple[str, ...] = ()  # data files or directories kept whole
    libraries: tuple[str, ...] = ()  # dlopen'd: absolute paths or sonames
    origin: str = "recipe"  # named in errors: which declaration asked for a missing path
    # Where each requested path is declared, for errors with file, line and field: the
    # recipe or board file, and the key path of the path's own entry in it.
    source: Path | None = None
    fields: tuple[tuple[str, KeyPath], ...] = ()

    def missing(self, path: str, message: str, kind: str) -> UserError:
        """The error for a requested path that cannot be had, at its declaration if known."""
        key = dict(self.fields).get(path)
        if self.source is not None and key is not None:
            return source_error(self.source, key, message)
        return UserError(message, field=f"{self.origin}: {kind}")


@dataclass(frozen=True)
class PackageSize:
    package: str
    before: int
    after: int


@dataclass(frozen=True)
class SizeReport:
    before: int
    after: int
    packages: tuple[PackageSize, ...]
    kept_files: int
    dropped_files: int

    def to_json(self) -> dict[str, object]:
        return {
            "bytes_before": self.before,
            "bytes_after": self.after,
            "files_kept": self.kept_files,
            "files_dropped": self.dropped_files,
            "packages": [
                {"package": p.package, "bytes_before": p.before, "bytes_after": p.after}
                for p in self.packages
            ],
        }

    def to_text(self) -> str:
        lines = [f"{'package':40} {'before':>12} {'after':>12}"]
        for p in self.packages:
            lines.append(f"{p.package:40} {p.before:12d} {p.after:12d}")
        lines.append(f"{'total':40} {self.before:12d} {self.after:12d}")
        return "\n".join(lines) + "\n"


@dataclass
class _Closure:
    tree: RootTree
    arch: Architecture
    keep: set[str] = field(default_factory=set)
    queue: list[str] = field(default_factory=list)

    def default_dirs(self) -> list[str]:
        triplet = self.arch.gnu_triplet
        return [f"/usr/lib/{triplet}", f"/lib/{triplet}", "/usr/lib", "/lib"]

    def require(self, path: str, why: str) -> str:
        final, links = self.tree.resolve(path)
        if final is None:
            raise UserError(f"{path} is not in the image's packages", field=why)
        self.keep.update(links)
        if final not in self.keep:
            self.keep.add(final)
            self.queue.append(final)
        return final

    def find_library(self, soname: str, search: list[str]) -> str | None:
        for directory in search + self.default_dirs():
            final, _ = self.tree.resolve(posixpath.join(directory, soname))
            if final is not None:
                return posixpath.join(directory, soname)
        return None

    def follow(self, path: str) -> None:
        entry = self.tree.get(path)
        if entry is None or entry.kind != "file":
            if entry is not None and entry.kind == "dir":
                for child in self.tree.walk(path):
                    self.keep.add(child)
            return
        head = _read_head(entry, 256)
        if head.startswith(b"#!"):
            interpreter = head[2:].split(b"\n", 1)[0].strip().split()
            # only an executable file is run through its #! line (a Python module is imported)
            if interpreter and entry.mode & 0o111:
                self.require(interpreter[0].decode(), f"interpreter of {path}")
            return
        if not head.startswith(ELF_MAGIC):
            return
        for needed_path in self._elf_dependencies(entry):
            self.require(needed_path, f"dependency of {path}")

    def _elf_dependencies(self, entry: Entry) -> list[str]:
        deps: list[str] = []
        try:
            with _open(entry) as handle:
                elf = ELFFile(handle)
                if elf["e_machine"] != self.arch.elf_machine:
                    raise UserError(
                        f"{entry.path} is {elf['e_machine']}, not {self.arch.value}",
                        field=entry.package,
                    )
                needed: list[str] = []
                search: list[str] = []
                origin = posixpath.dirname(entry.path)
                for segment in elf.iter_segments():
                    if segment["p_type"] == "PT_INTERP":
                        deps.append(segment.get_interp_name())
                for section in elf.iter_sections():
                    if not isinstance(section, DynamicSection):
                        continue
                    rpath: list[str] = []
                    runpath: list[str] = []
                    for tag in section.iter_tags():
                        if tag.entry.d_tag == "DT_NEEDED":
                            needed.append(tag.needed)
                        elif tag.entry.d_tag == "DT_RUNPATH":
                            runpath.extend(tag.runpath.split(":"))
                        elif tag.entry.d_tag == "DT_RPATH":
                            rpath.extend(tag.rpath.split(":"))
                    # DT_RPATH is ignored by ld.so when DT_RUNPATH is present
                    search = [
                        d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
                        for d in (runpath or rpath)
                        if d
                    ]
        except ELFError:
            return deps
        for soname in needed:
            found = self.find_library(soname, search)
            if found is None:
                raise UserError(
                    f"{entry.path} needs {soname}, which no package in the image provides",
                    field="debian.packages",
                )
            deps.append(found)
        return deps


def _open(entry: Entry):  # type: ignore[no-untyped-def]
    import io

    if entry.content is not None:
        return io.BytesIO(entry.content)
    assert entry.source is not None
    return open(entry.source, "rb")


def _read_head(entry: Entry, size: int) -> bytes:
    if entry.content is not None:
        return entry.content[:size]
    if entry.source is None:
        return b""
    with open(entry.source, "rb") as handle:
        return handle.read(size)


def closure(tree: RootTree, arch: Architecture, requests: Iterable[ClosureRequest]) -> set[str]:
    """Every path to keep: closures of all requests plus their parent directories."""
    state = _Closure(tree, arch)
    for request in requests:
        for path in request.executables:
            if state.tree.resolve(path)[0] is None:
                raise request.missing(path, f"{path} is not in the image's packages", "executables")
            state.require(path, f"{request.origin}: executables")
        for path in request.keep:
            if state.tree.resolve(path)[0] is None:
                raise request.missing(path, f"{path} is not in the image's packages", "keep")
            final = state.require(path, f"{request.origin}: keep")
            entry = tree.get(final)
            if entry is not None and entry.kind == "dir":
                for child in tree.walk(final):
                    child_entry = tree.get(child)
                    if child_entry is not None and child_entry.kind == "symlink":
                        if child_entry.package == GENERATED:
                            # kept anyway; it may point into /data or /run, which exist
                            # only on the running appliance
                            continue
                        state.require(child, f"{request.origin}: keep")
                    elif child not in state.keep:
                        state.keep.add(child)
                        state.queue.append(child)
        for library in request.libraries:
            path = library if library.startswith("/") else state.find_library(library, [])
            if path is None or state.tree.resolve(path)[0] is None:
                raise request.missing(library, f"library {library} not found", "libraries")
            state.require(path, f"{request.origin}: libraries")
    while state.queue:
        state.follow(state.queue.pop())
    keep = set(state.keep)
    for path in list(keep):
        parent = posixpath.dirname(path)
        while parent not in keep:
            keep.add(parent)
            if parent == "/":
                break
            parent = posixpath.dirname(parent)
    return keep


def minimise(
    tree: RootTree, arch: Architecture, requests: Iterable[ClosureRequest]
) -> tuple[RootTree, SizeReport]:
    """A new tree with the closure and every generated entry; plus the size report."""
    keep = closure(tree, arch, requests)
    # A generated entry inside a package's directory (/etc/powerdns/pdns.conf, the data link
    # /var/lib/powerdns) needs that directory even when nothing else in it is kept.
    for entry in tree:
        parent = posixpath.dirname(entry.path)
        while entry.package == GENERATED and parent not in keep and parent != "/":
            keep.add(parent)
            parent = posixpath.dirname(parent)
    kept = RootTree()
    for entry in tree:
        if entry.path in keep or entry.package == GENERATED:
            kept.entries[entry.path] = entry
    return kept, size_report(tree, kept)


def size_report(before: RootTree, after: RootTree) -> SizeReport:
    sizes_before: dict[str, int] = defaultdict(int)
    sizes_after: dict[str, int] = defaultdict(int)
    for entry in before:
        sizes_before[entry.package] += entry.size
    for entry in after:
        sizes_after[entry.package] += entry.size
    packages = tuple(
        PackageSize(name, sizes_before[name], sizes_after.get(name, 0))
        for name in sorted(sizes_before, key=lambda n: (-sizes_before[n], n))
    )
    files_before = sum(1 for e in before if e.kind != "dir")
    files_after = sum(1 for e in after if e.kind != "dir")
    return SizeReport(
        before=before.total_size(),
        after=after.total_size(),
        packages=packages,
        kept_files=files_after,
        dropped_files=files_before - files_after,
    )
