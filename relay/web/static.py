"""Serving the web console's files: the page, its own code, and the third-party browser
libraries that ``make install`` put in ``console/web/node_modules`` (from the npm
registry, never a CDN).

* ``GET /`` -- the one HTML page (``console/web/static/index.html``); every view
  of the console is a JavaScript module behind a ``#/...`` address.
* ``GET /assets/{path}`` -- files under ``console/web/static/`` (no dot files, no
  escape from that directory, a fixed set of types).
* ``GET /vendor/{name}`` -- a fixed list of files from ``node_modules``.

Everything is read per request (small files) so a page edit shows on reload.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

routes = web.RouteTableDef()

#: console/web in this checkout; ``HELPLINE_WEB_ROOT`` points elsewhere (an installed copy).
WEB_ROOT = Path(
    os.environ.get("HELPLINE_WEB_ROOT") or Path(__file__).resolve().parents[2] / "console" / "web"
)
STATIC = WEB_ROOT / "static"
MODULES = WEB_ROOT / "node_modules"

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
}

#: The third-party files the page loads, by the name it asks for.
VENDOR = {
    "xterm.mjs": "@xterm/xterm/lib/xterm.mjs",
    "xterm.css": "@xterm/xterm/css/xterm.css",
    "addon-fit.mjs": "@xterm/addon-fit/lib/addon-fit.mjs",
    "asciinema-player.min.js": "asciinema-player/dist/bundle/asciinema-player.min.js",
    "asciinema-player.css": "asciinema-player/dist/bundle/asciinema-player.css",
}

MISSING = (
    "The web console's browser libraries are not installed: run `make install` "
    "(npm ci in console/web)."
)


def _file_response(path: Path) -> web.StreamResponse:
    content_type = TYPES.get(path.suffix)
    if content_type is None or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(
        path, headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
    )


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    return _file_response(STATIC / "index.html")


@routes.get("/assets/{path:.+}")
async def asset(request: web.Request) -> web.StreamResponse:
    relative = request.match_info["path"]
    parts = relative.split("/")
    if any(not part or part.startswith(".") for part in parts):
        raise web.HTTPNotFound()
    path = (STATIC / relative).resolve()
    if STATIC.resolve() not in path.parents:
        raise web.HTTPNotFound()
    return _file_response(path)


@routes.get("/vendor/{name}")
async def vendor(request: web.Request) -> web.StreamResponse:
    relative = VENDOR.get(request.match_info["name"])
    if relative is None:
        raise web.HTTPNotFound()
    path = MODULES / relative
    if not path.is_file():
        raise web.HTTPServiceUnavailable(text=MISSING)
    return _file_response(path)
