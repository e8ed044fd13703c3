"""The panel's parts without a browser: the password kept as a hash, the login and CSRF
guard on every page and form, update approvals, the card form's checks (a refused secret is
never quoted), the job reporter, and the members' facts shown as "—" where no source exists.
The browser tests are in test_panel_browser.py."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from appliancekit.cloud.updates import Decision, load_gates, may_update, set_gate
from appliancekit.devsettings import setting_records
from appliancekit.errors import UserError
from appliancekit.manifest import load_manifest
from appliancekit.panel.actions import PanelPaths
from appliancekit.panel.app import PanelConfig, create_app
from appliancekit.panel.auth import (
    CREDENTIALS,
    load_credentials,
    read_password_file,
    session_key,
    set_password,
)
from appliancekit.panel.cardform import card_fields, read_card_form
from appliancekit.panel.jobs import Job, JobQueue, JobReporter, JobResult
from appliancekit.recipe import find_recipe

from .conftest import PROJECT, REPO
from .test_publish_support import make_image, needs_disk_tools

PASSWORD = "a long enough password"


@pytest.fixture()
def client(tmp_path: Path) -> FlaskClient:
    state = tmp_path / "state"
    credentials = set_password(state, PASSWORD)
    paths = PanelPaths(
        images=tmp_path / "images", releases=tmp_path / "releases", cards=state / "cards"
    )
    app = create_app(PanelConfig(PROJECT, paths, credentials, session_key(state)), JobQueue())
    return app.test_client()


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


def log_in(client: FlaskClient) -> str:
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"csrf": token, "password": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    return csrf_of(client.get("/").text)


def test_the_password_is_stored_as_a_scrypt_hash_only(tmp_path: Path) -> None:
    credentials = set_password(tmp_path, PASSWORD)
    stored = (tmp_path / CREDENTIALS).read_text()
    assert PASSWORD not in stored and '"scrypt:' in stored
    assert stat.S_IMODE((tmp_path / CREDENTIALS).stat().st_mode) == 0o600
    assert load_credentials(tmp_path) == credentials
    assert credentials.verify(PASSWORD) and not credentials.verify(PASSWORD + "x")
    assert PASSWORD not in repr(credentials)
    key = session_key(tmp_path)
    assert session_key(tmp_path) == key and len(key) == 32
    with pytest.raises(UserError, match="at least 8"):
        set_password(tmp_path / "other", "short")
    (tmp_path / "pw").write_text("from a file\n")
    assert read_password_file(tmp_path / "pw") == "from a file"


def test_every_page_and_action_needs_the_login(client: FlaskClient) -> None:
    for path in ("/", "/clouds/example", "/clouds/example/members/web", "/jobs", "/jobs/1"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"] == "/login", path
    assert client.get("/jobs/1.json").status_code == 401
    response = client.post("/clouds/example/members/web/boot-test")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    token = csrf_of(client.get("/login").text)
    refused = client.post("/login", data={"csrf": token, "password": "wrong password"})
    assert refused.status_code == 200 and "not the panel" in refused.text
    assert client.get("/").status_code == 302


def test_forms_without_the_session_token_are_refused(client: FlaskClient, tmp_path: Path) -> None:
    log_in(client)
    response = client.post("/clouds/example/members/web/update", data={"decision": "hold"})
    assert response.status_code == 400
    response = client.post(
        "/clouds/example/members/web/update", data={"decision": "hold", "csrf": "forged"}
    )
    assert response.status_code == 400
    assert not (tmp_path / "images" / "clouds" / "example" / "updates.json").exists()


def test_the_example_cloud_shows_dashes_where_there_is_no_source(client: FlaskClient) -> None:
    log_in(client)
    page = client.get("/clouds/example").text
    for member in ("ns", "web", "mail", "matrix"):
        assert f'id="member-{member}"' in page
    # nothing is built in this images directory: every fact is a dash
    row = page[page.index('id="member-web"') :]
    row = row[: row.index("</tr>")]
    assert "— (not built)" in row and row.count("—") >= 5
    # the zone from cloud/records.py
    assert "mail._domainkey.example.org." in page and "10 mail.example.org." in page
    assert client.get("/clouds/nosuch").status_code == 404
    assert client.get("/clouds/example/members/nosuch").status_code == 404


def test_hold_approve_and_auto_are_kept_where_deploy_reads_them(
    client: FlaskClient, tmp_path: Path
) -> None:
    token = log_in(client)
    url = "/clouds/example/members/web/update"
    # nothing built: there is no release to approve
    response = client.post(url, data={"csrf": token, "decision": "approve"})
    assert response.status_code == 400 and "no built release" in response.text
    response = client.post(url, data={"csrf": token, "decision": "hold"})
    assert response.status_code == 302
    state = tmp_path / "images" / "clouds" / "example"
    gates = load_gates(state)
    assert gates["web"].decision == Decision.HOLD
    assert not may_update(gates, "web", "a" * 64)
    assert (
        'updates: <strong id="update-gate">held' in client.get("/clouds/example/members/web").text
    )
    client.post(url, data={"csrf": token, "decision": "auto"})
    assert load_gates(state) == {} and may_update(load_gates(state), "web", "a" * 64)


def test_update_approvals_file(tmp_path: Path) -> None:
    sha = "ab" * 32
    set_gate(tmp_path, "mail", Decision.APPROVE, sha)
    data = json.loads((tmp_path / "updates.json").read_text())
    assert data["format"] == 1 and data["members"]["mail"]["release"] == sha
    gates = load_gates(tmp_path)
    assert may_update(gates, "mail", sha) and not may_update(gates, "mail", "cd" * 32)
    assert may_update(gates, "web", "cd" * 32)  # no entry: automatic
    (tmp_path / "updates.json").write_text('{"members": {"mail": {"decision": "approve"}}}')
    with pytest.raises(UserError, match="members.mail"):
        load_gates(tmp_path)
    (tmp_path / "updates.json").write_text("{not json")
    with pytest.raises(UserError, match="updates.json"):
        load_gates(tmp_path)


@pytest.fixture(scope="module")
def mail_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import dataclasses

    from appliancekit.disk import write_sha256sums
    from appliancekit.manifest import write_manifest

    image = make_image(
        tmp_path_factory.mktemp("panel") / "mailserver-qemu-virt-arm64",
        name="mailserver-qemu-virt-arm64",
        recipe="mailserver",
    )
    records = setting_records(find_recipe("mailserver", REPO / "recipes"))
    write_manifest(image, dataclasses.replace(load_manifest(image), setting_records=records))
    write_sha256sums(image, ["disk.img", "manifest.json"])
    return image


@needs_disk_tools
def test_the_card_form_checks_by_kind_and_never_quotes_a_secret(mail_image: Path) -> None:
    manifest = load_manifest(mail_image)
    recipe = find_recipe("mailserver", REPO / "recipes")
    cloud_values = {"hostname": "mail", "dkim_key": "Q0xPVUQtREtJTQ==", "domain": "lab.example"}
    fields = card_fields(manifest, recipe, cloud_values)
    by_name = {f.name: f for f in fields}
    assert by_name["hostname"].group == "General" and by_name["hostname"].value == "mail"
    assert by_name["users"].input_type == "users" and by_name["users"].group == "Users"
    assert by_name["tls_key"].input_type == "password" and by_name["tls_key"].label == "TLS key"
    assert by_name["dkim_key"].value == "" and by_name["dkim_key"].from_cloud  # never shown
    assert by_name["net_interface"].group == "Advanced"
    assert "public_suffixes" not in by_name  # not per device
    hostile = "s3cret;}"
    values, errors = read_card_form(
        {"tls_key": hostile, "hostname": "bad name", "users__user": "alice"},
        fields,
        manifest,
        cloud_values,
    )
    assert set(errors) == {"tls_key", "hostname", "users"}
    assert all(hostile not in message for message in errors.values())
    assert "bad name" in errors["hostname"]  # not a secret: the message may quote it
    values, errors = read_card_form(
        {"tls_key": "s3cret", "users__user": "alice", "users__password": "pw pw pw"},
        fields,
        manifest,
        cloud_values,
    )
    assert errors == {}
    assert values["tls_key"] == "s3cret" and values["dkim_key"] == cloud_values["dkim_key"]
    assert values["hostname"] == "mail"  # a blank field keeps the cloud's value
    assert re.fullmatch(r"alice:\{SHA512-CRYPT\}\$6\$[^:]+", values["users"])


def test_the_job_reporter_records_steps_and_progress() -> None:
    job = Job(1, "card", "a card", "example", "web")
    reporter = JobReporter(job)
    reporter.step("writing")
    with reporter.progress("writing", total=200) as task:
        task.advance(50)
        task.update(description="writing 3 MiB/s")
        data = job.to_json()
    assert data["steps"] == ["writing"]
    assert data["progress"] == {"label": "writing 3 MiB/s", "fraction": 0.25}


def test_a_failing_job_shows_one_line_and_a_bug_does_not_log_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = JobQueue()

    def refused(job: Job, reporter: JobReporter) -> JobResult:
        raise UserError("bad value", field="hostname")

    def bug(job: Job, reporter: JobReporter) -> JobResult:
        typed = "".join(["secret-", "value-xyz"])  # a value, not text in this source
        raise KeyError(typed)

    first = queue.submit("card", "one", "c", "m", refused)
    second = queue.submit("card", "two", "c", "m", bug)
    import time

    deadline = time.monotonic() + 10
    while not second.done and time.monotonic() < deadline:
        time.sleep(0.05)
    queue.stop()
    assert first.result is not None and first.result.summary == "hostname: bad value"
    assert second.result is not None and "internal error (KeyError)" in second.result.summary
    assert "secret-value-xyz" not in caplog.text and "KeyError" in caplog.text


def test_publishing_to_the_deploy_repository_respects_the_members_approvals(
    tmp_path: Path,
) -> None:
    from appliancekit.cloud.model import find_cloud
    from appliancekit.panel.actions import holding_members

    cloud = find_cloud("example", PROJECT)
    web = cloud.member("web")
    sha, other = "ab" * 32, "cd" * 32
    assert holding_members(cloud, web, sha, load_gates(tmp_path)) == []
    set_gate(tmp_path, "web", Decision.HOLD, other)
    assert holding_members(cloud, web, sha, load_gates(tmp_path)) == ["web"]
    set_gate(tmp_path, "web", Decision.APPROVE, sha)
    assert holding_members(cloud, web, sha, load_gates(tmp_path)) == []
    assert holding_members(cloud, web, other, load_gates(tmp_path)) == ["web"]
    set_gate(tmp_path, "mail", Decision.HOLD)  # another recipe: another directory there
    assert holding_members(cloud, web, sha, load_gates(tmp_path)) == []


def test_the_serial_follower_feeds_the_job_console(tmp_path: Path) -> None:
    from appliancekit.panel.jobs import SerialFollower

    job = Job(1, "boot-test", "a boot", "example", "web")
    log = tmp_path / "serial.log"
    log.write_text("appliancekit: initramfs started\r\nappliancekit: switch")
    follower = SerialFollower(job)
    follower.follow(log)
    with log.open("a") as out:
        out.write("ing root\n")
    follower.stop()
    assert job.to_json()["console"] == [
        "appliancekit: initramfs started",
        "appliancekit: switching root",
    ]
