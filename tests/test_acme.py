"""The appliances' certificate scripts (recipes/*/acme/renew and hook: execline, run by the
"acme" service) on the host, against Debian's pebble validating DNS-01 at a real PowerDNS
whose HTTP API the hook writes the challenge record through: the same programs the
appliances run (uacme, curl, openssl, s6, execline), in a private mount namespace where the
scripts' fixed paths (/etc/acme, /var/lib/acme, /var/lib/tls, /run) are scratch directories.
Fast: no guest boots; the slow cloud test runs them inside the appliances."""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from appliancekit.cloud import pdns, testca
from appliancekit.cloud.model import find_cloud
from appliancekit.cloud.roles import acme_settings, tls_names, web_settings
from appliancekit.cloud.secrets import CloudSecrets

from . import pdns_server
from .conftest import PROJECT, REPO

TLS_RECIPES = ("homepage", "mailserver", "matrix")
NEEDED = ("uacme", "curl", "pebble", "s6-svc", "unshare", "openssl")


def test_the_scripts_are_the_same_in_every_tls_recipe() -> None:
    for name in ("renew", "hook"):
        texts = {r: (REPO / "recipes" / r / "acme" / name).read_bytes() for r in TLS_RECIPES}
        assert len(set(texts.values())) == 1, f"acme/{name} differs between {sorted(texts)}"
        assert texts["homepage"].startswith(b"#!/usr/lib/execline/bin/execlineb")


def test_cloud_fills_acme_settings() -> None:
    cloud = find_cloud("example", PROJECT)
    secrets = CloudSecrets("k" * 20, "pem")
    web = acme_settings(cloud, cloud.member("web"), secrets)
    assert web["acme_names"] == "example.org,www.example.org,mta-sts.example.org,web.example.org"
    assert web["acme_dns_api"] == "http://10.42.0.2:8081" and web["acme_dns_zone"] == "example.org"
    assert web["acme_url"] == "https://acme-v02.api.letsencrypt.org/directory"
    # Matrix is delegated by the web member's .well-known: its certificate is its own name's
    assert tls_names(cloud, cloud.member("matrix")) == ["matrix.example.org"]
    assert acme_settings(cloud, cloud.member("mail"), secrets)["acme_names"] == "mail.example.org"
    assert acme_settings(cloud, cloud.dns, secrets) == {}  # no TLS there
    assert web_settings(cloud) == {
        "mta_sts_mode": "testing",
        "mta_sts_mx": "mail.example.org",
        "matrix_server": "matrix.example.org:8448",
    }


def _host_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a mount namespace)"
    missing = [t for t in NEEDED if shutil.which(t) is None]
    if missing or not Path("/usr/lib/execline/bin/execlineb").exists():
        return f"missing host tools {missing} (scripts/setup-host.sh installs them)"
    if not pdns_server.available():
        return "no pdns_server"
    # a private mount namespace keeps the script's tmpfs mounts off the host; a chroot whose
    # / is not a mount point (a fresh-machine run) cannot make / private
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"no private mount namespace here: {probe.stderr.strip()}"
    return None


needs_host = pytest.mark.skipif(_host_ready() is not None, reason=str(_host_ready()))


@pytest.fixture()
def sandbox(tmp_path: Path) -> Path:
    """Directories standing in for the appliance's /etc/acme, /var/lib/acme, /var/lib/tls."""
    for name in ("etc-acme", "lib-acme", "lib-tls"):
        (tmp_path / name).mkdir()
    for name in ("renew", "hook"):
        shutil.copy(REPO / "recipes/homepage/acme" / name, tmp_path / "etc-acme" / name)
    shutil.copy("/usr/lib/ssl/openssl.cnf", tmp_path / "openssl.cnf")
    return tmp_path


def write_env(root: Path, **values: str) -> None:
    defaults = {
        "url": "",
        "names": "",
        "cn": "a.example.test",
        "challenge": "dns-01",
        "dns_api": "",
        "dns_zone": "example.test",
        "days": "30",
        "every": "0",
        "retry": "0",
        "tlsdir": "/var/lib/tls",
        "group": "65534",
        "uid": "65534",
        "gid": "65534",
        "reload": "nginx",
    }
    defaults.update(values)
    (root / "etc-acme/acme.env").write_text("".join(f"{k}={v}\n" for k, v in defaults.items()))


def run_renew(root: Path, ca_pem: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    """acme/renew as the acme service runs it, in a mount namespace whose /etc, /var/lib and
    /run are tmpfs holding only what the script reads (the host's stay untouched)."""
    (root / "ca.pem").write_text(ca_pem)
    script = f"""set -e
mount -t tmpfs tmpfs /etc
mkdir -p /etc/acme /etc/ssl/certs
cp {root}/openssl.cnf /etc/ssl/openssl.cnf
cp {root}/ca.pem /etc/ssl/certs/ca-certificates.crt
mount --bind {root}/etc-acme /etc/acme
mount -t tmpfs tmpfs /var/lib
mkdir /var/lib/acme /var/lib/tls
mount --bind {root}/lib-acme /var/lib/acme
mount --bind {root}/lib-tls /var/lib/tls
mount -t tmpfs tmpfs /run
mkdir -p /run/acme /run/service
exec timeout {timeout} /etc/acme/renew
"""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    )


def chain_of(root: Path) -> tuple[bytes, str]:
    pem = (root / "lib-tls/cert.pem").read_text()
    return ssl.PEM_cert_to_DER_cert(pem), pem


def verify(pem: str, root_pem: str, name: str) -> None:
    """openssl verify: the leaf against the CA's root, with the chain's intermediates."""
    certs = [c + "-----END CERTIFICATE-----\n" for c in pem.split("-----END CERTIFICATE-----")[:-1]]
    work = Path(os.environ.get("TMPDIR", "/tmp"))
    leaf, rest, root_file = (
        work / f"ak-acme-{os.getpid()}-{n}.pem" for n in ("leaf", "chain", "root")
    )
    try:
        leaf.write_text(certs[0])
        rest.write_text("".join(certs[1:]))
        root_file.write_text(root_pem)
        subprocess.run(
            ["openssl", "verify", "-CAfile", str(root_file), "-untrusted", str(rest)]
            + ["-verify_hostname", name, str(leaf)],
            check=True,
            capture_output=True,
        )
    finally:
        for f in (leaf, rest, root_file):
            f.unlink(missing_ok=True)


@needs_host
def test_renew_gets_renews_and_keeps_a_users_certificate(sandbox: Path) -> None:
    """Self-signed first; a DNS-01 certificate from pebble through the PowerDNS API; renewed
    once fewer than acme_renew_days are left; the user's own certificate turns ACME off."""
    with pdns_server.powerdns(sandbox / "pdns") as dns:
        client = pdns.PowerDNS(dns.api_url, dns.api_key)
        client.create_zone("example.test.", ["ns1.example.test."])
        # certificates for a day and 15 s: renewed (fewer than 1 day left) 15 s after issue
        ca = replace(testca.prepare(sandbox / "ca"), lifetime=testca.DAY + 15)
        with testca.pebble(ca, dns.dns_port) as running:
            root_pem = running.issuing_roots()
            names = "a.example.test, b.example.test"
            url = f"https://127.0.0.1:{ca.acme_port}/dir"
            # no URL: a self-signed certificate, and the service pauses (ACME is off)
            write_env(sandbox, names=names)
            off = run_renew(sandbox, ca.listener_root_pem, timeout=5)
            assert off.returncode == 124, off.stderr  # sleep infinity, ended by timeout
            assert "self-signed" in off.stdout
            self_signed, _ = chain_of(sandbox)
            # ACME, DNS-01 through the API; renewal when less than one day is left
            write_env(sandbox, url=url, names=names, dns_api=dns.api_url, days="1")
            (sandbox / "etc-acme/api-header").write_text(f"X-API-Key: {dns.api_key}\n")
            first = run_renew(sandbox, ca.listener_root_pem)
            assert first.returncode == 0, first.stdout + first.stderr
            assert "new certificate for a.example.test, b.example.test" in first.stdout
            der, pem = chain_of(sandbox)
            assert der != self_signed
            verify(pem, root_pem, "b.example.test")
            key_mode = (sandbox / "lib-tls/key.pem").stat().st_mode & 0o777
            assert key_mode == 0o640
            # the challenge record is gone again; nothing else of the zone was touched
            left = [(e.name, e.type) for e in client.zone("example.test.") or []]
            assert not [n for n, _ in left if n.startswith("_acme-challenge")], left
            # still more than a day left: nothing to do
            again = run_renew(sandbox, ca.listener_root_pem)
            assert again.returncode == 0 and "new certificate" not in again.stdout
            assert chain_of(sandbox)[0] == der
            time.sleep(16)
            renewed = run_renew(sandbox, ca.listener_root_pem)
            assert "new certificate" in renewed.stdout, renewed.stdout + renewed.stderr
            der2, pem2 = chain_of(sandbox)
            assert der2 != der
            verify(pem2, root_pem, "a.example.test")
            # a certificate of the user's own: installed as given, and ACME stays off
            own_cert = (sandbox / "ca/pebble.pem").read_bytes()
            own_key = (sandbox / "ca/pebble.key").read_bytes()
            (sandbox / "etc-acme/tls-cert.b64").write_bytes(base64.b64encode(own_cert))
            (sandbox / "etc-acme/tls-key.b64").write_bytes(base64.b64encode(own_key))
            own = run_renew(sandbox, ca.listener_root_pem, timeout=5)
            assert own.returncode == 124 and "ACME is off" in own.stdout, own.stdout
            assert (sandbox / "lib-tls/cert.pem").read_bytes() == own_cert
            assert (sandbox / "lib-tls/key.pem").read_bytes() == own_key
