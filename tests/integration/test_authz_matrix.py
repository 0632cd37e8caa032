"""The authorisation matrix: every principal x every route x every way in, each cell with
its expected answer.

The routes are found by walking the relay's own router (the application ``helpline-relay
serve`` builds), so a route added without a line in :data:`ROUTES` fails this test until
someone decides who may use it. Principals: the first admin, a technician with a grant on
the device's group and one without, an auditor, a disabled technician, an admin demoted
to technician while their token is live, the token of a deleted user whose name was then
given to somebody new, an expired token, and a signed-out one. Ways in: a bearer token,
the web console's cookie with its CSRF token and Origin, that cookie without the CSRF
token, a console WebSocket's ``SessionRequest`` of each kind, and each of the web
console's session sockets.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from certs.contexts import pinned_client_context
from protocol.errors import ErrorCode
from protocol.sessions import SessionRequest, SessionStatus
from relay.app import build_app, build_state
from relay.config import load_config

from .conftest import AgentProcess, RelayProcess, enroll_agent, init_relay, totp_now
from .helpers import admin_token, raw_console_link, relay_db, rest

pytestmark = pytest.mark.integration

# -- who may use each route -------------------------------------------------------------

PUBLIC = "public"  # anyone, signed in or not
AGENT = "agent"  # devices only, by their certificate; no user token gets in
SIGNED_IN = "signed-in"  # any user signed in now, whatever the role
WEB = "web"  # any user signed in now, by the web console's cookie only (never a bearer token)
STAFF = "staff"  # admins and technicians (who work on devices)
AUDIT = "audit"  # admins and auditors (who read the record)
ADMIN = "admin"

#: Every route of the relay, with who may use it. A new route fails the test until listed.
ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/health"): PUBLIC,
    ("GET", "/api/v1/ca"): PUBLIC,
    ("POST", "/api/v1/login"): PUBLIC,
    ("POST", "/api/v1/enroll"): PUBLIC,
    ("POST", "/web/login"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/assets/{path}"): PUBLIC,
    ("GET", "/vendor/{name}"): PUBLIC,
    ("GET", "/agent/v1/connect"): AGENT,
    ("POST", "/api/v1/logout"): SIGNED_IN,
    ("GET", "/api/v1/me"): SIGNED_IN,
    ("GET", "/web/session"): WEB,
    ("POST", "/web/logout"): WEB,
    ("GET", "/api/v1/devices"): STAFF,
    ("GET", "/api/v1/devices/{key}"): STAFF,
    ("GET", "/api/v1/sessions"): SIGNED_IN,
    ("GET", "/api/v1/keys"): SIGNED_IN,
    ("POST", "/api/v1/keys"): STAFF,
    ("DELETE", "/api/v1/keys/{key}"): SIGNED_IN,
    ("GET", "/api/v1/console"): SIGNED_IN,
    ("GET", "/web/ws/events"): WEB,
    ("GET", "/web/ws/shell"): WEB,
    ("GET", "/web/ws/screen"): WEB,
    ("GET", "/web/ws/files"): WEB,
    ("GET", "/web/files/{handle}/download"): WEB,
    ("POST", "/web/files/{handle}/upload"): WEB,
    ("GET", "/api/v1/recordings"): SIGNED_IN,  # each sees their own; see M6
    ("GET", "/api/v1/recordings/{id}"): SIGNED_IN,
    ("GET", "/api/v1/audit"): AUDIT,
    ("GET", "/api/v1/audit/verify"): AUDIT,
    ("POST", "/api/v1/sessions/{id}/kill"): ADMIN,
    ("POST", "/api/v1/devices/{key}/revoke"): ADMIN,
    ("PATCH", "/api/v1/devices/{key}"): ADMIN,
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("PATCH", "/api/v1/users/{username}"): ADMIN,
    ("POST", "/api/v1/users/{username}/unlock"): ADMIN,
    ("POST", "/api/v1/users/{username}/reset-totp"): ADMIN,
    ("DELETE", "/api/v1/users/{username}"): ADMIN,
    ("GET", "/api/v1/groups"): ADMIN,
    ("POST", "/api/v1/groups"): ADMIN,
    ("DELETE", "/api/v1/groups/{name}"): ADMIN,
    ("GET", "/api/v1/grants"): ADMIN,
    ("POST", "/api/v1/grants"): ADMIN,
    ("DELETE", "/api/v1/grants/{username}/{group}"): ADMIN,
    ("GET", "/api/v1/enrolment-tokens"): ADMIN,
    ("POST", "/api/v1/enrolment-tokens"): ADMIN,
    ("DELETE", "/api/v1/enrolment-tokens/{id}"): ADMIN,
    ("POST", "/api/v1/updates/packages"): STAFF,
    ("POST", "/api/v1/updates/rollouts"): STAFF,
    ("GET", "/api/v1/updates/rollouts"): STAFF,
    ("GET", "/api/v1/updates/rollouts/{id}"): STAFF,
    ("POST", "/api/v1/updates/rollouts/{id}/cancel"): STAFF,
}

#: Placeholders for the path parameters: names that exist where that matters, so a cell
#: answers "allowed" by reaching the handler, never by a 404 for a made-up name.
PATH_VALUES = {
    "key": "fleet-1",
    "username": "nobody-here",
    "name": "no-such-group",
    "group": "no-such-group",
    "id": "999999",
    "handle": "0" * 32,
    "path": "app.js",
}

# -- the principals ---------------------------------------------------------------------

ROLE_OF = {
    "admin": "admin",
    "granted": "technician",
    "ungranted": "technician",
    "auditor": "auditor",
    "demoted": "technician",
}
#: Principals whose token must not work at all, whatever the route.
NOT_SIGNED_IN = ("disabled", "deleted", "expired", "signed_out", "anonymous")
PRINCIPALS = (*ROLE_OF, *NOT_SIGNED_IN)


def allowed(access: str, principal: str, way: str) -> bool:
    if access == PUBLIC:
        return True
    if access == AGENT or principal in NOT_SIGNED_IN:
        return False
    role = ROLE_OF[principal]
    return {
        SIGNED_IN: True,
        WEB: way != "bearer",
        STAFF: role in ("admin", "technician"),
        AUDIT: role in ("admin", "auditor"),
        ADMIN: role == "admin",
    }[access]


@dataclass
class Credentials:
    bearer: str = ""
    cookie: str = ""
    csrf: str = ""


@dataclass
class Matrix:
    relay: RelayProcess
    agent: AgentProcess
    routes: list[tuple[str, str]]
    who: dict[str, Credentials] = field(default_factory=dict)


def _call(
    relay: RelayProcess, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> int:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", relay.port, timeout=30, context=pinned_client_context(relay.ca_pem)
    )
    try:
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _login(relay: RelayProcess, username: str, password: str, secret: str, step: int) -> str:
    status, body = rest(
        relay,
        "POST",
        "/api/v1/login",
        body={
            "username": username,
            "password": password,
            "otp": totp_now(secret, step_offset=step),
        },
    )
    assert status == 200, body
    return str(body["token"])


def _web_login(relay: RelayProcess, username: str, password: str, secret: str) -> tuple[str, str]:
    """Sign in as the web page does; the cookie header and the CSRF token."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1", relay.port, timeout=30, context=pinned_client_context(relay.ca_pem)
    )
    body = json.dumps({"username": username, "password": password, "otp": totp_now(secret)})
    connection.request(
        "POST", "/web/login", body, {"Content-Type": "application/json", "Origin": relay.url}
    )
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200, answer
    cookie = (response.getheader("Set-Cookie") or "").split(";", 1)[0]
    connection.close()
    return cookie, str(answer["csrf"])


def _router_routes(relay: RelayProcess) -> list[tuple[str, str]]:
    """The routes of the application the relay builds from this data directory."""

    async def walk() -> list[tuple[str, str]]:
        state = await build_state(load_config(relay.data_dir))
        try:
            app = build_app(state)
            return sorted(
                {
                    (r.method, r.resource.canonical)
                    for r in app.router.routes()
                    if r.method != "HEAD" and r.resource is not None
                }
            )
        finally:
            await state.store.close()

    return asyncio.run(walk())


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    directory = tmp_path_factory.mktemp("authz")
    relay = init_relay(directory)
    routes = _router_routes(relay)
    relay.start()
    admin = admin_token(relay, step_offset=-1)
    rest(relay, "POST", "/api/v1/groups", token=admin, body={"name": "fleet"})
    token = rest(
        relay,
        "POST",
        "/api/v1/enrolment-tokens",
        token=admin,
        body={"group": "fleet", "max_uses": 2},
    )
    agent = enroll_agent(
        relay,
        directory,
        "fleet-1",
        token=token[1]["token"],
        consent={"shell": "allow", "files": "allow"},
    )
    enroll_agent(relay, directory, "spare", token=token[1]["token"])
    agent.start()
    try:
        for _ in range(400):
            devices = rest(relay, "GET", "/api/v1/devices", token=admin)[1]["devices"]
            if any(d["name"] == "fleet-1" and d["online"] for d in devices):
                break
            time.sleep(0.05)
        m = Matrix(relay, agent, routes)
        users: dict[str, dict[str, Any]] = {}
        for name, role in [
            *ROLE_OF.items(),
            ("disabled", "technician"),
            ("deleted", "technician"),
            ("expired", "technician"),
            ("signed_out", "technician"),
        ]:
            if name == "admin":
                continue
            initial = "admin" if name == "demoted" else role
            status, body = rest(
                relay,
                "POST",
                "/api/v1/users",
                token=admin,
                body={"username": name, "role": initial},
            )
            assert status == 201, body
            users[name] = body
        rest(
            relay,
            "POST",
            "/api/v1/grants",
            token=admin,
            body={"username": "granted", "group": "fleet"},
        )
        rest(
            relay,
            "POST",
            "/api/v1/grants",
            token=admin,
            body={"username": "demoted", "group": "fleet"},
        )
        m.who["admin"] = Credentials(
            admin,
            *_web_login(
                relay, relay.admin["username"], relay.admin["password"], relay.admin["totp_secret"]
            ),
        )
        for name, body in users.items():
            bearer = _login(relay, name, body["password"], body["totp_secret"], -1)
            cookie, csrf = _web_login(relay, name, body["password"], body["totp_secret"])
            m.who[name] = Credentials(bearer, cookie, csrf)
        # Now take access away, each in its own way, while the tokens are live.
        for username, change in (
            ("demoted", {"role": "technician"}),
            ("disabled", {"disabled": True}),
        ):
            status, body = rest(
                relay, "PATCH", f"/api/v1/users/{username}", token=admin, body=change
            )
            assert status == 200, body
        assert rest(relay, "DELETE", "/api/v1/users/deleted", token=admin)[0] in (200, 204)
        status, body = rest(
            relay,
            "POST",
            "/api/v1/users",
            token=admin,
            body={"username": "deleted", "role": "admin"},
        )
        assert status == 201, body  # the name is someone else's now, and an admin's
        for credentials in (m.who["signed_out"],):
            assert rest(relay, "POST", "/api/v1/logout", token=credentials.bearer)[0] in (200, 204)
            signed_in = {"Cookie": credentials.cookie, "Origin": relay.url}
            _call(
                relay, "POST", "/web/logout", {**signed_in, "X-CSRF-Token": credentials.csrf}, b""
            )
        with relay_db(relay) as db:
            db.execute(
                "UPDATE api_tokens SET expires_at = ? WHERE user_id = "
                "(SELECT id FROM users WHERE username = 'expired')",
                (time.time() - 1,),
            )
        m.who["anonymous"] = Credentials()
        yield m
    finally:
        agent.stop()
        relay.stop()


def test_every_route_of_the_router_is_classified(matrix: Matrix) -> None:
    unclassified = [route for route in matrix.routes if route not in ROUTES]
    assert not unclassified, f"classify these routes in ROUTES: {unclassified}"
    gone = [route for route in ROUTES if route not in matrix.routes]
    assert not gone, f"these routes are no longer served: {gone}"


def _path(template: str) -> str:
    if template == "/api/v1/devices/{key}/revoke":
        return "/api/v1/devices/spare/revoke"  # an admin's call succeeds: not the device in use
    path = template
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    return path


WAYS = ("bearer", "cookie", "cookie-without-csrf")


def _status(m: Matrix, method: str, template: str, principal: str, way: str) -> int:
    who = m.who[principal]
    headers = {"Content-Type": "application/json", "Origin": m.relay.url}
    if way == "bearer" and who.bearer:
        headers["Authorization"] = f"Bearer {who.bearer}"
    elif way.startswith("cookie") and who.cookie:
        headers["Cookie"] = who.cookie
        if way == "cookie":
            headers["X-CSRF-Token"] = who.csrf
    body = b"{}" if method in ("POST", "PATCH") else None
    return _call(m.relay, method, _path(template), headers, body)


def test_each_cell_answers_as_expected(matrix: Matrix) -> None:
    wrong: list[str] = []
    for (method, template), access in sorted(ROUTES.items()):
        if template.endswith("/logout"):
            continue  # signing out is checked on its own below: it would end the principal
        for principal in PRINCIPALS:
            for way in WAYS:
                status = _status(matrix, method, template, principal, way)
                expect = allowed(access, principal, way)
                if way == "cookie-without-csrf" and method not in ("GET",) and access != PUBLIC:
                    expect = False
                refused = status in (401, 403)
                if expect == refused:
                    wrong.append(f"{method} {template} as {principal} by {way}: {status}")
    assert not wrong, "\n".join(wrong)


def test_sign_out_works_for_everyone_signed_in_and_only_for_them(matrix: Matrix) -> None:
    m = matrix
    for principal in NOT_SIGNED_IN:
        who = m.who[principal]
        headers = {"Authorization": f"Bearer {who.bearer}"} if who.bearer else {}
        assert _call(m.relay, "POST", "/api/v1/logout", headers, b"") == 401, principal


# -- sessions: each kind through the console's WebSocket, and the web console's sockets ----

KINDS = ("shell", "files", "view", "control", "update")


async def _session_answer(m: Matrix, principal: str, kind: str) -> tuple[str, int]:
    """The relay's first answer to one SessionRequest: (state, code)."""
    who = m.who[principal]
    try:
        async with raw_console_link(m.relay, who.bearer) as link:
            await link.send_hello()
            await link.next_message()
            await link.send_message(
                SessionRequest(1, "fleet-1", kind, "authz matrix", {"pty": "0", "command": "true"})
            )
            while True:
                message = await link.next_message()
                if isinstance(message, SessionStatus):
                    return message.state, message.code
    except aiohttp.WSServerHandshakeError as refused:
        return "no-socket", refused.status


def _session_expected(principal: str, kind: str) -> str:
    if principal in NOT_SIGNED_IN:
        return "no-socket"
    if ROLE_OF[principal] == "auditor" or principal == "ungranted" or kind == "update":
        return "refused"
    return "allowed"


def test_session_requests_of_each_kind(matrix: Matrix) -> None:
    async def all_cells() -> list[str]:
        wrong: list[str] = []
        for principal in PRINCIPALS:
            for kind in KINDS:
                state, code = await _session_answer(matrix, principal, kind)
                if state == "no-socket":
                    outcome = "no-socket" if code == 401 else f"socket refused {code}"
                elif state == "denied" and code in (ErrorCode.NOT_PERMITTED, ErrorCode.NOT_FOUND):
                    outcome = "refused"
                else:
                    outcome = "allowed"  # it reached the device (which may then refuse it)
                if outcome != _session_expected(principal, kind):
                    wrong.append(f"{kind} as {principal}: {state} {code}")
        return wrong

    wrong = asyncio.run(all_cells())
    assert not wrong, "\n".join(wrong)


WEB_SOCKETS = ("shell", "files", "screen")


async def _web_socket_answer(m: Matrix, principal: str, kind: str) -> str:
    who = m.who[principal]
    headers = {"Origin": m.relay.url}
    if who.cookie:
        headers["Cookie"] = who.cookie
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(
                f"{m.relay.url}/web/ws/{kind}?device=fleet-1&kind=view&cols=80&rows=24",
                ssl=pinned_client_context(m.relay.ca_pem),
                headers=headers,
            ) as ws:
                while True:
                    message = await ws.receive(timeout=20)
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        return f"closed {ws.close_code}"
                    body = json.loads(message.data)
                    if body["type"] == "refused":
                        by_relay = body["state"] == "denied" and body["code"] in (
                            ErrorCode.NOT_PERMITTED,
                            ErrorCode.NOT_FOUND,
                        )
                        verdict = "refused" if by_relay else "allowed"
                        return f"{verdict} ({body['message']})"
                    if body["type"] in ("waiting", "opened"):
                        await ws.send_str(json.dumps({"type": "end"}))
                        return "allowed"
        except aiohttp.WSServerHandshakeError as refused:
            return "no-socket" if refused.status == 401 else f"socket refused {refused.status}"


def test_web_session_sockets(matrix: Matrix) -> None:
    async def all_cells() -> list[str]:
        wrong: list[str] = []
        for principal in PRINCIPALS:
            for kind in WEB_SOCKETS:
                outcome = await _web_socket_answer(matrix, principal, kind)
                # "allowed (...)": it reached the device, which refused it
                if outcome.split(" (")[0] != _session_expected(principal, kind):
                    wrong.append(f"web {kind} as {principal}: {outcome}")
        return wrong

    wrong = asyncio.run(all_cells())
    assert not wrong, "\n".join(wrong)
