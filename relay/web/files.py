"""A files session in the browser.

``GET /web/ws/files?device=...&reason=...`` opens a ``files`` session (consent,
authorisation and the transfer audit are the broker's) whose technician leg is
the relay's own files client, :class:`~relay.sshgate.sftp_files.DeviceFiles`,
the one behind the SFTP gateway. The socket carries JSON only: from the relay
``{"type": "waiting" | "opened" | "refused" | "notice" | "closed", ...}`` and
answers ``{"id", "ok", ...}``; from the page requests ``{"id", "op": "list" |
"mkdir" | "remove" | "rename", "path", ...}``. The session lives as long as
the socket.

Bytes do not ride on that socket but on plain HTTP, so the browser's own
download manager and upload progress work:

* ``GET /web/files/{handle}/download?path=P`` streams the device's file as it
  arrives; its last bytes are sent only once the size and SHA-256 the device
  announced match what arrived (else the response is cut short, which the
  browser reports as a failed download, never as a good file).
* ``POST /web/files/{handle}/upload?path=P`` (CSRF token, ``X-Content-SHA256``
  of the page's file) spools the body, checks its SHA-256 against the page's,
  then pushes it: the device resumes after a prefix it already holds when the
  hashes of that prefix match, writes to a temporary name and renames it only
  once the SHA-256 of the whole file matches (the CLI's rules).

``handle`` names one open files socket of the signed-in user.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import posixpath
import secrets
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

from protocol.errors import ErrorCode, InvalidMessage, NotFound, NotPermitted
from protocol.files import FileOp, FileReply

from ..api.common import user_of
from ..broker import Session
from ..models import User
from ..sshgate.sftp import normalize
from ..sshgate.sftp_files import DeviceFiles
from ..sshgate.spool import SpoolFull
from ..sshgate.transfers import FilesError
from ..state import RelayState
from .outbound import Outbound

log = logging.getLogger("helpline.web")

routes = web.RouteTableDef()

MAX_REASON = 1024
MAX_PATH = 4096
MAX_MESSAGE = 64 * 1024
#: Bytes per read from a download's spool and per write of an upload's.
CHUNK = 256 * 1024
#: Entries of one directory shown at most (a page of the device's listing is smaller).
MAX_ENTRIES = 10_000


class WebFiles(DeviceFiles):
    """The relay's files client for one browser socket."""

    via = "web"

    def __init__(self, host: WebTasks, user: User, device: str, reason: str, out: Outbound) -> None:
        super().__init__(host, user, device, notify=self._notice, close_channel=self._close_socket)
        self.reason = reason
        self.out = out
        self.handle = secrets.token_urlsafe(18)

    def _notice(self, line: str) -> None:
        self.out.json(type="notice", message=line.removeprefix("helpline: "))

    def _close_socket(self, status: int) -> None:
        self.out.close_soon(1000, "files session over")

    async def waiting(self, session: Session) -> None:
        self.out.json(
            type="waiting",
            session=session.id,
            message=f"waiting for the customer on {session.device.name} to accept",
        )
        await super().waiting(session)

    async def refused(self, session: Session | None, state: str, code: int, message: str) -> None:
        denied = code == ErrorCode.CONSENT_DENIED
        self.out.json(type="refused", state=state, code=code, denied=denied, message=message)
        await super().refused(session, state, code, message)

    async def opened(self, session: Session) -> None:
        await super().opened(session)
        self.out.json(
            type="opened", session=session.id, device=session.device.name, handle=self.handle
        )

    async def close(self, code: int, message: str) -> None:
        self.out.json(type="closed", code=code, message=message)
        await super().close(code, message)


class WebTasks:
    """Runs the files clients' background tasks; ends them with the relay."""

    def __init__(self, relay: RelayState) -> None:
        self.relay = relay
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine, name=f"web: {what}")
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())


#: The open files sockets by handle, and who runs their tasks.
OPEN_FILES: web.AppKey[dict[str, WebFiles]] = web.AppKey("web_open_files")
WEB_TASKS = web.AppKey("web_tasks", WebTasks)


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_PATH or "\0" in value:
        raise InvalidMessage("a path must be a non-empty string without NUL")
    return normalize(value)


async def _answer(files: WebFiles, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    path = _path(request.get("path"))
    if op == "list":
        reply = await files.call(FileOp.LIST, path)
        entries: list[dict[str, Any]] = []
        while True:
            entries += [
                {"name": e[0], "kind": e[1], "size": e[2], "mode": e[3], "mtime_ns": e[4]}
                for e in reply.entries
            ]
            if not reply.more or not reply.entries or len(entries) >= MAX_ENTRIES:
                break
            reply = await files.call(FileOp.LIST, path, offset=len(entries))
        return {"path": path, "entries": entries, "truncated": reply.more}
    if op == "mkdir":
        await files.call(FileOp.MKDIR, path, mode=0o755)
    elif op == "remove":
        await files.call(FileOp.REMOVE, path, recursive=bool(request.get("recursive")))
    elif op == "rename":
        await files.call(FileOp.RENAME, path, target=_path(request.get("target")))
    elif op == "stat":
        reply = await files.call(FileOp.STAT, path)
        return _stat(reply)
    else:
        raise InvalidMessage("unknown files operation")
    return {"path": path}


def _stat(reply: FileReply) -> dict[str, Any]:
    return {"kind": reply.kind, "size": reply.size, "mode": reply.mode, "mtime_ns": reply.mtime_ns}


async def _serve_request(files: WebFiles, raw: str) -> None:
    request_id: Any = None
    try:
        request = json.loads(raw)
        if not isinstance(request, dict):
            raise InvalidMessage("a request is a JSON object")
        request_id = request.get("id")
        answer = await _answer(files, request)
        files.out.json(id=request_id, ok=True, **answer)
    except json.JSONDecodeError:
        files.out.json(id=None, ok=False, message="a request is not JSON")
    except InvalidMessage as error:
        files.out.json(id=request_id, ok=False, message=error.message)
    except FilesError as error:
        files.out.json(id=request_id, ok=False, code=error.code, message=error.message)


@routes.get("/web/ws/files")
async def files_socket(request: web.Request) -> web.StreamResponse:
    user = user_of(request)
    device = request.query.get("device", "")[:256]
    reason = request.query.get("reason", "")
    if len(reason) > MAX_REASON:
        raise InvalidMessage(f"the reason is limited to {MAX_REASON} characters")
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=30.0, compress=False)
    await ws.prepare(request)
    out = Outbound(ws)
    host = request.app[WEB_TASKS]
    files = WebFiles(host, user, device, reason, out)
    open_files: dict[str, WebFiles] = request.app[OPEN_FILES]
    open_files[files.handle] = files
    busy: set[asyncio.Task[None]] = set()

    async def start() -> None:
        with contextlib.suppress(FilesError):
            await files._ready()

    host.spawn(start(), f"files session for {user.username}")
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            if len(busy) >= 16:
                files.out.json(id=None, ok=False, message="too many requests at once")
                continue
            task = host.spawn(_serve_request(files, message.data), "files request")
            busy.add(task)
            task.add_done_callback(busy.discard)
    finally:
        open_files.pop(files.handle, None)
        files.lost = not ws.closed or ws.close_code not in (1000, 1001)
        await files.finish()
        await out.close(1000, "files session over")
        await out.stop()
    return ws


def _failed(error: FilesError) -> web.Response:
    body = {"error": {"code": int(error.code), "message": error.message}}
    return web.json_response(body, status=409)


def _open_files(request: web.Request) -> WebFiles:
    files = request.app[OPEN_FILES].get(request.match_info["handle"])
    if files is None or files.user.id != user_of(request).id:
        raise NotFound("no such files session (it ended?)")
    return files


def _attachment(path: str) -> str:
    name = posixpath.basename(path.rstrip("/")) or "download"
    return f"attachment; filename*=UTF-8''{quote(name, safe='')}"


@routes.get("/web/files/{handle}/download")
async def download(request: web.Request) -> web.StreamResponse:
    files = _open_files(request)
    path = _path(request.query.get("path"))
    try:
        pulled = await files.download(path)
    except SpoolFull as full:
        raise NotPermitted(str(full)) from None
    except FilesError as error:
        return _failed(error)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": _attachment(path),
        }
    )
    response.content_length = pulled.size
    await response.prepare(request)
    offset = 0
    try:
        while offset < pulled.size:
            chunk = await pulled.read(offset, min(CHUNK, pulled.size - offset))
            if not chunk:
                break
            await response.write(chunk)
            offset += len(chunk)
        await pulled.wait_for(pulled.size)  # an empty file: still only once verified
    except FilesError as error:
        log.warning("web download of %r failed: %s", path, error.message)
        raise ConnectionResetError("download failed verification") from None
    finally:
        files.close_download(pulled)
    await response.write_eof()
    return response


@routes.post("/web/files/{handle}/upload")
async def upload(request: web.Request) -> web.Response:
    files = _open_files(request)
    path = _path(request.query.get("path"))
    expected = request.headers.get("X-Content-SHA256", "").lower()
    if len(expected) != 64:
        raise InvalidMessage("X-Content-SHA256 (the file's SHA-256 in hex) is required")
    try:
        spooled = await files.new_upload(path, 0o644, time.time_ns())
    except SpoolFull as full:
        raise NotPermitted(str(full)) from None
    try:
        hasher = hashlib.sha256()
        offset = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            hasher.update(chunk)
            await spooled.write(offset, chunk)
            offset += len(chunk)
        if not hmac.compare_digest(hasher.hexdigest(), expected):
            raise InvalidMessage(
                "the upload arrived damaged (its SHA-256 differs from the page's); nothing was"
                " written on the device"
            )
        digest = await files.push(spooled)
    except SpoolFull as full:
        raise NotPermitted(str(full)) from None
    except FilesError as error:
        return _failed(error)
    finally:
        files.discard(spooled)
    return web.json_response({"ok": True, "path": path, "size": offset, "sha256": digest})
