"""Backups (appliancekit/backup): the [backup] section, what it adds to a recipe, the agent's
scripts, the status file and the backup recipe. Fast; the boots are in test_backup_boot.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from appliancekit.backup import agent
from appliancekit.backup.section import SQLITE_DIR
from appliancekit.backup.status import parse_status
from appliancekit.errors import UserError
from appliancekit.recipe import find_recipe, load_recipe, resolve_settings
from appliancekit.settings_kinds import SettingKind

from .conftest import PROJECT, run_cli
from .test_recipe import VALID, line_no, write_recipe

BACKUP = """
[backup]
paths = ["/var/lib/nginx/state"]
exclude = ["*.cache"]
sqlite = ["/var/lib/nginx/state/db.sqlite3"]
"""


def recipe(name: str):  # type: ignore[no-untyped-def]
    return find_recipe(name, PROJECT.recipes_dir)


def test_section_becomes_an_agent_that_starts_the_services(tmp_path: Path) -> None:
    loaded = load_recipe(write_recipe(tmp_path, VALID + BACKUP))
    section = loaded.backup
    assert section is not None
    assert section.paths == ("/data/nginx/state",)
    assert section.sqlite[0].database == "/data/nginx/state/db.sqlite3"
    assert section.sqlite[0].copy == f"{SQLITE_DIR}/nginx/state/db.sqlite3"
    services = {s.name: s for s in loaded.services}
    assert services["nginx"].down and not services["backup"].down
    assert services["backup"].user == "root" and services["backup"].root_reason
    assert services["backup"].exec == (agent.AGENT,)
    settings = {s.name: s for s in loaded.settings}
    for name in ("backup_repository", "backup_password", "backup_s3_key_id", "backup_s3_secret"):
        assert settings[name].secret and settings[name].per_device, name
    assert settings["restore"].per_device and not settings["restore"].secret
    assert settings["backup_interval"].kind == SettingKind.INT
    assert {"restic", "sqlite3", "coreutils"} <= set(loaded.debian.packages)
    scripts = {f.path: f.content or "" for f in loaded.files}
    backup = scripts[agent.BACKUP]
    # the consistent copy is backed up, the live database (and its journals) never
    assert f'--exclude "{section.sqlite[0].database}"' in backup
    assert f'--exclude "{section.sqlite[0].database}-*"' in backup
    assert ".backup '/data/.appliancekit/backup/sqlite/nginx/state/db.sqlite3'" in backup
    assert f"/data/nginx/state {SQLITE_DIR}" in backup
    assert "cp /data/.appliancekit/backup/sqlite/nginx/state/db.sqlite3" in scripts[agent.RESTORE]
    assert "s6-svc -u /run/service/nginx" in scripts[agent.AGENT]


def test_without_paths_every_data_path_is_backed_up(tmp_path: Path) -> None:
    loaded = load_recipe(write_recipe(tmp_path, VALID + "\n[backup]\n"))
    assert loaded.backup is not None
    assert loaded.backup.paths == ("/data/nginx",)  # VALID's [data] path, /var/lib/nginx
    mail = recipe("mailserver").backup
    assert mail is not None
    # the ACME account (/data/acme) too: a restored server keeps its account at the CA
    assert mail.paths == (
        "/data/postfix", "/data/vmail", "/data/rspamd", "/data/mail-tls", "/data/acme"
    )


def test_dns_and_matrix_back_up_their_sqlite_databases_through_a_copy() -> None:
    """PowerDNS's and Synapse's databases go into each snapshot as SQLite online-backup
    copies, never as the live files (or their -wal/-shm/-journal); Synapse's media fetched
    from other servers and its URL previews stay out (refetched on demand), its own media and
    signing key are in."""
    dns = recipe("dns")
    assert dns.backup is not None and dns.backup.paths == ("/data/powerdns",)
    assert [c.database for c in dns.backup.sqlite] == ["/data/powerdns/pdns.sqlite3"]
    matrix = recipe("matrix")
    assert matrix.backup is not None
    assert matrix.backup.paths == ("/data/synapse", "/data/tls", "/data/acme")
    assert [c.database for c in matrix.backup.sqlite] == ["/data/synapse/homeserver.db"]
    for loaded in (dns, matrix):
        scripts = {f.path: f.content or "" for f in loaded.files}
        backup, restore = scripts[agent.BACKUP], scripts[agent.RESTORE]
        (copy,) = loaded.backup.sqlite
        assert f'--exclude "{copy.database}" --exclude "{copy.database}-*"' in backup
        assert f"sqlite3 -readonly -bail {copy.database} \".backup '{copy.copy}'\"" in backup
        assert f"ifelse -n {{ eltest -e {copy.database} }} {{ exit 0 }}" in backup  # not made yet
        assert f"ifelse -n {{ eltest -e {copy.copy} }} {{ exit 0 }}" in restore
        assert f"cp {copy.copy} {copy.database}" in restore
        services = [s for s in loaded.services if s.name != agent.SERVICE]
        assert services and all(s.down for s in services)  # the agent starts them
    backup = {f.path: f.content or "" for f in matrix.files}[agent.BACKUP]
    for cache in ("remote_content", "remote_thumbnail", "url_cache", "url_cache_thumbnails"):
        assert f'--exclude "/data/synapse/media/{cache}"' in backup
    assert "local_content" not in backup and "signing.key" not in backup


def test_backups_yield_the_cpu_to_the_services(tmp_path: Path) -> None:
    """A snapshot is background work: under emulation a restic using every core at boot kept
    rspamd from starting. One Go thread, lowest priority; a restore (services still down)
    runs at full speed."""
    loaded = load_recipe(write_recipe(tmp_path, VALID + BACKUP))
    scripts = {f.path: f.content or "" for f in loaded.files}
    assert "export GOMAXPROCS 1" in scripts[agent.AGENT]
    code = "\n".join(s for s in scripts[agent.BACKUP].splitlines() if not s.startswith("#"))
    calls = re.findall(r"(\S+ \S+ \S+ )?(restic backup|restic forget|sqlite3 -readonly)", code)
    assert {c[1] for c in calls} == {"restic backup", "restic forget", "sqlite3 -readonly"}
    assert all(prefix == "nice -n 19 " for prefix, _ in calls), calls
    assert "nice" not in scripts[agent.RESTORE]


def test_scripts_name_only_commands_the_image_keeps(tmp_path: Path) -> None:
    """execline has no PATH at first and no shell: every command a script runs must be
    kept by minimise (agent.EXECUTABLES), and the first one after `export PATH` is named in
    full (execline looks it up before PATH is set)."""
    kept = {p.rsplit("/", 1)[-1] for p in agent.EXECUTABLES} | {"sqlite3"}
    section = load_recipe(write_recipe(tmp_path, VALID + BACKUP)).backup
    assert section is not None and section.sqlite
    for path, text in agent.scripts("homepage", ("nginx",), section).items():
        lines = [line.strip() for line in text.splitlines()]
        assert lines[0].startswith("{% raw %}#!/usr/lib/execline/bin/execlineb")
        words = set()
        for line in lines[1:]:
            if not line or line.startswith("#"):
                continue
            for match in re.finditer(r"(?:^|(?<!\$)[{}] ?)([a-z/][a-z0-9/._-]*)", line):
                words.add(match.group(1))
        commands = {w.rsplit("/", 1)[-1] for w in words if not w.startswith(("/data", "-"))}
        commands -= {"", "raw", "endraw"}
        assert commands <= kept | {"agent", "restore", "backup"}, (path, commands - kept)
        export = [i for i, line in enumerate(lines) if "/export PATH" in line]
        for i in export:
            assert lines[i + 1].startswith("/"), (path, lines[i + 1])


def test_secrets_never_reach_an_argument(tmp_path: Path) -> None:
    """Secrets go to restic by environment (envfile of a root-only per-device file); no
    script substitutes one into a command line, where /proc/PID/cmdline would show it."""
    files = {f.path: f for f in load_recipe(write_recipe(tmp_path, VALID + BACKUP)).files}
    env = files[agent.ENV_FILE]
    assert env.mode == 0o600 and env.owner == "root"
    assert "RESTIC_PASSWORD={{ settings.backup_password }}" in (env.content or "")
    for path in (agent.AGENT, agent.RESTORE, agent.BACKUP):
        text = files[path].content or ""
        for secret in ("RESTIC_PASSWORD", "RESTIC_REPOSITORY", "AWS_SECRET_ACCESS_KEY", "password"):
            assert f"${{{secret}}}" not in text and f"importas -i {secret}" not in text


BAD = [
    (
        '[backup]\npaths = ["/srv/elsewhere"]',
        "backup.paths[0]",
        "is not a [data] path or under one",
    ),
    (
        '[backup]\nsqlite = ["/var/lib/other/db"]',
        "backup.sqlite[0]",
        "is not under a backed-up path",
    ),
    ('[backup]\nexclude = ["a\\"b"]', "backup.exclude[0]", "holds a quote"),
    ("[backup]\nevery = 3", "backup.every", "unknown"),
    (
        '[backup]\n[settings.backup_password]\nkind = "string"',
        "settings.backup_password.kind",
        "a recipe may only give it a default",
    ),
]


@pytest.mark.parametrize(("extra", "field", "fragment"), BAD)
def test_bad_backup_sections_name_file_line_and_field(
    tmp_path: Path, extra: str, field: str, fragment: str
) -> None:
    text = VALID + "\n" + extra + "\n"
    directory = write_recipe(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_recipe(directory)
    message = str(info.value)
    assert message.startswith(f"{directory / 'recipe.toml'}:"), message
    assert f": {field}: " in message and fragment in message and "\n" not in message


def test_backup_needs_data_paths(tmp_path: Path) -> None:
    text = VALID.replace('[data]\npaths = ["/var/lib/nginx"]\n', "") + "\n[backup]\n"
    directory = write_recipe(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_recipe(directory)
    assert f":{line_no(text, '[backup]')}: backup: " in str(info.value)


def test_bad_backup_section_fails_the_command_with_one_line(tmp_path: Path) -> None:
    directory = write_recipe(tmp_path / "recipes", VALID + '\n[backup]\npaths = ["/etc"]\n')
    (tmp_path / "boards").symlink_to(PROJECT.boards_dir)
    text = (directory / "recipe.toml").read_text()
    images = tmp_path / "images"
    result = run_cli(
        "build", "homepage", "--board", "qemu-virt-arm64", "--images", str(images), cwd=tmp_path
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = line_no(text, 'paths = ["/etc"]')
    assert f"recipe.toml:{line}: backup.paths[0]: " in lines[0], lines[0]
    assert not images.exists() or not any(images.rglob("*.img"))


def test_backup_settings_are_checked_like_any_setting(tmp_path: Path) -> None:
    loaded = load_recipe(write_recipe(tmp_path, VALID + BACKUP))
    with pytest.raises(UserError, match="backup_interval"):
        resolve_settings(loaded, {"backup_interval": "soon"})


def test_status_file_format() -> None:
    status = parse_status(
        "result=ok\ntime=2026-11-30T16:00:00Z\nlast_success=2026-11-30T16:00:00Z\n"
        "snapshot=1a2b3c4d\nbytes_total=77824\nbytes_added=3495\nfuture=ignored\n"
    )
    assert (status.result, status.snapshot, status.bytes_total, status.bytes_added) == (
        "ok",
        "1a2b3c4d",
        77824,
        3495,
    )
    failed = parse_status("result=failed\ntime=2026-11-30T17:00:00Z\nlast_success=\n")
    assert failed.result == "failed" and failed.last_success == "never"


def test_backup_recipe_turns_users_into_htpasswd() -> None:
    backup = recipe("backup")
    # its own [backup]: the agent backs its repositories up and starts the REST server
    assert [s.exec[0] for s in backup.services] == ["/usr/bin/restic-rest-server", agent.AGENT]
    assert backup.services[0].down and backup.backup is not None
    assert backup.backup.paths == ("/data/restic",)
    assert "--private-repos" in backup.services[0].exec and backup.services[0].user == "restic"
    users = "alice:{BLF-CRYPT}$2b$05$abc/def.ghi, bob:{BLF-CRYPT}$2y$05$x.y\n"
    out = subprocess.run(
        ["sed", "-f", str(PROJECT.recipes_dir / "backup" / "htpasswd.sed")],
        input=users,
        capture_output=True,
        text=True,
        check=True,
        env={"LC_ALL": "C"},
    ).stdout
    assert out.splitlines() == ["alice:$2b$05$abc/def.ghi", "bob:$2y$05$x.y"]
