// One screen recording (protocol/screenrec.py, served by the relay like shell recordings)
// played on a canvas: play and pause, seek anywhere with the slider, a speed of your choice.
// Seeking paints from the last full frame at or before that moment, so any point is shown
// exactly as the technician saw it.

import { csrf } from "../lib/api.js";
import { h, notice } from "../lib/dom.js";
import { ScreenPainter, TileStreamParser } from "../lib/tiles.js";

const FORMAT = "helpline-screen";
const EVENT_HEADER = 13; // seconds f64, kind u8, length u32
const OUTPUT = "o".charCodeAt(0);
const KINDS = new Set(["o", "m", "i"].map((c) => c.charCodeAt(0)));

// The recording's header and its frames in time order: [{ seconds, frame }].
export function readRecording(buffer) {
  const bytes = new Uint8Array(buffer);
  const end = bytes.subarray(0, 64 * 1024).indexOf(10);
  if (end < 0) throw new Error("not a screen recording (no header line)");
  let header;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, end)));
  } catch {
    throw new Error("not a screen recording (bad header)");
  }
  if (!header || header.format !== FORMAT) throw new Error("not a screen recording");
  if (header.version !== 1) throw new Error(`unsupported screen recording version ${header.version}`);
  const view = new DataView(buffer);
  const parser = new TileStreamParser();
  const frames = [];
  let shape = null; // the pointer shape in force: each frame keeps the one it was shown with
  let offset = end + 1;
  let seconds = 0;
  let complete = true;
  while (offset < bytes.length) {
    if (offset + EVENT_HEADER > bytes.length) {
      complete = false;
      break;
    }
    const at = view.getFloat64(offset);
    const kind = view.getUint8(offset + 8);
    const length = view.getUint32(offset + 9);
    const start = offset + EVENT_HEADER;
    if (start + length > bytes.length) {
      complete = false; // the relay stopped mid-write: play what is whole
      break;
    }
    if (!KINDS.has(kind)) throw new Error(`unknown event kind ${kind} at ${offset}`);
    if (!(at >= seconds)) throw new Error(`event at ${offset} goes back in time`);
    seconds = at;
    if (kind === OUTPUT) {
      for (const record of parser.feed(bytes.subarray(start, start + length))) {
        if (record.kind === "cursor") shape = record;
        else frames.push({ seconds: at, frame: record, shape });
      }
    }
    offset = start + length;
  }
  return { header, frames, duration: seconds, complete };
}

export async function render(root, ctx) {
  const [id] = ctx.params;
  const file = `/api/v1/recordings/${encodeURIComponent(id)}`;
  const message = h("p", { role: "alert", hidden: true });
  const about = h("p", { class: "muted", id: "recording-about" });
  const play = h("button", { type: "button", id: "play", disabled: true }, "Play");
  const seek = h("input", { type: "range", id: "seek", min: "0", max: "0", step: "any", value: "0", disabled: true, "aria-label": "Position" });
  const time = h("span", { id: "time", class: "mono" }, "0.0 / 0.0 s");
  const speed = h("select", { id: "speed" },
    ["0.5", "1", "2", "4", "8", "16"].map((value) => h("option", { value, selected: value === "1" }, `${value}×`)));
  const canvas = h("canvas", { id: "screen-canvas", width: "1", height: "1" });
  const overlay = h("canvas", { id: "screen-pointer", class: "pointer", width: "1", height: "1" });
  const stage = h("div", { class: "screen-stage fit", id: "screen-stage" }, canvas, overlay);
  root.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Screen recording"),
      h("a", { href: file, download: `${id}.screen` }, "Download .screen"),
      h("a", { href: "#/recordings" }, "all recordings")),
    message,
    about,
    h("div", { class: "toolbar screen-player-controls" }, play, seek, time, h("label", {}, "Speed", speed)),
    stage,
  );

  let recording;
  try {
    const response = await fetch(file, { credentials: "same-origin", cache: "no-store", headers: { "X-CSRF-Token": csrf() } });
    if (!response.ok) {
      let text = response.statusText;
      try {
        text = (await response.json()).error.message;
      } catch {
        /* not JSON */
      }
      throw new Error(text);
    }
    recording = readRecording(await response.arrayBuffer());
  } catch (error) {
    notice(message, "error", `Cannot play this recording: ${error.message}`);
    return undefined;
  }
  const { header, frames, duration } = recording;
  about.textContent = `${header.kind} session of ${header.technician} on ${header.device}, ${frames.length} frames, ${duration.toFixed(1)} s${recording.complete ? "" : " (cut short: the relay stopped while recording)"}`;
  if (!frames.length) {
    notice(message, "info", "This recording holds no screen.");
    return undefined;
  }
  seek.max = String(duration);
  seek.disabled = false;
  play.disabled = false;

  const painter = new ScreenPainter(canvas, overlay);
  let shown = -1; // index of the last frame painted
  let position = 0;
  let wanted = 0;
  let painting = null;
  let playing = false;
  let clockStart = 0;
  let positionAtStart = 0;
  let disposed = false;
  window.helplineScreenPlayer = { frames, duration, stage, canvas };

  function lastFrameAt(seconds) {
    let low = 0;
    let high = frames.length - 1;
    let found = -1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      if (frames[middle].seconds <= seconds) {
        found = middle;
        low = middle + 1;
      } else high = middle - 1;
    }
    return found;
  }

  async function paintTo(target) {
    if (target < 0) {
      // Before the first frame: nothing to show yet.
      painter.reset();
      painter.context.fillStyle = "#000000";
      painter.context.fillRect(0, 0, canvas.width, canvas.height);
      painter.drawCursor(null);
      shown = -1;
      return;
    }
    let start = shown + 1;
    if (target < shown || shown < 0) start = 0;
    // From the last full frame at or before the target: no need to paint what it covers.
    for (let index = target; index >= start; index -= 1) {
      if (frames[index].frame.full) {
        start = index;
        break;
      }
    }
    for (let index = start; index <= target; index += 1) {
      if (frames[index].shape) await painter.setShape(frames[index].shape);
      await painter.paint(frames[index].frame);
      shown = index;
    }
  }

  // Paint the picture at `wanted` seconds; calls while painting just move the target.
  async function paintWanted() {
    while (!disposed) {
      const at = wanted;
      const target = lastFrameAt(at);
      if (target !== shown) await paintTo(target);
      position = at;
      if (wanted === at) break;
    }
  }

  function show(seconds) {
    wanted = seconds;
    if (!painting) {
      painting = paintWanted()
        .catch((error) => {
          notice(message, "error", `This recording cannot be shown: ${error.message}`);
          pause();
          wanted = position;
        })
        .finally(() => {
          painting = null;
          stage.dataset.frame = String(shown);
          stage.dataset.position = position.toFixed(3);
          if (wanted !== position && !disposed) show(wanted);
          else if (!playing && position >= duration) stage.dataset.ended = "true";
        });
    }
    return painting;
  }

  function label(seconds) {
    time.textContent = `${seconds.toFixed(1)} / ${duration.toFixed(1)} s`;
    seek.value = String(seconds);
  }

  function tick() {
    if (!playing || disposed) return;
    const elapsed = ((performance.now() - clockStart) / 1000) * Number(speed.value);
    const seconds = Math.min(duration, positionAtStart + elapsed);
    label(seconds);
    show(seconds);
    if (seconds >= duration) {
      pause();
      show(duration);
      return;
    }
    requestAnimationFrame(tick);
  }

  function start() {
    if (position >= duration) position = 0;
    delete stage.dataset.ended;
    playing = true;
    play.textContent = "Pause";
    clockStart = performance.now();
    positionAtStart = position;
    requestAnimationFrame(tick);
  }

  function pause() {
    playing = false;
    play.textContent = "Play";
  }

  play.addEventListener("click", () => (playing ? pause() : start()));
  speed.addEventListener("change", () => {
    if (playing) {
      positionAtStart = Number(seek.value);
      clockStart = performance.now();
    }
  });
  seek.addEventListener("input", () => {
    pause();
    delete stage.dataset.ended;
    const seconds = Number(seek.value);
    label(seconds);
    show(seconds);
  });

  label(0);
  await show(0);
  return () => {
    disposed = true;
    playing = false;
    delete window.helplineScreenPlayer;
  };
}
