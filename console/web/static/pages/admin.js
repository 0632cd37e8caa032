// Administration: users (roles, reset TOTP, lock/unlock), groups and grants, enrolment
// tokens (expiry, uses, the enrol command to copy), devices (revoke, move group).

import { api } from "../lib/api.js";
import { clear, copyButton, h, notice, table, when } from "../lib/dom.js";

const ROLES = ["technician", "admin", "auditor"];

export async function render(root) {
  const message = h("p", { role: "alert", hidden: true, id: "admin-message" });
  const secrets = h("div", { id: "admin-secret" });
  const users = h("div");
  const groups = h("div");
  const tokens = h("div");
  const devices = h("div");
  root.append(h("h1", {}, "Administration"), message, secrets,
    h("h2", {}, "Users"), users, h("h2", {}, "Groups and grants"), groups,
    h("h2", {}, "Enrolment tokens"), tokens, h("h2", {}, "Devices"), devices);

  let groupNames = [];

  async function act(what, call) {
    try {
      const answer = await call();
      notice(message, "ok", what);
      await loadAll();
      return answer;
    } catch (error) {
      notice(message, "error", `${what.replace(/\.$/, "")} failed: ${error.message}`);
      return null;
    }
  }

  function showSecret(title, lines) {
    clear(secrets, h("div", { class: "card" }, h("strong", {}, title),
      h("pre", { class: "secret", id: "secret-text" }, lines.join("\n")),
      copyButton("Copy", () => lines.join("\n")),
      h("button", { type: "button", class: "small secondary", onclick: () => clear(secrets) }, "Hide")));
  }

  function userForm() {
    const username = h("input", { id: "new-username", placeholder: "user name", required: true, pattern: "[a-z0-9][a-z0-9._-]{0,31}" });
    const fullName = h("input", { id: "new-fullname", placeholder: "full name" });
    const role = h("select", { id: "new-role" }, ROLES.map((r) => h("option", { value: r }, r)));
    const form = h("form", { class: "inline card", id: "new-user" }, username, fullName, role, h("button", { type: "submit" }, "Create user"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { username: username.value.trim(), role: role.value };
      if (fullName.value.trim()) body.full_name = fullName.value.trim();
      const answer = await act(`User ${body.username} created.`, () => api("POST", "/api/v1/users", body));
      if (answer) {
        showSecret(`Give these to ${body.username} (shown once):`, [
          `user name: ${body.username}`, `password: ${answer.password}`, `TOTP secret: ${answer.totp_secret}`, `TOTP URI: ${answer.totp_uri}`]);
        form.reset();
      }
    });
    return form;
  }

  async function loadUsers() {
    const data = await api("GET", "/api/v1/users");
    const rows = data.users.map((u) => {
      const name = encodeURIComponent(u.username);
      const locked = u.disabled || (u.locked_until && u.locked_until > Date.now() / 1000);
      const role = h("select", {}, ROLES.map((r) => h("option", { value: r, selected: r === u.role }, r)));
      role.addEventListener("change", () => act(`${u.username} is now ${role.value}.`, () => api("PATCH", `/api/v1/users/${name}`, { role: role.value })));
      return h("tr", { "data-user": u.username },
        h("td", {}, u.username), h("td", {}, u.full_name), h("td", {}, role),
        h("td", {}, u.disabled ? "locked by an admin" : locked ? `locked until ${when(u.locked_until)}` : "active"),
        h("td", {},
          locked
            ? h("button", { type: "button", class: "small", onclick: () => act(`${u.username} unlocked.`, async () => { await api("POST", `/api/v1/users/${name}/unlock`); if (u.disabled) await api("PATCH", `/api/v1/users/${name}`, { disabled: false }); }) }, "Unlock")
            : h("button", { type: "button", class: "small secondary", onclick: () => act(`${u.username} locked.`, () => api("PATCH", `/api/v1/users/${name}`, { disabled: true })) }, "Lock"),
          " ",
          h("button", { type: "button", class: "small secondary", onclick: async () => {
            const answer = await act(`New TOTP secret for ${u.username}.`, () => api("POST", `/api/v1/users/${name}/reset-totp`));
            if (answer) showSecret(`New TOTP secret for ${u.username} (shown once):`, [answer.totp_secret, answer.totp_uri]);
          } }, "Reset TOTP"),
          " ",
          h("button", { type: "button", class: "small danger", onclick: () => confirm(`Delete ${u.username}?`) && act(`${u.username} deleted.`, () => api("DELETE", `/api/v1/users/${name}`)) }, "Delete")));
    });
    clear(users, userForm(), table(["User", "Name", "Role", "State", ""], rows, { id: "users" }));
  }

  async function loadGroups() {
    const [groupData, grantData] = await Promise.all([api("GET", "/api/v1/groups"), api("GET", "/api/v1/grants")]);
    groupNames = groupData.groups.map((g) => g.name);
    const newGroup = h("input", { id: "new-group", placeholder: "group name" });
    const groupForm = h("form", { class: "inline card" }, newGroup, h("button", { type: "submit" }, "Create group"));
    groupForm.addEventListener("submit", (event) => {
      event.preventDefault();
      act(`Group ${newGroup.value} created.`, () => api("POST", "/api/v1/groups", { name: newGroup.value.trim() }));
    });
    const grantUser = h("input", { id: "grant-user", placeholder: "user name" });
    const grantGroup = h("select", { id: "grant-group" }, groupNames.map((g) => h("option", { value: g }, g)));
    const grantForm = h("form", { class: "inline card" }, grantUser, grantGroup, h("button", { type: "submit" }, "Grant"));
    grantForm.addEventListener("submit", (event) => {
      event.preventDefault();
      act(`${grantUser.value} may now reach ${grantGroup.value}.`, () => api("POST", "/api/v1/grants", { username: grantUser.value.trim(), group: grantGroup.value }));
    });
    clear(groups, groupForm,
      table(["Group", ""], groupData.groups.map((g) => h("tr", {}, h("td", {}, g.name),
        h("td", {}, h("button", { type: "button", class: "small danger", onclick: () => act(`Group ${g.name} deleted.`, () => api("DELETE", `/api/v1/groups/${encodeURIComponent(g.name)}`)) }, "Delete"))))),
      grantForm,
      table(["User", "Group", ""], grantData.grants.map((g) => h("tr", {}, h("td", {}, g.username), h("td", {}, g.group),
        h("td", {}, h("button", { type: "button", class: "small danger", onclick: () => act(`Grant removed.`, () => api("DELETE", `/api/v1/grants/${encodeURIComponent(g.username)}/${encodeURIComponent(g.group)}`)) }, "Remove")))), { id: "grants" }));
  }

  async function loadTokens() {
    const data = await api("GET", "/api/v1/enrolment-tokens");
    const group = h("select", { id: "token-group" }, groupNames.map((g) => h("option", { value: g }, g)));
    const hours = h("input", { id: "token-hours", type: "number", min: "1", max: "8784", value: "24" });
    const uses = h("input", { id: "token-uses", type: "number", min: "1", max: "100000", value: "1" });
    const form = h("form", { class: "inline card", id: "new-token" }, h("label", {}, "Group", group), h("label", {}, "Valid for (hours)", hours), h("label", {}, "Uses", uses), h("button", { type: "submit" }, "Create enrolment token"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const answer = await act("Enrolment token created.", () => api("POST", "/api/v1/enrolment-tokens", { group: group.value, expires_in: Math.round(Number(hours.value) * 3600), max_uses: Number(uses.value) }));
      if (answer) showSecret("Run this on the customer's machine (the token is shown once):", [answer.command]);
    });
    const rows = data.tokens.map((t) => h("tr", { "data-token": t.id }, h("td", {}, String(t.id)), h("td", {}, t.group), h("td", {}, when(t.expires_at)), h("td", {}, `${t.uses} / ${t.max_uses}`), h("td", {}, t.created_by), h("td", {}, t.revoked ? "revoked" : ""),
      h("td", {}, t.revoked ? "" : h("button", { type: "button", class: "small danger", onclick: () => act("Token revoked.", () => api("DELETE", `/api/v1/enrolment-tokens/${t.id}`)) }, "Revoke"))));
    clear(tokens, form, table(["#", "Group", "Expires", "Used", "By", "", ""], rows, { id: "tokens" }));
  }

  async function loadDevices() {
    const data = await api("GET", "/api/v1/devices");
    const rows = data.devices.map((d) => {
      const id = encodeURIComponent(d.id);
      const move = h("select", {}, groupNames.map((g) => h("option", { value: g, selected: g === d.group }, g)));
      move.addEventListener("change", () => act(`${d.name} moved to ${move.value}.`, () => api("PATCH", `/api/v1/devices/${id}`, { group: move.value })));
      return h("tr", { "data-device": d.id }, h("td", {}, d.name), h("td", {}, (d.inventory || {}).hostname || ""), h("td", {}, d.revoked_at ? "revoked" : d.online ? "online" : "offline"), h("td", {}, d.revoked_at ? d.group : move),
        h("td", {}, d.revoked_at ? "" : h("button", { type: "button", class: "small danger", onclick: () => confirm(`Revoke ${d.name}? Its agent is cut off at once.`) && act(`${d.name} revoked.`, () => api("POST", `/api/v1/devices/${id}/revoke`)) }, "Revoke")));
    });
    clear(devices, table(["Device", "Hostname", "State", "Group", ""], rows, { id: "admin-devices" }));
  }

  async function loadAll() {
    try {
      await loadUsers();
      await loadGroups();
      await Promise.all([loadTokens(), loadDevices()]);
    } catch (error) {
      notice(message, "error", `Cannot load: ${error.message}`);
    }
  }

  await loadAll();
}
