// The screen channel's tile stream (protocol/screen.py) in the page: an incremental,
// bounded parser of its records (frames and pointer shapes), and a painter that draws
// frames on a canvas (tiles decoded natively by the browser, fill tiles as rectangles)
// with the pointer drawn on a second canvas laid over it. Used by the live viewer and the
// recording player.
//
// Nothing the device says about sizes is believed: a frame is at most MAX_CANVAS pixels a
// side (and, once the device described its monitors, no larger than the largest of them),
// a record at most what such a frame can take (checked from its header, before the record
// is buffered), a tile's payload at most what its rectangle can take, and each picture's
// own header must give the tile's size before the browser decodes it (lib/imagesize.js).

import { imageSize } from "./imagesize.js";

export const FULL = 0x01;
export const CURSOR_VISIBLE = 0x02;
const KNOWN_FLAGS = FULL | CURSOR_VISIBLE;
const RECORD_FRAME = 1;
const RECORD_CURSOR = 2;
const FRAME_HEADER = 18; // kind u8, flags u8, monitor u16, seq u32, w, h, cx, cy, tiles u16
const CURSOR_HEADER = 17; // kind u8, serial u32, hot_x, hot_y, w, h u16, size u32
const HEADERS = { [RECORD_FRAME]: FRAME_HEADER, [RECORD_CURSOR]: CURSOR_HEADER };
const MAX_CURSOR = 256;
const MAX_CURSOR_PNG = MAX_CURSOR * MAX_CURSOR * 4 + 4096;
const TILE_HEADER = 13; // x, y, w, h u16, encoding u8, size u32
// A full lossless 4K frame of photos is ~25 MB; anything past this is refused unread.
export const DEFAULT_MAX_RECORD = 32 * 1024 * 1024;
// The largest frame the viewer draws, a side (a canvas of 8192x8192 is 256 MiB already).
export const MAX_CANVAS = 8192;
// What a tile's encoded picture may take beyond 4 bytes a pixel (PNG and WebP headers,
// zlib blocks, JPEG tables): incompressible pixels stay under 4 bytes each.
const TILE_SLACK = 4096;
export const ENCODINGS = { 0: "fill", 1: "image/png", 2: "image/jpeg", 3: "image/webp" };

export class StreamError extends Error {}

// Bytes in, records out, in order: frames { kind: "frame", seq, monitor, width, height,
// full, cursor: [x, y] | null, tiles: [{ x, y, width, height, encoding, payload }], size }
// and pointer shapes { kind: "cursor", serial, hotX, hotY, width, height, png }. Holds at
// most one record, whose length and kind are checked before anything of it is kept.
export class TileStreamParser {
  constructor(maxRecord = DEFAULT_MAX_RECORD) {
    this.maxRecord = maxRecord;
    this.maxWidth = MAX_CANVAS;
    this.maxHeight = MAX_CANVAS;
    this.chunks = [];
    this.buffered = 0;
    this.recordLength = null;
  }

  // The largest frame to accept from now on (the device's largest monitor), within MAX_CANVAS.
  limitTo(width, height) {
    if (!(width > 0 && width <= MAX_CANVAS && height > 0 && height <= MAX_CANVAS)) {
      throw new StreamError(`a screen of ${width}x${height} pixels is larger than this viewer shows (${MAX_CANVAS}x${MAX_CANVAS})`);
    }
    this.maxWidth = width;
    this.maxHeight = height;
  }

  // A frame's header, before the rest of its record is buffered: its size within the
  // limits, and a record no longer than such a frame can be.
  checkFrameHeader() {
    const header = this.peek(FRAME_HEADER);
    const view = new DataView(header.buffer);
    const width = view.getUint16(8);
    const height = view.getUint16(10);
    const tiles = view.getUint16(16);
    if (width > this.maxWidth || height > this.maxHeight) {
      throw new StreamError(`screen frame of ${width}x${height} pixels is larger than the screen shown (at most ${this.maxWidth}x${this.maxHeight})`);
    }
    const most = FRAME_HEADER + tiles * (TILE_HEADER + TILE_SLACK) + width * height * 4;
    if (this.recordLength > most) {
      throw new StreamError(`screen record of ${this.recordLength} bytes is too large for a ${width}x${height} frame (at most ${most})`);
    }
  }

  // The first `count` buffered bytes, left in the buffer.
  peek(count) {
    const out = new Uint8Array(count);
    let filled = 0;
    for (const chunk of this.chunks) {
      const part = Math.min(chunk.length, count - filled);
      out.set(chunk.subarray(0, part), filled);
      filled += part;
      if (filled === count) break;
    }
    return out;
  }

  feed(data) {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    if (bytes.length) {
      this.chunks.push(bytes);
      this.buffered += bytes.length;
    }
    const frames = [];
    for (;;) {
      if (this.recordLength === null) {
        if (this.buffered < 4) break;
        const length = new DataView(this.take(4).buffer).getUint32(0);
        if (length > this.maxRecord) throw new StreamError(`screen record of ${length} bytes exceeds the limit of ${this.maxRecord}`);
        if (length === 0) throw new StreamError("empty screen record");
        this.recordLength = length;
        this.kindChecked = false;
      }
      if (!this.kindChecked) {
        if (this.buffered < 1) break;
        const kind = this.chunks[0][0];
        if (!(kind in HEADERS)) throw new StreamError(`unknown screen record kind ${kind}`);
        if (this.recordLength < HEADERS[kind]) throw new StreamError(`screen record of ${this.recordLength} bytes is too short`);
        if (kind === RECORD_CURSOR && this.recordLength > CURSOR_HEADER + MAX_CURSOR_PNG) {
          throw new StreamError(`cursor image of ${this.recordLength - CURSOR_HEADER} bytes is too large`);
        }
        this.kindChecked = true;
        this.headerChecked = kind !== RECORD_FRAME;
      }
      if (!this.headerChecked) {
        if (this.buffered < FRAME_HEADER) break;
        this.checkFrameHeader();
        this.headerChecked = true;
      }
      if (this.buffered < this.recordLength) break;
      const record = this.take(this.recordLength);
      this.recordLength = null;
      frames.push(parseRecord(record));
    }
    return frames;
  }

  take(count) {
    const out = new Uint8Array(count);
    let filled = 0;
    while (filled < count) {
      const head = this.chunks[0];
      const part = Math.min(head.length, count - filled);
      out.set(head.subarray(0, part), filled);
      filled += part;
      if (part === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(part);
    }
    this.buffered -= count;
    return out;
  }
}

function parseRecord(record) {
  const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
  if (view.getUint8(0) === RECORD_CURSOR) return parseCursor(record, view);
  const flags = view.getUint8(1);
  if (flags & ~KNOWN_FLAGS) throw new StreamError(`unknown screen frame flags 0x${flags.toString(16)}`);
  const frame = {
    kind: "frame",
    monitor: view.getUint16(2),
    seq: view.getUint32(4),
    width: view.getUint16(8),
    height: view.getUint16(10),
    full: Boolean(flags & FULL),
    cursor: flags & CURSOR_VISIBLE ? [view.getUint16(12), view.getUint16(14)] : null,
    tiles: [],
    size: record.byteLength + 4,
  };
  if (!frame.width || !frame.height) throw new StreamError("screen frame of zero size");
  const count = view.getUint16(16);
  let offset = FRAME_HEADER;
  for (let i = 0; i < count; i += 1) {
    if (offset + TILE_HEADER > record.byteLength) throw new StreamError("screen record shorter than its tiles");
    const tile = {
      x: view.getUint16(offset),
      y: view.getUint16(offset + 2),
      width: view.getUint16(offset + 4),
      height: view.getUint16(offset + 6),
      encoding: view.getUint8(offset + 8),
    };
    const size = view.getUint32(offset + 9);
    offset += TILE_HEADER;
    if (!tile.width || !tile.height || tile.x + tile.width > frame.width || tile.y + tile.height > frame.height) {
      throw new StreamError(`tile ${tile.width}x${tile.height} at (${tile.x}, ${tile.y}) lies outside the ${frame.width}x${frame.height} frame`);
    }
    if (!(tile.encoding in ENCODINGS)) throw new StreamError(`unknown tile encoding ${tile.encoding}`);
    if (size > tile.width * tile.height * 4 + TILE_SLACK) {
      throw new StreamError(`tile at (${tile.x}, ${tile.y}) of ${tile.width}x${tile.height} pixels holds ${size} bytes, too many for its size`);
    }
    if (tile.encoding === 0 && size !== 3) throw new StreamError(`a fill tile holds 3 bytes, not ${size}`);
    if (!size) throw new StreamError(`tile at (${tile.x}, ${tile.y}) without data`);
    if (offset + size > record.byteLength) throw new StreamError("screen record shorter than its tiles");
    tile.payload = record.subarray(offset, offset + size);
    offset += size;
    frame.tiles.push(tile);
  }
  if (offset !== record.byteLength) throw new StreamError("screen record longer than its tiles");
  return frame;
}

function parseCursor(record, view) {
  const shape = {
    kind: "cursor",
    serial: view.getUint32(1),
    hotX: view.getUint16(5),
    hotY: view.getUint16(7),
    width: view.getUint16(9),
    height: view.getUint16(11),
  };
  const size = view.getUint32(13);
  if (!(shape.width > 0 && shape.width <= MAX_CURSOR && shape.height > 0 && shape.height <= MAX_CURSOR)) {
    throw new StreamError(`cursor of ${shape.width}x${shape.height} pixels`);
  }
  if (shape.hotX >= shape.width || shape.hotY >= shape.height) {
    throw new StreamError(`cursor hot spot (${shape.hotX}, ${shape.hotY}) outside the cursor`);
  }
  if (size === 0 || size !== record.byteLength - CURSOR_HEADER) throw new StreamError("cursor record and image sizes differ");
  if (size > MAX_CURSOR_PNG) throw new StreamError(`cursor image of ${size} bytes is too large`);
  shape.png = record.subarray(CURSOR_HEADER);
  return shape;
}

// Draws frames on `canvas` (the picture, pixel for pixel) and the pointer on `overlay`
// (the same size, laid over it by the page's CSS, so both scale together).
export class ScreenPainter {
  constructor(canvas, overlay) {
    this.canvas = canvas;
    this.overlay = overlay;
    this.context = canvas.getContext("2d", { alpha: false });
    this.pointer = overlay.getContext("2d");
    this.monitor = null;
    this.hasPicture = false;
    this.cursor = null;
    this.shape = null; // the device's pointer shape: { record, bitmap }, or an arrow
  }

  // A pointer shape record from the stream: drawn at the pointer from now on.
  async setShape(record) {
    if (this.shape && this.shape.record === record) return;
    const bitmap = await createImageBitmap(new Blob([record.png], { type: "image/png" })).catch(() => {
      throw new StreamError(`the pointer shape ${record.serial} is not a valid PNG image`);
    });
    if (bitmap.width !== record.width || bitmap.height !== record.height) {
      bitmap.close();
      throw new StreamError(`the pointer shape ${record.serial} is ${bitmap.width}x${bitmap.height}, not ${record.width}x${record.height}`);
    }
    if (this.shape) this.shape.bitmap.close();
    this.shape = { record, bitmap };
    this.drawCursor(this.cursor);
  }

  reset() {
    this.hasPicture = false;
    this.monitor = null;
  }

  async paint(frame) {
    if (!(frame.width <= MAX_CANVAS && frame.height <= MAX_CANVAS)) {
      throw new StreamError(`screen frame of ${frame.width}x${frame.height} pixels is larger than this viewer shows (${MAX_CANVAS}x${MAX_CANVAS})`);
    }
    // Each picture's header says its size before anything is decoded.
    for (const tile of frame.tiles) {
      if (tile.encoding === 0) continue;
      const type = ENCODINGS[tile.encoding];
      const size = imageSize(type, tile.payload);
      if (size === null) throw new StreamError(`tile at (${tile.x}, ${tile.y}) is not a valid ${type} image`);
      if (size.width !== tile.width || size.height !== tile.height) {
        throw new StreamError(`tile at (${tile.x}, ${tile.y}) is ${size.width}x${size.height}, not ${tile.width}x${tile.height}`);
      }
    }
    if (frame.full) {
      if (this.canvas.width !== frame.width || this.canvas.height !== frame.height) {
        this.canvas.width = this.overlay.width = frame.width;
        this.canvas.height = this.overlay.height = frame.height;
        this.context = this.canvas.getContext("2d", { alpha: false });
      }
      this.monitor = frame.monitor;
      this.hasPicture = true;
    } else if (!this.hasPicture) {
      throw new StreamError(`frame ${frame.seq} changes a picture never sent whole`);
    } else if (this.canvas.width !== frame.width || this.canvas.height !== frame.height || this.monitor !== frame.monitor) {
      throw new StreamError(`frame ${frame.seq} is not the size of the picture`);
    }
    // Decode every tile first (in parallel, off the main thread), then draw them in order.
    const pictures = await Promise.all(
      frame.tiles.map((tile) =>
        tile.encoding === 0
          ? null
          : createImageBitmap(new Blob([tile.payload], { type: ENCODINGS[tile.encoding] }), {
              colorSpaceConversion: "none",
              premultiplyAlpha: "none",
            }).catch(() => {
              throw new StreamError(`tile at (${tile.x}, ${tile.y}) is not a valid ${ENCODINGS[tile.encoding]} image`);
            }),
      ),
    );
    try {
      frame.tiles.forEach((tile, index) => {
        const picture = pictures[index];
        if (picture === null) {
          const [r, g, b] = tile.payload;
          this.context.fillStyle = `rgb(${r}, ${g}, ${b})`;
          this.context.fillRect(tile.x, tile.y, tile.width, tile.height);
          return;
        }
        if (picture.width !== tile.width || picture.height !== tile.height) {
          throw new StreamError(`tile at (${tile.x}, ${tile.y}) is ${picture.width}x${picture.height}, not ${tile.width}x${tile.height}`);
        }
        this.context.drawImage(picture, tile.x, tile.y);
      });
    } finally {
      for (const picture of pictures) if (picture) picture.close();
    }
    this.drawCursor(frame.cursor);
  }

  drawCursor(cursor) {
    const pointer = this.pointer;
    pointer.clearRect(0, 0, this.overlay.width, this.overlay.height);
    this.cursor = cursor;
    if (!cursor) return;
    const [x, y] = cursor;
    if (this.shape) {
      pointer.drawImage(this.shape.bitmap, x - this.shape.record.hotX, y - this.shape.record.hotY);
      return;
    }
    // Until the device tells its pointer's shape: an arrow, white with a black edge, its tip at the pointer's hot spot.
    pointer.beginPath();
    pointer.moveTo(x, y);
    pointer.lineTo(x, y + 17);
    pointer.lineTo(x + 4, y + 13);
    pointer.lineTo(x + 7, y + 20);
    pointer.lineTo(x + 10, y + 19);
    pointer.lineTo(x + 7, y + 12);
    pointer.lineTo(x + 12, y + 12);
    pointer.closePath();
    pointer.fillStyle = "#ffffff";
    pointer.strokeStyle = "#000000";
    pointer.lineWidth = 1;
    pointer.fill();
    pointer.stroke();
  }
}
