"""A hostile device's screen stream, fed to the web viewer's own decoder
(console/web/static/lib/tiles.js) in the real Chromium: sizes the device claims are not
believed. Each record is refused with a clear message before anything is decoded or
buffered beyond its header, and no huge canvas is allocated: a frame is at most 8192
pixels a side and no larger than the largest monitor the device described, a record no
longer than such a frame can take, a tile's bytes no more than its rectangle can take,
and each picture's own header must give its tile's size before the browser decodes it.

The screen page's wiring is checked too: a screen.info that claims a 65535x65535 monitor
ends the session with the reason shown (the page's socket here is answered by the test,
as a relay relaying such a device would answer it)."""

from __future__ import annotations

import base64
import io
import json
import re
import struct

import pytest
from PIL import Image
from playwright.sync_api import Page, WebSocketRoute, expect

from protocol.screen import ScreenFrame, Tile, TileEncoding, encode_frame_record

from .conftest import WebRig

pytestmark = pytest.mark.integration

MAX_CANVAS = 8192

FEED = """async ([stream, step, limit]) => {
    const { ScreenPainter, TileStreamParser } = await import("/assets/lib/tiles.js");
    const decodes = { count: 0 };
    const real = window.createImageBitmap;
    window.createImageBitmap = (...args) => { decodes.count += 1; return real(...args); };
    const bytes = Uint8Array.from(atob(stream), (c) => c.charCodeAt(0));
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 1;
    const painter = new ScreenPainter(canvas, document.createElement("canvas"));
    const parser = new TileStreamParser();
    let painted = 0;
    try {
        if (limit) parser.limitTo(limit[0], limit[1]);
        for (let i = 0; i < bytes.length; i += step) {
            for (const frame of parser.feed(bytes.subarray(i, i + step))) {
                await painter.paint(frame);
                painted += 1;
            }
        }
        return { ok: true, painted, width: canvas.width, height: canvas.height,
                 decodes: decodes.count };
    } catch (error) {
        return { error: error.message, kind: error.constructor.name, painted,
                 buffered: parser.buffered, width: canvas.width, height: canvas.height,
                 decodes: decodes.count };
    } finally {
        window.createImageBitmap = real;
    }
}"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(out, "PNG")
    return out.getvalue()


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(out, "JPEG")
    return out.getvalue()


def claiming(picture: bytes, width: int, height: int) -> bytes:
    """A real PNG whose IHDR claims another size (the CRC is not checked by the header)."""
    return picture[:16] + struct.pack(">II", width, height) + picture[24:]


def jpeg_claiming(picture: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 claims another size."""
    at = picture.index(b"\xff\xc0")
    return picture[: at + 5] + struct.pack(">HH", height, width) + picture[at + 9 :]


def fill(x: int, y: int, w: int, h: int) -> Tile:
    return Tile(x, y, w, h, TileEncoding.FILL, b"\x01\x02\x03")


def frame(width: int, height: int, *tiles: Tile, full: bool = True, seq: int = 1) -> bytes:
    return encode_frame_record(ScreenFrame(seq, 0, width, height, full, None, tiles))


def announced(length: int, header: bytes) -> bytes:
    """A record that announces ``length`` bytes and sends only its first ones."""
    return struct.pack(">I", length) + header


@pytest.fixture(scope="module")
def page(web: WebRig) -> Page:
    page = web.admin_page()
    page.goto("/#/devices")
    return page


def feed(page: Page, stream: bytes, step: int = 4096, limit: tuple[int, int] | None = None):  # type: ignore[no-untyped-def]
    return page.evaluate(FEED, [b64(stream), step, list(limit) if limit else None])


def refused(result: dict[str, object], needle: str) -> None:
    assert result.get("kind") == "StreamError", result
    assert needle in str(result["error"]), result
    assert result["decodes"] == 0, result  # refused before the browser decoded anything
    # no canvas larger than what was drawn before
    assert int(result["width"]) <= 640 and int(result["height"]) <= 480, result  # type: ignore[call-overload]


def test_a_good_stream_still_paints(page: Page) -> None:
    stream = frame(640, 480, Tile(0, 0, 64, 64, TileEncoding.PNG, png(64, 64)), fill(64, 0, 64, 64))
    stream += frame(
        640, 480, Tile(0, 64, 64, 32, TileEncoding.JPEG, jpeg(64, 32)), full=False, seq=2
    )
    result = feed(page, stream, limit=(1920, 1080))
    assert result == {"ok": True, "painted": 2, "width": 640, "height": 480, "decodes": 2}


def test_a_65535_square_frame_is_refused_from_its_header(page: Page) -> None:
    # A fill tile costs 16 bytes on the wire and would make a 16 GiB canvas.
    stream = frame(65535, 65535, fill(0, 0, 65535, 65535))
    result = feed(page, stream, step=1)
    refused(
        result,
        f"screen frame of 65535x65535 pixels is larger than the screen shown"
        f" (at most {MAX_CANVAS}x{MAX_CANVAS})",
    )
    assert result["width"] == 1 and result["buffered"] <= 22


def test_a_frame_larger_than_the_devices_monitors_is_refused(page: Page) -> None:
    result = feed(page, frame(1920, 1080, fill(0, 0, 1920, 1080)), limit=(1280, 1024))
    refused(
        result,
        "screen frame of 1920x1080 pixels is larger than the screen shown (at most 1280x1024)",
    )


def test_monitor_info_past_the_viewers_limit_is_refused(page: Page) -> None:
    result = feed(page, b"", limit=(65535, 65535))
    refused(
        result,
        f"a screen of 65535x65535 pixels is larger than this viewer shows"
        f" ({MAX_CANVAS}x{MAX_CANVAS})",
    )


def test_a_64_mib_record_is_refused_before_it_is_buffered(page: Page) -> None:
    header = frame(4096, 4096)[4:]
    result = feed(page, announced(64 * 1024 * 1024, header + b"x" * 1000), step=64)
    refused(result, "screen record of 67108864 bytes exceeds the limit of 33554432")
    assert result["buffered"] <= 64


def test_a_record_too_long_for_its_frame_is_refused_from_its_header(page: Page) -> None:
    header = frame(100, 100, fill(0, 0, 100, 100))[4:22]
    result = feed(page, announced(20 * 1024 * 1024, header + b"x" * 4000), step=512)
    refused(result, "screen record of 20971520 bytes is too large for a 100x100 frame")
    assert result["buffered"] <= 1024


def test_a_tile_with_more_bytes_than_its_rectangle_is_refused(page: Page) -> None:
    big = Tile(0, 0, 2, 2, TileEncoding.PNG, png(2, 2) + b"\0" * 200_000)
    result = feed(page, frame(640, 480, big))
    refused(result, "tile at (0, 0) of 2x2 pixels holds")
    assert "too many for its size" in result["error"]


@pytest.mark.parametrize(
    ("payload", "encoding", "needle"),
    [
        (claiming(png(64, 64), 65535, 65535), TileEncoding.PNG, "is 65535x65535, not 64x64"),
        (jpeg_claiming(jpeg(64, 64), 30000, 30000), TileEncoding.JPEG, "is 30000x30000, not 64x64"),
        (jpeg(64, 64), TileEncoding.PNG, "is not a valid image/png image"),
        (png(64, 64), TileEncoding.WEBP, "is not a valid image/webp image"),
        (b"\xff\xd8\xff\xda\0\2", TileEncoding.JPEG, "is not a valid image/jpeg image"),
    ],
    ids=["png-claims-huge", "jpeg-claims-huge", "jpeg-as-png", "png-as-webp", "jpeg-no-frame"],
)
def test_picture_headers_are_checked_before_any_decode(
    page: Page, payload: bytes, encoding: TileEncoding, needle: str
) -> None:
    result = feed(page, frame(640, 480, Tile(0, 0, 64, 64, encoding, payload)))
    refused(result, f"tile at (0, 0) {needle}")


def test_a_tile_outside_the_canvas_is_refused(page: Page) -> None:
    stream = frame(640, 480, fill(0, 0, 640, 480))
    stream += frame(640, 480, fill(600, 0, 64, 64), full=False, seq=2)
    result = feed(page, stream, step=1)
    assert result["painted"] == 1
    assert result["error"] == "tile 64x64 at (600, 0) lies outside the 640x480 frame"


def test_the_screen_page_ends_a_session_whose_monitor_is_too_large(web: WebRig) -> None:
    page = web.admin_page()

    def hostile(ws: WebSocketRoute) -> None:
        ws.send(json.dumps({"type": "opened", "session": "s1", "device": "demo-agent"}))
        monitors = [[0, 0, 65535, 65535]]
        ws.send(json.dumps({"type": "screen.info", "monitors": monitors, "monitor": 0,
                            "mode": "auto", "control": False}))  # fmt: skip
        ws.send(frame(65535, 65535, fill(0, 0, 65535, 65535)))

    page.route_web_socket(re.compile(r".*/web/ws/screen\?.*"), hostile)
    page.goto("/#/screen/demo-agent?kind=view")
    page.click("#start-session")
    expect(page.locator("#screen-status")).to_contain_text(
        "The device sent a screen that cannot be shown: a screen of 65535x65535 pixels"
        f" is larger than this viewer shows ({MAX_CANVAS}x{MAX_CANVAS})"
    )
    size = page.evaluate("() => [document.querySelector('#screen-canvas').width,"
                         " document.querySelector('#screen-canvas').height]")  # fmt: skip
    assert size == [1, 1]
    page.context.close()
