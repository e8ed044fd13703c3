"""The per-device settings every appliance with a `[backup]` section has.

Where the backups go and the keys to them differ per device and are secrets: they are given
at flash time (or in EC2 user-data), reach the agent through a per-device file only root
can read, and never appear on the console (restic prints repository URLs with the password
replaced by ***).
"""

from __future__ import annotations

from appliancekit.settings_kinds import SettingKind

# (name, kind, default, help): recipe.Setting is built from these by agent.expand (this
# module must not import recipe.py, which imports the backup package lazily).
BACKUP_SETTINGS: tuple[tuple[str, SettingKind, str | int | None, str], ...] = (
    (
        "backup_repository",
        SettingKind.SECRET,
        None,
        "restic repository: rest:https://USER:PASSWORD@HOST:8000/USER/NAME/ (a restic REST "
        "server such as the backup appliance) or s3:https://HOST/BUCKET/NAME (AWS S3, Garage). "
        "Empty: no backups",
    ),
    ("backup_password", SettingKind.SECRET, None, "restic's repository password (encryption)"),
    ("backup_s3_key_id", SettingKind.SECRET, None, "S3 access key id (s3: repositories)"),
    ("backup_s3_secret", SettingKind.SECRET, None, "S3 secret access key (s3: repositories)"),
    ("backup_s3_region", SettingKind.STRING, None, "S3 region (e.g. eu-west-1, garage)"),
    ("backup_interval", SettingKind.INT, 21600, "Seconds from one backup to the next"),
    ("backup_keep_daily", SettingKind.INT, 7, "Daily snapshots kept (restic forget)"),
    ("backup_keep_weekly", SettingKind.INT, 5, "Weekly snapshots kept"),
    ("backup_keep_monthly", SettingKind.INT, 12, "Monthly snapshots kept"),
    (
        "backup_retry",
        SettingKind.INT,
        60,
        "Seconds between tries of a restore that failed (the services wait for it)",
    ),
    (
        "restore",
        SettingKind.STRING,
        None,
        "At first boot, restore /data from the backup repository before any service starts: "
        "latest, or a snapshot id. If the restore fails the services do not start on empty "
        "data: the console says why and the restore is tried again",
    ),
)
