"""Boot paths: how a board's firmware finds the kernel, initramfs and command line.

Each boot path is one module exposing `boot_files(...)` (what goes on the boot partition)
and `qemu_boot(...)` (how the boot test starts the same files the way the board would).
A new board with an existing boot path needs only a boards/NAME.toml.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from appliancekit.board import Board, BootPath

_MODULES = {BootPath.DIRECT: "appliancekit.boot.direct"}


def boot_path(board: Board) -> ModuleType:
    name = _MODULES.get(board.boot)
    if name is None:
        from appliancekit.errors import UserError

        raise UserError(
            f"boot path {board.boot.value!r} is not implemented yet",
            file=board.source_file,
            field="board.boot",
        )
    return importlib.import_module(name)
