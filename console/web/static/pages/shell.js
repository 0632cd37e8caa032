// A shell on the device in xterm.js: typing, resize with the window, copy and paste,
// the end of the session shown. Output is acknowledged once xterm.js drew it, which is
// the relay's flow control toward this page. The session starts on a click (lib/start.js).

import { Terminal } from "/vendor/xterm.mjs";
import { FitAddon } from "/vendor/addon-fit.mjs";
import { socketUrl } from "../lib/api.js";
import { h, notice } from "../lib/dom.js";
import { showSessionState } from "../lib/session.js";
import { startForm } from "../lib/start.js";

export function render(root, ctx) {
  const [device] = ctx.params;
  const title = h("h1", {}, "Shell");
  const status = h("p", { id: "shell-status", role: "status" });
  const screen = h("div", { id: "terminal", class: "terminal" });
  const end = h("button", { type: "button", id: "end-session", disabled: true }, "End session");
  const copy = h("button", { type: "button", class: "small", id: "copy" }, "Copy selection");
  const paste = h("button", { type: "button", class: "small", id: "paste" }, "Paste");
  const starter = startForm(ctx, { label: "Open shell", onStart: ({ reason }) => connect(reason) });
  root.append(
    h("div", { class: "toolbar" }, title, end, copy, paste,
      h("a", { href: `#/device/${encodeURIComponent(device)}` }, "back to the device")),
    starter.form,
    status,
    screen,
  );
  notice(status, "info", "Check the reason, then open the shell.");

  const term = new Terminal({ cursorBlink: true, scrollback: 5000, convertEol: false });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  fit.fit();
  window.helplineTerminal = term; // for tests and the browser's console

  const encoder = new TextEncoder();
  let socket = null;
  let open = false;
  let over = false;

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(message);
  }

  function finish(text) {
    if (over) return;
    over = true;
    open = false;
    end.disabled = true;
    term.write(`\r\n\x1b[7m ${text} \x1b[0m\r\n`);
    screen.classList.add("ended");
  }

  function connect(reason) {
    notice(status, "info", "Asking the relay…");
    socket = new WebSocket(
      socketUrl("/web/ws/shell", { device, reason, cols: term.cols, rows: term.rows }),
    );
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event) => {
      if (typeof event.data !== "string") {
        const data = new Uint8Array(event.data);
        term.write(data, () => send(JSON.stringify({ type: "ack", bytes: data.length })));
        return;
      }
      const message = JSON.parse(event.data);
      showSessionState(status, message);
      if (message.type === "opened") {
        title.textContent = `Shell on ${message.device}`;
        open = true;
        end.disabled = false;
        term.focus();
      } else if (message.type === "exit") {
        finish(message.signal ? `process killed by ${message.signal}` : `process exited with status ${message.code}`);
        notice(status, "info", `Session over: exit status ${message.code}.`);
      } else if (message.type === "closed") {
        finish(`session ended: ${message.message}`);
      } else if (message.type === "refused") {
        finish(message.denied ? "denied by the customer" : "refused");
      }
    });
    socket.addEventListener("close", () => {
      if (!over && open) {
        finish("connection to the relay lost");
        notice(status, "error", "The connection to the relay was lost.");
      } else if (!over && status.textContent === "Asking the relay…") {
        notice(status, "error", "The relay refused the connection (signed out?).");
      }
    });
  }

  term.onData((data) => {
    if (open) send(encoder.encode(data));
  });
  term.onBinary((data) => {
    if (open) send(Uint8Array.from(data, (c) => c.charCodeAt(0)));
  });
  term.onResize(({ cols, rows }) => send(JSON.stringify({ type: "resize", cols, rows })));

  const observer = new ResizeObserver(() => {
    try {
      fit.fit();
    } catch {
      /* hidden while navigating away */
    }
  });
  observer.observe(screen);

  end.addEventListener("click", () => {
    send(JSON.stringify({ type: "end" }));
    finish("session ended by you");
  });
  copy.addEventListener("click", async () => {
    const text = term.getSelection();
    if (text) await navigator.clipboard.writeText(text).catch(() => {});
    term.focus();
  });
  paste.addEventListener("click", async () => {
    try {
      const text = await navigator.clipboard.readText();
      if (text) term.paste(text);
    } catch {
      notice(status, "error", "The browser did not allow reading the clipboard: use Ctrl+Shift+V.");
    }
    term.focus();
  });

  starter.startIfAsked();
  return () => {
    observer.disconnect();
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close();
    term.dispose();
    delete window.helplineTerminal;
  };
}
