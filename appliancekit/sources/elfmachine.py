"""Which machine a bundled binary is built for: the ELF header's e_machine, read without
parsing the rest. The npm source keeps a Node addon only for the image's own machine, and
the PyPI source drops a pure wheel's shared objects built for other machines."""

from __future__ import annotations

from pathlib import Path

# Debian architecture -> ELF e_machine of its binaries
ELF_MACHINES = {"amd64": 62, "arm64": 183, "armhf": 40}


def elf_machine(path: Path) -> int | None:
    """The file's ELF e_machine (in the byte order its header declares); None if it is not
    ELF. OSError from reading is the caller's."""
    with open(path, "rb") as handle:
        head = handle.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    return int.from_bytes(head[18:20], order)
