"""Backups of the mail server: bytes sent and restore time, each against a baseline measured
in the same run (nothing asserted).

    .venv/bin/python bench/bench_backup.py [--board qemu-virt-arm64] [--images DIR] [--json]

Builds the mail server (or reuses --images), runs restic's REST server (the Debian package of
the appliances' suite, on the host, with its Prometheus counters) and boots the mail server
with backups every 20 s. A backup's bytes sent are the REST server's blob-write counter
between the agent's "starting" line (read as it appears) and its "saved" line (the retention
that follows is not counted).

1. The first backup (it starts as the services start, before rspamd has written its state)
   against the bytes of /data that snapshot covers (restic's total_bytes_processed, printed
   by the agent). The board's first boot to its SMTP banner is timed beside it.
2. Once SMTP answers, one backup that starts after that lets the services' start-up state
   reach the repository; the next one is the idle backup: nothing was delivered since the
   one before, so it is what a backup costs by itself.
3. One mail is delivered (IMAP shows it); the next backup that starts after that carries
   it. Its bytes sent against the idle backup's isolate the mail's cost; against the first
   backup's, they compare it with the whole first copy.
4. A fresh copy of the image with restore=latest: QEMU start to SMTP banner, against the
   first boot of step 1 (same image, same board, no restore).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliancekit.backup.host import bytes_written, host_tools, rest_server  # noqa: E402
from appliancekit.backup.vm import RESTORED, SAVED, STARTING, Vm, boot  # noqa: E402
from appliancekit.board import find_board  # noqa: E402
from appliancekit.build import BuildPlan, build  # noqa: E402
from appliancekit.cache import Cache, default_cache_dir  # noqa: E402
from appliancekit.output import Reporter  # noqa: E402
from appliancekit.project import Project  # noqa: E402
from appliancekit.recipe import ProbeKind, find_recipe, resolve_settings  # noqa: E402
from appliancekit.usernet import host_address  # noqa: E402
from bench.figures import Figure, Unit, table  # noqa: E402

PASSWORD = "bench-restic-password"


def backup_bytes(vm: Vm, port: int, after: int) -> tuple[int, int, int]:
    """The next backup starting past console offset `after`: (bytes the server was sent
    between its "starting" line and its "saved" line, bytes of /data it covers, offset after
    it). Call it before that backup starts: the counter is read when its line appears."""
    start = vm.wait(STARTING, 900, after=after)
    before = bytes_written(port)
    end = vm.wait(SAVED, 900, after=start)
    sent = bytes_written(port) - before
    line = vm.serial()[start : end + 200]
    total = int(line.split("saved at ", 1)[1].split("(", 1)[1].split(" bytes", 1)[0])
    return sent, total, end


def next_backup_bytes(vm: Vm, port: int) -> int:
    """Bytes sent by the first backup that starts from now on."""
    return backup_bytes(vm, port, len(vm.serial()))[0]


def smtp_up(vm: Vm) -> float:
    vm.probe(ProbeKind.SMTP, 25, timeout=900)
    return time.monotonic() - vm.machine.started_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="qemu-virt-arm64")
    parser.add_argument("--images", type=Path, help="build into (or reuse) this directory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    project = Project(ROOT)
    cache = Cache(default_cache_dir())
    board = find_board(args.board, project.boards_dir)
    recipe = find_recipe("mailserver", project.recipes_dir)
    if recipe.backup is None:
        print(
            "bench_backup: recipes/mailserver/recipe.toml declares no [backup] yet "
            "(docs/measurements.md, Backups)",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-backup.") as tmp:
        work = Path(tmp)
        images = args.images or work / "images"
        result = build(
            BuildPlan(recipe, board, resolve_settings(recipe, {}), images), cache, Reporter()
        )
        users = dict(result.manifest.extra.get("test_settings") or {})["users"]
        tools = host_tools(project.recipes_dir, cache)
        with rest_server(tools, work / "rest", metrics=True) as port:
            settings = {
                "users": users,
                "backup_repository": f"rest:http://{host_address(board)}:{port}/mail/",
                "backup_password": PASSWORD,
                "backup_interval": "20",
            }
            ports = (25, 143)
            with (
                boot(result.output_dir, result.manifest, board, work / "a", settings, ports) as vm,
                concurrent.futures.ThreadPoolExecutor(1) as pool,
            ):
                # SMTP is timed while the first backup is watched from its start
                smtp = pool.submit(smtp_up, vm)
                first_sent, data_bytes, _ = backup_bytes(vm, port, 0)
                plain_boot = smtp.result()
                next_backup_bytes(vm, port)  # the services' start-up state goes in
                idle_sent = next_backup_bytes(vm, port)
                vm.probe(ProbeKind.SMTP_SEND, 25, to="probe@example.org", subject="bench mail",
                         **{"from": "someone@example.net"})  # fmt: skip
                vm.probe(ProbeKind.IMAP_MESSAGE, 143, user="probe", password="appliancekit-probe",
                         subject="bench mail")  # fmt: skip
                mail_sent = next_backup_bytes(vm, port)
            settings |= {"restore": "latest", "backup_interval": "3600"}
            with boot(result.output_dir, result.manifest, board, work / "b", settings, ports) as vm:
                restore_boot = smtp_up(vm)
                assert RESTORED in vm.serial(), vm.machine.failure_tail(40)
    B, S = Unit.BYTES, Unit.SECONDS
    figures = [
        Figure("first backup: bytes sent", first_sent, B, "bytes of /data backed up", data_bytes),
        Figure(
            "idle backup (services settled, nothing new): bytes sent",
            idle_sent,
            B,
            "first backup: bytes sent",
            first_sent,
        ),  # fmt: skip
        Figure(
            "backup after one new mail: bytes sent",
            mail_sent,
            B,
            "idle backup: bytes sent",
            idle_sent,
        ),  # fmt: skip
        Figure(
            "backup after one new mail: bytes sent",
            mail_sent,
            B,
            "first backup: bytes sent",
            first_sent,
        ),  # fmt: skip
        Figure(
            "first boot with restore=latest, to SMTP",
            restore_boot,
            S,
            "first boot without restore, to SMTP",
            plain_boot,
        ),  # fmt: skip
    ]
    if args.json:
        print(
            json.dumps({"board": board.name, "figures": [f.to_json() for f in figures]}, indent=2)
        )
    else:
        print(f"mailserver on {board.name}")
        print(table(figures))
        for figure in figures[:4]:
            print(f"  {figure.name}: {figure.value:.0f} bytes / {figure.baseline:.0f} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
