"""User-facing errors: one line, naming the file, line and field; the CLI exits 2 on them."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (recipe, board, setting, command line). Exit code 2."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line:
                where += f":{self.line}"
            where += ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}".replace("\n", " ")


class ToolError(Exception):
    """A host tool or the network failed in a way the user cannot fix by editing input. Exit 1."""

    exit_code = 1


class NeedsNixError(Exception):
    """The NixOS backend rendered a flake but cannot build it here. Exit 3."""

    exit_code = 3


# --- the error contract: what reaches the user as one line ------------------------------

# errno values that mean "the path you gave cannot be used": bad input (exit 2). Any other
# OSError is the host failing (disk full, I/O error): exit 1.
_INPUT_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.EROFS,
        errno.EEXIST,
        errno.ENAMETOOLONG,
        errno.ENOTEMPTY,
        errno.ELOOP,
        errno.ENXIO,
        errno.ENODEV,
        errno.EINVAL,
        errno.EBUSY,
        errno.ETXTBSY,
    }
)


def one_line_error(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for an error a user can meet: our own, a path that cannot be
    used, a host tool that failed, a broken template. None for anything else (a bug, whose
    traceback is worth seeing)."""
    if isinstance(exc, (UserError, ToolError, NeedsNixError)):
        return _flat(str(exc)), exc.exit_code
    if isinstance(exc, subprocess.CalledProcessError):
        cmd = exc.cmd if isinstance(exc.cmd, (list, tuple)) else str(exc.cmd).split()
        tool = os.path.basename(str(cmd[0])) if cmd else "command"
        detail = _last_line(exc.stderr) or _last_line(exc.output) or "(no output)"
        return _flat(f"{tool} failed (exit {exc.returncode}): {detail}"), ToolError.exit_code
    if isinstance(exc, OSError):
        return _os_error(exc)
    template = _template_error(exc)
    if template is not None:
        return template, UserError.exit_code
    return None


def _os_error(exc: OSError) -> tuple[str, int]:
    if isinstance(exc, FileNotFoundError) and _raised_in_exec(exc):
        from appliancekit.hosttools import package_of_tool

        tool = os.path.basename(str(exc.filename or "?"))
        return (
            f"{tool} not found: install Debian package {package_of_tool(tool)}"
            " (or run make setup)",
            ToolError.exit_code,
        )
    where = str(exc.filename) if exc.filename is not None else ""
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    reason = exc.strerror or str(exc) or type(exc).__name__
    text = f"{where}: {reason}" if where else reason
    code = UserError.exit_code if exc.errno in _INPUT_ERRNOS else ToolError.exit_code
    return _flat(text), code


def _raised_in_exec(exc: BaseException) -> bool:
    """Whether the error came from starting a program (subprocess), not from opening a path."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name in ("_execute_child", "_fork_exec"):
            return True
        tb = tb.tb_next
    return False


def _template_error(exc: BaseException) -> str | None:
    try:
        import jinja2
    except ImportError:  # pragma: no cover - jinja2 is a dependency
        return None
    if not isinstance(exc, jinja2.TemplateError):
        return None
    file: str | None = None
    line: int | None = None
    if isinstance(exc, jinja2.TemplateSyntaxError):
        file, line = exc.filename or exc.name, exc.lineno
    else:
        # jinja2 rewrites tracebacks so a template's frames carry its file name and line
        tb = exc.__traceback__
        while tb is not None:
            name = tb.tb_frame.f_code.co_filename
            if not name.endswith(".py") and not name.startswith("<"):
                file, line = name, tb.tb_lineno
            tb = tb.tb_next
    where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
    return _flat(f"{where}template: {exc.message or type(exc).__name__}")


def _last_line(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    for line in reversed((text or "").splitlines()):
        if line.strip():
            return line.strip()
    return ""


def _flat(text: str) -> str:
    return " ".join(text.split("\n")).strip()
