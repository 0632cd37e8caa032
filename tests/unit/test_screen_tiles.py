"""The agent's tile diff and encoding, and the console's canvas, without a display: frames
made with numpy go through the same code as captured ones, and come out pixel-exact."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from agent.screen.keymap import key_for
from agent.screen.tiles import TileEncoder, changed_grid, plan_rectangles, text_like
from console.screen import ScreenCanvas
from protocol.screen import (
    EncodingMode,
    ScreenFrame,
    ScreenStreamError,
    Tile,
    TileEncoding,
    TileStreamParser,
    encode_frame_record,
)

W, H = 200, 130  # not multiples of the 64-pixel tile: edge tiles are smaller


def bgra(rgb: np.ndarray) -> np.ndarray:
    """An RGB array as the BGRA frames mss hands out."""
    out = np.zeros((*rgb.shape[:2], 4), dtype=np.uint8)
    out[..., 0], out[..., 1], out[..., 2], out[..., 3] = rgb[..., 2], rgb[..., 1], rgb[..., 0], 255
    return out


def picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[:, :] = (20, 40, 60)
    rgb[10:60, 70:190] = rng.integers(0, 256, (50, 120, 3), dtype=np.uint8)  # photo-like
    rgb[80:100, 5:120] = (255, 255, 255)
    rgb[85:95, 10:110:3] = (0, 0, 0)  # text-like strokes
    return rgb


def encode_frame(previous: np.ndarray | None, current: np.ndarray, mode: EncodingMode, seq: int):  # type: ignore[no-untyped-def]
    grid = changed_grid(previous, current)
    fills, rects = plan_rectangles(current, grid)
    encoder = TileEncoder(mode)
    try:
        tiles = fills + asyncio.run(encoder.encode(current, rects))
    finally:
        encoder.close()
    frame = ScreenFrame(seq, 0, W, H, previous is None, None, tuple(tiles))
    return grid, TileStreamParser().feed(encode_frame_record(frame))[0]


def test_a_full_then_a_partial_frame_arrive_pixel_exact_in_lossless_mode() -> None:
    first, second = picture(1), picture(1).copy()
    second[128:130, 192:199] = (1, 2, 3)  # in the bottom-right edge tile (8x2) only
    canvas = ScreenCanvas()
    grid, frame = encode_frame(None, bgra(first), EncodingMode.LOSSLESS, 1)
    assert grid.shape == (3, 4) and grid.all()
    canvas.apply(frame)
    assert np.array_equal(np.asarray(canvas.image), first)
    grid, frame = encode_frame(bgra(first), bgra(second), EncodingMode.LOSSLESS, 2)
    assert grid.sum() == 1 and grid[2, 3]
    assert [(t.x, t.y, t.width, t.height) for t in frame.tiles] == [(192, 128, 8, 2)]
    canvas.apply(frame)
    assert np.array_equal(np.asarray(canvas.image), second)


def test_unchanged_frames_send_nothing_and_plain_tiles_are_fills() -> None:
    still = bgra(picture(2))
    assert not changed_grid(still, still.copy()).any()
    fills, rects = plan_rectangles(still, changed_grid(None, still))
    # the top-left tile is all background: a fill with its colour
    assert Tile(0, 0, 64, 64, TileEncoding.FILL, bytes((20, 40, 60))) in fills
    # changed tiles side by side in a row are joined into one rectangle
    assert (64, 0, 128, 64) in rects


def test_auto_mode_sends_text_as_png_and_photos_as_jpeg() -> None:
    image = bgra(picture(3))
    _grid, frame = encode_frame(None, image, EncodingMode.AUTO, 1)
    kinds = {(t.x, t.y): t.encoding for t in frame.tiles}
    assert kinds[(64, 0)] is TileEncoding.JPEG  # the noise
    assert kinds[(0, 64)] is TileEncoding.PNG  # the strokes
    assert text_like(image[80:100, 5:120].view(np.uint32)[..., 0])
    _grid, lossy = encode_frame(None, image, EncodingMode.LOSSY, 1)
    assert {t.encoding for t in lossy.tiles} <= {TileEncoding.JPEG, TileEncoding.FILL}


def test_quality_follows_the_link() -> None:
    encoder = TileEncoder(EncodingMode.AUTO)
    top = encoder.quality
    for _ in range(10):
        encoder.adapt(waited_for_acks=True)
    assert encoder.slow_link and encoder.quality < top
    for _ in range(20):
        encoder.adapt(waited_for_acks=False)
    assert not encoder.slow_link and encoder.quality == top
    encoder.close()


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (9, 9, 9)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("frames", "needle"),
    [
        ([ScreenFrame(1, 0, 10, 10, False, None, ())], "never sent whole"),
        (
            [
                ScreenFrame(1, 0, 10, 10, True, None, ()),
                ScreenFrame(2, 0, 20, 10, False, None, ()),
            ],
            "not the size of the picture",
        ),
        (
            [
                ScreenFrame(
                    1, 0, 10, 10, True, None, (Tile(0, 0, 4, 4, TileEncoding.PNG, png(5, 4)),)
                )
            ],
            "is 5x4, not 4x4",
        ),
        (
            [
                ScreenFrame(
                    1, 0, 10, 10, True, None, (Tile(0, 0, 4, 4, TileEncoding.JPEG, png(4, 4)),)
                )
            ],
            "not a valid JPEG image",
        ),
        (
            [
                ScreenFrame(
                    1, 0, 10, 10, True, None, (Tile(0, 0, 4, 4, TileEncoding.WEBP, b"junk"),)
                )
            ],
            "not a valid WEBP image",
        ),
    ],
)
def test_the_canvas_refuses_bad_frames(frames: list[ScreenFrame], needle: str) -> None:
    canvas = ScreenCanvas()
    for frame in frames[:-1]:
        canvas.apply(frame)
    with pytest.raises(ScreenStreamError, match=needle):
        canvas.apply(frames[-1])


def test_browser_key_codes() -> None:
    assert key_for("KeyA") == ("char", "a")
    assert key_for("Digit7") == ("char", "7")
    assert key_for("ControlLeft") == ("special", "ctrl_l")
    assert key_for("F11") == ("special", "f11")
    assert key_for("Unidentified", "é") == ("char", "é")
    with pytest.raises(ValueError, match="unknown key code 'Launch'"):
        key_for("Launch", "LaunchApp")
