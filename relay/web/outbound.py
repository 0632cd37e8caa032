"""What the relay sends to one browser WebSocket, in order, written by one task.

The broker calls a technician leg from the agent's connection task; waiting
there for a slow browser would hold every other session of that agent. So a
leg only queues (JSON control messages as text, terminal output as binary)
and :class:`Outbound`'s task writes. What a queue may hold is bounded by the
caller: terminal output by the leg's credit window; the rest is small, and a browser
that lets ``MAX_QUEUED`` messages pile up is disconnected.

Each one is listed under the sign-in (token) that opened it while it runs, so
signing out closes the sockets that sign-in opened (:func:`close_sockets_of`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

from aiohttp import web

from ..api.common import TOKEN_HASH_KEY

log = logging.getLogger("helpline.web")

#: Seconds a close waits for queued messages to be written.
CLOSE_GRACE = 5.0
#: Messages waiting for a browser that does not read, before it is disconnected (the
#: page reconnects and loads afresh). Terminal output never gets near: its window is.
MAX_QUEUED = 10_000


class Outbound:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request | None = None) -> None:
        self.ws = ws
        self._queue: deque[str | bytes] = deque()
        self._wake = asyncio.Event()
        self._closing: tuple[int, str] | None = None
        self._listed: set[Outbound] | None = None
        if request is not None:  # listed under its sign-in while it runs
            by_token = request.app[OPEN_SOCKETS]
            self._listed = by_token.setdefault(request[TOKEN_HASH_KEY], set())
            self._listed.add(self)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="web outbound")

    def json(self, **message: Any) -> None:
        self._put(json.dumps(message))

    def binary(self, data: bytes) -> None:
        self._put(data)

    def _put(self, item: str | bytes) -> None:
        if self._closing is not None:
            return
        if len(self._queue) >= MAX_QUEUED:
            log.warning("a browser is not reading its socket: disconnected")
            self._queue.clear()
            self.close_soon(1013, "too far behind")
            return
        self._queue.append(item)
        self._wake.set()

    def close_soon(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket once what is queued is written."""
        if self._closing is None:
            self._closing = (code, reason[:120])
            self._wake.set()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_soon(code, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_GRACE)
        if not self.ws.closed:
            await self.ws.close(code=code, message=reason[:120].encode())

    async def stop(self) -> None:
        """The socket is gone: drop what waits."""
        self._queue.clear()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        try:
            while True:
                while self._queue:
                    item = self._queue.popleft()
                    if self.ws.closed:
                        self._queue.clear()
                        break
                    if isinstance(item, bytes):
                        await self.ws.send_bytes(item)
                    else:
                        await self.ws.send_str(item)
                if self._closing is not None:
                    if not self.ws.closed:
                        code, reason = self._closing
                        await self.ws.close(code=code, message=reason.encode())
                    return
                self._wake.clear()
                await self._wake.wait()
        except (ConnectionError, RuntimeError) as exc:
            log.debug("browser socket gone: %s", exc)
        finally:
            if self._listed is not None:
                self._listed.discard(self)


#: The running browser sockets by the token hash of the sign-in that opened them.
OPEN_SOCKETS: web.AppKey[dict[str, set[Outbound]]] = web.AppKey("web_open_sockets")


def close_sockets_of(app: web.Application, token_hash: str) -> int:
    """Close every socket a sign-in opened (it signed out); returns how many."""
    sockets = app[OPEN_SOCKETS].pop(token_hash, set())
    for out in list(sockets):
        out.close_soon(1008, "signed out")
    return len(sockets)
