// The web console's shell: who is signed in, the navigation, and a table of pages.
// Each page is one module in pages/ exporting `render(root, ctx)`, which builds the page
// into `root` and may return a function that tears it down (closes sockets, timers).
// Adding a page: write pages/NAME.js and add one line to PAGES below.

import { api, ApiError, onUnauthorized, setCsrf } from "./lib/api.js";
import { clear, h } from "./lib/dom.js";

const STAFF = ["admin", "technician"];
const ALL = ["admin", "technician", "auditor"];

// pattern (after "#/"), module, roles allowed to open it, navigation label (or none).
const PAGES = [
  { pattern: /^devices$/, module: "./pages/devices.js", roles: STAFF, nav: "Devices" },
  { pattern: /^device\/([^/]+)$/, module: "./pages/device.js", roles: STAFF },
  { pattern: /^shell\/([^/]+)$/, module: "./pages/shell.js", roles: STAFF },
  { pattern: /^files\/([^/]+)$/, module: "./pages/files.js", roles: STAFF },
  { pattern: /^screen\/([^/]+)$/, module: "./pages/screen.js", roles: STAFF },
  { pattern: /^sessions$/, module: "./pages/sessions.js", roles: ALL, nav: "Sessions" },
  { pattern: /^admin$/, module: "./pages/admin.js", roles: ["admin"], nav: "Admin" },
  { pattern: /^audit$/, module: "./pages/audit.js", roles: ["admin", "auditor"], nav: "Audit" },
  { pattern: /^recordings$/, module: "./pages/recordings.js", roles: ALL, nav: "Recordings" },
  { pattern: /^recording\/([^/]+)$/, module: "./pages/recording.js", roles: ALL },
  { pattern: /^screen-recording\/([^/]+)$/, module: "./pages/screen-recording.js", roles: ALL },
];

const main = document.getElementById("main");
const ctx = { user: null, navigate, signedIn, signOut, expired: "" };
let teardown = null;
let generation = 0;
// The address a click on a page asked to start a session at (navigate(hash, { start })):
// only this, never the address itself, lets a session page start without its own click.
let startAt = null;

function navigate(hash, { start = false } = {}) {
  startAt = start ? hash : null;
  if (location.hash === hash) route();
  else location.hash = hash;
}

function home() {
  return ctx.user && ctx.user.role === "auditor" ? "#/audit" : "#/devices";
}

function signedIn(session) {
  ctx.user = session.user;
  ctx.expired = "";
  setCsrf(session.csrf);
  renderTop();
  navigate(home());
}

async function signOut() {
  try {
    await api("POST", "/web/logout");
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
  }
  ctx.user = null;
  setCsrf("");
  renderTop();
  navigate("#/login");
}

onUnauthorized(() => {
  if (!ctx.user) return;
  ctx.user = null;
  ctx.expired = "Your session has ended (it expired or was signed out). Sign in again.";
  renderTop();
  navigate("#/login");
});

function renderTop() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!ctx.user) {
    clear(nav);
    clear(who);
    return;
  }
  const role = ctx.user.role;
  clear(
    nav,
    PAGES.filter((page) => page.nav && page.roles.includes(role)).map((page) =>
      h("a", { href: "#/" + page.pattern.source.slice(1, -1), "data-nav": page.nav }, page.nav),
    ),
  );
  clear(
    who,
    h("span", { class: "muted", id: "signed-in-as" }, `${ctx.user.username} (${role})`),
    h("button", { type: "button", class: "small", id: "sign-out", onclick: () => signOut() }, "Sign out"),
  );
}

async function route() {
  const mine = ++generation;
  if (teardown) {
    try {
      teardown();
    } catch (error) {
      console.error(error);
    }
    teardown = null;
  }
  const start = startAt !== null && startAt === location.hash;
  startAt = null;
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const query = new URLSearchParams(search || "");
  if (!ctx.user || path === "login") {
    if (ctx.user) return navigate(home());
    const login = await import("./pages/login.js");
    if (mine !== generation) return;
    clear(main);
    teardown = login.render(main, ctx) || null;
    return;
  }
  let page = null;
  let params = [];
  for (const candidate of PAGES) {
    const match = path.match(candidate.pattern);
    if (match) {
      page = candidate;
      params = match.slice(1).map(decodeURIComponent);
      break;
    }
  }
  if (!page) return navigate(home());
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", link.getAttribute("href") === "#/" + path);
  }
  clear(main);
  if (!page.roles.includes(ctx.user.role)) {
    // The relay refuses this page's data anyway; say so instead of showing errors.
    main.append(h("p", { class: "notice error", role: "alert" }, `This page is not for the ${ctx.user.role} role.`));
    return;
  }
  const module = await import(page.module);
  if (mine !== generation) return;
  try {
    teardown = (await module.render(main, { ...ctx, params, query, start })) || null;
  } catch (error) {
    main.append(h("p", { class: "notice error", role: "alert" }, `This page failed: ${error.message}`));
  }
}

async function start() {
  try {
    const session = await api("GET", "/web/session");
    ctx.user = session.user;
    setCsrf(session.csrf);
  } catch {
    ctx.user = null;
  }
  renderTop();
  window.addEventListener("hashchange", route);
  if (!location.hash || location.hash === "#/" || (ctx.user && location.hash === "#/login")) {
    location.hash = ctx.user ? home() : "#/login";
  }
  route();
}

start();
