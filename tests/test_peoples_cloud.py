"""People's Cloud as a swarm of three: the peoples-cloud image (built once per session) on
three qemu-virt-arm64 machines on one virtual network (cloud/network.py), booted once and
taken through every scenario in sequence:

  Serf shows three alive members on each node; a write without the token is refused and
  the gateway takes no writes; a 5 MiB file deployed through A reaches R = 2 and C's gateway
  returns it with the same sha256; a Serf agent with the wrong key cannot join; the TUI,
  driven in tmux, shows the members and the deployment with its replicas; the node holding
  the second replica is killed and the survivors restore R = 2; it boots again, rejoins and
  still holds its pin; unpinning removes the deployment everywhere.

Every node is checked from the host through its swarm API (port 8000) and gateway (8080),
forwarded from its first NIC; the swarm talks over the second."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.qemu import free_port
from appliancekit.swarm.testbed import Swarm, new_cluster, node_settings, start_swarm, wait_for

from .conftest import PROJECT, REPO, ApplianceCache

# One image build and three boots (plus one reboot) for every scenario. Passed whole in
# 403 s at load ~9 (2026-12-01, the fast suite running beside it): joined 105 s after QEMU
# start, 5 MiB at R = 2 in 48 s, R = 2 again 26 s after the kill. Under load 11-17 it had
# failed: starved VMs' kubo connections timed out and Serf suspected members.
pytestmark = pytest.mark.slow

BOARD = "qemu-virt-arm64"
NAMES = ("a", "b", "c")
KEY = base64.b64encode(b"peoples-cloud-swarm-test-key-32b").decode()
WRONG_KEY = base64.b64encode(b"another-swarm-entirely-32-bytes!").decode()
TOKEN = "swarm-test-token"
MIB = 1 << 20


def post(port: int, path: str, body: bytes, headers: dict[str, str], method: str = "POST") -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.timeout(3600)
def test_swarm_of_three(appliances: ApplianceCache, tmp_path: Path) -> None:
    result = appliances.build("peoples-cloud", BOARD)
    board = find_board(BOARD, PROJECT.boards_dir)
    settings = {
        name: node_settings(NAMES, i, KEY, TOKEN, quota_mib="64", replication="2")
        for i, name in enumerate(NAMES)
    }
    timings: dict[str, float] = {}
    workdir = tmp_path / "run"
    with new_cluster(workdir) as cluster:
        swarm = start_swarm(
            cluster, result.output_dir / "disk.img", result.manifest, board, settings, workdir
        )
        try:
            run_scenarios(swarm, timings, tmp_path)
        finally:
            swarm.close()
    print("peoples-cloud swarm:", json.dumps({k: round(v, 1) for k, v in timings.items()}))


def run_scenarios(swarm: Swarm, timings: dict[str, float], tmp_path: Path) -> None:
    logs = swarm.logs

    # 1. Serf: three alive members on each node, each with its IPFS node up
    for name in NAMES:
        wait_for(
            f"{name} sees three alive members and its IPFS node",
            lambda n=name: (s := swarm.get(n, "/v1/status"))["alive"] == 3 and s["ipfs"],
            900,
            logs,
        )
    timings["boot_to_joined_s"] = time.monotonic() - swarm.started
    everyone = [(n, "alive") for n in NAMES]
    for name in NAMES:  # Serf may suspect a starved member for a while: until it refutes
        wait_for(
            f"{name} lists a, b and c alive",
            lambda n=name: (
                sorted((m["name"], m["status"]) for m in swarm.get(n, "/v1/members")) == everyone
            ),
            120,
            logs,
        )

    # 2. writes need the token; the gateway reads only
    api_a, api_c = swarm.api("a"), swarm.api("c")
    form = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\nhi\r\n--x--\r\n'
    )
    kind = {"Content-Type": "multipart/form-data; boundary=x"}
    assert post(api_a, "/v1/deployments", form, kind) == 401
    assert post(api_a, "/v1/deployments", form, {**kind, "Authorization": "Bearer wrong"}) == 401
    assert post(api_a, "/v1/deployments/bafyanything", b"", {}, method="DELETE") == 401
    assert post(swarm.port("c", 8080), "/ipfs/", form, kind) >= 400
    assert swarm.get("a", "/v1/deployments") == []  # nothing was added

    # 3. a 5 MiB file through A (the client CLI) reaches R = 2; C's gateway serves it
    payload = tmp_path / "five.bin"
    payload.write_bytes(os.urandom(5 * MIB))
    env = {**os.environ, "PYTHONPATH": str(REPO), "APPLIANCEKIT_SWARM_TOKEN": TOKEN}
    before = time.monotonic()
    deployed = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliancekit",
            "swarm",
            "deploy",
            str(payload),
            "--node",
            f"127.0.0.1:{api_a}",
            "--timeout",
            "600",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )
    assert deployed.returncode == 0, deployed.stderr + logs()
    report = json.loads(deployed.stdout)
    timings["replicate_5MiB_s"] = time.monotonic() - before
    cid = report["cid"]
    assert report["r"] == 2 and len(report["holders"]) == 2 and "a" in report["holders"]
    for name in NAMES:  # every node can say where it lives
        held = wait_for(
            f"{name} lists {cid} with 2 holders",
            lambda n=name: (d := swarm.deployment(n, cid)) and d["replicas"] == 2 and d,
            120,
            logs,
        )
        assert held["holders"] == sorted(report["holders"])
    with urllib.request.urlopen(
        f"http://127.0.0.1:{swarm.port('c', 8080)}/ipfs/{cid}", timeout=300
    ) as r:  # noqa: S310
        assert (
            hashlib.sha256(r.read()).hexdigest() == hashlib.sha256(payload.read_bytes()).hexdigest()
        )

    # 4. a Serf agent with another key cannot join (through A's forwarded Serf port)
    wrong_key_cannot_join(swarm, tmp_path)
    assert len([m for m in swarm.get("a", "/v1/members") if m["status"] == "alive"]) == 3

    # 5. the terminal UI in tmux shows the members and the deployment with its replicas
    tui_in_tmux(api_a, cid, report["holders"])

    # 6. kill the node holding the second replica: the survivors restore R = 2
    victim = next(h for h in report["holders"] if h != "a")
    survivor = next(n for n in NAMES if n not in report["holders"])
    swarm.machines[victim].kill()
    killed = time.monotonic()
    restored = wait_for(
        f"R = 2 again on a and {survivor} after {victim} failed",
        lambda: (d := swarm.deployment("a", cid)) and d["holders"] == sorted(["a", survivor]) and d,
        600,
        logs,
    )
    timings["re_replicate_after_failure_s"] = time.monotonic() - killed
    assert restored["replicas"] == 2
    members = {m["name"]: m["status"] for m in swarm.get("a", "/v1/members")}
    assert members[victim] in ("failed", "left")

    # 7. the killed node boots again from its card: it rejoins and keeps its pin
    swarm.restart(victim)
    back = wait_for(
        f"{victim} back, holding its pin",
        lambda: (d := swarm.deployment("a", cid)) and victim in d["holders"] and d,
        900,
        logs,
    )
    assert back["holders"] == sorted(NAMES)  # three holders: R is a floor, not a ceiling
    assert swarm.get(victim, "/v1/status")["holding"] == 1

    # 8. unpin through C: gone everywhere
    env_c = {**env}
    unpinned = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliancekit",
            "swarm",
            "unpin",
            cid,
            "--node",
            f"127.0.0.1:{api_c}",
        ],
        capture_output=True,
        text=True,
        env=env_c,
        check=False,
        timeout=120,
    )
    assert unpinned.returncode == 0, unpinned.stderr
    for name in NAMES:
        wait_for(
            f"{name} holds nothing",
            lambda n=name: (
                swarm.get(n, "/v1/status")["holding"] == 0 and swarm.get(n, "/v1/deployments") == []
            ),
            300,
            logs,
        )


def wrong_key_cannot_join(swarm: Swarm, tmp_path: Path) -> None:
    """The host's Serf agent, with another key, asks A (through its forwarded port) to join."""
    serf = shutil.which("serf")
    assert serf, "serf is not installed on the host (scripts/setup-host.sh)"
    rpc, bind = free_port(), free_port()
    config = tmp_path / "intruder.json"
    config.write_text(
        json.dumps(
            {
                "node_name": "intruder",
                "bind": f"127.0.0.1:{bind}",
                "rpc_addr": f"127.0.0.1:{rpc}",
                "encrypt_key": WRONG_KEY,
                "log_level": "warn",
            }
        )
    )
    agent = subprocess.Popen(
        [serf, "agent", "-config-file", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the agent's RPC answers
            up = subprocess.run(
                [serf, "members", f"-rpc-addr=127.0.0.1:{rpc}"], capture_output=True, check=False
            )
            if up.returncode == 0:
                break
            time.sleep(1)
        joined = subprocess.run(
            [serf, "join", f"-rpc-addr=127.0.0.1:{rpc}", f"127.0.0.1:{swarm.port('a', 7946)}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert joined.returncode != 0, joined.stdout
        members = subprocess.run(
            [serf, "members", f"-rpc-addr=127.0.0.1:{rpc}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "intruder" in members and "10.77.0." not in members
        assert "intruder" not in json.dumps(swarm.get("a", "/v1/members"))
        # and A refused it for its key, not for anything else
        wait_for(
            "A's Serf logs the undecryptable join",
            lambda: "No installed keys could decrypt" in swarm.machines["a"].serial_text(),
            30,
            swarm.logs,
        )
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def tui_in_tmux(api: int, cid: str, holders: list[str]) -> None:
    tmux = shutil.which("tmux")
    assert tmux, "tmux is not installed on the host (scripts/setup-host.sh)"
    socket = Path(tempfile.mkdtemp(prefix="ak-tmux-")) / "sock"
    session = "swarm-tui"
    command = f"{sys.executable} -m appliancekit swarm tui --node 127.0.0.1:{api} --interval 2"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
    subprocess.run(
        [
            tmux,
            "-S",
            str(socket),
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "200",
            "-y",
            "50",
            command,
        ],
        check=True,
        env=env,
    )
    try:
        screen = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [tmux, "-S", str(socket), "capture-pane", "-p", "-t", session],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if cid[:20] in screen and "2/2" in screen:
                break
            time.sleep(2)
        for text in (
            "members",
            "deployments",
            "five.bin",
            "2/2",
            cid[:20],
            ", ".join(sorted(holders)),
        ):
            assert text in screen, screen
        for name, ip in zip(NAMES, ("10.77.0.1", "10.77.0.2", "10.77.0.3"), strict=True):
            assert any(
                name in line and ip in line and "alive" in line for line in screen.splitlines()
            ), screen
        subprocess.run([tmux, "-S", str(socket), "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = subprocess.run(
                [tmux, "-S", str(socket), "has-session", "-t", session],
                capture_output=True,
                check=False,
            )
            if alive.returncode != 0:
                break
            time.sleep(1)
        assert alive.returncode != 0, "q did not quit the TUI"
    finally:
        subprocess.run([tmux, "-S", str(socket), "kill-server"], capture_output=True, check=False)
        shutil.rmtree(socket.parent, ignore_errors=True)
