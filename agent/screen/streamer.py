"""One screen session on the agent: frames out, paced by the viewer; requests and input in.

The frame loop grabs the monitor shown, sends the tiles that changed since the
last frame sent (all of them in a full frame: at start, after a monitor or
mode switch, on request) and never has more than :data:`MAX_IN_FLIGHT`
frames unacknowledged: a slow link or viewer lowers the frame rate, and
nothing queues up (one frame is encoded at a time, and its bytes leave only
as the channel's window allows). While frames wait for acknowledgements, JPEG
quality goes down (see :meth:`~.tiles.TileEncoder.adapt`). With nothing
changing, nothing is sent, and the screen is polled less often.

Input is replayed only once the customer granted ``control`` (the session's
kind, or an upgrade the customer approved in a new prompt); otherwise it is
refused with :class:`~protocol.screen.ScreenRefused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from protocol import Connection, Message
from protocol.errors import ErrorCode, UsageError
from protocol.screen import (
    ControlRequest,
    EncodingMode,
    KeyInput,
    PointerInput,
    ScreenAck,
    ScreenFrame,
    ScreenInfo,
    ScreenMode,
    ScreenRefresh,
    ScreenRefused,
    ScreenSelect,
    TextInput,
    encode_frame_record,
)

from .capture import CaptureError, Monitor, ScreenCapture
from .injector import InputError, InputInjector
from .tiles import TileEncoder, changed_grid, plan_rectangles

log = logging.getLogger("helpline.agent.screen")

#: Frames sent but not yet acknowledged, at most.
MAX_IN_FLIGHT = 2
#: Fastest frame rate.
MAX_FPS = 60.0
#: How often an unchanged screen is looked at: soon after a change, then less often.
POLL_ACTIVE = 1 / 30
POLL_IDLE = 1 / 10
IDLE_AFTER = 30  # unchanged polls before polling less often

Send = Callable[[], Awaitable[None]]
#: Asks the customer for control; returns True when granted (and reports the decision).
AskControl = Callable[[str], Awaitable[bool]]


def parse_mode(value: str) -> EncodingMode:
    try:
        return EncodingMode(value)
    except ValueError:
        return EncodingMode.AUTO


class ScreenStreamer:
    def __init__(
        self,
        conn: Connection,
        channel: int,
        send: Send,
        *,
        control: bool,
        ask_control: AskControl,
        monitor: int = 0,
        mode: EncodingMode = EncodingMode.AUTO,
        capture: ScreenCapture | None = None,
    ) -> None:
        self.conn = conn
        self.channel = channel
        self._send = send
        self.control = control
        self._ask_control = ask_control
        self.capture = capture or ScreenCapture()
        self.injector = InputInjector(self.capture.display)
        self.encoder = TileEncoder(mode)
        self.monitors: list[Monitor] = []
        self.monitor = monitor
        self.seq = 0
        self.acked = 0
        self.closed = False
        self.frames_sent = 0
        self.bytes_sent = 0
        self._full = True
        self._acks = asyncio.Event()
        self._credit = asyncio.Event()
        self._wake = asyncio.Event()
        self._asking = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- the frame loop ------------------------------------------------------------------------

    async def start(self) -> None:
        """Look at the screen once (raises CaptureError when there is none to show)."""
        self.monitors = (await self.capture.monitors())[:16]
        if not self.monitors:
            raise CaptureError("no monitor to show")
        if not 0 <= self.monitor < len(self.monitors):
            self.monitor = 0

    async def run(self) -> None:
        try:
            await self._info()
            await self._loop()
        except CaptureError as exc:
            log.warning("screen session ended: %s", exc)
            if not self.closed:
                self.conn.close_channel(self.channel, ErrorCode.INTERNAL, "the screen went away")
                await self._send()
        except UsageError:
            pass  # the channel closed under us

    async def _loop(self) -> None:
        previous: np.ndarray | None = None
        last_cursor: tuple[int, int] | None = None
        idle = 0
        while not self.closed:
            waited = False
            while self.seq - self.acked >= MAX_IN_FLIGHT and not self.closed:
                waited = True
                self._acks.clear()
                await self._acks.wait()
            if self.closed:
                return
            started = time.monotonic()
            monitor = self.monitors[self.monitor]
            full, self._full = self._full, False  # a request made from here on stays
            frame, pointer = await self.capture.grab(monitor)
            cursor = _relative(pointer, monitor)
            grid = changed_grid(None if full else previous, frame)
            if not full and not grid.any() and cursor == last_cursor:
                idle += 1
                self._wake.clear()
                interval = POLL_IDLE if idle > IDLE_AFTER else POLL_ACTIVE
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
                continue
            idle = 0
            fills, rects = plan_rectangles(frame, grid)
            tiles = fills + await self.encoder.encode(frame, rects)
            if self.closed:
                return
            self.seq += 1
            record = encode_frame_record(
                ScreenFrame(
                    seq=self.seq,
                    monitor=self.monitor,
                    width=frame.shape[1],
                    height=frame.shape[0],
                    full=full,
                    cursor=cursor,
                    tiles=tuple(tiles),
                )
            )
            await self._send_data(record)
            self.frames_sent += 1
            self.bytes_sent += len(record)
            self.encoder.adapt(waited)
            previous, last_cursor = frame, cursor
            pause = 1 / MAX_FPS - (time.monotonic() - started)
            if pause > 0:
                await asyncio.sleep(pause)

    async def _send_data(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.closed:
            credit = self.conn.send_credit(self.channel)
            if credit <= 0:
                self._credit.clear()
                await self._credit.wait()
                continue
            self.conn.send_data(self.channel, bytes(view[:credit]))
            view = view[credit:]
            await self._send()

    async def _info(self) -> None:
        self.conn.send_channel_message(
            self.channel,
            ScreenInfo(
                monitors=tuple(self.monitors),
                monitor=self.monitor,
                mode=self.encoder.mode.value,
                control=self.control,
            ),
        )
        await self._send()

    async def _refuse(self, code: int, message: str) -> None:
        if not self.closed:
            self.conn.send_channel_message(
                self.channel, ScreenRefused(code=code, message=message[:1024])
            )
            await self._send()

    # -- from the viewer -----------------------------------------------------------------------

    def credit_available(self) -> None:
        self._credit.set()

    async def handle(self, message: Message) -> None:
        if isinstance(message, ScreenAck):
            if message.seq > self.acked:
                self.acked = min(message.seq, self.seq)
                self._acks.set()
        elif isinstance(message, ScreenRefresh):
            self._refresh()
        elif isinstance(message, ScreenSelect):
            await self._select(message.monitor)
        elif isinstance(message, ScreenMode):
            self.encoder.mode = EncodingMode(message.mode)
            self._refresh()
            await self._info()
        elif isinstance(message, ControlRequest):
            self._spawn(self._upgrade(message.reason))
        elif isinstance(message, PointerInput | KeyInput | TextInput):
            await self._input(message)

    def _refresh(self) -> None:
        self._full = True
        self._wake.set()

    async def _select(self, index: int) -> None:
        self.monitors = (await self.capture.monitors())[:16]
        if not 0 <= index < len(self.monitors):
            await self._refuse(ErrorCode.NOT_FOUND, f"no monitor {index} on this device")
            return
        self.monitor = index
        self._refresh()
        await self._info()

    async def _input(self, message: PointerInput | KeyInput | TextInput) -> None:
        if not self.control:
            log.warning("input refused in a view session")
            await self._refuse(
                ErrorCode.NOT_PERMITTED, "input refused: the customer allowed viewing only"
            )
            return
        try:
            if isinstance(message, PointerInput):
                await self.injector.pointer(message, self.monitors[self.monitor])
            elif isinstance(message, KeyInput):
                await self.injector.key(message)
            else:
                await self.injector.text(message)
        except InputError as exc:
            await self._refuse(ErrorCode.INVALID_MESSAGE, str(exc))

    async def _upgrade(self, reason: str) -> None:
        if self.control:
            await self._info()
            return
        if self._asking:
            return
        self._asking = True
        try:
            granted = await self._ask_control(reason)
        finally:
            self._asking = False
        if self.closed:
            return
        if granted:
            self.control = True
            await self._info()
        else:
            await self._refuse(ErrorCode.CONSENT_DENIED, "the customer did not allow control")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the end -------------------------------------------------------------------------------

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._acks.set()
        self._credit.set()
        self._wake.set()
        for task in list(self._tasks):
            task.cancel()
        if self.control:
            with contextlib.suppress(InputError):
                await self.injector.release_all()
        self.injector.close()
        self.encoder.close()
        await self.capture.close()


def _relative(pointer: tuple[int, int], monitor: Monitor) -> tuple[int, int] | None:
    x, y = pointer[0] - monitor[0], pointer[1] - monitor[1]
    if 0 <= x < monitor[2] and 0 <= y < monitor[3]:
        return (x, y)
    return None
