"""A recipe's `[backup]` section turned into ordinary recipe content (`expand`).

The agent is an s6 service like any other, made of execline scripts (templates/), restic
and a few coreutils: no shell, no code of ours in the appliance. Its service runs as root
(it reads every service's data and restores it with its owners) and is the only one that
starts at boot: the recipe's own services are built `down`, and the agent starts them once
/data is ready, so none ever runs on a data partition that a restore has yet to fill.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace
from importlib import resources

import jinja2

from appliancekit.backup.section import SQLITE_DIR, STATE_DIR, BackupSection
from appliancekit.backup.settings import BACKUP_SETTINGS
from appliancekit.backup.status import STATUS_FILE
from appliancekit.tomlsource import TomlSource

SERVICE = "backup"
EXECLINE_BIN = "/usr/lib/execline/bin"
CONFIG_DIR = "/etc/appliancekit/backup"
AGENT = f"{CONFIG_DIR}/agent"
RESTORE = f"{CONFIG_DIR}/restore"
BACKUP = f"{CONFIG_DIR}/backup"
ENV_FILE = f"{CONFIG_DIR}/backup.env"  # per device, root only: the secrets are in it
REPOSITORY_FILE = f"{CONFIG_DIR}/repository"  # per device: empty means backups are off
SUMMARY = "/run/backup/summary.json"  # restic's JSON summary of the last backup
SCAN_DIR = "/run/service"  # supervisor.SCAN_DIR (supervisor imports the recipe module)
# restic retries an unreachable backend for about 15 minutes; opening the repository gets
# this long before the agent says so and tries again later
OPEN_TIMEOUT = 30
PACKAGES = ("restic", "coreutils", "sed", "ca-certificates")
SQLITE_PACKAGES = ("sqlite3",)
EXECUTABLES = (
    "/usr/bin/restic",
    "/usr/bin/s6-svc",
    "/usr/bin/date",
    "/usr/bin/sleep",
    "/usr/bin/nice",
    "/usr/bin/printf",
    "/usr/bin/mv",
    "/usr/bin/cp",
    "/usr/bin/chown",
    "/usr/bin/mkdir",
    "/usr/bin/timeout",
    "/usr/bin/sed",
    *(
        f"{EXECLINE_BIN}/{name}"
        for name in (
            "export",
            "envfile",
            "redirfd",
            "importas",
            "if",
            "ifelse",
            "ifte",
            "eltest",
            "foreground",
            "backtick",
            "multisubstitute",
            "exit",
        )
    ),
)
CA_CERTIFICATES = "/usr/share/ca-certificates/mozilla"  # SSL_CERT_DIR: S3 and REST over TLS

ENV_TEMPLATE = """\
RESTIC_REPOSITORY={{ settings.backup_repository }}
RESTIC_PASSWORD={{ settings.backup_password }}
AWS_ACCESS_KEY_ID={{ settings.backup_s3_key_id }}
AWS_SECRET_ACCESS_KEY={{ settings.backup_s3_secret }}
AWS_DEFAULT_REGION={{ settings.backup_s3_region }}
backup_interval={{ settings.backup_interval }}
backup_keep_daily={{ settings.backup_keep_daily }}
backup_keep_weekly={{ settings.backup_keep_weekly }}
backup_keep_monthly={{ settings.backup_keep_monthly }}
backup_retry={{ settings.backup_retry }}
restore={{ settings.restore }}
"""


def _render(name: str, **values: object) -> str:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    env.filters["dirname"] = posixpath.dirname
    text = resources.files("appliancekit.backup").joinpath("templates", name).read_text()
    rendered = env.from_string(text).render(**values)
    # the recipe's own renderer renders [[file]] content again: keep ours literal
    return "{% raw %}" + rendered + "{% endraw %}"


def scripts(recipe_name: str, services: tuple[str, ...], section: BackupSection) -> dict[str, str]:
    """The agent's execline scripts by path in the root."""
    excludes = list(section.exclude)
    for copy in section.sqlite:
        excludes += [copy.database, f"{copy.database}-*"]
    paths = list(section.paths) + ([SQLITE_DIR] if section.sqlite else [])
    common = {
        "bin": EXECLINE_BIN,
        "state": STATE_DIR,
        "status": STATUS_FILE,
        "summary": SUMMARY,
        "tag": recipe_name,
        "open_timeout": OPEN_TIMEOUT,
        "repository_file": REPOSITORY_FILE,
        "sqlite": section.sqlite,
    }
    return {
        AGENT: _render(
            "agent.j2",
            **common,
            env_file=ENV_FILE,
            restore_script=RESTORE,
            backup_script=BACKUP,
            services=services,
            scan_dir=SCAN_DIR,
        ),
        RESTORE: _render("restore.j2", **common),
        BACKUP: _render("backup.j2", **common, excludes=excludes, paths=paths),
    }


def expand(recipe, section: BackupSection, src: TomlSource):  # type: ignore[no-untyped-def]
    """`recipe` (a recipe.Recipe, loaded from `src`) with the agent, its settings, packages
    and files added."""
    from appliancekit.recipe import GeneratedFile, Service, Setting

    for i, service in enumerate(recipe.services):
        if service.name == SERVICE:
            src.fail(
                ("service", i, "name"),
                f"[backup] adds a service named {SERVICE!r}: give the recipe's own another name",
            )
    declared = {s.name: s for s in recipe.settings}
    settings = list(recipe.settings)
    for name, kind, default, help_text in BACKUP_SETTINGS:
        if name in declared:
            if declared[name].kind != kind or not declared[name].per_device:
                src.fail(
                    ("settings", name, "kind"),
                    f'[backup] brings setting {name} (kind = "{kind}", per_device = true):'
                    " a recipe may only give it a default",
                )
            continue
        settings.append(Setting(name, kind, default, help_text, per_device=True))
    services = tuple(s.name for s in recipe.services)
    files = [
        GeneratedFile(path, content=text, mode=0o755)
        for path, text in scripts(recipe.name, services, section).items()
    ]
    files += [
        GeneratedFile(ENV_FILE, content=ENV_TEMPLATE, mode=0o600),
        GeneratedFile(REPOSITORY_FILE, content="{{ settings.backup_repository }}", mode=0o600),
    ]
    agent = Service(
        name=SERVICE,
        exec=(AGENT,),
        root_reason="reads every service's data to back it up, restores it with its owners "
        "and starts the services once /data is ready",
    )
    packages = PACKAGES + (SQLITE_PACKAGES if section.sqlite else ())
    debian = replace(
        recipe.debian,
        packages=tuple(dict.fromkeys((*recipe.debian.packages, *packages))),
        executables=tuple(
            dict.fromkeys(
                (
                    *recipe.debian.executables,
                    *EXECUTABLES,
                    RESTORE,
                    BACKUP,
                    *(("/usr/bin/sqlite3",) if section.sqlite else ()),
                )
            )
        ),
        keep=tuple(dict.fromkeys((*recipe.debian.keep, CA_CERTIFICATES))),
    )
    return replace(
        recipe,
        services=(*(replace(s, down=True) for s in recipe.services), agent),
        files=(*recipe.files, *files),
        settings=tuple(settings),
        debian=debian,
        backup=section,
    )
