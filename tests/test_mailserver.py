"""The mailserver appliance (Postfix, Dovecot, rspamd): its settings, the shell-free first-boot
transforms, its probe kinds, and what its sealed root holds. Its boot test (mail submitted
with AUTH is DKIM-signed, filed by a Sieve rule uploaded over ManageSieve, checked for SPF,
DKIM, DMARC and ARC when it comes from outside, spam lands in Junk, and all of it is still
there on the next machine) runs in tests/test_backup_boot.py, on the two machines of the
backup and move: a second boot of its own would cost the suite another rspamd first start."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import jinja2
import pytest

from appliancekit.errors import UserError
from appliancekit.probes import KINDS, run_probe_once
from appliancekit.recipe import Probe, ProbeKind, ProbePhase, find_recipe, resolve_settings
from appliancekit.seal import list_erofs_paths

from .conftest import PROJECT, ApplianceCache, run_cli
from .test_homepage import FORBIDDEN, extract_partition

RECIPE = "mailserver"
RECIPE_DIR = PROJECT.recipes_dir / RECIPE
BOARD = "qemu-virt-arm64"


def mail_recipe():  # type: ignore[no-untyped-def]
    return find_recipe(RECIPE, PROJECT.recipes_dir)


# --------------------------------------------------------------------------- settings


def test_users_setting_is_validated_and_normalised() -> None:
    argon = "$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA"
    value = f"alice:{{SHA512-CRYPT}}$6$s$h  bob:{{ARGON2ID}}{argon}"
    users = resolve_settings(mail_recipe(), {"users": value}).as_dict()["users"]
    assert users == f"alice:{{SHA512-CRYPT}}$6$s$h,bob:{{ARGON2ID}}{argon}"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("domain", "mail_example", "is not a domain name"),
        ("users", "alice:secret", "'alice:...' is not NAME:{SCHEME}HASH"),
        ("users", "alice:{PLAIN}a,alice:{PLAIN}b", "user 'alice' is listed twice"),
    ],
)
def test_bad_settings_are_refused(name: str, value: str, fragment: str) -> None:
    with pytest.raises(UserError) as err:
        resolve_settings(mail_recipe(), {name: value})
    message = str(err.value)
    assert f"settings.{name}" in message and fragment in message and "\n" not in message


@pytest.mark.parametrize(
    ("setting", "needle"), [("domain=example..org", "settings.domain"), ("users=bob", "users")]
)
def test_bad_setting_fails_build_with_one_line(tmp_path: Path, setting: str, needle: str) -> None:
    result = run_cli("build", RECIPE, "--board", BOARD, "-s", setting, "--images", str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


# --------------------------------------------------------------------------- first-boot transforms
# The appliance has no shell: the per-device settings are turned into Dovecot's passwd-file,
# Postfix's tables and resolv.conf by GNU sed scripts (run from execline at boot). The same
# sed runs here.


def sed(script: Path | str, text: str, *options: str) -> str:
    return subprocess.run(
        ["sed", *options, "-f", str(script)],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        env={"LC_ALL": "C"},
    ).stdout


USERS = "alice:{SHA512-CRYPT}$6$s$h,  bob:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$s$h carol:{X}x\n"


def test_users_become_a_passwd_file_and_postfix_tables() -> None:
    init = RECIPE_DIR / "init"
    assert sed(init / "passwd.sed", USERS).splitlines() == [
        "alice:{SHA512-CRYPT}$6$s$h",
        "bob:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$s$h",  # its commas do not split it
        "carol:{X}x",
    ]
    assert sed(init / "recipients.sed", USERS).splitlines() == ["alice ok", "bob ok", "carol ok"]
    assert sed(init / "aliases.sed", USERS).splitlines() == ["postmaster alice", "abuse alice"]
    assert sed(init / "nameservers.sed", " 192.0.2.53, 198.51.100.53").splitlines() == [
        "nameserver 192.0.2.53",
        "nameserver 198.51.100.53",
    ]


PUBLIC_SUFFIXES = """// comment
// ===BEGIN ICANN DOMAINS===
com
uk
co.uk
*.ck
!www.ck
pvt.k12.ma.us
公司.cn

// ===END ICANN DOMAINS===
// ===BEGIN PRIVATE DOMAINS===
blogspot.com
// ===END PRIVATE DOMAINS===
"""


def render_tld_sed(tmp_path: Path, choice: str) -> Path:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(RECIPE_DIR)), undefined=jinja2.StrictUndefined
    )
    script = tmp_path / f"tld-{choice}.sed"
    script.write_text(env.get_template("init/tld.sed").render(settings={"public_suffixes": choice}))
    return script


def test_public_suffix_choices(tmp_path: Path) -> None:
    def suffixes(choice: str) -> list[str]:
        return sed(render_tld_sed(tmp_path, choice), PUBLIC_SUFFIXES, "-n").splitlines()

    assert suffixes("tld") == ["com", "uk"]
    assert suffixes("icann") == ["com", "uk", "co.uk", "*.ck", "!www.ck"]
    assert "blogspot.com" in suffixes("all") and "公司.cn" in suffixes("all")
    with pytest.raises(jinja2.UndefinedError, match="public_suffixes_must_be_tld_icann_or_all"):
        render_tld_sed(tmp_path, "most")


# --------------------------------------------------------------------------- probe kinds


def test_probe_kinds_and_phases() -> None:
    probes = mail_recipe().probes
    assert {"smtp-send", "imap-message", "managesieve", "closed"} <= set(KINDS)
    kinds = {p.kind for p in probes}
    assert {ProbeKind.SMTP_SEND, ProbeKind.IMAP_MESSAGE, ProbeKind.MANAGESIEVE} <= kinds
    # mail is sent on the first boot only; reading it back runs on both boots
    assert all(p.phase == ProbePhase.FIRST for p in probes if p.kind == ProbeKind.SMTP_SEND)
    assert all(p.phase == ProbePhase.EVERY for p in probes if p.kind == ProbeKind.IMAP_MESSAGE)


@contextlib.contextmanager
def fake_server(talk: Callable[[socket.socket], None]) -> Iterator[int]:
    """A one-connection TCP server on localhost running talk(conn) in a thread."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                talk(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.close()
        thread.join(5)


def probe(kind: str, **params: str) -> Probe:
    return Probe(kind=ProbeKind(kind), port=1, params=tuple(sorted(params.items())))


def test_smtp_send_refuses_auth_before_starttls() -> None:
    def talk(conn: socket.socket) -> None:
        conn.sendall(b"220 fake ESMTP\r\n")
        conn.recv(1024)  # EHLO
        conn.sendall(b"250-fake\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n")
        conn.recv(1024)

    with fake_server(talk) as port:
        result = run_probe_once(
            probe("smtp-send", user="u", password="p", to="u@example.org"),
            "127.0.0.1",
            port,
            timeout=5,
        )
    assert not result.ok and "AUTH is offered before STARTTLS" in result.detail


def test_managesieve_needs_starttls() -> None:
    def talk(conn: socket.socket) -> None:
        conn.sendall(b'"IMPLEMENTATION" "fake"\r\n"SASL" "PLAIN"\r\nOK "ready"\r\n')
        conn.recv(1024)

    with fake_server(talk) as port:
        result = run_probe_once(
            probe("managesieve", user="u", password="p", script="keep;"),
            "127.0.0.1",
            port,
            timeout=5,
        )
    assert not result.ok and "offers no STARTTLS" in result.detail


def test_mail_probes_need_their_params() -> None:
    result = run_probe_once(probe("imap-message", user="u"), "127.0.0.1", 1, timeout=1)
    assert not result.ok and "needs params user and password" in result.detail


# --------------------------------------------------------------------------- the appliance


@pytest.mark.slow
def test_sealed_root_has_no_shell(appliances: ApplianceCache, tmp_path: Path) -> None:
    image = appliances.build(RECIPE, BOARD).output_dir
    paths = set(list_erofs_paths(extract_partition(image, "ak-root-a", tmp_path / "root.erofs")))
    basenames = {p.rsplit("/", 1)[-1] for p in paths}
    assert not (FORBIDDEN & basenames), FORBIDDEN & basenames
    # Postfix's and Dovecot's shell scripts stay out; the daemons they would start are in
    assert not {"postfix-script", "post-install", "postfix-wrapper", "health-check.sh"} & basenames
    assert {
        "/usr/lib/postfix/sbin/master",
        "/usr/lib/postfix/sbin/smtpd",
        "/usr/sbin/dovecot",
        "/usr/lib/dovecot/lmtp",
        "/usr/lib/dovecot/modules/lib90_sieve_plugin.so",
        "/usr/bin/rspamd",
        "/etc/mailserver/rspamd-init",
    } <= paths
