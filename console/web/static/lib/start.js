// Starting a session from its page (shell, files, screen): a session opens only on a click
// on this page, or on the device page's button that led here. What the address carries
// (`kind`, `reason`) only fills in the form, which the technician sees and sends with the
// click: a link someone else made (in a mail, a chat, a ticket) opens nothing and chooses
// neither the kind nor the reason.

import { h } from "./dom.js";

// `kinds`: the session kinds to choose from (the first is the default), or none.
// `onStart({ kind, reason })` runs once, on the click. Returns { form, startIfAsked }:
// the page calls startIfAsked() once it is built, which starts at once only when the
// device page's click asked for it (ctx.start, never set from the address).
export function startForm(ctx, { kinds = null, label = "Start session", onStart }) {
  const asked = ctx.query.get("kind");
  const reason = h("input", {
    id: "start-reason",
    maxlength: "1024",
    size: "40",
    value: (ctx.query.get("reason") || "").slice(0, 1024),
    placeholder: "why (shown to the customer, audited)",
  });
  const kind = kinds
    ? h("select", { id: "start-kind", "aria-label": "Kind" }, kinds.map((name) => h("option", { value: name }, name)))
    : null;
  if (kind) kind.value = kinds.includes(asked) ? asked : kinds[0];
  const button = h("button", { type: "submit", id: "start-session" }, label);
  const form = h("form", { class: "card toolbar", id: "start-form" },
    kind ? h("label", {}, "Kind ", kind) : null,
    h("label", {}, "Reason ", reason),
    button);
  let started = false;

  function start() {
    if (started) return;
    started = true;
    for (const control of [reason, kind, button]) if (control) control.disabled = true;
    form.remove(); // the session's own controls take over
    onStart({ kind: kind ? kind.value : null, reason: reason.value.trim() });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    // A script's synthetic submit is not the technician's click.
    if (event.isTrusted) start();
  });
  return {
    form,
    startIfAsked() {
      if (ctx.start) start();
      else button.focus();
    },
  };
}
