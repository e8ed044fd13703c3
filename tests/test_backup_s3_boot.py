"""The backup appliance (recipes/backup) booted, and S3 backups tested for real: two small
boots of one qemu-virt-arm64 image, each on a fresh disk of its own, and a moto server on
loopback that checks every request's SigV4 signature and its IAM policy, as AWS does
(tests/moto_support.s3_users). No mock: restic runs inside the appliances.

1. The first backup appliance is a REST backup target: the host's restic (trixie's Debian
   package, backup/host.py) backs a few files up INTO it, through its REST server's private
   repository for one user. Its own agent backs its /data (that repository) up to S3, in
   path style (`s3:http://HOST:PORT/BUCKET/NAME`); restic's first `init` makes the bucket.
   Until the files are in, its S3 user is denied: its backups fail, the console says why,
   and the next one after it is allowed succeeds. Then its power is pulled, and `restic
   check` of the S3 repository passes.
2. A second backup appliance on a fresh disk (the first one's card died) gets the same S3
   settings and restore=latest. While its S3 user is not allowed (its policy taken away:
   moto answers Access Denied) its REST server stays down (nothing answers on port 8000)
   and the console says why; once allowed, it restores, starts the REST server, and the
   host's restic restores the files from it with the same sha256.

No line of the REST server is on the second console before the restore, and no secret (the
S3 key and its secret, the restic passwords, the REST password) is on either console.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from appliancekit.backup.host import HostTools, host_tools
from appliancekit.backup.vm import SAVED, Vm, boot
from appliancekit.board import find_board
from appliancekit.cache import Cache, default_cache_dir
from appliancekit.usernet import host_address

from .conftest import PROJECT, ApplianceCache
from .moto_support import REGION, AccessKey, moto_server, s3_users
from .test_backup_boot import HTPASSWD, REST_PASSWORD, REST_USER

pytestmark = pytest.mark.slow

BOARD = "qemu-virt-arm64"
FILES_PASSWORD = "files-secret-71c0e2"  # the host's repository inside the appliance
OFFSITE_PASSWORD = "offsite-secret-4d93b8"  # the appliance's own repository on S3
S3_PATH = "offsite/backup-server"  # BUCKET/NAME
S3_USER = "backup-server"
REST_STARTED = "Data directory: /var/lib/restic"  # restic-rest-server's first line
FAILED = "appliancekit: backup: restore FAILED"
BACKUP_FAILED = "appliancekit: backup: FAILED at"
RESTORED = "/data restored from snapshot latest: starting the services"


@pytest.fixture(scope="module")
def tools() -> HostTools:
    return host_tools(PROJECT.recipes_dir, Cache(default_cache_dir()))


def write_files(root: Path) -> dict[str, str]:
    """A few files to back up (random bytes, text, a nested one): relative path -> sha256."""
    contents = {
        "photos/holiday.jpg": os.urandom(300_000),
        "notes.txt": b"the backup server keeps this\n" * 100,
        "deep/er/still.bin": os.urandom(5_000),
    }
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return sha256s(root)


def sha256s(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def rest_answers(port: int) -> bool:
    """Whether an HTTP server answers behind QEMU's forward of guest port 8000 (a 401 for a
    request without credentials is an answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def wait_for_rest(vm: Vm, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not rest_answers(vm.forwards[8000]):
        if not vm.machine.is_running() or time.monotonic() > deadline:
            raise AssertionError(f"the REST server never answered\n{vm.machine.failure_tail(40)}")
        time.sleep(2)


def s3_env(key: AccessKey) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": key.key_id,
        "AWS_SECRET_ACCESS_KEY": key.secret,
        "AWS_DEFAULT_REGION": REGION,
    }


@pytest.mark.timeout(2400)  # two boots of a small image and restic under TCG
def test_backup_appliance_serves_rest_backs_up_to_s3_and_a_fresh_one_restores_it(
    appliances: ApplianceCache, tools: HostTools, tmp_path: Path
) -> None:
    image = appliances.build("backup", BOARD)
    board = find_board(BOARD, PROJECT.boards_dir)
    files = tmp_path / "files"
    originals = write_files(files)
    bcrypt = HTPASSWD.strip().split(":", 1)[1]

    def files_repository(vm: Vm) -> str:
        port = vm.forwards[8000]
        return f"rest:http://{REST_USER}:{REST_PASSWORD}@127.0.0.1:{port}/{REST_USER}/files/"

    with moto_server() as url, s3_users(url) as users:
        key = users.add(S3_USER)
        port = url.rsplit(":", 1)[1]
        settings = {
            "users": f"{REST_USER}:{{BLF-CRYPT}}{bcrypt}",
            "backup_repository": f"s3:http://{host_address(board)}:{port}/{S3_PATH}",
            "backup_password": OFFSITE_PASSWORD,
            "backup_s3_key_id": key.key_id,
            "backup_s3_secret": key.secret,
            "backup_s3_region": REGION,
        }
        secrets = (REST_PASSWORD, FILES_PASSWORD, OFFSITE_PASSWORD, key.key_id, key.secret)

        # 1. the first backup appliance: files in over REST, its /data out to S3. Its S3 user
        # is allowed only once the files are in: every snapshot that reaches S3 holds them
        # whole, and a backup refused by S3 is seen to fail, say why and be tried again
        users.allow(S3_USER, False)
        first = settings | {"backup_interval": "5"}
        with boot(image.output_dir, image.manifest, board, tmp_path / "a", first, (8000,)) as vm:
            wait_for_rest(vm)
            for args in (("init",), ("backup", str(files))):
                done = tools.run_restic(files_repository(vm), FILES_PASSWORD, *args)
                assert done.returncode == 0, done.stdout + done.stderr
            refused = vm.wait(BACKUP_FAILED, 600)
            users.allow(S3_USER, True)
            vm.wait(SAVED, 600, after=refused)
            vm.machine.kill()
            first_serial = vm.serial()
        assert "Access Denied" in first_serial[:refused]
        # nothing writes to S3 now; the killed appliance may have left its lock (another
        # host's, and younger than restic's 30 minutes for stale ones): check reads without
        host_s3 = f"s3:{url}/{S3_PATH}"
        check = tools.run_restic(
            host_s3, OFFSITE_PASSWORD, "--no-lock", "check", env=s3_env(users.admin)
        )
        assert check.returncode == 0, check.stdout + check.stderr

        # 2. a new backup appliance on a fresh disk restores from S3, once it is allowed to
        users.allow(S3_USER, False)
        second = settings | {"restore": "latest", "backup_retry": "3", "backup_interval": "3600"}
        with boot(image.output_dir, image.manifest, board, tmp_path / "b", second, (8000,)) as vm:
            mark = vm.wait("Access Denied", 600)
            mark = vm.wait(FAILED, 600, after=mark)
            assert not rest_answers(vm.forwards[8000])
            users.allow(S3_USER, True)
            vm.wait(RESTORED, 600, after=mark)
            wait_for_rest(vm)
            restored = tmp_path / "restored"
            done = tools.run_restic(
                files_repository(vm),
                FILES_PASSWORD,
                "restore",
                f"latest:{files}",
                "--target",
                str(restored),
            )
            assert done.returncode == 0, done.stdout + done.stderr
            second_serial = vm.serial()
    assert sha256s(restored) == originals
    head = second_serial[: second_serial.index(RESTORED)]
    assert "cannot open the backup repository" in head
    assert REST_STARTED not in head, "the REST server started before the restore"
    assert REST_STARTED in second_serial
    for text in (first_serial, second_serial):
        for secret in secrets:
            assert secret not in text, f"a secret reached the console: {secret[:6]}..."
