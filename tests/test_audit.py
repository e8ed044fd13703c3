"""appliancekit audit: every check passes on a compliant image and fails on an image made to
violate it. The images are tiny trees sealed by the real seal stage (mkfs.erofs +
veritysetup) into a disk.img laid out as the manifest records; one slow test audits the real
homepage appliance."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from appliancekit import supervisor
from appliancekit.audit import CHECKS, run_audit
from appliancekit.digest import sha256_file
from appliancekit.manifest import Manifest, write_manifest
from appliancekit.seal import seal_tree

from .conftest import run_cli

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("mkfs.erofs", "fsck.erofs", "veritysetup")),
    reason="erofs-utils / cryptsetup-bin not installed",
)
MIB = 1 << 20
RUN_AS_WWW = f"#!{supervisor.EXECLINEB} -P\n{supervisor.APPLYUIDGID} -u 33 -g 33 -G 33\n"
WEB_PACKAGE = {
    "name": "web",
    "version": "1.0-1",
    "architecture": "arm64",
    "role": "root",
    "sha256": "ab" * 32,
    "size": 1000,
}
Tree = Callable[[Path], None]


def _write(root: Path, path: str, text: str, mode: int = 0o644, uid: int = 0) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    os.chown(target, uid, uid)
    os.chmod(target, mode)  # after chown, which clears setuid and setgid
    return target


def compliant_tree(root: Path) -> None:
    """A web appliance as the build makes one: a service as www-data, port 80, /tmp sticky."""
    _write(
        root, "/etc/passwd", "root:x:0:0::/root:/nonexistent\nwww-data:x:33:33::/:/nonexistent\n"
    )
    _write(root, "/etc/group", "root:x:0:\nwww-data:x:33:\n")
    _write(root, "/etc/web/web.conf", "server {\n    listen 80;\n    listen [::]:80;\n}\n")
    _write(root, "/etc/web/admin.conf", "listen 127.0.0.1:9000;\nport = 0\n")  # loopback, off
    _write(root, "/etc/services", "ssh 22/tcp\nhttp 80/tcp\n")  # names ports, opens none
    _write(root, f"{supervisor.SERVICE_DIR}/web/run", RUN_AS_WWW + '"/usr/sbin/web"\n', 0o755)
    _write(root, "/usr/sbin/web", "\x7fELF not really\n", 0o755)
    _write(root, "/usr/lib/python3/dist-packages/webapp-2.1.dist-info/METADATA", "Name: webapp\n")
    # vendored inside webapp: recorded as part of it
    _write(root, "/usr/lib/python3/dist-packages/webapp/_vendor/six-1.16.dist-info/METADATA", "")
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "bin").symlink_to("usr/bin")


def make_image(
    directory: Path,
    *changes: Tree,
    ports: tuple[int, ...] = (80,),
    services: tuple[dict[str, str], ...] = ({"name": "web", "user": "www-data"},),
    packages: tuple[dict[str, object], ...] = (
        WEB_PACKAGE,
        {**WEB_PACKAGE, "name": "webapp", "version": "2.1", "role": "pypi"},
    ),
    cmdline_hash: str | None = None,
) -> Path:
    """An image directory (manifest.json + disk.img with a root and a verity partition)."""
    tree = directory.parent / f"{directory.name}.tree"
    tree.mkdir(parents=True)
    compliant_tree(tree)
    for change in changes:
        change(tree)
    sealed = seal_tree(tree, directory.parent / f"{directory.name}.seal", "audit-test")
    directory.mkdir()
    disk = directory / "disk.img"
    root_size = -(-sealed.erofs_image.stat().st_size // MIB) * MIB
    verity_size = -(-sealed.verity_image.stat().st_size // MIB) * MIB
    with open(disk, "wb") as out:
        out.seek(MIB)
        out.write(sealed.erofs_image.read_bytes())
        out.seek(MIB + root_size)
        out.write(sealed.verity_image.read_bytes())
        out.truncate(MIB + root_size + verity_size)
    partitions = [
        {"name": "ak-root", "role": "root", "number": 1, "offset": MIB, "size": root_size},
        {"name": "ak-verity", "role": "verity", "number": 2}
        | {"offset": MIB + root_size, "size": verity_size},
    ]
    size = disk.stat().st_size
    manifest = Manifest.from_json(
        {
            "name": directory.name,
            "recipe": "web",
            "board": "qemu-virt-arm64",
            "arch": "arm64",
            "suite": "trixie",
            "boot": "direct",
            "inputs": "0" * 64,
            "appliancekit": "test",
            "settings": {},
            "packages": list(packages),
            "kernel_version": "6.12",
            "kernel_cmdline": f"console=ttyAMA0 ak.roothash={cmdline_hash or sealed.root_hash} "
            f"ak.salt={sealed.salt} ak.datablocks={sealed.data_blocks}",
            "initramfs_modules": [],
            "verity": {
                "root_hash": sealed.root_hash,
                "salt": sealed.salt,
                "data_blocks": sealed.data_blocks,
            },
            "disk": {"path": "disk.img", "size": size, "sha256": sha256_file(disk)}
            | {"partitions": partitions},
            "sizes": {"disk_bytes": size},
            "probes": [],
            "ports": list(ports),
            "services": list(services),
        }
    )
    write_manifest(directory, manifest)
    return directory


def results(image_dir: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {r.name: (r.status, r.findings) for r in run_audit(image_dir).results}


@pytest.fixture(scope="module")
def compliant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image(tmp_path_factory.mktemp("audit") / "web")


def test_compliant_image_passes_every_check(compliant: Path) -> None:
    got = results(compliant)
    assert set(got) == set(CHECKS)
    assert all(status == "passed" for status, _ in got.values()), got


def _failed(image_dir: Path, check: str) -> tuple[str, ...]:
    got = results(image_dir)
    status, findings = got[check]
    assert status == "failed", got[check]
    others = {name: s for name, (s, _) in got.items() if name != check and s != "passed"}
    assert not others, others  # the violation trips this check only
    return findings


def test_verity_fails_on_a_changed_root(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img")
    blocks = json.loads((image / "manifest.json").read_text())["verity"]["data_blocks"]
    last = MIB + blocks * 4096 - 1  # the last byte the hash tree covers
    with open(image / "disk.img", "r+b") as disk:
        disk.seek(last)
        byte = disk.read(1)
        disk.seek(last)
        disk.write(bytes([byte[0] ^ 0xFF]))
    got = results(image)
    assert got["verity"][0] == "failed"
    assert "does not verify against the root hash" in got["verity"][1][0]


def test_verity_fails_when_the_kernel_gets_another_root_hash(tmp_path: Path) -> None:
    findings = _failed(make_image(tmp_path / "img", cmdline_hash="0" * 64), "verity")
    assert findings == (
        f"kernel command line has ak.roothash={'0' * 64}, the manifest "
        + json.loads((tmp_path / "img/manifest.json").read_text())["verity"]["root_hash"],
    )


def test_disk_changed_after_the_build_fails(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img")
    with open(image / "disk.img", "r+b") as disk:  # the gap before the root partition
        disk.seek(4096)
        disk.write(b"changed")
    findings = _failed(image, "disk-sha256")
    assert len(findings) == 1 and "the manifest records" in findings[0]


@pytest.mark.parametrize(
    ("path", "category"),
    [
        ("/usr/bin/dash", "shell"),
        ("/usr/sbin/agetty", "getty"),
        ("/usr/bin/login", "login"),
        ("/usr/sbin/sshd", "remote shell"),
        ("/usr/bin/dpkg", "package manager"),
        ("/usr/bin/aarch64-linux-gnu-gcc-14", "compiler"),
    ],
)
def test_forbidden_program_fails(tmp_path: Path, path: str, category: str) -> None:
    image = make_image(tmp_path / "img", lambda root: _write(root, path, "\x7fELF", 0o755))
    assert _failed(image, "forbidden-programs") == (f"{category}: {path}",)


def test_forbidden_program_as_a_link_fails(tmp_path: Path) -> None:
    def link(root: Path) -> None:
        (root / "usr/bin").mkdir(parents=True, exist_ok=True)
        (root / "usr/bin/sh").symlink_to("busybox")

    image = make_image(tmp_path / "img", link)
    assert _failed(image, "forbidden-programs") == ("shell: /usr/bin/sh -> busybox",)


def test_setuid_file_fails(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", lambda root: _write(root, "/usr/bin/ping", "x", 0o4755))
    assert _failed(image, "setuid") == ("setuid 0o4755: /usr/bin/ping",)


def test_setgid_file_fails(tmp_path: Path) -> None:
    image = make_image(
        tmp_path / "img", lambda root: _write(root, "/usr/bin/wall", "x", 0o2755, uid=5)
    )
    assert _failed(image, "setuid") == ("setgid 0o2755: /usr/bin/wall",)


def test_world_writable_file_fails(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", lambda root: os.chmod(root / "etc/web/web.conf", 0o666))
    assert _failed(image, "world-writable") == ("world-writable file 0o666: /etc/web/web.conf",)


def test_world_writable_directory_without_sticky_bit_fails(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", lambda root: os.chmod(root / "tmp", 0o777))
    assert _failed(image, "world-writable") == ("world-writable directory 0o777: /tmp",)


def test_service_as_root_without_a_reason_fails(tmp_path: Path) -> None:
    def as_root(root: Path) -> None:
        _write(root, f"{supervisor.SERVICE_DIR}/web/run", '#!/x -P\n"/usr/sbin/web"\n', 0o755)

    services = ({"name": "web", "user": "root"},)
    findings = _failed(make_image(tmp_path / "img", as_root, services=services), "service-users")
    assert findings == ("service web runs as root and the recipe does not say why (root_reason)",)
    reason = ({"name": "web", "user": "root", "root_reason": "binds port 80, then drops"},)
    assert results(make_image(tmp_path / "ok", as_root, services=reason))["service-users"][0] == (
        "passed"
    )


def test_service_as_another_user_than_declared_fails(tmp_path: Path) -> None:
    services = ({"name": "web", "user": "web"},)
    findings = _failed(make_image(tmp_path / "img", services=services), "service-users")
    assert findings == ("service web runs as www-data, the recipe declares web",)


def test_undeclared_service_fails(tmp_path: Path) -> None:
    def extra(root: Path) -> None:
        _write(root, f"{supervisor.SERVICE_DIR}/miner/run", RUN_AS_WWW + '"/x"\n', 0o755)

    findings = _failed(make_image(tmp_path / "img", extra), "service-users")
    assert findings == ("service miner runs as www-data but the manifest declares no such service",)


@pytest.mark.parametrize(
    ("path", "text", "port"),
    [
        ("/etc/web/extra.conf", "server {\n  listen 0.0.0.0:8080 default_server;\n}\n", 8080),
        ("/etc/powerdns/pdns.conf", "webserver-port=8081\n", 8081),
        ("/etc/postfix/master.cf", "smtp      inet  n  -  y  -  -  smtpd\n", 25),
        ("/etc/synapse/homeserver.yaml", "listeners:\n  - port: 8448\n", 8448),
    ],
)
def test_undeclared_port_fails(tmp_path: Path, path: str, text: str, port: int) -> None:
    image = make_image(tmp_path / "img", lambda root: _write(root, path, text))
    findings = _failed(image, "declared-ports")
    assert len(findings) == 1 and findings[0].startswith(f"{path}:")
    assert f"port {port} is not declared" in findings[0]


def test_unrecorded_python_distribution_fails(tmp_path: Path) -> None:
    findings = _failed(make_image(tmp_path / "img", packages=(WEB_PACKAGE,)), "packages-recorded")
    assert findings == (
        "/usr/lib/python3/dist-packages/webapp-2.1.dist-info: Python distribution webapp 2.1 "
        "is not recorded",
    )


def test_package_without_version_or_hash_fails(tmp_path: Path) -> None:
    broken = (
        {**WEB_PACKAGE, "version": ""},
        {**WEB_PACKAGE, "name": "webapp", "version": "2.1", "role": "pypi", "sha256": "x"},
    )
    findings = _failed(make_image(tmp_path / "img", packages=broken), "packages-recorded")
    assert findings == (
        "packages[0] (web): no version",
        "packages[1] (webapp): no sha256 of the package file",
    )


def test_cli_text_json_and_junit(tmp_path: Path, compliant: Path) -> None:
    junit = tmp_path / "audit.xml"
    ok = run_cli("audit", str(compliant), "--junit", str(junit))
    assert ok.returncode == 0, ok.stderr
    assert f"{len(CHECKS)} checks, 0 failed: the image is compliant" in ok.stdout
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("failures") == "0"
    assert {case.get("name") for case in suite.iter("testcase")} == set(CHECKS)

    bad = make_image(tmp_path / "bad", lambda root: _write(root, "/usr/bin/su", "x", 0o4755))
    failed = run_cli("audit", str(bad), "--json", "--junit", str(junit))
    assert failed.returncode == 1 and failed.stderr == ""
    report = json.loads(failed.stdout)
    assert report["passed"] is False
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["setuid"] == statuses["forbidden-programs"] == "failed"
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "2"
    failure = next(c for c in suite.iter("testcase") if c.get("name") == "setuid").find("failure")
    assert failure is not None and "/usr/bin/su" in (failure.text or "")


def test_cli_bad_input_is_one_line(tmp_path: Path, compliant: Path) -> None:
    missing = run_cli("audit", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    unknown = run_cli("audit", str(compliant), "--check", "nope")
    assert unknown.returncode == 2 and "unknown audit check 'nope'" in unknown.stderr
    ports = run_cli("audit", "--boot", str(compliant), "--ports", "1-99999")
    assert ports.returncode == 2 and "--ports" in ports.stderr
    assert len(ports.stderr.strip().splitlines()) == 1
    assert "Traceback" not in missing.stderr + unknown.stderr + ports.stderr


LYNIS_REPORT = """# Lynis Report
suggestion[]=LYNIS|This release is more than 4 months old.|-|-|
warning[]=AUTH-9204|Multiple users with UID 0 found in passwd file|-|-|
suggestion[]=SHLL-6211|Check /etc/shells|/bin/sh|-|
user_with_uid_zero[]=toor:0
"""


def test_lynis_report_parsing() -> None:
    from appliancekit.audit.lynis import parse_report

    assert [str(f) for f in parse_report(LYNIS_REPORT)] == [
        "warning AUTH-9204: Multiple users with UID 0 found in passwd file",
        "suggestion SHLL-6211: Check /etc/shells (/bin/sh)",
    ]


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("lynis"), reason="lynis not installed (setup-host.sh)")
def test_lynis_on_the_extracted_root(tmp_path: Path, compliant: Path) -> None:
    """Real Lynis with --rootdir: nothing on the compliant root; a second UID-0 account and
    a duplicate UID (both in the image's /etc/passwd, not the host's) fail the check."""
    ok = run_cli("audit", str(compliant), "--lynis", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lynis = {c["name"]: c for c in json.loads(ok.stdout)["checks"]}["lynis"]
    assert lynis["status"] == "passed" and lynis["findings"] == [], lynis

    def accounts(root: Path) -> None:
        passwd = root / "etc/passwd"
        passwd.write_text(passwd.read_text() + "toor:x:0:0::/:/nonexistent\n")
        passwd.write_text(passwd.read_text() + "www2:x:33:33::/:/nonexistent\n")

    bad = make_image(tmp_path / "bad", accounts)
    report = run_audit(bad, lynis=True)
    result = next(r for r in report.results if r.name == "lynis")
    assert result.status == "failed" and not report.passed
    assert result.findings[:2] == (
        "warning AUTH-9204: Multiple users with UID 0 found in passwd file",
        "warning AUTH-9208: Multiple accounts found with same UID",
    )


@pytest.mark.slow
def test_real_homepage_image_is_compliant(homepage_image: Path) -> None:
    report = run_audit(homepage_image)
    assert report.passed, [r for r in report.results if r.status != "passed"]
