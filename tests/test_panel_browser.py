"""`appliancekit panel` in a real browser (Debian's chromium, headless, through selenium and
chromium-driver). Screenshots of every page looked at are kept in
BASETEMP/panel-screenshots/.

- A test on a synthetic image (no boot): a secret typed into the card form (a mail user's
  password, a TLS key) reaches the card image and nothing else: not the server log, not any
  page, not even the form that comes back after a refused value.
- A slow test on the example cloud with the session's homepage image: log in, see the cloud,
  build and boot-test its web member (the real pipeline, shown as it runs) and see it pass,
  publish it (SD-card release and a signed deploy-repository commit), approve and hold its
  update, and download a card image whose settings.env holds the form's values.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliancekit.devsettings import setting_records
from appliancekit.disk import write_sha256sums
from appliancekit.flash import read_device_settings
from appliancekit.manifest import load_manifest, write_manifest
from appliancekit.recipe import find_recipe

from .conftest import REPO
from .panel_support import (
    PASSWORD,
    Browser,
    PanelServer,
    copy_project,
    needs_chromium,
    unpack_card,
)
from .test_publish_support import make_image, needs_disk_tools

pytestmark = [needs_chromium, needs_disk_tools]

LAB_CLOUD = """\
[cloud]
domain = "lab.example"
network = "10.9.0.0/24"

[[member]]
name = "ns"
recipe = "dns"
board = "qemu-virt-arm64"
role = "dns"
address = "10.9.0.2"

[[member]]
name = "mail"
recipe = "mailserver"
board = "qemu-virt-arm64"
role = "mail"
address = "10.9.0.4"
"""
USER_PASSWORD = "Pw-for-alice-7c1e9q"
TLS_KEY = "TLSKEYsecret0123456789zyxw"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    shots = tmp_path_factory.getbasetemp() / "panel-screenshots"
    shots.mkdir(exist_ok=True)
    downloads = tmp_path_factory.mktemp("panel-downloads")
    browser = Browser(shots, downloads)
    yield browser
    browser.quit()


def text_of(browser: Browser, element_id: str) -> str:
    return browser.by_id(element_id).text  # type: ignore[attr-defined]


def synthetic_mail_image(images: Path) -> Path:
    """A small image named like the mail member's, with the mailserver recipe's settings."""
    image = make_image(
        images / "mailserver-qemu-virt-arm64",
        name="mailserver-qemu-virt-arm64",
        recipe="mailserver",
    )
    manifest = load_manifest(image)
    records = setting_records(find_recipe("mailserver", REPO / "recipes"))
    write_manifest(image, dataclasses.replace(manifest, setting_records=records))
    write_sha256sums(image, ["disk.img", "manifest.json"])
    return image


@pytest.mark.slow  # a browser under a loaded machine: tens of seconds
def test_a_secret_typed_into_the_card_form_reaches_only_the_card(
    browser: Browser, tmp_path: Path
) -> None:
    root = copy_project(tmp_path / "project", REPO)
    (root / "clouds" / "lab.toml").write_text(LAB_CLOUD)
    images = root / "images"
    synthetic_mail_image(images)
    server = PanelServer(root, images, tmp_path / "state", tmp_path)
    try:
        # logged out, every page sends to the login; a wrong password does not get in
        browser.get(server.url + "clouds/lab", "logged-out")
        assert "/login" in browser.driver.current_url
        browser.log_in(server.url, password="not-the-password")
        assert "not the panel's password" in text_of(browser, "login-error")
        browser.log_in(server.url)
        browser.screenshot("lab-clouds")
        browser.get(server.url + "clouds/lab/members/mail", "mail-member")
        # the form asks a user name and password, and the secrets as password fields
        assert browser.by_id("field-tls_key").get_attribute("type") == "password"  # type: ignore[attr-defined]
        # a refused value: the form comes back without the secrets in it
        browser.fill("field-hostname", "not a host name")
        browser.fill("field-users-user", "alice")
        browser.fill("field-users-password", USER_PASSWORD)
        browser.fill("field-tls_key", TLS_KEY)
        browser.click("make-card")
        browser.screenshot("card-form-refused")
        assert "not a host name" in text_of(browser, "error-hostname")
        assert browser.by_id("field-tls_key").get_attribute("value") == ""  # type: ignore[attr-defined]
        # a refused secret is described, never quoted
        browser.fill("field-hostname", "post")
        browser.fill("field-users-user", "alice")
        browser.fill("field-users-password", USER_PASSWORD)
        browser.fill("field-tls_key", TLS_KEY + "$bad")
        browser.click("make-card")
        browser.screenshot("card-secret-refused")
        assert "value is not shown" in text_of(browser, "error-tls_key")
        # accepted: a job writes the card and offers it for download
        browser.fill("field-hostname", "post")
        browser.fill("field-users-user", "alice")
        browser.fill("field-users-password", USER_PASSWORD)
        browser.fill("field-tls_key", TLS_KEY)
        browser.click("make-card")
        job = browser.wait_for_job(120, "card-job")
        assert job["state"] == "passed", job
        packed = browser.download(".img.zst")
        card = unpack_card(packed, tmp_path / "card.img")
        settings = read_device_settings(card, load_manifest(images / "mailserver-qemu-virt-arm64"))
        assert settings is not None
        assert settings["hostname"] == "post" and settings["tls_key"] == TLS_KEY
        name, _, hashed = settings["users"].partition(":")
        assert name == "alice" and hashed.startswith("{SHA512-CRYPT}$6$")
        crypt = hashed.removeprefix("{SHA512-CRYPT}")
        salt = crypt.split("$")[2]
        again = subprocess.run(
            ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
            input=USER_PASSWORD + "\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert again == crypt  # the password the form was given
        # the cloud's own secrets went onto the card too, as `cloud build` puts them
        cloud_secrets = json.loads((images / "clouds" / "lab" / "secrets.json").read_text())
        assert settings["dkim_key"]
        # every page there is to see, after the fact
        for page in ("", "clouds/lab", "clouds/lab/members/mail", "jobs", "jobs/1"):
            browser.get(server.url + page, "after-" + (page.replace("/", "-") or "index"))
    finally:
        server.stop()
    log = server.log_text()
    assert "POST /clouds/lab/members/mail/card" in log  # the log is there, and it is the server's
    hidden = [USER_PASSWORD, TLS_KEY, settings["dkim_key"], *cloud_secrets.values()]
    for secret in hidden:
        assert secret not in log
        for page in browser.pages:
            assert secret not in page
    assert PASSWORD not in log
    state_files = "".join(p.read_text(errors="replace") for p in (tmp_path / "state").glob("*"))
    assert PASSWORD not in state_files  # stored hashed


@pytest.mark.slow
def test_example_cloud_boot_test_publish_update_and_card(
    browser: Browser, homepage_image: Path, session_images: Path, tmp_path: Path
) -> None:
    from appliancekit.release.signing import keygen, verify

    deploy = tmp_path / "deploy"
    subprocess.run(["git", "init", "-q", str(deploy)], check=True)
    keys = keygen(tmp_path / "keys")
    server = PanelServer(
        REPO,
        session_images,
        tmp_path / "state",
        tmp_path,
        releases=tmp_path / "releases",
        deploy_repo=deploy,
        sign_key=keys.secret,
    )
    try:
        browser.log_in(server.url)
        browser.click("cloud-example")
        browser.screenshot("example-cloud")
        members = text_of(browser, "members")
        for name in ("ns", "web", "mail", "matrix"):
            assert name in members
        assert "example.org." in text_of(browser, "dns-records")
        assert "MX" in text_of(browser, "dns-records")
        browser.get(server.url + "clouds/example/members/web", "web-member")
        browser.click("boot-test")
        # the job page shows the pipeline's steps while it runs
        browser.wait(
            lambda d: "boot test" in text_of(browser, "job-steps"), 600, "no boot-test step shown"
        )
        browser.screenshot("boot-test-running")
        job = browser.wait_for_job(900, "boot-test-finished")
        assert job["state"] == "passed" and job["summary"].startswith("PASS"), job
        # the boot's serial console was followed into the page while it ran
        assert "appliancekit: switching root" in text_of(browser, "job-console")
        browser.get(server.url + "clouds/example/members/web", "web-member-tested")
        assert text_of(browser, "health").startswith("boot test passed")
        assert "appliancekit: switching root" in text_of(browser, "serial-tail")
        browser.click("serial-link")
        browser.screenshot("serial-log")
        assert "appliancekit: sealed root verified and mounted" in text_of(browser, "serial-log")

        # approve this release: the decision is kept where deploy and publish read it
        sha = load_manifest(homepage_image).disk.sha256
        browser.get(server.url + "clouds/example/members/web", "before-approve")
        browser.click("update-approve")
        browser.screenshot("approved")
        assert text_of(browser, "update-gate") == f"approved {sha[:12]}"
        gates = json.loads((session_images / "clouds" / "example" / "updates.json").read_text())
        assert gates["members"]["web"] == {
            "decision": "approve",
            "release": sha,
            "at": gates["members"]["web"]["at"],
        }
        # publish the approved release: SD card, and a signed commit for the update agents
        browser.click("publish")
        job = browser.wait_for_job(600, "publish-finished")
        assert job["state"] == "passed", job
        name = "homepage-qemu-virt-arm64"
        assert (tmp_path / "releases" / name / f"{name}.img.zst").is_file()
        sums = deploy / "homepage" / "qemu-virt-arm64" / "SHA256SUMS"
        assert sha in sums.read_text()
        verify(sums, keys.public)

        # hold: the member's updates stop here
        browser.get(server.url + "clouds/example/members/web", "before-hold")
        browser.click("update-hold")
        browser.screenshot("held")
        assert text_of(browser, "update-gate").startswith("held")

        # a card image with the form's settings
        browser.fill("field-hostname", "kitchen")
        browser.fill("field-net_address", "10.42.0.33/24")
        browser.fill("field-net_gateway", "10.42.0.1")
        browser.click("make-card")
        job = browser.wait_for_job(300, "card-finished")
        assert job["state"] == "passed", job
        packed = browser.download("kitchen")
        card = unpack_card(packed, tmp_path / "card.img")
        settings = read_device_settings(card, load_manifest(homepage_image))
        assert settings is not None
        assert settings["hostname"] == "kitchen"
        assert settings["net_address"] == "10.42.0.33/24"
        assert settings["net_gateway"] == "10.42.0.1"
        assert settings["net_address6"] == "fd42:0:0:1::3/64"  # the cloud's, kept
    finally:
        server.stop()
        (session_images / "clouds" / "example" / "updates.json").unlink(missing_ok=True)
    log = server.log_text()
    assert PASSWORD not in log
