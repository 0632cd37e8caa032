// The browser as a witness of the relay's audit chain (as `helpline audit verify` is, see
// console/witness.py): the head this browser last saw verified (seq and hash) is kept in
// localStorage, which is this relay's own (one origin, one relay). A later chain must
// extend it: reach that seq and have the same hash there. A chain rewritten whole by
// someone who can write the relay's data directory verifies on the relay, but not here.
// Only a rewrite after this browser's last look can be seen.

import { api } from "./api.js";

const KEY = "helpline.audit-witness";

export function witnessed() {
  try {
    const value = JSON.parse(localStorage.getItem(KEY) || "null");
    if (value && Number.isInteger(value.seq) && typeof value.hash === "string") return value;
  } catch {
    /* unreadable: as if never seen */
  }
  return null;
}

function remember(head) {
  localStorage.setItem(KEY, JSON.stringify({ seq: head.seq, hash: head.hash, at: Date.now() }));
}

// After the relay verified its chain: { state: "first" | "extends" | "rewritten", reason,
// seen, head }. The witness moves on only when the chain extends what was seen.
export async function checkWitness() {
  const seen = witnessed();
  const now = await api("GET", "/api/v1/audit?after=0&limit=1");
  const head = now.head;
  if (!head) return { state: "first", seen, head };
  if (!seen) {
    remember(head);
    return { state: "first", seen, head };
  }
  const when = new Date(seen.at).toLocaleString();
  if (head.seq < seen.seq) {
    return { state: "rewritten", seen, head, reason: `the chain now ends at entry ${head.seq}, but this browser saw entry ${seen.seq} on ${when}: the sequence went back` };
  }
  const at = await api("GET", `/api/v1/audit?after=${seen.seq - 1}&limit=1`);
  const entry = at.entries[0];
  if (!entry || entry.seq !== seen.seq) {
    return { state: "rewritten", seen, head, reason: `entry ${seen.seq}, seen on ${when}, is no longer in the chain` };
  }
  if (entry.hash !== seen.hash) {
    return { state: "rewritten", seen, head, reason: `entry ${seen.seq} has hash ${entry.hash.slice(0, 16)}…, but it had ${seen.hash.slice(0, 16)}… when this browser saw it on ${when}` };
  }
  remember(head);
  return { state: "extends", seen, head };
}

// A deliberate re-anchor on the chain as it is now (the admin knows why it changed).
export async function acceptNewHead() {
  const now = await api("GET", "/api/v1/audit?after=0&limit=1");
  if (now.head) remember(now.head);
  return now.head;
}
