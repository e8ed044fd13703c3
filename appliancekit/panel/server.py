"""Serve the panel: the Flask application under waitress (a production WSGI server, pure
Python, threads), on localhost unless told otherwise."""

from __future__ import annotations

import ipaddress
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from appliancekit.panel.app import PanelConfig, create_app
from appliancekit.panel.jobs import JobQueue

log = logging.getLogger("appliancekit.panel")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def setup_logging() -> None:
    """The server log: one line per request and per job, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    for name in ("appliancekit.panel", "waitress"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def serve(config: PanelConfig, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve until interrupted. `on_ready` gets the URL once the socket listens (port 0:
    the port the system chose)."""
    from waitress import create_server

    cards = config.paths.cards
    if cards.exists():  # card images of an earlier run hold secrets: not kept
        shutil.rmtree(cards)
    cards.mkdir(mode=0o700, parents=True)
    jobs = JobQueue()
    app = create_app(config, jobs)
    server = create_server(app, host=host, port=port, threads=8, ident="appliancekit-panel")
    shown = f"[{host}]" if ":" in host else host
    if not is_loopback(host):
        log.warning(
            "listening on %s, not on localhost: the panel speaks plain HTTP, so put a TLS"
            " proxy in front of it",
            host,
        )
    on_ready(f"http://{shown}:{server.effective_port}/")  # type: ignore[union-attr]
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        jobs.stop()
        running = jobs.running()
        if running is not None:
            # a boot test's QEMU must not outlive the panel: let the job end (it has timeouts)
            log.warning("waiting for job %d (%s) to finish", running.id, running.title)
            jobs.join()
        shutil.rmtree(cards, ignore_errors=True)


def cards_dir(state: Path) -> Path:
    return Path(state) / "cards"
