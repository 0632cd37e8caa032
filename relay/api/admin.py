"""Admin API: users, groups, grants and enrolment tokens. Every change is audited."""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from protocol.errors import Conflict, InvalidMessage, NotFound

from ..auth import hash_password, hash_token, new_totp_secret, totp_uri
from ..models import User, UserRole
from ..state import RELAY, RelayState
from .common import NAME_PATTERN, USERNAME_PATTERN, integer, read_json, require_role, text

routes = web.RouteTableDef()

MIN_PASSWORD_LENGTH = 12
ENROLMENT_TOKEN_PREFIX = "hle_"


async def _user(relay: RelayState, username: str) -> User:
    user = await relay.store.get_user(username)
    if user is None:
        raise NotFound(f"no user {username[:64]!r}")
    return user


def _role(value: str) -> UserRole:
    try:
        return UserRole(value)
    except ValueError:
        raise InvalidMessage("role must be admin, technician or auditor") from None


def _password(data: dict[str, Any]) -> str:
    password = text(data, "password", max_length=1024)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidMessage(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    return password


# -- users ---------------------------------------------------------------------------


@routes.get("/api/v1/users")
async def list_users(request: web.Request) -> web.Response:
    require_role(request, UserRole.ADMIN)
    users = await request.app[RELAY].store.list_users()
    return web.json_response({"users": [u.public() for u in users]})


@routes.post("/api/v1/users")
async def create_user(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    data = await read_json(request)
    username = text(data, "username", max_length=32, pattern=USERNAME_PATTERN)
    full_name = text(data, "full_name", max_length=128, default=username)
    role = _role(text(data, "role", max_length=16, default="technician"))
    generated = "password" not in data
    password = secrets.token_urlsafe(15) if generated else _password(data)
    totp_required = data.get("totp_required", relay.config.auth.totp_required)
    if not isinstance(totp_required, bool):
        raise InvalidMessage("totp_required must be true or false")
    secret = new_totp_secret()
    user = await relay.store.create_user(
        username, full_name, role, await hash_password(password), secret, totp_required
    )
    await relay.audit.record(
        admin.username, "user.create", username, role=role.value, totp_required=totp_required
    )
    body: dict[str, object] = {
        "user": user.public(),
        "totp_secret": secret,
        "totp_uri": totp_uri(secret, username),
    }
    if generated:
        body["password"] = password
    return web.json_response(body, status=201)


@routes.patch("/api/v1/users/{username}")
async def update_user(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    user = await _user(relay, request.match_info["username"])
    data = await read_json(request)
    changes: dict[str, object] = {}
    if "full_name" in data:
        changes["full_name"] = text(data, "full_name", max_length=128)
    if "role" in data:
        changes["role"] = _role(text(data, "role", max_length=16))
        if user.id == admin.id and changes["role"] is not UserRole.ADMIN:
            raise Conflict("you cannot remove your own admin role")
    if "disabled" in data:
        if not isinstance(data["disabled"], bool):
            raise InvalidMessage("disabled must be true or false")
        if user.id == admin.id and data["disabled"]:
            raise Conflict("you cannot disable your own account")
        changes["disabled"] = data["disabled"]
    if "read_all_recordings" in data:
        if not isinstance(data["read_all_recordings"], bool):
            raise InvalidMessage("read_all_recordings must be true or false")
        changes["read_all_recordings"] = data["read_all_recordings"]
    if "totp_required" in data:
        if not isinstance(data["totp_required"], bool):
            raise InvalidMessage("totp_required must be true or false")
        changes["totp_required"] = data["totp_required"]
    audited = {k: (v.value if isinstance(v, UserRole) else v) for k, v in changes.items()}
    if "password" in data:
        changes["password_hash"] = await hash_password(_password(data))
        audited["password"] = "changed"
    if changes:
        await relay.store.update_user(user.id, **changes)
        if changes.get("disabled") or "password_hash" in changes:
            await relay.store.delete_user_tokens(user.id)
        await relay.audit.record(admin.username, "user.update", user.username, **audited)
    updated = await _user(relay, user.username)
    return web.json_response({"user": updated.public()})


@routes.post("/api/v1/users/{username}/unlock")
async def unlock_user(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    user = await _user(relay, request.match_info["username"])
    await relay.store.update_user(user.id, failed_attempts=0, locked_until=None)
    await relay.audit.record(admin.username, "user.unlock", user.username)
    return web.json_response({"user": (await _user(relay, user.username)).public()})


@routes.post("/api/v1/users/{username}/reset-totp")
async def reset_totp(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    user = await _user(relay, request.match_info["username"])
    secret = new_totp_secret()
    await relay.store.update_user(user.id, totp_secret=secret, totp_last_step=0)
    await relay.store.delete_user_tokens(user.id)
    await relay.audit.record(admin.username, "user.reset_totp", user.username)
    return web.json_response({"totp_secret": secret, "totp_uri": totp_uri(secret, user.username)})


@routes.delete("/api/v1/users/{username}")
async def delete_user(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    user = await _user(relay, request.match_info["username"])
    if user.id == admin.id:
        raise Conflict("you cannot delete your own account")
    await relay.store.delete_user(user.id)
    await relay.audit.record(admin.username, "user.delete", user.username)
    return web.json_response({"ok": True})


# -- groups and grants -----------------------------------------------------------------


@routes.get("/api/v1/groups")
async def list_groups(request: web.Request) -> web.Response:
    require_role(request, UserRole.ADMIN)
    groups = await request.app[RELAY].store.list_groups()
    return web.json_response({"groups": [g.public() for g in groups]})


@routes.post("/api/v1/groups")
async def create_group(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    name = text(await read_json(request), "name", max_length=63, pattern=NAME_PATTERN)
    group = await relay.store.create_group(name)
    await relay.audit.record(admin.username, "group.create", name)
    return web.json_response({"group": group.public()}, status=201)


@routes.delete("/api/v1/groups/{name}")
async def delete_group(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    name = request.match_info["name"]
    if any(d.group == name for d in await relay.store.list_devices()):
        raise Conflict("the group still has devices; move them first")
    await relay.store.delete_group(name)
    await relay.audit.record(admin.username, "group.delete", name)
    return web.json_response({"ok": True})


@routes.get("/api/v1/grants")
async def list_grants(request: web.Request) -> web.Response:
    require_role(request, UserRole.ADMIN)
    grants = await request.app[RELAY].store.list_grants()
    return web.json_response({"grants": [{"username": u, "group": g} for u, g in grants]})


@routes.post("/api/v1/grants")
async def add_grant(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    data = await read_json(request)
    user = await _user(relay, text(data, "username", max_length=32))
    group = text(data, "group", max_length=63)
    await relay.store.add_grant(user.id, group)
    await relay.audit.record(admin.username, "grant.add", user.username, group=group)
    return web.json_response({"username": user.username, "group": group}, status=201)


@routes.delete("/api/v1/grants/{username}/{group}")
async def remove_grant(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    user = await _user(relay, request.match_info["username"])
    group = request.match_info["group"]
    await relay.store.remove_grant(user.id, group)
    await relay.audit.record(admin.username, "grant.remove", user.username, group=group)
    return web.json_response({"ok": True})


# -- enrolment tokens --------------------------------------------------------------------


@routes.get("/api/v1/enrolment-tokens")
async def list_tokens(request: web.Request) -> web.Response:
    require_role(request, UserRole.ADMIN)
    tokens = await request.app[RELAY].store.list_enrolment_tokens()
    return web.json_response({"tokens": [t.public() for t in tokens]})


async def issue_enrolment_token(
    relay: RelayState, actor: str, group: str, lifetime: int, uses: int
) -> tuple[str, dict[str, object]]:
    """Create a token; returns the raw token (shown once) and its public record."""
    if await relay.store.get_group(group) is None:
        raise NotFound(f"no group {group!r}")
    raw = ENROLMENT_TOKEN_PREFIX + secrets.token_urlsafe(24)
    record = await relay.store.create_enrolment_token(
        hash_token(raw), group, time.time() + lifetime, uses, actor
    )
    await relay.audit.record(
        actor,
        "token.create",
        group,
        token_id=record.id,
        expires_at=record.expires_at,
        max_uses=uses,
    )
    return raw, record.public()


def enrol_command(relay: RelayState, token: str) -> str:
    return (
        f"helpline-agent enroll {relay.config.server.public_url} --token {token}"
        f" --ca-fingerprint {relay.pki.ca_fingerprint} --config /etc/helpline"
    )


@routes.post("/api/v1/enrolment-tokens")
async def create_token(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    data = await read_json(request)
    defaults = relay.config.agents
    group = text(data, "group", max_length=63, default="default")
    lifetime = integer(
        data, "expires_in", default=defaults.enrolment_token_lifetime, low=60, high=366 * 86400
    )
    uses = integer(data, "max_uses", default=defaults.enrolment_token_uses, low=1, high=100_000)
    raw, record = await issue_enrolment_token(relay, admin.username, group, lifetime, uses)
    body = {"token": raw, **record, "command": enrol_command(relay, raw)}
    return web.json_response(body, status=201)


@routes.delete("/api/v1/enrolment-tokens/{id}")
async def revoke_token(request: web.Request) -> web.Response:
    admin = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    try:
        token_id = int(request.match_info["id"])
    except ValueError:
        raise NotFound("no such enrolment token") from None
    await relay.store.revoke_enrolment_token(token_id)
    await relay.audit.record(admin.username, "token.revoke", str(token_id))
    return web.json_response({"ok": True})
