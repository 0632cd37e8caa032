"""What every REST handler shares: errors as JSON, authentication, input checking.

Errors leave the relay as ``{"error": {"code": 4401, "message": "..."}}`` with
a matching HTTP status; the message is always the exception's safe text, and
anything unexpected becomes a plain 500 with the details only in the log.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from protocol.errors import (
    AuthError,
    Conflict,
    ErrorCode,
    HelplineError,
    InvalidMessage,
    NotFound,
    NotPermitted,
    TooManyAttempts,
)

from ..auth import USERNAME
from ..models import User, UserRole
from ..state import RELAY

log = logging.getLogger("helpline.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

USER_KEY = web.RequestKey("user", User)
TOKEN_HASH_KEY = web.RequestKey("token_hash", str)

#: Paths anyone may call: logging in, fetching the CA to pin it, enrolling with a token.
PUBLIC_PATHS = frozenset({"/api/v1/login", "/api/v1/ca", "/api/v1/health", "/api/v1/enroll"})

_STATUS: dict[type[HelplineError], int] = {
    TooManyAttempts: 429,
    AuthError: 401,
    NotPermitted: 403,
    NotFound: 404,
    Conflict: 409,
}

# \Z, not $: "$" also matches before a final newline, which let "desk\n" through.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
USERNAME_PATTERN = USERNAME


def status_for(error: HelplineError) -> int:
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400 if error.code != ErrorCode.INTERNAL else 500


def error_response(error: HelplineError) -> web.Response:
    body = {"error": {"code": int(error.code), "message": error.message}}
    return web.json_response(body, status=status_for(error))


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HelplineError as error:
        user = request.get(USER_KEY)
        if isinstance(error, NotPermitted) and user is not None:
            # A refused call is a denial, and every denial is an audit entry.
            await request.app[RELAY].audit.record(
                user.username,
                "api.denied",
                request.path,
                method=request.method,
                role=user.role.value,
            )
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            code = {
                404: ErrorCode.NOT_FOUND,
                405: ErrorCode.NOT_PERMITTED,
                413: ErrorCode.LIMIT_EXCEEDED,
            }.get(exc.status, ErrorCode.INVALID_MESSAGE)
            body = {"error": {"code": int(code), "message": exc.reason}}
            return web.json_response(body, status=exc.status)
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        body = {"error": {"code": int(ErrorCode.INTERNAL), "message": "internal error"}}
        return web.json_response(body, status=500)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api/ path but the public ones needs a valid bearer token (or the web
    console's cookie, which :mod:`relay.web.security` checked before: ``USER_KEY`` is set)."""
    if (
        request.path.startswith("/api/")
        and request.path not in PUBLIC_PATHS
        and USER_KEY not in request
    ):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("authentication required")
        user, token_hash = await request.app[RELAY].auth.authenticate(token.strip())
        request[USER_KEY] = user
        request[TOKEN_HASH_KEY] = token_hash
    return await handler(request)


def user_of(request: web.Request) -> User:
    return request[USER_KEY]


def require_role(request: web.Request, *roles: UserRole) -> User:
    user = user_of(request)
    if user.role not in roles:
        raise NotPermitted(f"this needs the {' or '.join(r.value for r in roles)} role")
    return user


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidMessage("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidMessage("request body must be a JSON object")
    return data


def text(
    data: dict[str, Any],
    name: str,
    *,
    max_length: int = 256,
    default: str | None = None,
    pattern: re.Pattern[str] | None = None,
) -> str:
    value = data.get(name, default)
    if value is None:
        raise InvalidMessage(f"missing field {name!r}")
    if not isinstance(value, str):
        raise InvalidMessage(f"field {name!r} must be a string")
    if len(value) > max_length:
        raise InvalidMessage(f"field {name!r} is longer than {max_length} characters")
    if pattern is not None and not pattern.match(value):
        raise InvalidMessage(f"field {name!r} has characters that are not allowed")
    return value


def integer(data: dict[str, Any], name: str, *, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidMessage(f"field {name!r} must be an integer from {low} to {high}")
    return value
