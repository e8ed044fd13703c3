"""Backups and restores in QEMU (appliancekit/backup), lean: two boots of the mail server,
each on a fresh disk of its own: the first on qemu-virt-arm64, the second on ec2-x86_64 (the
move across boards and architectures: a Pi's mail server brought up on EC2). They are also
the mail server's boot test in this suite (as tests/restore_support.py is for DNS and
Matrix): the recipe's first-boot probes run on the first, its after-reboot probes on the
restored second, so the suite boots a mail server twice, not four times.

- The first passes the recipe's first-boot probes (mail submitted, received, DKIM-signed,
  filed by Sieve, spam to Junk), receives more mail, its user flags messages, and it backs up
  to restic's REST server (trixie's Debian package, run on the host by the test). Then its
  power is pulled in the middle of its next backup.
- The second (ec2-x86_64, a fresh disk: the device a user moves to) gets restore=latest in
  its user-data.
  While the backend is unreachable, then holds a repository with another password, then one
  without snapshots, its services stay down (nothing answers on port 25) and the console
  says why; once the real repository is back it restores, and IMAP shows the same messages
  with the same flags, signed with the same DKIM key under the same TLS certificate, and the
  recipe's after-reboot probes pass on the restored data. It then
  backs up into the same repository (the next backup after the kill succeeds), and
  `restic check` passes.

S3 backends, and the backup appliance (recipes/backup) booted: tests/test_backup_s3_boot.py.
Secrets (the REST server's password, the restic passwords) never appear on any console.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import shutil
import socket
import ssl
import time
from pathlib import Path

import pytest

from appliancekit.backup.host import HostTools, host_tools, rest_server
from appliancekit.backup.vm import SAVED, STARTING, Vm
from appliancekit.backup.vm import boot as boot_image
from appliancekit.board import find_board
from appliancekit.build import BuildResult
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.probes import ProbeResult
from appliancekit.qemu import free_port
from appliancekit.recipe import ProbeKind
from appliancekit.usernet import host_address

from .conftest import PROJECT, ApplianceCache
from .restore_support import phase_probes, probe_ports, run_probes

pytestmark = pytest.mark.slow

REST_USER = "mail"
REST_PASSWORD = "rest-secret-5e1d9a"
HTPASSWD = "mail:$2b$05$OY4NLzDoYp7pjSoI/Tb.Y.l/vFaXXmhE.skhkr7a1X2GIaIGL2xqW\n"
RESTIC_PASSWORD = "restic-secret-3b7f02"
WRONG_PASSWORD = "restic-other-8a61c4"
SECRETS = (REST_PASSWORD, RESTIC_PASSWORD, WRONG_PASSWORD)
PROBE_USER, PROBE_PASSWORD = "probe", "appliancekit-probe"  # mailserver's [test] account


@pytest.fixture(scope="module")
def tools() -> HostTools:
    return host_tools(PROJECT.recipes_dir, Cache(default_cache_dir()))


def boot(
    result: BuildResult, board: str, workdir: Path, settings: dict[str, str], ports: tuple[int, ...]
) -> contextlib.AbstractContextManager[Vm]:
    return boot_image(
        result.output_dir,
        result.manifest,
        find_board(board, PROJECT.boards_dir),
        workdir,
        settings,
        ports,
    )


def host(board: str) -> str:
    return host_address(find_board(board, PROJECT.boards_dir))


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a secret reached the console: {secret[:6]}..."


# --------------------------------------------------------------------------- IMAP


def imap_flags(port: int) -> dict[str, set[str]]:
    """Subject -> flags of every message in INBOX (STARTTLS; the certificate is the
    server's own, self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with imaplib.IMAP4("127.0.0.1", port, timeout=60) as imap:
        imap.starttls(context)
        imap.login(PROBE_USER, PROBE_PASSWORD)
        imap.select("INBOX")
        _, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        out: dict[str, set[str]] = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = set(re.findall(rb"\\[A-Za-z]+", item[0].split(b"BODY")[0]))
            subject = item[1].decode().split(":", 1)[1].strip()
            out[subject] = {f.decode() for f in flags} - {"\\Recent"}
        return out


def set_flags(port: int, wanted: dict[str, str]) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with imaplib.IMAP4("127.0.0.1", port, timeout=60) as imap:
        imap.starttls(context)
        imap.login(PROBE_USER, PROBE_PASSWORD)
        imap.select("INBOX")
        for subject, flags in wanted.items():
            _, found = imap.search(None, "SUBJECT", f'"{subject}"')
            for number in found[0].split():
                imap.store(number.decode(), "+FLAGS", flags)


def smtp_banner(port: int) -> bytes:
    """What a client connecting to the SMTP port reads first (b"" when nothing listens
    behind QEMU's forward)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 5) as s:
        s.settimeout(5)
        with contextlib.suppress(OSError):
            return s.recv(100)
    return b""


SERVICE_LINE = re.compile(r"postfix/\w+\[\d+\]|Dovecot v\d|rspamd \d+\.\d+\.\d+ is loading")
DKIM_RECORD = re.compile(r"^; value: (v=DKIM1; k=rsa; p=\S+?)\r?$", re.M)  # consoles end lines in \r\n


# --------------------------------------------------------------------------- the probes


def assert_mail_probes(first: list[ProbeResult], after: list[ProbeResult]) -> None:
    """The recipe's probes on the first server, and its after-reboot ones on the restored
    server: the mail the first one took is there, signed and filed, on the second."""
    results = {p.name: p for p in first} | {f"{p.name} (after restore)": p for p in after}
    failed = [f"{name}: {p.detail}" for name, p in results.items() if not p.ok]
    assert not failed, failed
    assert len(first) == 11 and len(after) == 6, sorted(results)
    signed = results["message delivered, DKIM-signed (IMAP 143, STARTTLS) (after restore)"]
    assert "d=example.org; s=mail;" in signed.detail
    assert "Tagged: 1 message(s)" in results["tagged message filed by Sieve (IMAPS 993)"].detail
    checked = results["incoming message checked: SPF, DKIM, DMARC, ARC results"].detail
    assert "Authentication-Results" in checked
    junk = results["spam marked by rspamd and filed into Junk by Sieve (after restore)"].detail
    assert "Junk: 1 message(s) 'cheap watches'; X-Spam: Yes" in junk


# --------------------------------------------------------------------------- the move

BOARD = "qemu-virt-arm64"
MOVED_TO = "ec2-x86_64"  # another board, loader and architecture: Maildirs and keys carry over


@pytest.mark.timeout(4800)  # two mail server builds and boots, each waiting for rspamd under TCG
def test_mail_server_backs_up_survives_a_kill_and_moves_to_a_fresh_disk(
    appliances: ApplianceCache, tools: HostTools, tmp_path: Path
) -> None:
    image = appliances.build("mailserver", BOARD)
    moved = appliances.build("mailserver", MOVED_TO)
    users = dict(image.manifest.extra.get("test_settings") or {})["users"]
    server_dir = tmp_path / "rest"
    port = free_port()
    path = f"{REST_USER}/box"
    repository = f"rest:http://{REST_USER}:{REST_PASSWORD}@{host(BOARD)}:{port}/{path}/"
    moved_repository = f"rest:http://{REST_USER}:{REST_PASSWORD}@{host(MOVED_TO)}:{port}/{path}/"
    host_repository = f"rest:http://{REST_USER}:{REST_PASSWORD}@127.0.0.1:{port}/{path}/"
    first_probes, after_probes = phase_probes(image.manifest, {"users": users})
    tcp, _ = probe_ports(first_probes + after_probes, (25, 143))
    subjects = ["move me 1", "move me 2", "move me 3"]
    flags = {
        "move me 1": "(\\Flagged)",
        "move me 2": "(\\Seen)",
        "move me 3": "(\\Seen \\Answered)",
    }

    # 1. the first mail server: mail in, flags set, a backup after that; then the power is
    # pulled in the middle of the next backup
    settings = {
        "users": users,
        "backup_repository": repository,
        "backup_password": RESTIC_PASSWORD,
        # a pause between backups: restic under TCG would otherwise starve rspamd's start
        "backup_interval": "60",
    }
    with (
        rest_server(tools, server_dir, htpasswd=HTPASSWD, port=port),
        boot(image, BOARD, tmp_path / "first", settings, tcp) as vm,
    ):
        vm.probe(ProbeKind.SMTP, 25, timeout=1500)  # rspamd (the milter) ready
        first_results = run_probes(vm, first_probes, 1500)
        failed = [f"{r.name}: {r.detail}" for r in first_results if not r.ok]
        assert not failed, f"{failed}\n{vm.machine.failure_tail(40)}"
        for subject in subjects:
            vm.probe(ProbeKind.SMTP_SEND, 25, to="probe@example.org", subject=subject,
                     **{"from": "someone@example.net"})  # fmt: skip
            vm.probe(ProbeKind.IMAP_MESSAGE, 143, user=PROBE_USER, password=PROBE_PASSWORD,
                     subject=subject)  # fmt: skip
        set_flags(vm.forwards[143], flags)
        before = imap_flags(vm.forwards[143])
        started = vm.wait(STARTING, 900, after=len(vm.serial()))
        began = time.monotonic()
        vm.wait(SAVED, 1200, after=started)
        took = time.monotonic() - began
        # the next backup, cut off about halfway through (as long as the last one took)
        killed_at = vm.wait(STARTING, 900, after=len(vm.serial()))
        time.sleep(took / 2)
        vm.machine.kill()
        first_serial = vm.serial()
    assert set(before) >= set(subjects), before
    assert {"\\Flagged"} <= before["move me 1"]
    assert {"\\Seen", "\\Answered"} <= before["move me 3"]
    assert not SAVED.search(first_serial, killed_at), "the backup ended before the kill"

    # 2. the new mail server on another board's fresh disk: restore=latest, with everything
    # wrong first
    repo_dir = server_dir / path
    real = server_dir / "real-box"
    repo_dir.rename(real)
    settings = {
        "users": users,
        "backup_repository": moved_repository,
        "backup_password": RESTIC_PASSWORD,
        "restore": "latest",
        "backup_retry": "3",
        "backup_interval": "3600",
    }
    failed = "appliancekit: backup: restore FAILED"
    with boot(moved, MOVED_TO, tmp_path / "second", settings, tcp) as vm:
        # unreachable: no server listens yet
        mark = vm.wait(failed, 1200)
        assert smtp_banner(vm.forwards[25]) == b""
        # another repository (another password) at that place
        repo_dir.parent.mkdir(parents=True, exist_ok=True)
        with rest_server(tools, server_dir, htpasswd=HTPASSWD, port=port):
            init = tools.run_restic(host_repository, WRONG_PASSWORD, "init")
            assert init.returncode == 0, init.stderr
            mark = vm.wait("wrong password or no key found", 900, after=mark)
            mark = vm.wait(failed, 600, after=mark)
            assert smtp_banner(vm.forwards[25]) == b""
            # the right password, but no snapshot yet
            shutil.rmtree(repo_dir)
            init = tools.run_restic(host_repository, RESTIC_PASSWORD, "init")
            assert init.returncode == 0, init.stderr
            mark = vm.wait("no snapshot found", 900, after=mark)
            mark = vm.wait(failed, 600, after=mark)
            assert smtp_banner(vm.forwards[25]) == b""
            # the real repository, with the killed backup's leftovers in it
            shutil.rmtree(repo_dir)
            real.rename(repo_dir)
            restored = vm.wait(
                "/data restored from snapshot latest: starting the services", 1200, after=mark
            )
            vm.probe(ProbeKind.SMTP, 25, timeout=1500)
            after = imap_flags(vm.forwards[143])
            # the recipe's after-reboot probes, on the restored data (reads: after the flags)
            after_results = run_probes(vm, after_probes, 1500)
            # the first backup after the kill succeeds, into the same repository
            vm.wait(SAVED, 1200, after=restored)
            second_serial = vm.serial()
            # the killed backup's lock is another host's and younger than restic's 30 minutes
            # for stale locks: nothing else writes now, so check reads without one
            check = tools.run_restic(host_repository, RESTIC_PASSWORD, "--no-lock", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert after == before, (before, after)
    assert_mail_probes(first_results, after_results)
    # every failure was explained before any service said a word
    head = second_serial[: second_serial.index("/data restored from snapshot latest")]
    for reason in (
        "cannot open the backup repository",
        "connection refused",
        "wrong password or no key found",
        "no snapshot found",
    ):
        assert reason in head, reason
    # no service logged a line before the restore (restic's own output names /data/postfix
    # and Dovecot's index files, so look for the daemons' log lines)
    assert not SERVICE_LINE.search(head), SERVICE_LINE.search(head)
    # the DKIM key and the TLS certificate came along: nothing was made anew
    assert first_serial.count("no DKIM key given: generating one") == 1
    assert first_serial.count("acme: no certificate yet: a self-signed one for example.org") == 1
    assert 'mail._domainkey.example.org. 3600 IN TXT ( "v=DKIM1; k=rsa; p="' in first_serial
    assert "no DKIM key given: generating one" not in second_serial
    assert "making a self-signed one" not in second_serial
    assert DKIM_RECORD.findall(first_serial)
    assert DKIM_RECORD.findall(second_serial)[-1:] == DKIM_RECORD.findall(first_serial)[-1:]
    assert_no_secrets(first_serial, second_serial)
