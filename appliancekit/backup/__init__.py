"""Backups of /data with restic, and restore at first boot (docs/architecture.md, "Backups").

A recipe's `[backup]` section (section.py) says which of its data paths to back up, what to
leave out, and which SQLite databases to copy with SQLite's online backup first. At load
time `agent.expand` turns it into ordinary recipe content: the per-device settings of
settings.py, the Debian packages restic runs with, an s6 service `backup` (execline scripts
from templates/) that restores /data when `restore` asks for it, starts the other services
(they are built `down`), and backs /data up every `backup_interval` seconds. status.py reads
the status file the agent writes.
"""
