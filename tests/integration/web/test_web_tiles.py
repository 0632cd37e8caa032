"""The page's own tile-stream parser and painter (console/web/static/lib/tiles.js), in the
real Chromium: the same streams as the protocol's unit tests give the same frames, whole or
byte at a time, every malformed case is refused with the same clear error, and tiles that
Pillow encoded (PNG, WebP lossless, fill; JPEG within a small error) are painted as the
Python console paints them."""

from __future__ import annotations

import base64
import io
import struct
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page

from console.screen import ScreenCanvas
from protocol.screen import (
    CursorShape,
    ScreenFrame,
    Tile,
    TileEncoding,
    TileStreamParser,
    encode_cursor_record,
    encode_frame_record,
)

from ...unit.protocol.test_screen import BAD, CURSOR, DELTA, FULL, POINTER_ONLY
from .conftest import WebRig

pytestmark = pytest.mark.integration

PARSE = """async ([stream, step, maxRecord]) => {
    const { TileStreamParser } = await import("/assets/lib/tiles.js");
    const bytes = Uint8Array.from(atob(stream), (c) => c.charCodeAt(0));
    const parser = maxRecord ? new TileStreamParser(maxRecord) : new TileStreamParser();
    const frames = [];
    const text = (payload) => btoa(String.fromCharCode(...payload));
    try {
        for (let i = 0; i < bytes.length; i += step) {
            frames.push(...parser.feed(bytes.subarray(i, i + step)));
        }
    } catch (error) {
        return { error: error.message, kind: error.constructor.name, frames: frames.length,
                 buffered: parser.buffered };
    }
    return { buffered: parser.buffered, frames: frames.map((f) => f.kind === "cursor"
        ? { ...f, png: text(f.png) }
        : { ...f, tiles: f.tiles.map((t) => ({ ...t, payload: text(t.payload) })) }) };
}"""

PAINT = """async ([stream]) => {
    const { ScreenPainter, TileStreamParser } = await import("/assets/lib/tiles.js");
    const bytes = Uint8Array.from(atob(stream), (c) => c.charCodeAt(0));
    const canvas = document.createElement("canvas");
    const painter = new ScreenPainter(canvas, document.createElement("canvas"));
    try {
        for (const frame of new TileStreamParser().feed(bytes)) await painter.paint(frame);
    } catch (error) {
        return { error: error.message };
    }
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const pixels = btoa(String.fromCharCode(...data));
    return { width: canvas.width, height: canvas.height, pixels };
}"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def as_json(frame: ScreenFrame | CursorShape) -> dict[str, Any]:
    if isinstance(frame, CursorShape):
        return {
            "kind": "cursor",
            "serial": frame.serial,
            "hotX": frame.hot_x,
            "hotY": frame.hot_y,
            "width": frame.width,
            "height": frame.height,
            "png": b64(frame.png),
        }
    return {
        "kind": "frame",
        "seq": frame.seq,
        "monitor": frame.monitor,
        "width": frame.width,
        "height": frame.height,
        "full": frame.full,
        "cursor": list(frame.cursor) if frame.cursor else None,
        "size": frame.size,
        "tiles": [
            {
                "x": t.x,
                "y": t.y,
                "width": t.width,
                "height": t.height,
                "encoding": int(t.encoding),
                "payload": b64(t.payload),
            }
            for t in frame.tiles
        ],
    }


@pytest.fixture(scope="module")
def page(web: WebRig) -> Page:
    page = web.admin_page()
    page.goto("/#/devices")
    return page


def test_the_page_parses_streams_as_the_protocol_does(page: Page) -> None:
    stream = b"".join(
        [
            encode_cursor_record(CURSOR),
            *(encode_frame_record(f) for f in (FULL, DELTA)),
            encode_cursor_record(CURSOR),
            encode_frame_record(POINTER_ONLY),
        ]
    )
    expected = [as_json(f) for f in TileStreamParser().feed(stream)]
    for step in (len(stream), 1, 7):
        parsed = page.evaluate(PARSE, [b64(stream), step, 0])
        assert parsed == {"buffered": 0, "frames": expected}, step


@pytest.mark.parametrize("name", sorted(BAD))
def test_the_page_refuses_each_malformed_stream_clearly(page: Page, name: str) -> None:
    data, needle = BAD[name]
    parsed = page.evaluate(PARSE, [b64(encode_frame_record(FULL) + data), 5, 0])
    assert parsed["kind"] == "StreamError", parsed
    assert needle in parsed["error"], parsed
    assert parsed["frames"] == 1  # the good frame before it was delivered


def test_a_record_length_is_checked_before_anything_is_buffered(page: Page) -> None:
    parsed = page.evaluate(PARSE, [b64(struct.pack(">I", 1001) + b"x" * 10), 1, 1000])
    assert parsed["error"] == "screen record of 1001 bytes exceeds the limit of 1000"
    assert parsed["buffered"] <= 5


def encoded(picture: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


def painted(page: Page, frames: list[ScreenFrame]) -> tuple[np.ndarray, np.ndarray]:
    stream = b"".join(encode_frame_record(f) for f in frames)
    result = page.evaluate(PAINT, [b64(stream)])
    assert "error" not in result, result
    shown = Image.frombytes(
        "RGBA", (result["width"], result["height"]), base64.b64decode(result["pixels"])
    ).convert("RGB")
    reference = ScreenCanvas()
    for frame in TileStreamParser().feed(stream):
        reference.apply(frame)
    assert reference.image is not None
    return np.asarray(shown).astype(int), np.asarray(reference.image).astype(int)


def test_tiles_are_painted_as_the_python_console_paints_them(page: Page) -> None:
    noise = np.random.default_rng(7).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    picture = Image.fromarray(noise, "RGB")
    full = ScreenFrame(1, 0, 96, 64, True, (3, 4), (
        Tile(0, 0, 48, 32, TileEncoding.PNG, encoded(picture, "PNG")),
        Tile(48, 0, 48, 32, TileEncoding.WEBP, encoded(picture, "WEBP", lossless=True)),
        Tile(0, 32, 96, 32, TileEncoding.FILL, bytes([18, 52, 86])),
    ))  # fmt: skip
    delta = ScreenFrame(2, 0, 96, 64, False, None, (
        Tile(8, 8, 16, 16, TileEncoding.FILL, bytes([255, 0, 128])),
    ))  # fmt: skip
    shown, reference = painted(page, [full, delta])
    assert np.array_equal(shown, reference)
    jpeg = ScreenFrame(1, 0, 48, 32, True, None, (
        Tile(0, 0, 48, 32, TileEncoding.JPEG, encoded(picture, "JPEG", quality=90)),
    ))  # fmt: skip
    shown, reference = painted(page, [jpeg])
    assert np.abs(shown - reference).max() <= 8  # two JPEG decoders, the same image


def test_tiles_that_do_not_decode_or_do_not_fit_are_refused(page: Page) -> None:
    bad = ScreenFrame(1, 0, 32, 32, True, None, (Tile(0, 0, 32, 32, TileEncoding.PNG, b"junk"),))
    result = page.evaluate(PAINT, [b64(encode_frame_record(bad))])
    assert result == {"error": "tile at (0, 0) is not a valid image/png image"}
    small = encoded(Image.new("RGB", (8, 8), (1, 2, 3)), "PNG")
    wrong = ScreenFrame(1, 0, 32, 32, True, None, (Tile(0, 0, 16, 16, TileEncoding.PNG, small),))
    result = page.evaluate(PAINT, [b64(encode_frame_record(wrong))])
    assert result == {"error": "tile at (0, 0) is 8x8, not 16x16"}
    delta_first = ScreenFrame(4, 0, 32, 32, False, None, ())
    result = page.evaluate(PAINT, [b64(encode_frame_record(delta_first))])
    assert result == {"error": "frame 4 changes a picture never sent whole"}
