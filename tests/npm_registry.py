"""A local npm registry for tests: packuments and tarballs made on the fly, served over
HTTP on loopback by a thread, so npm (lock writing) and appliancekit (downloads) run
against it without the internet."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

EM_X86_64, EM_AARCH64, EM_ARM = 62, 183, 40


def elf(machine: int) -> bytes:
    """The first bytes of a 64-bit little-endian ELF shared object for `machine`."""
    header = bytearray(b"\x7fELF\x02\x01\x01" + b"\0" * 9)
    header += (3).to_bytes(2, "little") + machine.to_bytes(2, "little")
    return bytes(header) + b"\0" * 48


@dataclass
class FakePackage:
    name: str
    version: str
    files: Mapping[str, bytes] = field(default_factory=dict)  # relative path -> content
    dependencies: Mapping[str, str] = field(default_factory=dict)
    optional: Mapping[str, str] = field(default_factory=dict)
    os: tuple[str, ...] = ()
    cpu: tuple[str, ...] = ()
    install_script: bool = False

    def manifest(self) -> dict[str, object]:
        data: dict[str, object] = {"name": self.name, "version": self.version}
        if self.dependencies:
            data["dependencies"] = dict(self.dependencies)
        if self.optional:
            data["optionalDependencies"] = dict(self.optional)
        if self.os:
            data["os"] = list(self.os)
        if self.cpu:
            data["cpu"] = list(self.cpu)
        if self.install_script:
            data["scripts"] = {"install": "node-gyp-build"}
        return data

    def tarball(self) -> bytes:
        raw = io.BytesIO()
        files = {"package.json": json.dumps(self.manifest()).encode(), **self.files}
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path, content in sorted(files.items()):
                info = tarfile.TarInfo(f"package/{path}")
                info.size = len(content)
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(content))
        return gzip.compress(raw.getvalue(), mtime=0)  # the same bytes every time


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class Registry:
    """Packages by name; `url` once started."""

    def __init__(self, packages: list[FakePackage]) -> None:
        self.packages = packages
        self.url = ""
        self.tarballs: dict[str, bytes] = {}
        self.requests: list[str] = []

    def tarball_path(self, package: FakePackage) -> str:
        return f"{package.name}/-/{package.name.rsplit('/', 1)[-1]}-{package.version}.tgz"

    def packument(self, name: str) -> dict[str, object] | None:
        versions = {}
        for package in self.packages:
            if package.name != name:
                continue
            data = package.tarball()
            path = self.tarball_path(package)
            self.tarballs[path] = data
            versions[package.version] = {
                **package.manifest(),
                "dist": {
                    "tarball": self.url + path,
                    "integrity": integrity(data),
                    "shasum": hashlib.sha1(data).hexdigest(),  # noqa: S324 (npm's field)
                },
                **({"hasInstallScript": True} if package.install_script else {}),
            }
        if not versions:
            return None
        latest = sorted(versions)[-1]
        return {"name": name, "dist-tags": {"latest": latest}, "versions": versions}


@contextmanager
def serve(registry: Registry) -> Iterator[Registry]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = unquote(self.path.split("?", 1)[0]).lstrip("/")
            registry.requests.append(path)
            if "/-/" in path:
                if path not in registry.tarballs:
                    registry.packument(path.split("/-/", 1)[0])
                body = registry.tarballs.get(path)
                kind = "application/octet-stream"
            else:
                doc = registry.packument(path)
                body = json.dumps(doc).encode() if doc is not None else None
                kind = "application/json"
            if body is None:
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                payload = b'{"error":"Not found"}'
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    registry.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
