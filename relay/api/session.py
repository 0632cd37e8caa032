"""Logging in and out, who am I, and the public endpoints (health, the CA to pin)."""

from __future__ import annotations

from aiohttp import web

from ..state import RELAY, VERSION
from .common import TOKEN_HASH_KEY, client_address, read_json, text, user_of

routes = web.RouteTableDef()


@routes.get("/api/v1/health")
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": VERSION})


@routes.get("/api/v1/ca")
async def ca(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    return web.json_response(
        {"certificate": relay.pki.ca_pem, "fingerprint": relay.pki.ca_fingerprint}
    )


@routes.post("/api/v1/login")
async def login(request: web.Request) -> web.Response:
    data = await read_json(request)
    username = text(data, "username", max_length=64)
    password = text(data, "password", max_length=1024)
    otp = text(data, "otp", max_length=16, default="")
    result = await request.app[RELAY].auth.login(username, password, otp, client_address(request))
    return web.json_response(
        {"token": result.token, "expires_at": result.expires_at, "user": result.user.public()}
    )


@routes.post("/api/v1/logout")
async def logout(request: web.Request) -> web.Response:
    await request.app[RELAY].auth.logout(user_of(request), request[TOKEN_HASH_KEY])
    return web.json_response({"ok": True})


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.Response:
    user = user_of(request)
    groups = sorted(await request.app[RELAY].store.granted_groups(user.id))
    return web.json_response({**user.public(), "groups": groups})
