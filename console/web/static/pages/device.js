// One device: its inventory, recent sessions, and buttons to open a shell, files or screen
// (view or control) session.

import { api } from "../lib/api.js";
import { ago, clear, h, notice, table, when } from "../lib/dom.js";
import { coalesced, deviceEvents } from "../lib/events.js";

export async function render(root, ctx) {
  const [id] = ctx.params;
  const message = h("p", { role: "alert", hidden: true });
  const details = h("div");
  const history = h("div");
  const reason = h("input", { id: "session-reason", maxlength: "1024", placeholder: "why (shown to the customer, audited)" });
  const open = (kind, extra = {}) => () => {
    const query = new URLSearchParams({ reason: reason.value.trim(), ...extra });
    // This click is the technician's: the session page starts without asking again.
    ctx.navigate(`#/${kind}/${encodeURIComponent(id)}?${query}`, { start: true });
  };
  const title = h("h1", {}, "Device");
  root.append(
    title,
    message,
    h(
      "div",
      { class: "card toolbar" },
      h("label", {}, "Reason ", reason),
      h("button", { type: "button", id: "open-shell", onclick: open("shell") }, "Open shell"),
      h("button", { type: "button", id: "open-files", onclick: open("files") }, "Open files"),
      h("button", { type: "button", id: "open-view", onclick: open("screen", { kind: "view" }) }, "View screen"),
      h("button", { type: "button", id: "open-control", onclick: open("screen", { kind: "control" }) }, "Control screen"),
    ),
    details,
    h("h2", {}, "Recent sessions"),
    history,
  );

  async function load() {
    let device;
    try {
      device = await api("GET", `/api/v1/devices/${encodeURIComponent(id)}`);
    } catch (error) {
      notice(message, "error", `Cannot show this device: ${error.message}`);
      return;
    }
    title.textContent = device.name;
    const inventory = device.inventory || {};
    const row = (label, value, props = {}) => h("tr", {}, h("th", { text: label }), h("td", props, value ?? ""));
    clear(
      details,
      h(
        "table",
        { class: "facts", id: "inventory" },
        row("State", device.online ? "online" : `offline (last seen ${ago(device.last_seen)})`, { class: device.online ? "online" : "offline", id: "device-state" }),
        row("Hostname", inventory.hostname, { id: "device-hostname" }),
        row("Operating system", inventory.os, { id: "device-os" }),
        row("Logged-in user", inventory.user),
        row("Agent version", inventory.agent_version),
        row("Addresses", (inventory.addresses || []).join(", ")),
        row("Group", device.group),
        row("Device id", device.id),
        row("Enrolled", when(device.enrolled_at)),
        row("Certificate", device.cert_fingerprint),
      ),
    );
  }

  async function loadSessions() {
    try {
      const data = await api("GET", "/api/v1/sessions?limit=500");
      const mine = data.sessions.filter((s) => s.device_id === id).slice(0, 20);
      clear(
        history,
        mine.length
          ? table(
              ["When", "Who", "Kind", "State", "Reason", "Duration"],
              mine.map((s) =>
                h(
                  "tr",
                  {},
                  h("td", {}, when(s.requested_at)),
                  h("td", {}, s.username),
                  h("td", {}, s.kind),
                  h("td", {}, s.live ? "live" : s.state),
                  h("td", {}, s.reason || ""),
                  h("td", {}, s.duration === null ? "" : `${s.duration} s`),
                ),
              ),
            )
          : h("p", { class: "muted" }, "No sessions yet."),
      );
    } catch (error) {
      clear(history, h("p", { class: "notice error" }, `Cannot list sessions: ${error.message}`));
    }
  }

  await Promise.all([load(), loadSessions()]);
  const loadSoon = coalesced(load); // one fetch per burst of events (lib/events.js)
  const stop = deviceEvents((event) => {
    // "ready": subscribed; what changed between the first load and now is loaded again.
    if (event.type === "ready" || event.id === id) loadSoon();
  });
  return () => {
    stop();
    loadSoon.cancel();
  };
}
