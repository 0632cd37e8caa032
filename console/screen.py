"""The console's side of screen sessions: tiles into a picture, acknowledgements, input.

* :class:`ScreenCanvas` paints frames (:class:`~protocol.screen.ScreenFrame`)
  onto a Pillow image, checking each tile (its image must decode and be the
  size the frame says); no I/O, so recordings are replayed with it too.
* :class:`ScreenViewer` drives a granted ``view``/``control`` session: it
  reads the channel, paints, acknowledges each frame (the agent's pacing
  waits for these), keeps the latest :class:`~protocol.screen.ScreenInfo`
  and refusals, and sends monitor and mode switches, refresh requests,
  control requests and input. The web gateway and the tests use it as is.
* :func:`render_recording_at`: the screen of a ``.screen`` recording as it was
  at a given second.

A bad stream (a malformed record, a tile that does not decode) raises
:class:`~protocol.screen.ScreenStreamError` with what was wrong; the viewer
then ends the session.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from protocol import Message
from protocol.errors import ProtocolError
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
    ScreenStreamError,
    TextInput,
    TileEncoding,
    TileStreamParser,
)
from protocol.screenrec import EventKind, read_recording

from .sessions import SessionChannel

__all__ = ["ScreenCanvas", "ScreenViewer", "ViewerStats", "render_recording_at"]

_FORMATS = {TileEncoding.PNG: "PNG", TileEncoding.JPEG: "JPEG", TileEncoding.WEBP: "WEBP"}
#: Largest picture a tile may decode to, in pixels (a tile is never larger than a frame).
_MAX_TILE_PIXELS = 65535 * 65535


class ScreenCanvas:
    """The picture frames paint onto."""

    def __init__(self) -> None:
        self.image: Image.Image | None = None
        self.monitor: int | None = None
        self.cursor: tuple[int, int] | None = None

    def apply(self, frame: ScreenFrame) -> None:
        if frame.full or self.image is None:
            if not frame.full:
                raise ScreenStreamError(f"frame {frame.seq} changes a picture never sent whole")
            self.image = Image.new("RGB", (frame.width, frame.height))
            self.monitor = frame.monitor
        elif self.image.size != (frame.width, frame.height) or self.monitor != frame.monitor:
            raise ScreenStreamError(f"frame {frame.seq} is not the size of the picture")
        for tile in frame.tiles:
            box = (tile.x, tile.y, tile.x + tile.width, tile.y + tile.height)
            if tile.encoding is TileEncoding.FILL:
                self.image.paste(tuple(tile.payload), box)
                continue
            picture = _decode(tile.payload, tile.encoding, tile.x, tile.y)
            if picture.size != (tile.width, tile.height):
                raise ScreenStreamError(
                    f"tile at ({tile.x}, {tile.y}) is {picture.size[0]}x{picture.size[1]},"
                    f" not {tile.width}x{tile.height}"
                )
            self.image.paste(picture, box[:2])
        self.cursor = frame.cursor


def _decode(payload: bytes, encoding: TileEncoding, x: int, y: int) -> Image.Image:
    name = _FORMATS[encoding]
    try:
        with Image.open(io.BytesIO(payload), formats=[name]) as picture:
            if picture.size[0] * picture.size[1] > _MAX_TILE_PIXELS:
                raise ScreenStreamError(f"tile at ({x}, {y}) is too large")
            return picture.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise ScreenStreamError(f"tile at ({x}, {y}) is not a valid {name} image") from None


@dataclass
class ViewerStats:
    frames: int = 0
    bytes: int = 0
    tiles: int = 0
    full_frames: int = 0
    sizes: list[int] = field(default_factory=list)


class ScreenViewer:
    """A granted screen session, seen from the console."""

    def __init__(self, channel: SessionChannel, *, acknowledge: bool = True) -> None:
        self.channel = channel
        self.acknowledge = acknowledge
        self.canvas = ScreenCanvas()
        self.info: ScreenInfo | None = None
        self.refusals: asyncio.Queue[ScreenRefused] = asyncio.Queue()
        self.stats = ViewerStats()
        self.last_frame: ScreenFrame | None = None
        self._parser = TileStreamParser()
        self._ready: list[ScreenFrame] = []
        self._info_changed = asyncio.Event()

    # -- reading ---------------------------------------------------------------------------

    async def _read_one(self) -> None:
        """Take one thing from the channel: bytes to the parser, a message to its place."""
        item = await self.channel.receive()
        if item is None:
            closed = self.channel.closed.result()
            raise ConnectionError(f"the screen session ended: {closed.message}")
        if isinstance(item, bytes):
            await self._feed(item)
        else:
            self._message(item)

    async def next_frame(self, within: float | None = 20.0) -> ScreenFrame:
        """The next frame, painted (and acknowledged unless told not to)."""
        async with asyncio.timeout(within):
            while not self._ready:
                await self._read_one()
        frame = self._ready.pop(0)
        try:
            self.canvas.apply(frame)
        except ProtocolError as error:
            await self._fail(error)
            raise
        self.last_frame = frame
        self.stats.frames += 1
        self.stats.bytes += frame.size
        self.stats.tiles += len(frame.tiles)
        self.stats.full_frames += frame.full
        self.stats.sizes.append(frame.size)
        if self.acknowledge:
            await self.ack(frame.seq)
        return frame

    async def _until(self, done: asyncio.Event | None, within: float) -> None:
        """Paint frames as they come until ``done`` is set (or a refusal arrives)."""
        async with asyncio.timeout(within):
            while not (done.is_set() if done is not None else not self.refusals.empty()):
                if self._ready:
                    await self.next_frame(None)
                else:
                    await self._read_one()

    async def _feed(self, data: bytes) -> None:
        try:
            self._ready.extend(self._parser.feed(data))
        except ProtocolError as error:
            await self._fail(error)
            raise

    async def _fail(self, error: ProtocolError) -> None:
        self.channel.conn.close_channel(
            self.channel.channel, error.code, f"bad screen stream: {error.message}"[:1024]
        )
        await self.channel._flush()

    def _message(self, message: Message) -> None:
        if isinstance(message, ScreenInfo):
            self.info = message
            self._info_changed.set()
        elif isinstance(message, ScreenRefused):
            self.refusals.put_nowait(message)

    async def full_frame(self, within: float = 20.0, *, monitor: int | None = None) -> Image.Image:
        """Read frames until a full one (of ``monitor``, if given) has been painted."""
        async with asyncio.timeout(within):
            while True:
                frame = await self.next_frame(None)
                if frame.full and (monitor is None or frame.monitor == monitor):
                    assert self.canvas.image is not None
                    return self.canvas.image.copy()

    async def wait_info(self, within: float = 20.0) -> ScreenInfo:
        """The next ScreenInfo (reading and painting frames meanwhile)."""
        self._info_changed.clear()
        await self._until(self._info_changed, within)
        assert self.info is not None
        return self.info

    async def next_refusal(self, within: float = 20.0) -> ScreenRefused:
        """The next refusal, reading frames meanwhile."""
        await self._until(None, within)
        return self.refusals.get_nowait()

    # -- requests ------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        await self.channel.send_message(message)

    async def ack(self, seq: int) -> None:
        await self.send(ScreenAck(seq=seq))

    async def select_monitor(self, monitor: int) -> None:
        await self.send(ScreenSelect(monitor=monitor))

    async def set_mode(self, mode: EncodingMode | str) -> None:
        await self.send(ScreenMode(mode=EncodingMode(mode).value))

    async def refresh(self) -> None:
        await self.send(ScreenRefresh())

    async def request_control(self, reason: str = "") -> None:
        await self.send(ControlRequest(reason=reason))

    async def pointer(self, action: str, x: int, y: int, button: str = "", **wheel: int) -> None:
        await self.send(PointerInput(action=action, x=x, y=y, button=button, **wheel))

    async def click(self, x: int, y: int, button: str = "left") -> None:
        await self.pointer("move", x, y)
        await self.pointer("down", x, y, button)
        await self.pointer("up", x, y, button)

    async def key(self, code: str, action: str = "press", key: str = "") -> None:
        await self.send(KeyInput(action=action, code=code, key=key))

    async def type_text(self, text: str) -> None:
        await self.send(TextInput(text=text))

    async def close(self) -> None:
        await self.channel.close()


def render_recording_at(data: bytes, seconds: float) -> Image.Image:
    """The screen of a recording as it was ``seconds`` after it started."""
    recording = read_recording(data)
    parser = TileStreamParser()
    canvas = ScreenCanvas()
    for event in recording.events:
        if event.seconds > seconds:
            break
        if event.kind is EventKind.OUTPUT:
            for frame in parser.feed(event.data):
                canvas.apply(frame)
    if canvas.image is None:
        raise ScreenStreamError(f"the recording shows no screen by {seconds:g} seconds")
    return canvas.image
