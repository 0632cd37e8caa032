// The start of a session as the page shows it: waiting for the customer, granted, denied.

import { notice } from "./dom.js";

export function showSessionState(element, message) {
  if (message.type === "waiting") {
    notice(element, "info", `${message.message}…`);
  } else if (message.type === "opened") {
    notice(element, "ok", `Connected to ${message.device}.`);
  } else if (message.type === "refused") {
    const what = message.denied ? "The customer denied the session" : "The session could not be opened";
    notice(element, "error", `${what}: ${message.message}`);
  } else if (message.type === "closed") {
    notice(element, "info", `Session ended: ${message.message}`);
  } else if (message.type === "notice") {
    notice(element, "info", message.message);
  } else if (message.type === "error") {
    notice(element, "error", message.message);
  }
}
