"""Monitoring as data: `[monitoring]` in a recipe or a cloud adds node-exporter and the agent
(services, users, settings, port, token files); the cloud's monitoring member gets every
member as a scrape target; the Prometheus configuration and alert rules the monitoring recipe
renders; bad input is one line. The boots are in test_monitoring_cloud.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jinja2
import pytest
import yaml

from appliancekit import monitoring
from appliancekit.agent import install as agent_install
from appliancekit.board import find_board
from appliancekit.boot.slotswitch import SLOTS_JSON
from appliancekit.build import resolve_recipe_sources
from appliancekit.cache import Cache
from appliancekit.cloud import roles
from appliancekit.cloud.model import Role, load_cloud
from appliancekit.cloud.secrets import CloudSecrets, load_or_create
from appliancekit.errors import UserError
from appliancekit.recipe import find_recipe, load_recipe, resolve_settings
from appliancekit.release.matrix import debian_matrix
from appliancekit.rootfs import ROOT_USER, render, template_context
from appliancekit.sources.debian_lock import LockedSource, lock_path, read_lock

from .conftest import PROJECT, REPO

BOARD = find_board("qemu-virt-arm64", PROJECT.boards_dir)
CLOUD = """[cloud]
domain = "example.net"
network = "10.9.0.0/24"

[monitoring]
scrape_interval = "10s"
alert_after = "20s"
{control}

[[member]]
name = "ns"
recipe = "dns"
board = "qemu-virt-arm64"
role = "dns"
address = "10.9.0.2"

[[member]]
name = "web"
recipe = "homepage"
board = "qemu-virt-arm64"
address = "10.9.0.3"

[[member]]
name = "mon"
recipe = "monitoring"
board = "qemu-virt-arm64"
role = "monitoring"
address = "10.9.0.4"
"""
RULES = {
    "MemberDown",
    "ServiceDown",
    "ServiceRestarting",
    "DataPartitionFull",
    "CertificateExpiresSoon",
    "BackupFailing",
    "UpdateFailing",
    "UpdateNotChecked",
    "StateUnreadable",
    "BackupTooOld",
}


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> CloudSecrets:
    return load_or_create(tmp_path_factory.mktemp("cloud-state"))


def recipe_with(tmp_path: Path, extra: str, base: str = "homepage") -> Path:
    """A copy of a shipped recipe with `extra` TOML appended."""
    directory = tmp_path / base
    shutil.copytree(REPO / "recipes" / base, directory)
    with open(directory / "recipe.toml", "a") as out:
        out.write(extra)
    return directory


def one_line_error(fn: object, *args: object) -> str:
    with pytest.raises(UserError) as info:
        fn(*args)  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_recipe_opts_in_with_monitoring(tmp_path: Path) -> None:
    plain = find_recipe("homepage", PROJECT.recipes_dir)
    assert plain.monitoring is None
    recipe = load_recipe(recipe_with(tmp_path, "\n[monitoring]\nport = 9200\n"))
    assert recipe.monitoring is not None and recipe.monitoring.port == 9200
    assert recipe.ports == (80, 443, 9200)
    services = {s.name: s for s in recipe.services}
    assert set(services) == {"nginx", "acme", "node-exporter", "ak-monitor"}
    exporter, agent = services["node-exporter"], services["ak-monitor"]
    assert exporter.user == "node-exporter" and exporter.exec[0] == monitoring.EXPORTER
    # node-exporter only on loopback; the agent is the one outside listener, on the port
    assert "--web.listen-address=127.0.0.1:9110" in exporter.exec
    assert agent.exec[0] == monitoring.AGENT and "-listen=:9200" in agent.exec
    assert agent.user == "root" and agent.root_reason
    settings = {s.name: s for s in recipe.settings}
    for name in (monitoring.TOKEN_SETTING, monitoring.CONTROL_TOKEN_SETTING):
        assert settings[name].per_device and settings[name].secret
    files = {f.path: f for f in recipe.files}
    assert files[monitoring.TOKEN_FILE].mode == 0o600
    assert "settings.monitoring_token" in (files[monitoring.TOKEN_FILE].content or "")
    assert monitoring.augment(recipe) is recipe  # a cloud's [monitoring] adds nothing twice


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("\n[monitoring]\nport = 80\n", "port 80 is already the recipe's"),
        ("\n[monitoring]\nport = 0\n", "monitoring.port"),
        ("\n[monitoring]\nprot = 9100\n", "did you mean 'port'"),
        ('\n[[user]]\nname = "node-exporter"\nuid = 64910\n[monitoring]\n', "reserved"),
    ],
)
def test_bad_monitoring_in_a_recipe(tmp_path: Path, extra: str, expected: str) -> None:
    message = one_line_error(load_recipe, recipe_with(tmp_path, extra))
    assert "recipe.toml:" in message and expected in message, message


def test_a_cloud_monitors_every_member(secrets: CloudSecrets, tmp_path: Path) -> None:
    path = tmp_path / "mon.toml"
    path.write_text(CLOUD.format(control=""))
    cloud = load_cloud(path, PROJECT)
    assert cloud.monitoring is not None and not cloud.monitoring.control
    assert all(m.recipe.monitoring is not None for m in cloud.members)
    assert all(9100 in m.recipe.ports for m in cloud.members)
    mon = cloud.with_role(Role.MONITORING)
    assert mon is not None
    values = roles.member_settings(cloud, mon, secrets)
    assert values["targets"] == "ns=10.9.0.2:9100 web=10.9.0.3:9100 mon=10.9.0.4:9100"
    assert values["scrape_token"] == secrets.monitoring_token
    assert (values["scrape_interval"], values["alert_after"]) == ("10s", "20s")
    build, device = roles.split_settings(mon, values)
    assert "targets" in build and "scrape_token" in device  # the token goes on the card only
    web = roles.member_settings(cloud, cloud.member("web"), secrets)
    assert web[monitoring.TOKEN_SETTING] == secrets.monitoring_token
    assert monitoring.CONTROL_TOKEN_SETTING not in web  # control is off unless asked for
    path.write_text(CLOUD.format(control="control = true"))
    web = roles.member_settings(load_cloud(path, PROJECT), cloud.member("web"), secrets)
    assert web[monitoring.CONTROL_TOKEN_SETTING] == secrets.monitoring_control_token
    assert secrets.monitoring_token != secrets.monitoring_control_token


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('scrape_interval = "10s"', 'scrape_interval = "often"'), "monitoring.scrape_interval"),
        (('alert_after = "20s"', "alert_after = 20"), "monitoring.alert_after"),
        (('alert_after = "20s"', 'alert_aftre = "20s"'), "did you mean 'alert_after'"),
        (("[monitoring]", "[elsewhere]"), "unknown"),
        (('role = "monitoring"', 'role = "monitor"'), "member[2].role"),
    ],
)
def test_bad_monitoring_in_a_cloud(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    path = tmp_path / "mon.toml"
    path.write_text(CLOUD.format(control="").replace(*change))
    message = one_line_error(load_cloud, path, PROJECT)
    assert "mon.toml:" in message and expected in message, message


def test_a_monitoring_member_needs_monitoring_on(tmp_path: Path) -> None:
    path = tmp_path / "mon.toml"
    text = CLOUD.format(control="")
    path.write_text(text.replace('[monitoring]\nscrape_interval = "10s"\nalert_after = "20s"', ""))
    message = one_line_error(load_cloud, path, PROJECT)
    assert "member[2].role" in message and "[monitoring]" in message


def rendered(values: dict[str, str]) -> tuple[dict, dict]:  # type: ignore[type-arg]
    recipe = find_recipe("monitoring", PROJECT.recipes_dir)
    users = {u.name: u for u in (ROOT_USER, *recipe.users)}
    context = template_context(recipe, resolve_settings(recipe, values), BOARD, users)
    config, rules = (
        yaml.safe_load(render(recipe, context, template=name, content=None, what=name))
        for name in ("prometheus.yml.j2", "rules.yml.j2")
    )
    return config, rules


def test_prometheus_scrapes_the_targets_with_the_token() -> None:
    config, _rules = rendered({"targets": "ns=10.9.0.2:9100 mon=10.9.0.4:9200"})
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["authorization"] == {"credentials_file": "/etc/prometheus/scrape-token"}
    assert job["static_configs"] == [
        {"targets": ["10.9.0.2:9100"], "labels": {"member": "ns"}},
        {"targets": ["10.9.0.4:9200"], "labels": {"member": "mon"}},
    ]
    empty, _ = rendered({})
    assert empty["scrape_configs"][0]["static_configs"] == []


def test_alert_rules_read_the_documented_metrics() -> None:
    _config, rules = rendered({"alert_after": "20s", "certificate_warn_days": "7"})
    (group,) = rules["groups"]
    by_name = {r["alert"]: r for r in group["rules"]}
    assert set(by_name) == RULES
    assert by_name["MemberDown"]["expr"] == 'up{job="appliances"} == 0'
    assert by_name["ServiceDown"]["for"] == "20s"
    assert "< 7 * 86400" in by_name["CertificateExpiresSoon"]["expr"]
    assert by_name["UpdateFailing"]["for"] == "24h"  # update_failing_hours' default
    assert "> 48 * 3600" in by_name["UpdateNotChecked"]["expr"]
    assert '{mountpoint="/data"}' in by_name["DataPartitionFull"]["expr"]
    used = {
        word for rule in group["rules"] for word in re.findall(r"appliancekit_\w+", rule["expr"])
    }
    assert used <= set(monitoring.METRIC_NAMES), used - set(monitoring.METRIC_NAMES)
    for rule in group["rules"]:
        assert "{{ $labels." in rule["annotations"]["summary"]  # Prometheus's, not ours


MATRIX = debian_matrix(PROJECT.recipes_dir, PROJECT.boards_dir)


@pytest.mark.parametrize("entry", MATRIX, ids=[f"{e.recipe}-{e.board}" for e in MATRIX])
def test_every_lock_serves_the_recipe_with_monitoring(entry: object, tmp_path: Path) -> None:
    """A cloud can turn monitoring on for any member: every lock pins node-exporter too."""
    recipe = monitoring.augment(find_recipe(entry.recipe, PROJECT.recipes_dir))  # type: ignore[attr-defined]
    board = find_board(entry.board, PROJECT.boards_dir)  # type: ignore[attr-defined]
    path = lock_path(recipe.directory, recipe.debian.suite or board.suite, board.arch.value)
    source = LockedSource(read_lock(path), path, Cache(tmp_path), board.arch.value)
    names = {p.name for p in resolve_recipe_sources(recipe, board, source).root}
    assert set(monitoring.PACKAGES) <= names


GREPABLE = """# Nmap 7.95 scan initiated Mon Nov 30 16:00:00 2026 as: nmap -n -Pn -sT -p- -oG - -iL t
Host: 10.9.0.2 ()\tStatus: Up
Host: 10.9.0.2 ()\tPorts: 53/open/tcp//domain///, 8081/open/tcp//blackice-icecap///, 9100/open/tcp//jetdirect///\tIgnored State: closed (65532)
[   42.1] random kernel line
Host: 10.9.0.3 ()\tStatus: Up
Host: 10.9.0.3 ()\tIgnored State: closed (65535)
# Nmap done at Mon Nov 30 16:01:00 2026 -- 2 IP addresses (2 hosts up) scanned in 60.00 seconds
"""


def test_runtime_audit_compares_answers_with_declarations() -> None:
    from appliancekit.audit.runtime import Target, parse_grepable, scan_results, scanner_address

    scanned = parse_grepable(GREPABLE)
    assert scanned == {"10.9.0.2": {53, 8081, 9100}, "10.9.0.3": frozenset()}
    results = scan_results(
        [
            Target("ns", "10.9.0.2", frozenset({53, 9100})),
            Target("web", "10.9.0.3", frozenset({80})),
            Target("gone", "10.9.0.4", frozenset({80})),
            Target("ok", "10.9.0.2", frozenset({53, 8081, 9100})),
        ],
        scanned,
    )
    assert [(r.name, r.status, r.findings) for r in results] == [
        (
            "listening-ports[ns]",
            "failed",
            ("port 8081/tcp answers on 10.9.0.2 but is not declared",),
        ),
        ("listening-ports[web]", "failed", ("declared port 80/tcp does not answer on 10.9.0.3",)),
        ("listening-ports[gone]", "failed", ("the scan did not reach 10.9.0.4",)),
        ("listening-ports[ok]", "passed", ()),
    ]
    import ipaddress

    net = ipaddress.IPv4Network("10.9.0.0/29")
    assert scanner_address(net, ["10.9.0.6"]) == "10.9.0.5/29"


def test_declared_ports_leave_out_closed_probes() -> None:
    from appliancekit.audit.runtime import declared_ports
    from appliancekit.manifest import Manifest

    manifest = Manifest.__new__(Manifest)
    object.__setattr__(manifest, "ports", [25, 80, 8080])
    object.__setattr__(
        manifest, "probes", [{"kind": "closed", "port": 8080}, {"kind": "http", "port": 80}]
    )
    assert declared_ports(manifest) == {25, 80}


def test_blas_is_linked_where_the_loader_looks() -> None:
    """nmap (the scanner) needs libblas.so.3, which Debian links through update-alternatives
    from a maintainer script that never runs here: the root tree links it itself."""
    from appliancekit.rootfs import _library_alternatives
    from appliancekit.tree import RootTree

    tree = RootTree()
    lib = "/usr/lib/aarch64-linux-gnu"
    tree.add_file(f"{lib}/blas/libblas.so.3", "elf")
    tree.add_file(f"{lib}/lapack/liblapack.so.3", "elf")
    tree.add_file(f"{lib}/liblapack.so.3", "another provider, already linked")
    _library_alternatives(tree, BOARD)
    assert tree.resolve(f"{lib}/libblas.so.3")[0] == f"{lib}/blas/libblas.so.3"
    assert tree.resolve(f"{lib}/liblapack.so.3")[0] == f"{lib}/liblapack.so.3"


def test_the_agent_reads_the_state_files_the_image_has(tmp_path: Path) -> None:
    """The sources file names the update agent's and backup agent's state files, and the
    certificate the ACME service installs: the directory its acme.env names (tlsdir; the
    homepage's own acme service installs into /var/lib/tls)."""
    recipe = load_recipe(recipe_with(tmp_path, "\n[monitoring]\n"))
    files = {f.path: f for f in recipe.files}
    sources = json.loads(jinja2.Template(files[monitoring.SOURCES_FILE].content or "").render())
    assert sources == {
        "update": {
            "status": "/data/.appliancekit/update/status.json",
            "slots": "/etc/appliancekit/slots.json",
        },
        "backups": [{"target": "data", "status": "/data/.appliancekit/backup/status"}],
        "certificates": [{"name": "tls", "path": "/var/lib/tls/cert.pem"}],
    }
    agent = next(s for s in recipe.services if s.name == monitoring.AGENT_SERVICE)
    assert f"-sources={monitoring.SOURCES_FILE}" in agent.exec
    # the update agent's own paths, which monitoring cannot import
    assert sources["update"]["status"] == f"{agent_install.STATE_DIR}/status.json"
    assert sources["update"]["slots"] == SLOTS_JSON
    # the DNS appliance speaks no TLS: no acme service, no certificate
    plain = load_recipe(recipe_with(tmp_path / "plain", "\n[monitoring]\n", base="dns"))
    assert monitoring.sources_config(plain)["certificates"] == []
