// Sessions: the live ones (an admin can end one) and the history.

import { api } from "../lib/api.js";
import { clear, h, notice, table, when, bytes } from "../lib/dom.js";

export async function render(root, ctx) {
  const message = h("p", { role: "alert", hidden: true });
  const live = h("div", { id: "live-sessions" });
  const history = h("div", { id: "session-history" });
  root.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Sessions"), h("button", { type: "button", class: "secondary", id: "refresh", onclick: () => load() }, "Refresh")),
    message,
    h("h2", {}, "Live"),
    live,
    h("h2", {}, "History"),
    history,
  );

  async function kill(session) {
    if (!confirm(`End ${session.username}'s ${session.kind} session on ${session.device_name}?`)) return;
    try {
      await api("POST", `/api/v1/sessions/${encodeURIComponent(session.id)}/kill`);
      notice(message, "ok", `Session ${session.id.slice(0, 8)} ended.`);
    } catch (error) {
      notice(message, "error", `Cannot end the session: ${error.message}`);
    }
    load();
  }

  function row(session, withKill) {
    return h(
      "tr",
      { "data-session": session.id },
      h("td", {}, when(session.requested_at)),
      h("td", {}, session.username),
      h("td", {}, session.device_name),
      h("td", {}, session.kind),
      h("td", {}, session.via || ""),
      h("td", {}, session.reason || ""),
      h("td", {}, session.live ? session.state : `${session.state}${session.end_reason ? ": " + session.end_reason : ""}`),
      h("td", {}, `${bytes(session.bytes_to_device)} / ${bytes(session.bytes_from_device)}`),
      withKill ? h("td", {}, h("button", { type: "button", class: "small danger", onclick: () => kill(session) }, "End")) : null,
    );
  }

  async function load() {
    try {
      const data = await api("GET", "/api/v1/sessions?limit=200");
      const admin = ctx.user.role === "admin";
      const headers = ["Requested", "Technician", "Device", "Kind", "Via", "Reason", "State", "To / from device"];
      const current = data.sessions.filter((s) => s.live);
      const past = data.sessions.filter((s) => !s.live);
      clear(live, current.length ? table(admin ? [...headers, ""] : headers, current.map((s) => row(s, admin))) : h("p", { class: "muted" }, "No live sessions."));
      clear(history, past.length ? table(headers, past.map((s) => row(s, false))) : h("p", { class: "muted" }, "No sessions yet."));
    } catch (error) {
      notice(message, "error", `Cannot list sessions: ${error.message}`);
    }
  }

  await load();
  const timer = setInterval(load, 5000);
  return () => clearInterval(timer);
}
