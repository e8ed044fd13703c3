"""Monitoring, opted into by a recipe (`[monitoring]` in recipe.toml) or by a whole cloud
(`[monitoring]` in the cloud file): what it adds to an appliance.

An appliance with monitoring runs two more s6 services:

- `node-exporter`: Debian's prometheus-node-exporter, as its own user, listening on loopback
  only (EXPORTER_LISTEN), with its textfile collector reading METRICS_DIR;
- `ak-monitor`: the agent (appliancekit/monitoring/agent, Go, static, no shell), the only
  monitoring listener reachable from outside: on the declared port (9100 unless the recipe
  says otherwise), behind the per-device bearer token `monitoring_token`, it serves
  node-exporter's metrics followed by each s6 service's supervision state. With the
  per-device `monitoring_control_token` set (off by default) it also takes a service down,
  up, or kills it (s6-supervise's control fifo): what an administrator does without a shell.

The agent runs as root: s6-supervise keeps its status files and control fifos root-only.

Metrics other services export (the names the alert rules of the `monitoring` recipe read)
go into METRICS_DIR as NAME.prom files, node-exporter textfile format, written to a temporary
name and renamed: see METRIC_NAMES and docs/architecture.md, "Monitoring".
"""

from __future__ import annotations

import dataclasses
import json
import posixpath

from appliancekit.backup.status import STATUS_FILE as BACKUP_STATUS_FILE
from appliancekit.errors import UserError
from appliancekit.recipe import GeneratedFile, MonitoringSection, Recipe, Service, Setting, User
from appliancekit.settings_kinds import SettingKind

PACKAGES = ("prometheus-node-exporter",)
AGENT = "/usr/lib/appliancekit/ak-monitor"
EXPORTER = "/usr/bin/prometheus-node-exporter"
DEFAULT_PORT = 9100
EXPORTER_LISTEN = "127.0.0.1:9110"
METRICS_DIR = "/run/appliancekit/metrics"
# Only the collectors an appliance has a use for: the defaults include systemd (Debian
# enables it; there is no D-Bus here) and a score of others that made one scrape take over
# 20 s under emulation.
EXPORTER_COLLECTORS = (
    "--collector.disable-defaults",
    *(
        f"--collector.{name}"
        for name in (
            "cpu",
            "diskstats",
            "filesystem",
            "loadavg",
            "meminfo",
            "netdev",
            "pressure",
            "stat",
            "textfile",
            "time",
            "uname",
        )
    ),
)
TOKEN_FILE = "/etc/appliancekit/monitoring/token"
# Where the agent finds the update, backup and certificate state (sources_config)
SOURCES_FILE = "/etc/appliancekit/monitoring/sources.json"
# The update agent's files: appliancekit/agent/install.py STATE_DIR and boot/slotswitch.py
# SLOTS_JSON (not imported: both import the recipe module, which imports this one)
UPDATE_STATUS_FILE = "/data/.appliancekit/update/status.json"
SLOTS_FILE = "/etc/appliancekit/slots.json"
# The ACME service's settings file (recipes that speak TLS, acme/renew): its `tlsdir=` line
# names the directory the served certificate is installed in, as cert.pem
ACME_ENV = "/etc/acme/acme.env"
BACKUP_TARGET = "data"  # the backup agent backs up /data, to one repository
CONTROL_TOKEN_FILE = "/etc/appliancekit/monitoring/control-token"
TOKEN_SETTING = "monitoring_token"
CONTROL_TOKEN_SETTING = "monitoring_control_token"
EXPORTER_USER = User("node-exporter", 64910, 64910)
AGENT_SERVICE = "ak-monitor"
EXPORTER_SERVICE = "node-exporter"
AGENT_ROOT_REASON = (
    "reads s6-supervise's status files and writes its control fifos, which s6 keeps root-only"
)

# What an appliance exports and the alert rules read. The supervision state comes from the
# agent; the certificate and backup state from the services that renew certificates and take
# backups, as NAME.prom files in METRICS_DIR (one sample per certificate / backup target).
METRIC_NAMES = {
    "appliancekit_service_up": "gauge{service}: 1 while the s6 service runs",
    "appliancekit_service_wanted_up": "gauge{service}: 0 when taken down on purpose",
    "appliancekit_service_restarts_total": "counter{service}: starts after the first one",
    "appliancekit_service_state_seconds": "gauge{service}: seconds since it started/stopped",
    "appliancekit_certificate_expiry_timestamp_seconds": (
        "gauge{certificate,path}: earliest notAfter in the PEM chain a service serves (Unix time)"
    ),
    "appliancekit_backup_last_success_timestamp_seconds": (
        "gauge{target}: end of the last successful backup of /data (Unix time)"
    ),
    "appliancekit_backup_last_attempt_timestamp_seconds": (
        "gauge{target}: end of the last backup attempt (Unix time)"
    ),
    "appliancekit_backup_last_result_ok": "gauge{target}: 1 if the last attempt succeeded",
    "appliancekit_backup_enabled": "gauge{target}: 0 when no backup_repository is set",
    "appliancekit_backup_last_size_bytes": "gauge{target}: bytes of /data the snapshot covers",
    "appliancekit_backup_last_added_bytes": "gauge{target}: bytes the last backup sent",
    "appliancekit_update_info": "gauge{release,slot}: 1; the running release and its slot",
    "appliancekit_update_trial": "gauge: 1 while the running release is on its trial boot",
    "appliancekit_update_enabled": "gauge: 0 when no update_url is set (no checks)",
    "appliancekit_update_last_check_timestamp_seconds": "gauge: last check (Unix time)",
    "appliancekit_update_last_result_ok": "gauge: 1 if the last check/update went through",
    "appliancekit_update_last_success_timestamp_seconds": (
        "gauge: when an update last committed on this device (Unix time)"
    ),
    "appliancekit_update_failed_releases": "gauge: releases tried here that did not commit",
    "appliancekit_update_supported": (
        "gauge{mechanism,reason}: 0 when the board's slot switch is not implemented"
    ),
    "appliancekit_state_read_errors": (
        "gauge{source,path}: 1 when a state file is there but cannot be read or parsed"
    ),
}


def enabled(recipe: Recipe) -> bool:
    return recipe.monitoring is not None


def _settings() -> tuple[Setting, ...]:
    return (
        Setting(
            TOKEN_SETTING,
            SettingKind.SECRET,
            None,
            "Bearer token Prometheus sends to scrape this device's metrics (without one "
            "the metrics are refused)",
            per_device=True,
        ),
        Setting(
            CONTROL_TOKEN_SETTING,
            SettingKind.SECRET,
            None,
            "Bearer token that may take services down, up or kill them through the "
            "monitoring agent (unset: no control)",
            per_device=True,
        ),
    )


def certificates(recipe: Recipe) -> list[dict[str, str]]:
    """The certificates `recipe` serves: the ACME service's (ACME_ENV's `tlsdir`), named
    after that directory (tls, mail-tls)."""
    found: list[dict[str, str]] = []
    for file in recipe.files:
        if file.path != ACME_ENV or file.content is None:
            continue
        for line in file.content.splitlines():
            key, eq, value = line.partition("=")
            if eq and key.strip() == "tlsdir" and value.strip().startswith("/"):
                tlsdir = posixpath.normpath(value.strip())
                path = posixpath.join(tlsdir, "cert.pem")
                found.append({"name": posixpath.basename(tlsdir), "path": path})
    return found


def sources_config(recipe: Recipe) -> dict[str, object]:
    """What the agent reads besides s6 (agent/state.go), from what the image holds. The
    update agent is in every image; the backup status file exists only with [backup] (which
    the recipe expands after [monitoring], so it is always named: absent, it gives no
    metric)."""
    return {
        "update": {"status": UPDATE_STATUS_FILE, "slots": SLOTS_FILE},
        "backups": [{"target": BACKUP_TARGET, "status": BACKUP_STATUS_FILE}],
        "certificates": certificates(recipe),
    }


def augment(recipe: Recipe, spec: MonitoringSection | None = None) -> Recipe:
    """`recipe` with monitoring: its users, services, settings, files and port added.

    Already monitored: returned unchanged (a cloud's [monitoring] on a recipe that opts in)."""
    if enabled(recipe):
        return recipe
    spec = spec or MonitoringSection(DEFAULT_PORT)

    def clash(message: str) -> UserError:
        return UserError(
            f"[monitoring] cannot be added: {message}", file=recipe.source_file, field="monitoring"
        )

    if spec.port in recipe.ports or spec.port == int(EXPORTER_LISTEN.rsplit(":", 1)[1]):
        raise clash(f"port {spec.port} is already the recipe's; give [monitoring] port = another")
    for user in recipe.users:
        if user.name == EXPORTER_USER.name or user.uid == EXPORTER_USER.uid:
            raise clash(f"user {user.name} (uid {user.uid}) is reserved for node-exporter")
    for service in recipe.services:
        if service.name in (AGENT_SERVICE, EXPORTER_SERVICE):
            raise clash(f"service name {service.name!r} is reserved for monitoring")
    names = {s.name for s in recipe.settings}
    for setting in _settings():
        if setting.name in names:
            raise clash(f"setting {setting.name!r} is reserved for monitoring")
    paths = {f.path for f in recipe.files}
    for path in (TOKEN_FILE, CONTROL_TOKEN_FILE, SOURCES_FILE):
        if path in paths:
            raise clash(f"file {path} is reserved for monitoring")
    services = (
        Service(
            EXPORTER_SERVICE,
            (
                EXPORTER,
                f"--web.listen-address={EXPORTER_LISTEN}",
                f"--collector.textfile.directory={METRICS_DIR}",
                *EXPORTER_COLLECTORS,
            ),
            user=EXPORTER_USER.name,
        ),
        Service(
            AGENT_SERVICE,
            (
                AGENT,
                f"-listen=:{spec.port}",
                f"-upstream=http://{EXPORTER_LISTEN}/metrics",
                "-scan-dir=/run/service",
                f"-token-file={TOKEN_FILE}",
                f"-control-token-file={CONTROL_TOKEN_FILE}",
                f"-metrics-dir={METRICS_DIR}",
                f"-sources={SOURCES_FILE}",
            ),
            root_reason=AGENT_ROOT_REASON,
        ),
    )
    files = tuple(
        GeneratedFile(path, content=f"{{{{ settings.{name} }}}}\n", mode=0o600)
        for path, name in ((TOKEN_FILE, TOKEN_SETTING), (CONTROL_TOKEN_FILE, CONTROL_TOKEN_SETTING))
    )
    # inline content is a jinja2 template: raw, so no path can be taken for a tag
    sources = json.dumps(sources_config(recipe), indent=2, sort_keys=True)
    files += (GeneratedFile(SOURCES_FILE, content=f"{{% raw %}}{sources}\n{{% endraw %}}"),)
    return dataclasses.replace(
        recipe,
        users=(*recipe.users, EXPORTER_USER),
        services=(*recipe.services, *services),
        settings=(*recipe.settings, *_settings()),
        files=(*recipe.files, *files),
        ports=tuple(sorted({*recipe.ports, spec.port})),
        monitoring=spec,
    )
