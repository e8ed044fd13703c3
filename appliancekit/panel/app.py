"""The panel's web application (Flask): pages, forms and the JSON the job pages poll.

Every page but the login needs the session that the password opens. Every POST carries the
session's CSRF token. Nothing here logs a request's form or query: the access log line is
method, path and status (server.py), and secrets entered in a form go only into the card.
"""

from __future__ import annotations

import hmac
import logging
import secrets as random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import (
    Flask,
    Response,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)

from appliancekit.cloud import records
from appliancekit.cloud.model import Cloud, Member, find_cloud, list_clouds
from appliancekit.cloud.secrets import load_or_create
from appliancekit.cloud.updates import Decision, set_gate
from appliancekit.errors import UserError, one_line_error
from appliancekit.panel.actions import (
    PanelPaths,
    boot_test_job,
    card_job,
    device_defaults,
    publish_job,
)
from appliancekit.panel.auth import Credentials
from appliancekit.panel.cardform import (
    GROUPS,
    PASSWORD_SUFFIX,
    USER_SUFFIX,
    card_fields,
    read_card_form,
)
from appliancekit.panel.jobs import JobQueue, code_path
from appliancekit.panel.status import (
    cloud_state_dir,
    cloud_statuses,
    latest_serial_log,
    member_manifest,
    member_status,
)
from appliancekit.project import Project

log = logging.getLogger("appliancekit.panel")
OPEN_ENDPOINTS = frozenset({"login", "static"})
FAILED_LOGIN_DELAY = 1.0  # seconds: slows down guessing


@dataclass(frozen=True)
class PanelConfig:
    project: Project
    paths: PanelPaths
    credentials: Credentials
    session_key: bytes


def create_app(config: PanelConfig, jobs: JobQueue | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=config.session_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="appliancekit_panel",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        MAX_CONTENT_LENGTH=1 << 20,
    )
    queue = jobs or JobQueue()
    app.extensions["panel_jobs"] = queue
    paths = config.paths
    images = paths.images

    def clouds() -> list[Cloud]:
        return [find_cloud(n, config.project) for n in list_clouds(config.project.clouds_dir)]

    def cloud_and_member(cloud_name: str, member_name: str | None = None) -> tuple[Cloud, Any]:
        if cloud_name not in list_clouds(config.project.clouds_dir):
            abort(404)
        cloud = find_cloud(cloud_name, config.project)
        if member_name is None:
            return cloud, None
        try:
            return cloud, cloud.member(member_name)
        except KeyError:
            abort(404)

    @app.before_request
    def require_login() -> Any:
        if request.endpoint in OPEN_ENDPOINTS:
            return None
        if not session.get("logged_in"):
            if request.path.endswith(".json"):
                return jsonify({"error": "log in first"}), 401
            return redirect(url_for("login"))
        if request.method == "POST":
            check_csrf()
        return None

    def check_csrf() -> None:
        sent = request.form.get("csrf", "")
        if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
            abort(400, "the form is out of date: reload the page and try again")

    @app.context_processor
    def page_globals() -> dict[str, Any]:
        if "csrf" not in session:
            session["csrf"] = random.token_urlsafe(24)
        return {"csrf": session["csrf"], "logged_in": bool(session.get("logged_in"))}

    @app.after_request
    def headers(response: Response) -> Response:
        # the access log: never the query string or the form (a form may carry secrets)
        if request.endpoint != "static":
            log.info(
                "%s %s %s %d",
                request.remote_addr,
                request.method,
                request.path,
                response.status_code,
            )
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; form-action 'self';"
            " frame-ancestors 'none'"
        )
        return response

    @app.errorhandler(UserError)
    def user_error(exc: UserError) -> Any:
        return render_template("error.html", message=exc.one_line()), 400

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        error = None
        if request.method == "POST":
            check_csrf()
            if config.credentials.verify(request.form.get("password", "")):
                session.clear()
                session.permanent = True
                session["logged_in"] = True
                session["csrf"] = random.token_urlsafe(24)
                log.info("login from %s", request.remote_addr)
                return redirect(url_for("index"))
            log.warning("failed login from %s", request.remote_addr)
            time.sleep(FAILED_LOGIN_DELAY)
            error = "That is not the panel's password."
        return render_template("login.html", error=error)

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"))

    @app.get("/")
    def index() -> Any:
        return render_template("index.html", clouds=clouds(), jobs=queue.all()[:10])

    @app.get("/clouds/<cloud_name>")
    def cloud_page(cloud_name: str) -> Any:
        cloud, _ = cloud_and_member(cloud_name)
        secrets = load_or_create(cloud_state_dir(cloud, images))  # first: the agents' token
        statuses = cloud_statuses(cloud, images)
        rrsets = records.generate(cloud, secrets)
        return render_template(
            "cloud.html",
            cloud=cloud,
            statuses=statuses,
            rrsets=rrsets,
            jobs=[j for j in queue.all() if j.cloud == cloud.name][:10],
        )

    def member_page(
        cloud: Cloud,
        member: Member,
        *,
        form: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status: int = 200,
    ) -> Any:
        info = member_status(cloud, member, images)
        manifest = member_manifest(info.image_dir)
        fields = []
        if manifest is not None and manifest.setting_records:
            fields = card_fields(manifest, member.recipe, device_defaults(cloud, member, images))
        if form is not None:  # a refused form comes back with what was typed, secrets blank
            secret = {f.name for f in fields if f.secret}
            form = {
                k: v
                for k, v in form.items()
                if k not in secret and not k.endswith((PASSWORD_SUFFIX, USER_SUFFIX))
            }
        serial = latest_serial_log(cloud, member, images)
        return (
            render_template(
                "member.html",
                cloud=cloud,
                member=member,
                info=info,
                fields=fields,
                groups=[g for g in GROUPS if any(f.group == g for f in fields)],
                form=form or {},
                errors=errors or {},
                serial=serial,
                jobs=[j for j in queue.all() if (j.cloud, j.member) == (cloud.name, member.name)][
                    :10
                ],
                deploy_repo=paths.deploy_repo,
                releases=paths.releases,
                password_suffix=PASSWORD_SUFFIX,
                user_suffix=USER_SUFFIX,
            ),
            status,
        )

    @app.get("/clouds/<cloud_name>/members/<member_name>")
    def member(cloud_name: str, member_name: str) -> Any:
        cloud, member = cloud_and_member(cloud_name, member_name)
        return member_page(cloud, member)

    @app.post("/clouds/<cloud_name>/members/<member_name>/boot-test")
    def start_boot_test(cloud_name: str, member_name: str) -> Any:
        cloud, member = cloud_and_member(cloud_name, member_name)
        job = queue.submit(
            "boot-test",
            f"build and boot-test {member.name} ({member.recipe.name} on {member.board.name})",
            cloud.name,
            member.name,
            boot_test_job(cloud, member, paths),
        )
        return redirect(url_for("job_page", job_id=job.id))

    @app.post("/clouds/<cloud_name>/members/<member_name>/publish")
    def start_publish(cloud_name: str, member_name: str) -> Any:
        cloud, member = cloud_and_member(cloud_name, member_name)
        job = queue.submit(
            "publish",
            f"publish {member.name} ({member.recipe.name} on {member.board.name})",
            cloud.name,
            member.name,
            publish_job(cloud, member, paths),
        )
        return redirect(url_for("job_page", job_id=job.id))

    @app.post("/clouds/<cloud_name>/members/<member_name>/update")
    def decide_update(cloud_name: str, member_name: str) -> Any:
        cloud, member = cloud_and_member(cloud_name, member_name)
        try:
            decision = Decision(request.form.get("decision", ""))
        except ValueError:
            abort(400, "decision must be approve, hold or auto")
        info = member_status(cloud, member, images)
        release = info.version.sha256 if info.version else ""
        if decision == Decision.APPROVE and not release:
            raise UserError(f"{member.name}: there is no built release to approve")
        gate = set_gate(cloud_state_dir(cloud, images), member.name, decision, release)
        log.info("update decision for %s/%s: %s", cloud.name, member.name, gate.describe())
        return redirect(url_for("member", cloud_name=cloud.name, member_name=member.name))

    @app.post("/clouds/<cloud_name>/members/<member_name>/card")
    def start_card(cloud_name: str, member_name: str) -> Any:
        cloud, member = cloud_and_member(cloud_name, member_name)
        manifest = member_manifest(member_status(cloud, member, images).image_dir)
        if manifest is None:
            raise UserError(f"{member.name}: no image yet: build and boot-test it first")
        defaults = device_defaults(cloud, member, images)
        fields = card_fields(manifest, member.recipe, defaults)
        submitted = {k: v for k, v in request.form.items() if k != "csrf"}
        values, errors = read_card_form(submitted, fields, manifest, defaults)
        if errors:
            return member_page(cloud, member, form=submitted, errors=errors, status=400)
        job = queue.submit(
            "card",
            f"card image for {values.get('hostname', member.name)} ({manifest.name})",
            cloud.name,
            member.name,
            card_job(cloud, member, paths, values),
        )
        return redirect(url_for("job_page", job_id=job.id))

    @app.get("/clouds/<cloud_name>/members/<member_name>/serial")
    def serial_log(cloud_name: str, member_name: str) -> Any:
        cloud, member = cloud_and_member(cloud_name, member_name)
        serial = latest_serial_log(cloud, member, images)
        return render_template("serial.html", cloud=cloud, member=member, serial=serial)

    @app.get("/jobs")
    def jobs_page() -> Any:
        return render_template("jobs.html", jobs=queue.all())

    @app.get("/jobs/<int:job_id>")
    def job_page(job_id: int) -> Any:
        job = queue.get(job_id) or abort(404)
        return render_template("job.html", job=job, data=job.to_json())

    @app.get("/jobs/<int:job_id>.json")
    def job_json(job_id: int) -> Any:
        job = queue.get(job_id) or abort(404)
        return jsonify(job.to_json())

    @app.get("/cards/<token>/<name>")
    def card_download(token: str, name: str) -> Any:
        if not token.replace("-", "").replace("_", "").isalnum() or "/" in name:
            abort(404)
        path = paths.cards / token / name
        if not path.is_file():
            abort(404)
        return send_file(path, as_attachment=True, download_name=name, max_age=0)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            return exc
        described = one_line_error(exc)
        if described is not None:
            return render_template("error.html", message=described[0]), 400
        log.error("error on %s %s:\n%s", request.method, request.path, code_path(exc))
        return render_template("error.html", message=f"internal error ({type(exc).__name__})"), 500

    return app
