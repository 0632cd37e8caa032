"""Which parts of a frame changed, and how each is encoded.

A frame (BGRA, height x width x 4, from :mod:`.capture`) is cut into square
tiles of :data:`TILE` pixels. :func:`changed_grid` compares it with the last
frame sent, as 32-bit pixels, and reduces the differences per tile (numpy,
no Python loop over pixels). :func:`plan_rectangles` turns the changed tiles
into what is sent: a tile of one colour becomes a ``fill`` (three bytes), and
runs of changed tiles side by side in a row are joined into one rectangle,
so a screen that changed everywhere costs one image per tile row, not one per
tile.

:class:`TileEncoder` encodes rectangles (on a thread pool: Pillow and zlib
release the GIL while they compress): PNG for ``lossless``; in ``auto``,
PNG for text-like rectangles (few distinct colours) and JPEG for photo-like
ones, or JPEG for everything while the link is slow; JPEG for ``lossy``. The
JPEG quality follows the link (:meth:`TileEncoder.adapt`).
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from protocol.screen import EncodingMode, Tile, TileEncoding

#: Tile edge in pixels.
TILE = 64
#: Distinct colours (in a sample) at or below which a rectangle counts as text-like.
TEXT_COLOURS = 48
#: JPEG quality bounds and steps.
QUALITY_MAX = 85
QUALITY_MIN = 30
QUALITY_STEP = 10

Rect = tuple[int, int, int, int]  # x, y, width, height


def as_pixels(frame: np.ndarray) -> np.ndarray:
    """The frame as one uint32 per pixel (height x width): a view, not a copy."""
    return frame.view(np.uint32).reshape(frame.shape[0], frame.shape[1])


def changed_grid(previous: np.ndarray | None, current: np.ndarray, tile: int = TILE) -> np.ndarray:
    """A (rows x cols) boolean grid: True where a tile differs (everything if no previous)."""
    height, width = current.shape[:2]
    rows, cols = -(-height // tile), -(-width // tile)
    if previous is None or previous.shape != current.shape:
        return np.ones((rows, cols), dtype=bool)
    differs = as_pixels(previous) != as_pixels(current)
    per_row = np.logical_or.reduceat(differs, np.arange(0, height, tile), axis=0)
    grid: np.ndarray = np.logical_or.reduceat(per_row, np.arange(0, width, tile), axis=1)
    return grid


def plan_rectangles(
    frame: np.ndarray, grid: np.ndarray, tile: int = TILE
) -> tuple[list[Tile], list[Rect]]:
    """Fill tiles (already encoded) and the rectangles left to encode, for the changed tiles."""
    height, width = frame.shape[:2]
    pixels = as_pixels(frame)
    fills: list[Tile] = []
    rects: list[Rect] = []
    for row, col_mask in enumerate(grid):
        y = row * tile
        h = min(tile, height - y)
        run_start: int | None = None
        run_end = -2
        cols = np.flatnonzero(col_mask)
        for col in [*cols.tolist(), None]:
            solid = False
            if col is not None:
                x = col * tile
                block = pixels[y : y + h, x : x + min(tile, width - x)]
                solid = bool((block == block[0, 0]).all())
                if solid:
                    fills.append(_fill(x, y, block.shape[1], h, int(block[0, 0])))
            joins = col is not None and not solid and run_start is not None and col == run_end + 1
            if run_start is not None and not joins:
                x0 = run_start * tile
                rects.append((x0, y, min((run_end + 1) * tile, width) - x0, h))
                run_start = None
            if col is not None and not solid:
                if run_start is None:
                    run_start = col
                run_end = col
    return fills, rects


def _fill(x: int, y: int, w: int, h: int, pixel: int) -> Tile:
    # little-endian BGRA in a uint32: blue is the low byte
    rgb = bytes(((pixel >> 16) & 0xFF, (pixel >> 8) & 0xFF, pixel & 0xFF))
    return Tile(x, y, w, h, TileEncoding.FILL, rgb)


def text_like(block: np.ndarray) -> bool:
    """Few distinct colours in a sample of the rectangle: text, UI, line art."""
    sample = block[::4, ::4]
    return int(np.unique(sample).size) <= TEXT_COLOURS


class TileEncoder:
    """Encodes rectangles of a frame in a browser-decodable format, on a thread pool."""

    def __init__(self, mode: EncodingMode = EncodingMode.AUTO, workers: int = 2) -> None:
        self.mode = mode
        self.quality = QUALITY_MAX
        self.slow_link = False
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="helpline-encode")

    def adapt(self, waited_for_acks: bool) -> None:
        """After each frame: lower the JPEG quality while frames wait for acknowledgements
        (the link or the viewer is the bottleneck), raise it back while they do not."""
        if waited_for_acks:
            self.quality = max(QUALITY_MIN, self.quality - QUALITY_STEP)
            self.slow_link = self.quality <= QUALITY_MIN + QUALITY_STEP
        else:
            self.quality = min(QUALITY_MAX, self.quality + QUALITY_STEP // 2)
            if self.quality >= QUALITY_MAX - QUALITY_STEP:
                self.slow_link = False

    def encode_one(self, frame: np.ndarray, rect: Rect) -> Tile:
        x, y, w, h = rect
        block = frame[y : y + h, x : x + w]
        lossless = self.mode is EncodingMode.LOSSLESS or (
            self.mode is EncodingMode.AUTO and not self.slow_link and text_like(as_pixels(block))
        )
        image = Image.frombuffer("RGB", (w, h), np.ascontiguousarray(block), "raw", "BGRX", 0, 1)
        out = io.BytesIO()
        if lossless:
            image.save(out, format="PNG", compress_level=1)
            return Tile(x, y, w, h, TileEncoding.PNG, out.getvalue())
        image.save(out, format="JPEG", quality=self.quality)
        return Tile(x, y, w, h, TileEncoding.JPEG, out.getvalue())

    async def encode(self, frame: np.ndarray, rects: list[Rect]) -> list[Tile]:
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self._pool, self.encode_one, frame, r) for r in rects]
        return list(await asyncio.gather(*jobs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
