"""Devices: listing with live state, details, revocation, moving between groups."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from protocol.errors import ErrorCode, NotFound

from ..models import Device, User, UserRole
from ..state import RELAY, RelayState
from .common import NAME_PATTERN, read_json, require_role, text

routes = web.RouteTableDef()


async def visible_groups(relay: RelayState, user: User) -> set[str] | None:
    """Groups whose devices ``user`` may see; None means all of them."""
    if user.role is UserRole.ADMIN:
        return None
    return await relay.store.granted_groups(user.id)


def device_view(relay: RelayState, device: Device) -> dict[str, Any]:
    online = relay.presence.is_online(device.id)
    view = device.public(online=online)
    if online:
        view["last_seen"] = relay.presence.last_seen(device.id)
    return view


async def find_device(relay: RelayState, user: User, key: str) -> Device:
    """A device by id or name, if ``user`` may see it (else NotFound: no existence leak)."""
    device = await relay.store.get_device(key) or await relay.store.get_device_by_name(key)
    groups = await visible_groups(relay, user)
    if device is None or (groups is not None and device.group not in groups):
        raise NotFound(f"no device {key[:64]!r}")
    return device


@routes.get("/api/v1/devices")
async def list_devices(request: web.Request) -> web.Response:
    user = require_role(request, UserRole.ADMIN, UserRole.TECHNICIAN)
    relay = request.app[RELAY]
    groups = await visible_groups(relay, user)
    devices = [
        device_view(relay, d)
        for d in await relay.store.list_devices()
        if groups is None or d.group in groups
    ]
    return web.json_response({"devices": devices})


@routes.get("/api/v1/devices/{key}")
async def get_device(request: web.Request) -> web.Response:
    user = require_role(request, UserRole.ADMIN, UserRole.TECHNICIAN)
    relay = request.app[RELAY]
    device = await find_device(relay, user, request.match_info["key"])
    return web.json_response(device_view(relay, device))


@routes.post("/api/v1/devices/{key}/revoke")
async def revoke_device(request: web.Request) -> web.Response:
    user = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    device = await find_device(relay, user, request.match_info["key"])
    if device.revoked_at is None:
        await relay.store.update_device(device.id, revoked_at=time.time())
        relay.pki.update_crl(await relay.store.revoked_serials())
        await relay.audit.record(
            user.username,
            "device.revoke",
            device.name,
            device_id=device.id,
            serial=device.cert_serial,
        )
        await relay.presence.disconnect_agent(device.id, ErrorCode.AUTH_FAILED, "device revoked")
    updated = await relay.store.get_device(device.id)
    assert updated is not None
    return web.json_response(device_view(relay, updated))


@routes.patch("/api/v1/devices/{key}")
async def update_device(request: web.Request) -> web.Response:
    user = require_role(request, UserRole.ADMIN)
    relay = request.app[RELAY]
    device = await find_device(relay, user, request.match_info["key"])
    data = await read_json(request)
    changes: dict[str, Any] = {}
    if "group" in data:
        group = text(data, "group", max_length=63, pattern=NAME_PATTERN)
        if await relay.store.get_group(group) is None:
            raise NotFound(f"no group {group!r}")
        changes["group"] = group
    if "name" in data:
        changes["name"] = text(data, "name", max_length=63, pattern=NAME_PATTERN)
    if changes:
        await relay.store.update_device(device.id, **changes)
        await relay.audit.record(
            user.username, "device.update", device.name, device_id=device.id, **changes
        )
        link = relay.presence.agents.get(device.id)
        if link is not None:
            link.group = changes.get("group", link.group)
            link.name = changes.get("name", link.name)
    updated = await relay.store.get_device(device.id)
    assert updated is not None
    return web.json_response(device_view(relay, updated))
