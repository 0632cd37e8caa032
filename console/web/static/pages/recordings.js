// Recordings: the list; a shell's plays in asciinema-player (pages/recording.js), a
// screen's on a canvas (pages/screen-recording.js).

import { api } from "../lib/api.js";
import { clear, h, notice, table, when } from "../lib/dom.js";

const SCREEN_KINDS = new Set(["view", "control"]);

export async function render(root) {
  const message = h("p", { role: "alert", hidden: true });
  const body = h("div");
  root.append(h("h1", {}, "Recordings"), message, body);
  try {
    const data = await api("GET", "/api/v1/recordings");
    const rows = data.recordings.map((r) =>
      h("tr", { "data-session": r.id },
        h("td", {}, when(r.started_at || r.requested_at)),
        h("td", {}, r.username),
        h("td", {}, r.device_name),
        h("td", {}, r.kind),
        h("td", {}, r.reason || ""),
        h("td", {}, r.duration === null ? "" : `${r.duration} s`),
        h("td", {}, h("a", { href: `#/${SCREEN_KINDS.has(r.kind) ? "screen-recording" : "recording"}/${encodeURIComponent(r.id)}`, class: "play" }, "Play"))),
    );
    clear(body, rows.length ? table(["When", "Technician", "Device", "Kind", "Reason", "Duration", ""], rows, { id: "recordings" }) : h("p", { class: "muted" }, "No recordings yet."));
  } catch (error) {
    notice(message, "error", `Cannot list recordings: ${error.message}`);
  }
}
