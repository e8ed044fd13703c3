"""The swarm API of a People's Cloud node (HTTP, port 8000): members, deployments, deploy,
unpin. Writes carry the swarm's user token."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from appliancekit.errors import ToolError, UserError
from appliancekit.swarm.upload import Upload

DEFAULT_PORT = 8000


@dataclass(frozen=True)
class Member:
    name: str
    address: str
    status: str
    free: int
    ipfs: str

    def to_json(self) -> dict[str, object]:
        return self.__dict__.copy()


@dataclass(frozen=True)
class Deployment:
    cid: str
    name: str
    size: int
    r: int
    holders: tuple[str, ...]

    @property
    def replicas(self) -> int:
        return len(self.holders)

    def to_json(self) -> dict[str, object]:
        return {
            "cid": self.cid,
            "name": self.name,
            "size": self.size,
            "r": self.r,
            "replicas": self.replicas,
            "holders": list(self.holders),
        }


def node_url(value: str) -> tuple[str, int]:
    """HOST, HOST:PORT or http://HOST:PORT -> (host, port)."""
    text = value if "://" in value else f"http://{value}"
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme != "http" or not parsed.hostname:
        raise UserError(f"not a node address: {value!r} (expected HOST[:PORT])", field="--node")
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError:
        raise UserError(f"not a node address: {value!r} (bad port)", field="--node") from None
    return parsed.hostname, port


class SwarmClient:
    def __init__(self, node: str, token: str = "", timeout: float = 30.0) -> None:
        self.node = node
        self.host, self.port = node_url(node)
        self.token = token
        self.timeout = timeout

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        connection = http.client.HTTPConnection(
            self.host, self.port, timeout=timeout or self.timeout
        )
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            text = response.read().decode(errors="replace")
        except OSError as exc:
            raise ToolError(f"node {self.host}:{self.port}: {exc}") from None
        finally:
            connection.close()
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {"error": text[:200]}
        if response.status >= 400:
            message = data.get("error", text[:200]) if isinstance(data, dict) else text[:200]
            if response.status in (401, 403):
                raise UserError(f"node {self.host}:{self.port} refused: {message}", field="--token")
            raise ToolError(f"node {self.host}:{self.port}: HTTP {response.status}: {message}")
        return data

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/v1/status")

    def members(self) -> list[Member]:
        return [
            Member(m["name"], m["address"], m["status"], int(m.get("free", 0)), m.get("ipfs", ""))
            for m in self._request("GET", "/v1/members")
        ]

    def deployments(self) -> list[Deployment]:
        return [
            Deployment(d["cid"], d["name"], int(d["size"]), int(d["r"]), tuple(d["holders"]))
            for d in self._request("GET", "/v1/deployments")
        ]

    def deploy(self, upload: Upload, name: str) -> dict[str, Any]:
        headers = {
            **self._auth(),
            "Content-Type": upload.content_type,
            "Content-Length": str(upload.length()),
        }
        query = urllib.parse.urlencode({"name": name})
        return self._request(
            "POST", f"/v1/deployments?{query}", upload.chunks(), headers, timeout=900
        )

    def unpin(self, cid: str) -> dict[str, Any]:
        return self._request(
            "DELETE", f"/v1/deployments/{urllib.parse.quote(cid)}", None, self._auth()
        )
