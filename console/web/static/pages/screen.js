// The device's screen on a canvas: a `view` or `control` session (the customer is asked
// first), scaled to the window, with a monitor picker, the encoding mode, a full-frame
// refresh, asking for control, mouse and keyboard input, special keys, text to type, and
// the frame rate and bandwidth. Each frame is acknowledged once drawn (the agent sends
// only a couple ahead), and the stream bytes once handled (the relay's window). The session
// starts on a click (lib/start.js): the kind and reason in the address are only pre-filled.

import { socketUrl } from "../lib/api.js";
import { h, notice } from "../lib/dom.js";
import { showSessionState } from "../lib/session.js";
import { ScreenPainter, StreamError, TileStreamParser } from "../lib/tiles.js";
import { SPECIAL_KEYS, buttonName, wheelNotches } from "../lib/input.js";
import { startForm } from "../lib/start.js";

const MODES = ["lossless", "auto", "lossy"];

export function render(root, ctx) {
  const [device] = ctx.params;
  let kind = "view"; // chosen with the click that starts the session
  const title = h("h1", {}, "Screen");
  const status = h("p", { id: "screen-status", role: "status" });
  const refusal = h("p", { id: "screen-refusal", role: "alert", hidden: true });
  const stats = h("span", { id: "screen-stats", class: "muted" });
  const end = h("button", { type: "button", id: "end-session", disabled: true }, "End session");
  const monitors = h("select", { id: "monitor", disabled: true, "aria-label": "Monitor" });
  const mode = h("select", { id: "mode", disabled: true, "aria-label": "Quality" },
    MODES.map((name) => h("option", { value: name }, name)));
  const refresh = h("button", { type: "button", class: "small", id: "refresh", disabled: true }, "Refresh");
  const fit = h("input", { type: "checkbox", id: "fit", checked: true });
  const askControl = h("button", { type: "button", id: "ask-control", disabled: true }, "Ask for control");
  const inputOn = h("input", { type: "checkbox", id: "input-on", checked: true });
  const special = h("select", { id: "special-keys", disabled: true, "aria-label": "Special keys" },
    h("option", { value: "" }, "Special keys…"),
    SPECIAL_KEYS.map((entry, index) => h("option", { value: String(index) }, entry.label)));
  const text = h("input", { id: "send-text", maxlength: "1024", placeholder: "text to type on the device" });
  const sendText = h("button", { type: "button", class: "small", id: "send-text-button", disabled: true }, "Type it");
  const canvas = h("canvas", { id: "screen-canvas", width: "1", height: "1" });
  const overlay = h("canvas", { id: "screen-pointer", width: "1", height: "1", tabindex: "0", "aria-label": "Remote screen" });
  const stage = h("div", { class: "screen-stage fit", id: "screen-stage" }, canvas, overlay);
  const starter = startForm(ctx, { kinds: ["view", "control"], label: "Start screen session", onStart: connect });
  root.append(
    h("div", { class: "toolbar" }, title, end,
      h("a", { href: `#/device/${encodeURIComponent(device)}` }, "back to the device")),
    starter.form,
    status,
    refusal,
    h("div", { class: "toolbar screen-tools" },
      h("label", {}, "Monitor ", monitors),
      h("label", {}, "Quality ", mode),
      refresh,
      h("label", {}, fit, " fit to window"),
      askControl,
      h("label", { title: "When off, nothing you do reaches the device" }, inputOn, " send input"),
      special,
      text,
      sendText,
      stats),
    stage,
  );
  notice(status, "info", "Choose view or control and the reason, then start the session.");

  const params = { device, kind, reason: "" };
  // The quality to start with: harmless to take from the address (it changes nothing on the device).
  if (MODES.includes(ctx.query.get("mode"))) params.mode = ctx.query.get("mode");
  let socket = null;
  const parser = new TileStreamParser();
  const painter = new ScreenPainter(canvas, overlay);
  const state = { open: false, over: false, control: false, info: null, frames: 0, seq: null, bytes: 0, refusals: [] };
  window.helplineScreen = { state, canvas, overlay }; // for tests and the browser's console
  let drawing = Promise.resolve();
  let controlAsked = false;

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function finish(reason) {
    if (state.over) return;
    state.over = true;
    state.open = false;
    stage.classList.add("ended");
    for (const control of [end, monitors, mode, refresh, askControl, special, sendText]) control.disabled = true;
    if (reason) notice(status, "error", reason);
  }

  // -- what the device sends -----------------------------------------------------------

  // Stream bytes handled but not yet acknowledged to the relay: acknowledged with each
  // drawn frame, or every ACK_BYTES (well inside the relay's window) in a long record.
  const ACK_BYTES = 256 * 1024;
  let handled = 0;

  async function handleChunk(data) {
    if (state.over) return;
    let drawn = 0;
    try {
      for (const frame of parser.feed(data)) {
        if (frame.kind === "cursor") {
          await painter.setShape(frame); // not a picture: not acknowledged
          continue;
        }
        await painter.paint(frame);
        drawn += 1;
        state.frames += 1;
        state.seq = frame.seq;
        canvas.dataset.frames = String(state.frames);
        send({ type: "screen.ack", seq: frame.seq });
      }
    } catch (error) {
      send({ type: "end" });
      finish(`The device sent a screen that cannot be shown: ${error.message}`);
      return;
    }
    state.bytes += data.byteLength;
    handled += data.byteLength;
    if (drawn || handled >= ACK_BYTES) {
      send({ type: "ack", bytes: handled });
      handled = 0;
    }
  }

  function showInfo(info) {
    // Frames may be as large as the largest monitor the device describes, within what the
    // viewer shows at all (MAX_CANVAS); a device claiming more is refused, not believed.
    try {
      if (!Array.isArray(info.monitors) || !info.monitors.length) throw new StreamError("the device described no monitor");
      parser.limitTo(Math.max(...info.monitors.map((m) => m[2])), Math.max(...info.monitors.map((m) => m[3])));
    } catch (error) {
      send({ type: "end" });
      finish(`The device sent a screen that cannot be shown: ${error.message}`);
      return;
    }
    state.info = info;
    state.control = info.control;
    const previous = monitors.value;
    monitors.replaceChildren(
      ...info.monitors.map(([x, y, w, hgt], index) =>
        h("option", { value: String(index) }, `${index + 1}: ${w}×${hgt} at ${x},${y}`)),
    );
    monitors.value = String(info.monitor);
    if (monitors.value === "" && previous) monitors.value = previous;
    monitors.disabled = info.monitors.length < 2;
    mode.value = info.mode;
    mode.disabled = false;
    askControl.disabled = info.control || controlAsked;
    askControl.textContent = info.control ? "You have control" : "Ask for control";
    stage.classList.toggle("controlling", info.control);
    stage.dataset.control = String(info.control);
    if (info.control && controlAsked) {
      controlAsked = false;
      notice(status, "ok", "The customer gave you control.");
      notice(refusal, "info", "");
    }
  }

  function connect(chosen) {
    kind = chosen.kind === "control" ? "control" : "view";
    params.kind = kind;
    params.reason = chosen.reason;
    state.control = kind === "control";
    title.textContent = kind === "control" ? "Screen control" : "Screen view";
    notice(status, "info", "Asking the relay…");
    socket = new WebSocket(socketUrl("/web/ws/screen", params));
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event) => {
      if (typeof event.data !== "string") {
        const data = event.data;
        drawing = drawing.then(() => handleChunk(data));
        return;
      }
      const message = JSON.parse(event.data);
      if (message.type === "screen.info") {
        drawing = drawing.then(() => {
          if (!state.over) showInfo(message);
        });
        return;
      }
      if (message.type === "screen.refused") {
        state.refusals.push(message);
        notice(refusal, "error", message.message || "The device refused that request.");
        if (controlAsked) {
          controlAsked = false;
          askControl.disabled = state.control;
        }
        return;
      }
      showSessionState(status, message);
      if (message.type === "opened") {
        title.textContent = `${kind === "control" ? "Controlling" : "Viewing"} ${message.device}`;
        state.open = true;
        state.session = message.session;
        for (const control of [end, refresh, special, sendText]) control.disabled = false;
        overlay.focus();
      } else if (message.type === "refused") {
        finish();
        stage.classList.add("refused");
      } else if (message.type === "closed") {
        finish();
        notice(status, "info", `Session ended: ${message.message}`);
      } else if (message.type === "error") {
        finish(message.message);
      }
    });
    socket.addEventListener("close", () => {
      if (!state.over && state.open) finish("The connection to the relay was lost.");
      else if (!state.over && status.textContent === "Asking the relay…") {
        finish("The relay refused the connection (signed out?).");
      }
    });
  }

  // -- the controls ----------------------------------------------------------------------

  end.addEventListener("click", () => {
    send({ type: "end" });
    finish();
    notice(status, "info", "Session ended by you.");
  });
  monitors.addEventListener("change", () => send({ type: "screen.select", monitor: Number(monitors.value) }));
  mode.addEventListener("change", () => send({ type: "screen.mode", mode: mode.value }));
  refresh.addEventListener("click", () => send({ type: "screen.refresh" }));
  fit.addEventListener("change", () => stage.classList.toggle("fit", fit.checked));
  askControl.addEventListener("click", () => {
    controlAsked = true;
    askControl.disabled = true;
    send({ type: "screen.control", reason: params.reason });
    notice(status, "info", "Asking the customer for control…");
  });
  special.addEventListener("change", () => {
    const entry = SPECIAL_KEYS[Number(special.value)];
    special.value = "";
    if (!entry || !mayInput()) return;
    for (const [action, code] of entry.keys) send({ type: "input.key", action, code });
    overlay.focus();
  });
  sendText.addEventListener("click", () => {
    if (text.value && mayInput()) send({ type: "input.text", text: text.value });
    text.value = "";
    overlay.focus();
  });

  // -- input: sent in a control session; in a view session clicks and keys still go, and
  // the relay's refusal is shown (pointer moves alone are not sent there).

  function mayInput() {
    return state.open && inputOn.checked;
  }

  function position(event) {
    const box = overlay.getBoundingClientRect();
    const x = Math.floor(((event.clientX - box.left) * overlay.width) / box.width);
    const y = Math.floor(((event.clientY - box.top) * overlay.height) / box.height);
    return [Math.max(0, Math.min(overlay.width - 1, x)), Math.max(0, Math.min(overlay.height - 1, y))];
  }

  let pendingMove = null;
  let lastMove = null;
  function flushMove() {
    const move = pendingMove;
    pendingMove = null;
    if (!move || !mayInput() || !state.control) return;
    if (lastMove && lastMove[0] === move[0] && lastMove[1] === move[1]) return;
    lastMove = move;
    send({ type: "input.pointer", action: "move", x: move[0], y: move[1] });
  }

  overlay.addEventListener("pointermove", (event) => {
    if (!mayInput() || !state.control) return;
    const first = pendingMove === null;
    pendingMove = position(event);
    if (first) requestAnimationFrame(flushMove);
  });
  overlay.addEventListener("pointerdown", (event) => {
    overlay.focus();
    event.preventDefault();
    if (!mayInput()) return;
    const button = buttonName(event.button);
    if (!button) return;
    overlay.setPointerCapture(event.pointerId); // a drag keeps reporting outside the canvas
    const [x, y] = position(event);
    pendingMove = [x, y];
    flushMove();
    send({ type: "input.pointer", action: "down", x, y, button });
  });
  overlay.addEventListener("pointerup", (event) => {
    if (!mayInput()) return;
    const button = buttonName(event.button);
    if (!button) return;
    const [x, y] = position(event);
    pendingMove = [x, y];
    flushMove();
    send({ type: "input.pointer", action: "up", x, y, button });
  });
  overlay.addEventListener("contextmenu", (event) => event.preventDefault());
  overlay.addEventListener("wheel", (event) => {
    event.preventDefault();
    if (!mayInput()) return;
    const [dx, dy] = wheelNotches(event);
    if (!dx && !dy) return;
    const [x, y] = position(event);
    send({ type: "input.pointer", action: "wheel", x, y, dx, dy });
  }, { passive: false });

  const held = new Map();
  function keyMessage(action, event) {
    const message = { type: "input.key", action, code: (event.code || "").slice(0, 64) };
    if (event.key && event.key.length === 1) message.key = event.key;
    if (!message.code && !message.key) return null;
    if (!message.code) message.code = "Unidentified";
    return message;
  }
  overlay.addEventListener("keydown", (event) => {
    if (!mayInput()) return;
    event.preventDefault(); // the browser's own shortcuts stay out of the way
    const message = keyMessage("down", event);
    if (!message) return;
    held.set(message.code, message);
    send(message);
  });
  overlay.addEventListener("keyup", (event) => {
    if (!mayInput()) return;
    event.preventDefault();
    const message = keyMessage("up", event);
    if (!message) return;
    held.delete(message.code);
    send(message);
  });
  overlay.addEventListener("blur", () => {
    // Keys held when the page loses focus would stay down on the device: let them go.
    for (const message of held.values()) send({ ...message, action: "up" });
    held.clear();
  });
  overlay.addEventListener("paste", (event) => {
    const pasted = event.clipboardData ? event.clipboardData.getData("text") : "";
    if (pasted && mayInput()) send({ type: "input.text", text: pasted.slice(0, 1024) });
  });

  // -- frame rate and bandwidth, once a second -----------------------------------------

  let lastFrames = 0;
  let lastBytes = 0;
  let lastTime = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const seconds = Math.max(0.001, (now - lastTime) / 1000);
    const fps = (state.frames - lastFrames) / seconds;
    const rate = (state.bytes - lastBytes) / 1024 / seconds;
    lastFrames = state.frames;
    lastBytes = state.bytes;
    lastTime = now;
    if (!state.open) return;
    const size = painter.hasPicture ? `${canvas.width}×${canvas.height}` : "no picture yet";
    stats.textContent = `${fps.toFixed(1)} fps · ${rate.toFixed(1)} KB/s · ${size} · ${state.control ? "control" : "view only"}`;
  }, 1000);

  starter.startIfAsked();
  return () => {
    clearInterval(timer);
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close();
    delete window.helplineScreen;
  };
}
