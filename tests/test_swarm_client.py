"""The People's Cloud client (appliancekit swarm): node addresses, the multipart body of a
file or directory, and the tables, against a swarm API served on loopback by the test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliancekit.cli import main
from appliancekit.errors import UserError
from appliancekit.swarm.client import SwarmClient, node_url
from appliancekit.swarm.upload import upload_of

MEMBERS = [
    {"name": "a", "address": "10.77.0.1", "status": "alive", "free": 1 << 30, "ipfs": "12D3a"},
    {"name": "b", "address": "10.77.0.2", "status": "failed", "free": 0, "ipfs": "12D3b"},
]
DEPLOYMENTS = [{"cid": "bafyone", "name": "site", "size": 5 << 20, "r": 2, "holders": ["a"]}]


class Node(BaseHTTPRequestHandler):
    """Answers like a node's swarm API; records what writes it got."""

    posted: list[tuple[str, str, bytes]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        answers = {
            "/v1/members": MEMBERS,
            "/v1/deployments": DEPLOYMENTS,
            "/v1/status": {"node": "a", "swarm": "s", "alive": 1, "members": 2, "free": 1 << 30},
        }
        self._send(200, answers.get(self.path, {"error": "no"}))

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Authorization") != "Bearer right":
            self._send(401, {"error": "the swarm user token is missing or wrong"})
            return
        Node.posted.append((self.path, self.headers["Content-Type"], body))
        self._send(201, {"cid": "bafyone", "name": "site", "size": 5 << 20, "r": 1})

    def do_DELETE(self) -> None:  # noqa: N802
        self._send(200, {"cid": self.path.rsplit("/", 1)[-1], "unpinned": True})


@pytest.fixture()
def node() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Node)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_node_addresses() -> None:
    assert node_url("10.0.0.1") == ("10.0.0.1", 8000)
    assert node_url("http://node.example:9000") == ("node.example", 9000)
    with pytest.raises(UserError, match="--node"):
        node_url("ftp://x")


def test_directory_upload_names_every_file_under_the_directory(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "index.html").write_text("<h1>hi</h1>")
    (site / "css" / "a.css").write_text("h1{}")
    upload = upload_of(site)
    assert [name for name, _path in upload.parts] == [
        "site",
        "site/css",
        "site/index.html",
        "site/css/a.css",
    ]
    body = b"".join(upload.chunks())
    assert len(body) == upload.length()
    assert b'filename="site%2Fcss%2Fa.css"' in body
    assert b"Content-Type: application/x-directory" in body
    assert body.endswith(f"--{upload.boundary}--\r\n".encode())


def test_members_and_deployments(node: str) -> None:
    client = SwarmClient(node)
    assert [(m.name, m.status) for m in client.members()] == [("a", "alive"), ("b", "failed")]
    (deployment,) = client.deployments()
    assert (deployment.replicas, deployment.r, deployment.holders) == (1, 2, ("a",))


def test_cli_json_and_tables(node: str) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["swarm", "members", "--node", node, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["members"][1]["status"] == "failed"
    result = runner.invoke(main, ["swarm", "ls", "--node", node])
    assert "bafyone" in result.output and "1/2" in result.output
    result = runner.invoke(main, ["swarm", "tui", "--node", node, "--once"])
    assert result.exit_code == 0, result.output
    for text in ("members", "deployments", "10.77.0.2", "failed", "site"):
        assert text in result.output


def test_deploy_needs_the_token(node: str, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("hello")
    runner = CliRunner()
    result = runner.invoke(main, ["swarm", "deploy", str(page), "--node", node, "--token", "wrong"])
    assert result.exit_code == 2
    assert "refused: the swarm user token is missing or wrong" in result.output
    Node.posted.clear()
    result = runner.invoke(
        main,
        ["swarm", "deploy", str(page), "--node", node, "--token", "right", "--no-wait", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["cid"] == "bafyone"
    path, content_type, body = Node.posted[0]
    assert path == "/v1/deployments?name=page.html"
    assert content_type.startswith("multipart/form-data; boundary=")
    assert b"hello" in body
    result = runner.invoke(main, ["swarm", "unpin", "bafyone", "--node", node, "--token", "right"])
    assert result.exit_code == 0 and "unpinned bafyone everywhere" in result.output
