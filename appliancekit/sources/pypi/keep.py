"""What of the Python installation the image keeps: the stdlib, its config and the site
directory, less the exclusions (stdlib trimming)."""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Sequence

from appliancekit.sources.elfmachine import ELF_MACHINES, elf_machine
from appliancekit.sources.pypi.plan import PythonPlan
from appliancekit.sources.unpack import UnpackedPackage

# Never needed by a service and removed from every stdlib (fnmatch patterns relative to
# /usr/lib/pythonX.Y): test suites, IDE/GUI/REPL-only modules, installers, C test modules,
# and the curses/readline/ndbm extensions (which drag ncurses, readline and Berkeley DB in).
STDLIB_EXCLUDE = (
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "turtle.py",
    "ensurepip",
    "venv",
    "lib2to3",
    "pydoc_data",
    "curses",
    "__phello__",
    "__hello__.py",
    "antigravity.py",
    "this.py",
    "EXTERNALLY-MANAGED",
    "lib-dynload/_test*",
    "lib-dynload/_ctypes_test*",
    "lib-dynload/_xxtestfuzz*",
    "lib-dynload/xx*",
    "lib-dynload/_curses*",
    "lib-dynload/readline*",
    "lib-dynload/_dbm*",
    "lib-dynload/_gdbm*",
)


def excluded(path: str, patterns: Iterable[str]) -> bool:
    """Whether `path` or one of its parent directories matches an exclude pattern."""
    candidates = [path]
    parent = posixpath.dirname(path)
    while parent not in ("/", ""):
        candidates.append(parent)
        parent = posixpath.dirname(parent)
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns)


def exclude_patterns(python: PythonPlan) -> tuple[str, ...]:
    stdlib = f"/usr/lib/python{python.version}"
    builtin = tuple(posixpath.join(stdlib, p) for p in STDLIB_EXCLUDE)
    return builtin + tuple(python.section.exclude)  # type: ignore[attr-defined]


def python_roots(python: PythonPlan) -> tuple[str, ...]:
    """Directories kept whole (less exclusions): stdlib, its config, the site directory."""
    return (f"/usr/lib/python{python.version}", f"/etc/python{python.version}", python.site)


def under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def other_machine(python: PythonPlan, package: UnpackedPackage, path: str) -> bool:
    """A shared object in a wheel built for another machine: pure (py3-none-any) wheels
    may bundle every platform's build of a native library and load the right one at run
    time; the image keeps only its own architecture's."""
    if ".so" not in posixpath.basename(path):
        return False
    try:
        machine = elf_machine(package.host_path(path))
    except OSError:
        return False
    return machine is not None and machine != ELF_MACHINES.get(python.arch, machine)


def kept_files(python: PythonPlan, packages: Sequence[UnpackedPackage]) -> list[str]:
    roots = python_roots(python)
    patterns = exclude_patterns(python)
    # auditwheel's vendored libraries (SITE/NAME.libs) are kept only as the ELF closure of
    # the extension modules kept: a left-out optional module takes its libraries with it
    vendored = posixpath.join(python.site, "*.libs")
    kept = {
        item.path
        for package in packages
        for item in package.files
        if item.kind != "dir"
        and under(item.path, roots)
        and not excluded(item.path, (*patterns, vendored))
        and not other_machine(python, package, item.path)
    }
    return sorted(kept)
