"""One boot of a small monitored cloud goes through the monitoring and runtime-audit
scenarios: a DNS member and the monitoring member (Prometheus), both with [monitoring], and
the scanner appliance joining their network once they answer.

- every scrape target is up; the agent refuses a scrape without the token; the DNS member's
  scrape carries its update state (the release it was built as, its slot), and its backup
  state: off (it has [backup] but no backup_repository), with no made-up backup age;
- pdns, killed on the DNS member through its agent (SIGTERM, kept down: there is no shell to
  kill it with), shows as down and ServiceDown fires; killed five times while wanted up,
  ServiceRestarting fires; the DNS member's QEMU killed, MemberDown fires;
- the DNS member's data partition, filled by the test before its boot (a filesystem holding
  a ballast file), raises DataPartitionFull, and the monitoring member's does not;
- the runtime audit (TCP ports 1-10000 of both members, scanned by the scanner appliance on
  the cloud's network): the DNS member is built from a copy of the dns recipe that does not
  declare port 8081 (PowerDNS's API, which it opens): the scan finds 8081 answering and the
  check fails; the monitoring member's check passes (9090 and the agent's 9100, nothing else).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from appliancekit.audit.runtime import declared_ports, scan_cloud
from appliancekit.board import find_board
from appliancekit.build import BuildPlan, BuildResult, build
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.cloud.boot import HANDOVER, boot_cloud, build_members, make_cards
from appliancekit.cloud.model import Member, load_cloud
from appliancekit.cloud.secrets import load_or_create
from appliancekit.output import Reporter
from appliancekit.project import Project
from appliancekit.recipe import resolve_settings

from .conftest import PROJECT, ApplianceCache

pytestmark = pytest.mark.slow

# The well-known and most registered services' ports (8081 among them), not all 65535: under
# emulation each scanned port costs the scanner and the target CPU, and this boot has two
# targets. tests/test_audit_boot.py scans every port, through `audit --boot`.
SCANNED_PORTS = "1-10000"

CLOUD = """[cloud]
domain = "example.net"
network = "10.9.0.0/24"

[monitoring]
scrape_interval = "10s"
alert_after = "10s"
control = true

[[member]]
name = "ns"
recipe = "dns"
board = "qemu-virt-arm64"
role = "dns"
address = "10.9.0.2"

[[member]]
name = "mon"
recipe = "monitoring"
board = "qemu-virt-arm64"
role = "monitoring"
address = "10.9.0.3"
"""


def leaky_project(root: Path) -> Project:
    """The shipped recipes and boards, except dns: a copy that leaves port 8081 undeclared
    (and the probe that names it), while PowerDNS still serves its API there."""
    (root / "recipes").mkdir(parents=True)
    (root / "boards").symlink_to(PROJECT.boards_dir)
    (root / "clouds").mkdir()
    for recipe in PROJECT.recipes_dir.iterdir():
        if recipe.name != "dns":
            (root / "recipes" / recipe.name).symlink_to(recipe)
    dns = root / "recipes" / "dns"
    shutil.copytree(PROJECT.recipes_dir / "dns", dns)
    text = (dns / "recipe.toml").read_text()
    assert "ports = [53, 8081]" in text
    head, _probes = text.split("[[probe]]", 1)
    (dns / "recipe.toml").write_text(head.replace("ports = [53, 8081]", "ports = [53]"))
    (root / "clouds" / "ops.toml").write_text(CLOUD)
    return Project(root)


def _free_blocks(image: Path) -> tuple[int, int]:
    """(block size, blocks free to a non-root user) of an ext4 image, from dumpe2fs."""
    head = subprocess.run(
        ["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True
    ).stdout
    fields = dict(line.split(":", 1) for line in head.splitlines() if ":" in line)
    size = int(fields["Block size"])
    return size, int(fields["Free blocks"]) - int(fields["Reserved block count"])


def fill_data_partition(card: Path, data_offset: int, data_size: int, work: Path) -> None:
    """An ext4 data filesystem (label ak-data, as the first boot makes one) holding a ballast
    file that leaves 6 % of the partition to its services: under DataPartitionFull's 10 %,
    with room for PowerDNS to make its database. The initramfs finds it and keeps it.
    Random bytes: mke2fs -d leaves zero blocks out."""
    image = work / "data.img"
    ballast = work / "ballast"
    ballast.mkdir(parents=True)
    mkfs = ["mkfs.ext4", "-q", "-F", "-L", "ak-data", "-d", str(ballast), str(image)]
    with open(image, "wb") as out:
        out.truncate(data_size)
    subprocess.run(mkfs, check=True)  # empty, to learn what is free
    block, free = _free_blocks(image)
    left = free * block - int(data_size * 0.06)
    with open(ballast / "ballast", "wb") as out:
        while left > 0:
            chunk = min(left, 1 << 20)
            out.write(os.urandom(chunk))
            left -= chunk
    subprocess.run(mkfs, check=True)
    subprocess.run(
        ["dd", f"if={image}", f"of={card}", "bs=1M", f"seek={data_offset}", "oflag=seek_bytes",
         "conv=notrunc,sparse", "status=none"],
        check=True,
    )  # fmt: skip


def http(
    url: str, *, token: str | None = None, method: str = "GET", timeout: float = 30
) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_for(what: str, check: Callable[[], object], timeout: float, log: list[str]) -> object:
    """Retry `check` until it returns something true; the time it took goes into `log`."""
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < timeout:
        try:
            last = check()
        except (OSError, ValueError, KeyError, AssertionError) as exc:  # not ready yet
            last = exc
        if last and not isinstance(last, Exception):
            log.append(f"{what}: {time.monotonic() - start:.0f}s")
            return last
        time.sleep(3)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


@pytest.mark.timeout(3600)
def test_monitored_cloud(appliances: ApplianceCache, session_images: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    project = leaky_project(tmp_path / "project")
    cloud = load_cloud(project.clouds_dir / "ops.toml", project)
    secrets = load_or_create(tmp_path / "state")
    cache = Cache(default_cache_dir())
    images = session_images / "ops"

    def builder(member: Member, settings: Mapping[str, str]) -> BuildResult:
        plan = BuildPlan(
            member.recipe, member.board, resolve_settings(member.recipe, dict(settings)), images
        )
        return build(plan, cache, Reporter())

    builds = build_members(cloud, secrets, builder)
    scanner = appliances.build("scanner", "qemu-virt-arm64")
    cards = make_cards(cloud, secrets, builds, tmp_path / "cards")
    ns_data = cards["ns"].manifest.disk.by_role("data")
    assert ns_data is not None
    fill_data_partition(cards["ns"].disk, ns_data.offset, ns_data.size, tmp_path / "fill")
    os.truncate(cards["mon"].disk, 512 << 20)  # room for Prometheus's data (grown at boot)
    log: list[str] = []
    with boot_cloud(cloud, cards, tmp_path / "run") as booted:
        booted.cluster.wait_for_serial(HANDOVER, 900)
        ns, mon = booted.members["ns"], booted.members["mon"]
        prom = f"http://127.0.0.1:{mon.host_port(9090)}"
        agent = f"http://127.0.0.1:{ns.host_port(9100)}"

        def api(path: str) -> dict:  # type: ignore[type-arg]
            status, body = http(prom + path)
            assert status == 200, (status, body)
            return json.loads(body)["data"]

        def targets_up() -> bool:
            active = api("/api/v1/targets")["activeTargets"]
            health = {t["labels"]["member"]: t["health"] for t in active}
            return health == {"ns": "up", "mon": "up"}

        def firing(name: str, **labels: str) -> list[dict]:  # type: ignore[type-arg]
            return [
                a
                for a in api("/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == name
                and a["state"] == "firing"
                and all(a["labels"].get(k) == v for k, v in labels.items())
            ]

        def value(query: str) -> float | None:
            result = api(f"/api/v1/query?query={urllib.request.quote(query)}")["result"]
            return float(result[0]["value"][1]) if result else None

        try:
            # the runtime audit (`cloud audit`'s) first, while every service runs: it waits for
            # the members' probes (Prometheus ready, its rules loaded) before the scanner boots
            report = scan_cloud(
                booted,
                scanner.output_dir,
                scanner.manifest,
                find_board("qemu-virt-arm64", PROJECT.boards_dir),
                timeout=1200,
                ports=SCANNED_PORTS,
            )
            log.append(f"scan done: {booted.elapsed():.0f}s after the first QEMU start")
            audit = {r.name: r for r in report.results}
            assert set(audit) == {"listening-ports[ns]", "listening-ports[mon]"}
            assert declared_ports(cards["ns"].manifest) == {53, 9100}
            assert audit["listening-ports[mon]"].status == "passed", audit
            assert audit["listening-ports[ns]"].status == "failed"
            assert audit["listening-ports[ns]"].findings == (
                "port 8081/tcp answers on 10.9.0.2 but is not declared",
            )
            assert not report.passed

            wait_for("every target up", targets_up, 1200, log)
            assert http(agent + "/metrics")[0] == 401
            assert http(agent + "/metrics", token="wrong")[0] == 401
            status, metrics = http(agent + "/metrics", token=secrets.monitoring_token)
            assert status == 200
            assert 'appliancekit_service_up{service="pdns"} 1' in metrics
            assert 'node_filesystem_avail_bytes{device="/dev/vda4"' in metrics
            # the update agent's state, read from its status.json on /data: the release
            # this member was built as, in slot a, checked (no update_url here: not enabled)
            release = cards["ns"].manifest.source_date_epoch
            assert f'appliancekit_update_info{{release="{release}",slot="a"}} 1' in metrics
            assert "appliancekit_update_last_check_timestamp_seconds " in metrics
            assert "appliancekit_update_enabled 0" in metrics
            assert "appliancekit_update_trial 0" in metrics
            assert "appliancekit_update_supported{" in metrics
            read_errors = re.findall(r"^appliancekit_state_read_errors\{.*\} (\S+)$", metrics, re.M)
            assert read_errors and set(read_errors) == {"0"}, metrics
            # dns has [backup] and this member no backup_repository: off, and no made-up age
            backup = re.findall(r"^appliancekit_backup_\w+(?:\{.*\})? \S+$", metrics, re.M)
            assert backup == ['appliancekit_backup_enabled{target="data"} 0'], backup
            info = f'appliancekit_update_info{{member="ns",release="{release}",slot="a"}}'
            wait_for("update state in Prometheus", lambda: value(info) == 1.0, 120, log)
            pdns = 'appliancekit_service_up{member="ns",service="pdns"}'
            assert value(pdns) == 1.0
            # control needs the control token, not the scrape token
            down = agent + "/v1/services/pdns/down"
            assert http(down, token=secrets.monitoring_token, method="POST")[0] == 401
            assert http(down, token=secrets.monitoring_control_token, method="POST")[0] == 200

            wait_for("pdns down", lambda: value(pdns) == 0.0, 300, log)
            wait_for("ServiceDown fired", lambda: firing("ServiceDown", service="pdns"), 300, log)
            wait_for("DataPartitionFull fired", lambda: firing("DataPartitionFull"), 300, log)
            assert {a["labels"]["member"] for a in firing("DataPartitionFull")} == {"ns"}

            control = secrets.monitoring_control_token
            assert http(agent + "/v1/services/pdns/up", token=control, method="POST")[0] == 200
            wait_for("pdns up again", lambda: value(pdns) == 1.0, 300, log)
            for _ in range(5):
                time.sleep(3)  # s6 starts a service at most once a second
                kill = agent + "/v1/services/pdns/kill"
                assert http(kill, token=control, method="POST")[0] == 200
            wait_for(
                "ServiceRestarting fired",
                lambda: firing("ServiceRestarting", member="ns", service="pdns"),
                300,
                log,
            )
            assert not firing("MemberDown")
            ns.machine.kill()
            wait_for("MemberDown fired", lambda: firing("MemberDown", member="ns"), 300, log)
        finally:
            print("\n".join(log))
            for name, machine in booted.cluster:
                print(f"--- {name}\n{machine.failure_tail(25)}")
    print(f"monitored cloud test: {time.monotonic() - started:.0f}s in all; " + "; ".join(log))
