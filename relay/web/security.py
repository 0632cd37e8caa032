"""The web console's browser security: the session cookie, CSRF tokens, Origin checks and
the response headers (Content-Security-Policy and friends).

* The cookie ``__Host-helpline`` holds a bearer token of :mod:`relay.auth` (so
  it expires, is revoked at sign-out and is stored hashed like every other
  token); it is HttpOnly, Secure, SameSite=Strict, Path=/ (the ``__Host-``
  prefix makes the browser insist on Secure, no Domain and Path=/).
* A request that authenticates by the cookie and changes anything (POST, PUT,
  PATCH, DELETE) must carry ``X-CSRF-Token``: an HMAC of the token's hash under
  a key kept in ``DATA/web-csrf.key`` (0600), which the page learns from
  ``GET /web/session``; a cross-site page can neither read that answer nor set
  the header. Such requests, and every WebSocket upgrade, must also come with an
  ``Origin`` equal to the relay's own.
* Every response gets ``X-Content-Type-Options``, ``Referrer-Policy``,
  ``X-Frame-Options`` and a strict CSP: scripts only from the relay itself, no
  inline script and no ``eval`` (``wasm-unsafe-eval`` lets asciinema-player
  compile its terminal emulator, WebAssembly that cannot reach the DOM).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from pathlib import Path

from aiohttp import web

from certs.files import write_secret
from protocol.errors import AuthError, NotPermitted

from ..api.common import PUBLIC_PATHS, TOKEN_HASH_KEY, USER_KEY, Handler
from ..state import RELAY

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "cookie_auth_middleware",
    "csrf_token",
    "load_csrf_key",
    "same_origin",
    "security_headers",
]

COOKIE = "__Host-helpline"
CSRF_HEADER = "X-CSRF-Token"
CSRF_KEY = web.AppKey("web_csrf_key", bytes)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Web paths anyone may call (signing in, the pages and their code).
PUBLIC_WEB_PATHS = frozenset({"/web/login"})

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        # xterm.js and asciinema-player size their cells with style elements and
        # attributes they create at run time; styles cannot run code.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",
}


def load_csrf_key(data_dir: Path) -> bytes:
    """The relay's CSRF key, created (0600) on first use."""
    path = data_dir / "web-csrf.key"
    with contextlib.suppress(FileExistsError):
        write_secret(path, secrets.token_bytes(32).hex().encode("ascii"))
    return bytes.fromhex(path.read_text().strip())


def csrf_token(app: web.Application, token_hash: str) -> str:
    return hmac.new(app[CSRF_KEY], token_hash.encode("ascii"), hashlib.sha256).hexdigest()


def same_origin(request: web.Request) -> bool:
    """The request comes from a page of this relay (the browser's ``Origin``)."""
    origin = request.headers.get("Origin", "")
    return bool(origin) and hmac.compare_digest(origin, f"https://{request.host}")


@web.middleware
async def cookie_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate /api/ and /web/ requests by the session cookie when they carry no bearer
    token; the API's own middleware then sees ``USER_KEY`` set and lets them through."""
    path = request.path
    if not (path.startswith(("/api/", "/web/"))) or path in PUBLIC_WEB_PATHS:
        return await handler(request)
    if path in PUBLIC_PATHS:
        # Public API routes (health, CA, login, enrolment) use no credential: a stale cookie
        # the browser still sends must not turn them into 401s.
        return await handler(request)
    if "Authorization" in request.headers:
        if path.startswith("/web/"):
            raise AuthError("the web console signs in with its cookie")
        return await handler(request)
    token = request.cookies.get(COOKIE)
    if not token:
        if path.startswith("/web/"):
            raise AuthError("sign in first")
        return await handler(request)  # the API's middleware asks for a token
    relay = request.app[RELAY]
    user, token_hash = await relay.auth.authenticate(token)
    request[USER_KEY] = user
    request[TOKEN_HASH_KEY] = token_hash
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    if (request.method in UNSAFE_METHODS or upgrade) and not same_origin(request):
        raise NotPermitted("cross-origin request refused")
    if request.method in UNSAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent, csrf_token(request.app, token_hash)):
            raise NotPermitted("missing or wrong CSRF token; reload the page")
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the same protective headers on every response."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith(("/api/", "/web/")):
        response.headers.setdefault("Cache-Control", "no-store")
