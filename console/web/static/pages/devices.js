// Devices: search, filter by group and online state; online state pushed live. Refetches
// that events cause are coalesced (lib/events.js): one per burst, not one per event.

import { api } from "../lib/api.js";
import { ago, clear, h, notice, table } from "../lib/dom.js";
import { coalesced, deviceEvents } from "../lib/events.js";

export async function render(root, ctx) {
  const devices = new Map();
  const search = h("input", { id: "device-search", type: "search", placeholder: "name, hostname, OS, user, version" });
  const group = h("select", { id: "device-group" }, h("option", { value: "" }, "all groups"));
  const state = h(
    "select",
    { id: "device-state" },
    h("option", { value: "" }, "online and offline"),
    h("option", { value: "online" }, "online"),
    h("option", { value: "offline" }, "offline"),
  );
  const live = h("span", { id: "live-state", class: "muted" }, "connecting…");
  const message = h("p", { role: "alert", hidden: true });
  const body = h("div");
  root.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Devices"), search, group, state, live),
    message,
    body,
  );

  function matches(device) {
    const inventory = device.inventory || {};
    const haystack = [device.name, inventory.hostname, inventory.os, inventory.user, inventory.agent_version, device.group]
      .filter(Boolean)
      .join(" ")
      .toLowerCase();
    if (search.value && !haystack.includes(search.value.toLowerCase())) return false;
    if (group.value && device.group !== group.value) return false;
    if (state.value === "online" && !device.online) return false;
    if (state.value === "offline" && device.online) return false;
    return true;
  }

  function draw() {
    const groups = [...new Set([...devices.values()].map((d) => d.group))].sort();
    const chosen = group.value;
    clear(group, h("option", { value: "" }, "all groups"), groups.map((g) => h("option", { value: g }, g)));
    group.value = groups.includes(chosen) ? chosen : "";
    const shown = [...devices.values()].filter((d) => !d.revoked_at && matches(d));
    shown.sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name));
    const rows = shown.map((device) => {
      const inventory = device.inventory || {};
      return h(
        "tr",
        { "data-device": device.id },
        h("td", {}, h("a", { href: `#/device/${encodeURIComponent(device.id)}`, class: "device-name" }, device.name)),
        h("td", { class: "hostname" }, inventory.hostname || ""),
        h("td", { class: "os" }, inventory.os || ""),
        h("td", {}, inventory.agent_version || ""),
        h("td", {}, device.group),
        h("td", { class: `state ${device.online ? "online" : "offline"}` }, device.online ? "online" : "offline"),
        h("td", {}, device.online ? "now" : ago(device.last_seen)),
      );
    });
    clear(
      body,
      shown.length
        ? table(["Name", "Hostname", "OS", "Agent", "Group", "State", "Last seen"], rows, { id: "devices" })
        : h("p", { class: "muted" }, devices.size ? "No device matches." : "No devices yet: enrol one (Admin → Enrolment tokens)."),
    );
  }

  async function load() {
    try {
      const data = await api("GET", "/api/v1/devices");
      devices.clear();
      for (const device of data.devices) devices.set(device.id, device);
      notice(message, "info", "");
      draw();
    } catch (error) {
      notice(message, "error", `Cannot list devices: ${error.message}`);
    }
  }

  async function refresh(id) {
    try {
      const device = await api("GET", `/api/v1/devices/${encodeURIComponent(id)}`);
      devices.set(device.id, device);
      draw();
    } catch {
      devices.delete(id);
      draw();
    }
  }

  // Many devices changed at once (a relay restart, a network coming back): one list.
  const MANY = 8;
  const refreshSoon = coalesced((ids) =>
    ids.has(null) || ids.size > MANY ? load() : Promise.all([...ids].map(refresh)));

  for (const control of [search, group, state]) control.addEventListener("input", draw);
  await load();
  const stop = deviceEvents(
    (event) => {
      if (event.type === "device") {
        const known = devices.get(event.id);
        if (known) {
          known.online = event.online;
          known.last_seen = event.last_seen;
          draw();
        }
        refreshSoon(event.id);
      } else if (event.type === "inventory") {
        refreshSoon(event.id);
      } else if (event.type === "ready") {
        refreshSoon(null);
      }
    },
    (value) => (live.textContent = value === "live" ? "● live" : "reconnecting…"),
  );
  const timer = setInterval(draw, 30000); // "last seen" ages
  return () => {
    stop();
    refreshSoon.cancel();
    clearInterval(timer);
  };
}
