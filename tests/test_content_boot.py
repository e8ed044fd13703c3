"""Content from git in a booted appliance (issue 12 §4): homepage on qemu-virt-arm64,
ec2-x86_64 and cubieboard takes its site from a git branch served by `git http-backend` on
the host, one boot per board through every scenario in turn. The device is in signed mode from the start (site_signer), so the good
commits are signed, and an unsigned one is refused like a bad one.

Timing is not asserted (bench/content_sync.py measures sync latency against the interval):
each wait is a generous deadline, not a figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliancekit.board import find_board
from appliancekit.content.gitserver import GitHttpServer
from appliancekit.content.harness import GUEST_HOST_ADDRESS, ContentMachine
from appliancekit.manifest import read_manifest

from .conftest import PROJECT, ApplianceCache
from .test_content import Repo, signing_args, ssh_key

INTERVAL = 5  # seconds: the smallest content-sync accepts
DEADLINE = 120  # per step, under TCG on a loaded machine


@pytest.mark.slow
@pytest.mark.parametrize("board_name", ["qemu-virt-arm64", "ec2-x86_64", "cubieboard"])
def test_homepage_serves_its_site_from_git(
    appliances: ApplianceCache, tmp_path: Path, board_name: str
) -> None:
    image = appliances.build("homepage", board_name).output_dir
    manifest = read_manifest(image)
    assert manifest is not None
    board = find_board(board_name, PROJECT.boards_dir)
    key = ssh_key(tmp_path, "publisher")
    signed = signing_args(key)
    repo = Repo(tmp_path)
    repo.commit({"index.html": "<p>site v1 from git</p>\n"}, "v1", *signed)
    server = GitHttpServer(tmp_path).start()
    settings = {
        # credentials in the URL (the test server ignores them) must never reach the console
        "site_repo": server.url("site.git", host=f"probe:s3cret-token@{GUEST_HOST_ADDRESS}"),
        "site_interval": str(INTERVAL),
        "site_signer": key.with_suffix(".pub").read_text().strip(),
    }
    try:
        with ContentMachine(image, manifest, board, settings, tmp_path / "vm") as vm:
            # at boot: the branch's commit replaces the image's site
            vm.wait_for_body("site v1 from git", DEADLINE)
            assert vm.get("/.well-known/appliance/hostname")[0] == 200

            # a new commit is served within the interval (plus a fetch)
            v2 = repo.commit(
                {"index.html": "<p>site v2</p>\n", "about.html": "about\n"}, "v2", *signed
            )
            vm.wait_for_body("site v2", DEADLINE)
            assert vm.get("/about.html") == (200, "about\n")
            vm.wait_for_serial(rf"content: site: applied {v2[:12]}", DEADLINE)

            # a commit without index.html is not applied; the old site keeps serving
            bad = repo.commit({"index.html": None, "other.html": "x\n"}, "no index", *signed)
            line = vm.wait_for_serial(rf"content: site: rejected {bad[:12]}", DEADLINE)
            assert "index.html is missing" in line, line
            assert vm.get("/")[1] == "<p>site v2</p>\n"

            # signed mode: an unsigned commit is refused, however good its content
            unsigned = repo.commit({"index.html": "<p>unsigned</p>\n"}, "unsigned")
            line = vm.wait_for_serial(rf"content: site: rejected {unsigned[:12]}", DEADLINE)
            assert "not signed" in line, line
            assert vm.get("/")[1] == "<p>site v2</p>\n"

            # the repository unreachable: the site stays as it is
            server.stop()
            line = vm.wait_for_serial(r"content: site: unreachable: .*serving " + v2[:12], DEADLINE)
            assert GUEST_HOST_ADDRESS in line or "refused" in line, line
            assert vm.get("/")[1] == "<p>site v2</p>\n"

            # and back: the next signed commit is applied
            server.start()
            repo.commit({"index.html": "<p>site v3</p>\n"}, "v3", *signed)
            vm.wait_for_body("site v3", DEADLINE)
            serial = vm.serial()
    finally:
        server.stop()
    assert "s3cret-token" not in serial
    assert "panic:" not in serial and "goroutine " not in serial
