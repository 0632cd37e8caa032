// The device's files: browse, download (the browser's own download manager), upload
// (file picker or drag and drop) with progress. The relay checks every transfer's
// SHA-256 end to end and the device resumes a cut upload (relay/web/files.py). The session
// starts on a click (lib/start.js).

import { csrf, socketUrl } from "../lib/api.js";
import { bytes, clear, h, notice, table, when } from "../lib/dom.js";
import { showSessionState } from "../lib/session.js";
import { startForm } from "../lib/start.js";

function join(directory, name) {
  if (directory === "." || directory === "") return name;
  return directory.endsWith("/") ? directory + name : `${directory}/${name}`;
}

function parent(directory) {
  if (directory === "." || directory === "/" || !directory.includes("/")) return directory.startsWith("/") ? "/" : ".";
  const up = directory.slice(0, directory.lastIndexOf("/"));
  return up || "/";
}

// WebCrypto hashes a whole buffer at once: larger files go without the page's hash
// (TLS still guards the way to the relay; the relay and the device check the rest).
const HASH_LIMIT = 256 * 1024 * 1024;

async function sha256(file) {
  if (file.size > HASH_LIMIT) return "";
  const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export function render(root, ctx) {
  const [device] = ctx.params;
  const title = h("h1", {}, "Files");
  const status = h("p", { id: "files-status", role: "status" });
  const pathInput = h("input", { id: "files-path", value: ".", size: "50" });
  const listing = h("div", { id: "listing" });
  const uploads = h("div", { id: "uploads" });
  const picker = h("input", { type: "file", id: "upload-input", multiple: true });
  const drop = h("div", { class: "dropzone", id: "dropzone" }, "Drop files here to upload them to the directory shown");
  const newDir = h("input", { id: "new-dir", placeholder: "new directory name" });
  const starter = startForm(ctx, { label: "Open files", onStart: ({ reason }) => connect(reason) });
  root.append(
    h("div", { class: "toolbar" }, title,
      h("a", { href: `#/device/${encodeURIComponent(device)}` }, "back to the device")),
    starter.form,
    status,
    h("form", { class: "toolbar", id: "path-form" },
      h("button", { type: "button", class: "secondary", id: "up" }, "Up"),
      pathInput,
      h("button", { type: "submit" }, "Open")),
    listing,
    h("h2", {}, "Upload"),
    h("div", { class: "toolbar" }, picker, newDir, h("button", { type: "button", id: "mkdir" }, "Make directory")),
    drop,
    uploads,
  );
  notice(status, "info", "Check the reason, then open the files.");

  let handle = null;
  let current = ".";
  let nextId = 1;
  const pending = new Map();
  let socket = null;

  function request(op, fields) {
    return new Promise((resolve, reject) => {
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        reject({ message: "the files session is not open" });
        return;
      }
      const id = nextId++;
      pending.set(id, { resolve, reject });
      socket.send(JSON.stringify({ id, op, ...fields }));
    });
  }

  function connect(reason) {
    notice(status, "info", "Asking the relay…");
    socket = new WebSocket(socketUrl("/web/ws/files", { device, reason }));
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.id !== undefined && message.ok !== undefined) {
        const waiter = pending.get(message.id);
        pending.delete(message.id);
        if (waiter) (message.ok ? waiter.resolve : waiter.reject)(new Object(message));
        else if (!message.ok) notice(status, "error", message.message);
        return;
      }
      showSessionState(status, message);
      if (message.type === "opened") {
        title.textContent = `Files on ${message.device}`;
        handle = message.handle;
        window.__filesHandle = handle; // for tests and the browser's console
        browse(".");
      } else if (message.type === "closed" || message.type === "refused") {
        handle = null;
      }
    });
    socket.addEventListener("close", () => {
      handle = null;
      for (const waiter of pending.values()) waiter.reject({ message: "the files session ended" });
      pending.clear();
      if (!status.classList.contains("error") && !status.textContent.startsWith("Session ended")) {
        notice(status, "info", "The files session is over.");
      }
    });
  }

  async function browse(path) {
    try {
      const answer = await request("list", { path });
      current = answer.path;
      pathInput.value = current;
      const entries = answer.entries.slice().sort((a, b) => (a.kind === "dir") === (b.kind === "dir") ? a.name.localeCompare(b.name) : a.kind === "dir" ? -1 : 1);
      const rows = entries.map((entry) => {
        const full = join(current, entry.name);
        const name = entry.kind === "dir"
          ? h("a", { href: "#", class: "dir", onclick: (e) => { e.preventDefault(); browse(full); } }, entry.name + "/")
          : h("a", { class: "file", download: entry.name, href: `/web/files/${handle}/download?${new URLSearchParams({ path: full })}` }, entry.name);
        const remove = h("button", { type: "button", class: "small danger", onclick: () => removeEntry(full, entry.kind === "dir") }, "Delete");
        return h("tr", { "data-name": entry.name }, h("td", {}, name), h("td", {}, entry.kind), h("td", {}, entry.kind === "file" ? bytes(entry.size) : ""), h("td", {}, when(entry.mtime_ns / 1e9)), h("td", {}, remove));
      });
      clear(listing, table(["Name", "Kind", "Size", "Modified", ""], rows, { id: "file-list" }),
        answer.truncated ? h("p", { class: "muted" }, "Only the first entries are shown.") : null);
    } catch (error) {
      notice(status, "error", `Cannot open ${path}: ${error.message}`);
    }
  }

  async function removeEntry(path, recursive) {
    if (!confirm(`Delete ${path}${recursive ? " and everything in it" : ""} on the device?`)) return;
    try {
      await request("remove", { path, recursive });
      browse(current);
    } catch (error) {
      notice(status, "error", `Cannot delete ${path}: ${error.message}`);
    }
  }

  function upload(file) {
    const target = join(current, file.name);
    const bar = h("progress", { max: "1", value: "0" });
    const state = h("span", { class: "upload-state" }, "hashing…");
    uploads.append(h("div", { class: "upload", "data-name": file.name }, h("span", {}, `${file.name} (${bytes(file.size)}) `), bar, " ", state));
    sha256(file).then((digest) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `/web/files/${handle}/upload?${new URLSearchParams({ path: target })}`);
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      if (digest) xhr.setRequestHeader("X-Content-SHA256", digest);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) bar.value = event.loaded / event.total;
        state.textContent = "sending…";
      });
      xhr.upload.addEventListener("load", () => (state.textContent = "the device is writing and checking it…"));
      xhr.addEventListener("load", () => {
        let answer = null;
        try {
          answer = JSON.parse(xhr.responseText);
        } catch {
          answer = null;
        }
        if (xhr.status === 200 && answer && answer.ok) {
          bar.value = 1;
          state.textContent = `done, SHA-256 verified: ${answer.sha256}`;
          state.className = "upload-state ok";
          browse(current);
        } else {
          state.textContent = `failed: ${answer && answer.error ? answer.error.message : xhr.statusText}`;
          state.className = "upload-state error";
        }
      });
      xhr.addEventListener("error", () => {
        state.textContent = "failed: the connection to the relay broke";
        state.className = "upload-state error";
      });
      xhr.send(file);
    });
  }

  function uploadAll(files) {
    if (!handle) {
      notice(status, "error", "The files session is not open.");
      return;
    }
    for (const file of files) upload(file);
  }

  picker.addEventListener("change", () => {
    uploadAll([...picker.files]);
    picker.value = "";
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    uploadAll([...event.dataTransfer.files]);
  });
  root.querySelector("#path-form").addEventListener("submit", (event) => {
    event.preventDefault();
    browse(pathInput.value.trim() || ".");
  });
  root.querySelector("#up").addEventListener("click", () => browse(parent(current)));
  root.querySelector("#mkdir").addEventListener("click", async () => {
    const name = newDir.value.trim();
    if (!name) return;
    try {
      await request("mkdir", { path: join(current, name) });
      newDir.value = "";
      browse(current);
    } catch (error) {
      notice(status, "error", `Cannot make ${name}: ${error.message}`);
    }
  });

  starter.startIfAsked();
  return () => {
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close();
  };
}
