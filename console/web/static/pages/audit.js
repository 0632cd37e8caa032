// The audit log: filters (time, actor, device, action), the chain's verification, this
// browser's witness of the chain (lib/witness.js: a loud warning when the chain no longer
// extends what this browser saw), export of what is shown as JSON lines.

import { api } from "../lib/api.js";
import { clear, h, notice, table } from "../lib/dom.js";
import { acceptNewHead, checkWitness } from "../lib/witness.js";

export async function render(root) {
  const message = h("p", { role: "alert", hidden: true });
  const chain = h("p", { id: "chain-status", role: "status" });
  const witness = h("div", { id: "witness-status", role: "alert", hidden: true });
  const actor = h("input", { id: "audit-actor", placeholder: "actor" });
  const target = h("input", { id: "audit-target", placeholder: "device or target" });
  const action = h("input", { id: "audit-action", placeholder: "action, e.g. session.start" });
  const since = h("input", { id: "audit-since", type: "datetime-local" });
  const until = h("input", { id: "audit-until", type: "datetime-local" });
  const body = h("div", { id: "audit-entries" });
  const exportLink = h("button", { type: "button", class: "secondary", id: "audit-export" }, "Export JSON lines");
  const form = h("form", { class: "toolbar", id: "audit-filters" }, actor, target, action,
    h("label", {}, "from", since), h("label", {}, "to", until), h("button", { type: "submit" }, "Filter"), exportLink);
  root.append(h("h1", {}, "Audit log"), chain, witness, form, message, body);
  let shown = [];

  async function verify() {
    try {
      const report = await api("GET", "/api/v1/audit/verify");
      if (report.ok) notice(chain, "ok", `Hash chain verified: ${report.checked} entries intact.`);
      else notice(chain, "error", `Hash chain BROKEN at entry ${report.bad_seq}: ${report.reason}`);
      if (report.ok) await witnessChain();
    } catch (error) {
      notice(chain, "error", `Cannot verify the chain: ${error.message}`);
    }
  }

  async function witnessChain() {
    let seen;
    try {
      seen = await checkWitness();
    } catch (error) {
      notice(witness, "error", `Cannot compare the chain with what this browser saw: ${error.message}`);
      return;
    }
    witness.hidden = false;
    if (seen.state === "rewritten") {
      witness.className = "notice error witness";
      const accept = h("button", { type: "button", class: "small danger", id: "accept-new-head" }, "Accept the new head");
      accept.addEventListener("click", async () => {
        if (!confirm("Trust the audit chain as the relay now serves it, and watch it from here on?")) return;
        const head = await acceptNewHead();
        clear(witness, `Re-anchored on entry ${head ? head.seq : 0}, on your request.`);
        witness.className = "notice info witness";
      });
      clear(witness,
        h("strong", {}, "AUDIT LOG REWRITTEN. "),
        `The chain links up, but it does not extend what this browser saw before: ${seen.reason}. `,
        "Someone who can write the relay's data directory may have replaced the log. ",
        "Compare with an exported copy kept elsewhere (helpline audit export) before accepting. ",
        accept);
    } else if (seen.state === "extends") {
      witness.className = "notice ok witness";
      clear(witness, `Extends entry ${seen.seen.seq} that this browser saw on ${new Date(seen.seen.at).toLocaleString()}.`);
    } else {
      witness.className = "notice info witness";
      clear(witness, "First check in this browser: later visits warn if the chain no longer extends it.");
    }
  }

  async function load() {
    const query = new URLSearchParams({ limit: "5000" });
    if (actor.value.trim()) query.set("actor", actor.value.trim());
    if (target.value.trim()) query.set("target", target.value.trim());
    if (action.value.trim()) query.set("action", action.value.trim());
    try {
      const data = await api("GET", `/api/v1/audit?${query}`);
      const from = since.value ? new Date(since.value).getTime() / 1000 : -Infinity;
      const to = until.value ? new Date(until.value).getTime() / 1000 : Infinity;
      shown = data.entries.filter((e) => {
        const at = Date.parse(e.ts) / 1000;
        return at >= from && at <= to;
      }).reverse();
      const rows = shown.slice(0, 1000).map((entry) =>
        h("tr", { "data-seq": entry.seq },
          h("td", {}, String(entry.seq)),
          h("td", {}, new Date(entry.ts).toLocaleString()),
          h("td", {}, entry.actor),
          h("td", { class: "action" }, entry.action),
          h("td", {}, entry.target),
          h("td", { class: "mono" }, JSON.stringify(entry.details || {}))),
      );
      clear(body, rows.length ? table(["#", "When", "Actor", "Action", "Target", "Details"], rows, { id: "audit-table" }) : h("p", { class: "muted" }, "No entries match."),
        shown.length > 1000 ? h("p", { class: "muted" }, `Showing the newest 1000 of ${shown.length}; export has them all.`) : null);
      notice(message, "info", "");
    } catch (error) {
      notice(message, "error", `Cannot read the audit log: ${error.message}`);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  exportLink.addEventListener("click", () => {
    const lines = shown.slice().reverse().map((e) => JSON.stringify(e)).join("\n") + "\n";
    const url = URL.createObjectURL(new Blob([lines], { type: "application/x-ndjson" }));
    const a = h("a", { href: url, download: "helpline-audit.jsonl" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });
  await Promise.all([verify(), load()]);
}
