"""User-facing errors: one line, naming the file, line and field; the CLI exits 2 on them."""

from __future__ import annotations

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
