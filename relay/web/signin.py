"""Signing in and out of the web console, and what the page asks first (who am I).

``POST /web/login`` takes the same username, password and one-time code as
``/api/v1/login`` (same throttling, lockout and audit, in :mod:`relay.auth`) and
answers with the session cookie instead of showing the token to the page.
``GET /web/session`` tells the page who is signed in and its CSRF token;
``POST /web/logout`` revokes the token and clears the cookie.
"""

from __future__ import annotations

from aiohttp import web

from protocol.errors import NotPermitted

from ..api.common import TOKEN_HASH_KEY, client_address, read_json, text, user_of
from ..state import RELAY
from .security import COOKIE, csrf_token, same_origin

routes = web.RouteTableDef()


def _set_cookie(response: web.Response, token: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE, token, max_age=max_age, path="/", secure=True, httponly=True, samesite="Strict"
    )


@routes.post("/web/login")
async def web_login(request: web.Request) -> web.Response:
    if not same_origin(request):
        raise NotPermitted("cross-origin sign-in refused")
    relay = request.app[RELAY]
    data = await read_json(request)
    username = text(data, "username", max_length=64)
    password = text(data, "password", max_length=1024)
    otp = text(data, "otp", max_length=16, default="")
    result = await relay.auth.login(username, password, otp, client_address(request))
    token_hash = await _token_hash(request, result.token)
    response = web.json_response(
        {
            "user": result.user.public(),
            "expires_at": result.expires_at,
            "csrf": csrf_token(request.app, token_hash),
        }
    )
    _set_cookie(response, result.token, relay.config.auth.token_lifetime)
    return response


async def _token_hash(request: web.Request, token: str) -> str:
    _, token_hash = await request.app[RELAY].auth.authenticate(token)
    return token_hash


@routes.get("/web/session")
async def web_session(request: web.Request) -> web.Response:
    user = user_of(request)
    groups = sorted(await request.app[RELAY].store.granted_groups(user.id))
    return web.json_response(
        {
            "user": {**user.public(), "groups": groups},
            "csrf": csrf_token(request.app, request[TOKEN_HASH_KEY]),
        }
    )


@routes.post("/web/logout")
async def web_logout(request: web.Request) -> web.Response:
    await request.app[RELAY].auth.logout(user_of(request), request[TOKEN_HASH_KEY])
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
    return response
