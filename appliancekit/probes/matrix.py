"""Matrix client-server API probe: register with the shared secret, post, read back."""

from __future__ import annotations

import time
from collections.abc import Mapping

from appliancekit.probes._common import json_request, short
from appliancekit.probes.runner import ProbeFailed, probe_kind
from appliancekit.recipe import Probe


def _matrix_describe(probe: Probe) -> str:
    return f"@{probe.param('user')} in #{probe.param('room')}"


def _matrix_call(
    host: str,
    port: int,
    method: str,
    path: str,
    timeout: float,
    body: object = None,
    token: str = "",
) -> tuple[int, dict[str, object]]:
    import urllib.parse

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    quoted = urllib.parse.quote(path, safe="/?=&%:")
    status, data = json_request(host, port, method, quoted, timeout, headers, body)
    if data is None:
        return status, {}
    if isinstance(data, str):  # not JSON
        return status, {"error": short(data)}
    return status, data if isinstance(data, dict) else {"value": data}


def _matrix_fail(what: str, status: int, data: Mapping[str, object]) -> ProbeFailed:
    reason = data.get("errcode") or "", data.get("error") or short(str(data))
    return ProbeFailed(f"{what}: HTTP {status} {reason[0]} {reason[1]}".replace("  ", " "))


# Registering and logging in make Synapse hash or check the password with bcrypt (12 rounds,
# its default), in a thread of its own. Under TCG on a loaded host one check took longer than
# the runner's 10 s per attempt (2026-11-30, load 10-13: on the second boot every login
# attempt of two minutes was dropped unanswered, "already disconnected" in Synapse's log), and
# each retry only queued another check beside the abandoned ones. So one attempt waits for
# the hash; the probe's own timeout still bounds it.
HASHING_ATTEMPT = 240.0


@probe_kind("matrix", describe=_matrix_describe, attempt_timeout=HASHING_ATTEMPT)
def check_matrix(probe: Probe, host: str, port: int, timeout: float) -> str:
    """Matrix client-server API, as a user would.

    params: user, password, secret (registration shared secret), room (alias localpart),
    message, action ("post": register with the shared secret — an existing user is fine —,
    log in, create the room — or find it —, send the message; "read": log in and find the
    message in the room's history; default: post on the first boot, read after the reboot,
    both otherwise)."""
    import hashlib
    import hmac

    user, password = probe.param("user"), probe.param("password")
    room, message = probe.param("room"), probe.param("message")
    if not (user and password and room and message):
        raise ProbeFailed("a matrix probe needs params user, password, room and message")
    phase = str(probe.phase)
    action = probe.param("action") or {"first": "post", "reboot": "read"}.get(phase, "both")
    if action in ("post", "both"):
        secret = probe.param("secret")
        if not secret:
            raise ProbeFailed("posting needs params.secret (the registration shared secret)")
        status, data = _matrix_call(host, port, "GET", "/_synapse/admin/v1/register", timeout)
        if status != 200 or "nonce" not in data:
            raise _matrix_fail("registration nonce", status, data)
        nonce = str(data["nonce"])
        mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join(x.encode() for x in (nonce, user, password, "notadmin")))
        register = {"nonce": nonce, "username": user, "password": password, "admin": False}
        status, data = _matrix_call(
            host,
            port,
            "POST",
            "/_synapse/admin/v1/register",
            timeout,
            register | {"mac": mac.hexdigest()},
        )
        if status != 200 and data.get("errcode") != "M_USER_IN_USE":
            raise _matrix_fail(f"registering {user} with the shared secret", status, data)
    login_started = time.monotonic()
    status, data = _matrix_call(
        host,
        port,
        "POST",
        "/_matrix/client/v3/login",
        timeout,
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}}
        | {"password": password},
    )
    if status != 200 or "access_token" not in data:
        raise _matrix_fail(f"logging in as {user}", status, data)
    login = f"login {time.monotonic() - login_started:.1f} s"
    token, user_id = str(data["access_token"]), str(data.get("user_id", ""))
    server = user_id.split(":", 1)[1] if ":" in user_id else ""
    alias = f"#{room}:{server}"
    status, data = _matrix_call(
        host, port, "GET", f"/_matrix/client/v3/directory/room/{alias.replace('#', '%23')}", timeout
    )
    room_id = str(data.get("room_id", "")) if status == 200 else ""
    if action in ("post", "both"):
        if not room_id:
            status, data = _matrix_call(
                host,
                port,
                "POST",
                "/_matrix/client/v3/createRoom",
                timeout,
                {"room_alias_name": room, "preset": "private_chat", "name": room},
                token,
            )
            if status != 200 or "room_id" not in data:
                raise _matrix_fail(f"creating room {alias}", status, data)
            room_id = str(data["room_id"])
        txn = hashlib.sha256(f"{room_id}\0{message}".encode()).hexdigest()[:16]
        status, data = _matrix_call(
            host,
            port,
            "PUT",
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}",
            timeout,
            {"msgtype": "m.text", "body": message},
            token,
        )
        if status != 200 or "event_id" not in data:
            raise _matrix_fail(f"sending to {alias}", status, data)
        if action == "post":
            return f"{user_id} posted {data['event_id']} in {alias} ({room_id}; {login})"
    if not room_id:
        raise ProbeFailed(f"room {alias} does not exist (state lost?)")
    status, data = _matrix_call(
        host,
        port,
        "GET",
        f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50",
        timeout,
        token=token,
    )
    if status != 200:
        raise _matrix_fail(f"reading {alias}", status, data)
    events = data.get("chunk") or []
    bodies = [
        e.get("content", {}).get("body")
        for e in events  # type: ignore[union-attr]
        if isinstance(e, dict) and e.get("type") == "m.room.message"
    ]
    if message not in bodies:
        raise ProbeFailed(f"{alias} has no message {message!r} (messages: {bodies[:5]})")
    return f"{user_id} read {message!r} back from {alias} ({login})"
