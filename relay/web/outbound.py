"""What the relay sends to one browser WebSocket, in order, written by one task.

The broker calls a technician leg from the agent's connection task; waiting
there for a slow browser would hold every other session of that agent. So a
leg only queues (JSON control messages as text, terminal output as binary)
and :class:`Outbound`'s task writes. What a queue may hold is bounded by the
caller: terminal output by the leg's credit window, the rest is small.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

from aiohttp import web

log = logging.getLogger("helpline.web")

#: Seconds a close waits for queued messages to be written.
CLOSE_GRACE = 5.0


class Outbound:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._queue: deque[str | bytes] = deque()
        self._wake = asyncio.Event()
        self._closing: tuple[int, str] | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="web outbound")

    def json(self, **message: Any) -> None:
        if self._closing is None:
            self._queue.append(json.dumps(message))
            self._wake.set()

    def binary(self, data: bytes) -> None:
        if self._closing is None:
            self._queue.append(data)
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
