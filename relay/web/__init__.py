"""The web console's relay side: the browser signs in with a cookie and talks plain
HTTPS and WebSockets to the relay, which acts as the technician's leg of each session
(as the SSH gateway does), so consent, flow control, recording, file hashing and resume
stay in Python.

Modules, one per concept:

* :mod:`.security` -- the session cookie, CSRF tokens, Origin checks, CSP and the
  other response headers; the middleware that signs cookie requests in.
* :mod:`.signin` -- ``/web/login``, ``/web/logout``, ``/web/session``.
* :mod:`.static` -- the page, its modules and the vendored npm libraries.
* :mod:`.events` -- devices coming and going, pushed to the page.
* :mod:`.shell` -- a shell session over a WebSocket (xterm.js in the page).
* :mod:`.screen` -- a screen ``view``/``control`` session over a WebSocket (a
  canvas in the page).
* :mod:`.files` -- a files session: listing over a WebSocket, downloads and
  uploads over HTTP.
* :mod:`.outbound` -- ordered, non-blocking writes to one browser socket.

The pages' data comes from the REST API (``/api/v1/...``), which authorises
every call by role and group grants whether it came with a bearer token or the
cookie.
"""

from __future__ import annotations

from aiohttp import web

from ..state import RELAY
from . import events, files, screen, shell, signin, static
from .outbound import OPEN_SOCKETS
from .security import CSRF_KEY, cookie_auth_middleware, load_csrf_key, security_headers

__all__ = ["cookie_auth_middleware", "setup_web"]


def setup_web(app: web.Application) -> None:
    """Add the web console's routes and headers to the relay's application."""
    relay = app[RELAY]
    app[CSRF_KEY] = load_csrf_key(relay.config.data_dir)
    app[files.OPEN_FILES] = {}
    app[OPEN_SOCKETS] = {}
    app[files.WEB_TASKS] = files.WebTasks(relay)
    for module in (signin, static, events, shell, screen, files):
        app.add_routes(module.routes)
    app.on_response_prepare.append(security_headers)
    app.on_shutdown.append(_close_sockets)


async def _close_sockets(app: web.Application) -> None:
    """The relay is stopping: close every browser socket now (the pages reconnect to the
    next relay) rather than let the server wait for them."""
    for sockets in list(app[OPEN_SOCKETS].values()):
        for out in list(sockets):
            out.close_soon(1001, "relay shutting down")
    await app[files.WEB_TASKS].stop()
