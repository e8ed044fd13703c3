"""PID 1 of the sealed root: s6-svscan supervising one s6 service directory per service.

Why s6 and not systemd (boot time under TCG and size): docs/architecture.md, with the
figures in docs/measurements.md. s6-svscan + execline restart services, run each as its own
user, and need no shell: run files are execline scripts whose commands are named by absolute
path. The scan directory must be writable (s6-supervise keeps its state there), so the
initramfs copies it from the sealed root to /run/service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from appliancekit.minimise import ClosureRequest
from appliancekit.recipe import Service, User
from appliancekit.tree import RootTree

PACKAGES = ("s6", "execline")
SERVICE_DIR = "/etc/appliancekit/service"  # copied to SCAN_DIR by the initramfs
SCAN_DIR = "/run/service"
INIT = ("/usr/bin/s6-svscan", SCAN_DIR)
# The real interpreter: /usr/bin/execlineb is an execline wrapper that re-execs this one
# after setting PATH, which would drag in importas/export/exec for nothing.
EXECLINEB = "/usr/lib/execline/bin/execlineb"
APPLYUIDGID = "/usr/bin/s6-applyuidgid"
EXPORT = "/usr/lib/execline/bin/export"
CD = "/usr/lib/execline/bin/cd"
IF = "/usr/lib/execline/bin/if"
IFELSE = "/usr/lib/execline/bin/ifelse"
ELTEST = "/usr/lib/execline/bin/eltest"


def quote(word: str) -> str:
    """An execline word: always double-quoted, so spaces, braces and $ stay literal."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def run_script(service: Service, users: Mapping[str, User]) -> str:
    # No fd juggling: s6-svscan got the console as stdout and stderr from the initramfs and
    # every service inherits both, so logs reach the serial console. Each exec costs time.
    lines = [f"#!{EXECLINEB} -P"]
    for key, value in service.environment:
        lines.append(f"{EXPORT} {quote(key)} {quote(value)}")
    if service.working_directory != "/":
        lines.append(f"{CD} {quote(service.working_directory)}")
    if service.user != "root":
        user = users[service.user]
        gids = ",".join(str(g) for g in (user.gid, *_extra_gids(user, users)))
        lines.append(f"{APPLYUIDGID} -u {user.uid} -g {user.gid} -G {gids}")
    main = " ".join(quote(word) for word in service.exec)
    if service.setup:
        if service.creates:
            # ifelse { test } { then } else...: once `creates` exists, skip straight to exec
            lines.append(f"{IFELSE} {{ {ELTEST} -e {quote(service.creates)} }} {{ {main} }}")
        for command in service.setup:
            lines.append(f"{IF} {{ {' '.join(quote(word) for word in command)} }}")
    lines.append(main)
    return "\n".join(lines) + "\n"


def _extra_gids(user: User, users: Mapping[str, User]) -> list[int]:
    return [users[g].gid for g in user.groups if g in users]


def install(
    tree: RootTree, services: Sequence[Service], users: Mapping[str, User]
) -> ClosureRequest:
    """Add the service directories; return what the supervisor needs kept from packages."""
    run_files = []
    helpers: set[str] = set()
    for service in services:
        if service.setup:
            helpers |= {IF, *(command[0] for command in service.setup)}
            if service.creates:
                helpers |= {IFELSE, ELTEST}
        path = f"{SERVICE_DIR}/{service.name}/run"
        tree.add_file(path, run_script(service, users), mode=0o755)
        if service.down:  # s6-supervise leaves it down until `s6-svc -u` (the backup agent)
            tree.add_file(f"{SERVICE_DIR}/{service.name}/down", "")
        run_files.append(path)
    return ClosureRequest(
        executables=(
            INIT[0],
            "/usr/bin/s6-supervise",
            APPLYUIDGID,
            EXPORT,
            CD,
            *sorted(helpers),
            *run_files,
        ),
        origin="supervisor",
    )
