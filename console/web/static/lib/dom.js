// Building the page without markup strings: every text from an agent or a user goes
// in as a text node (textContent), never through innerHTML.

export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "text") element.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "value") element.value = value;
    else if (key === "checked") element.checked = Boolean(value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function when(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  return new Date(seconds * 1000).toLocaleString();
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const delta = Math.max(0, Date.now() / 1000 - seconds);
  if (delta < 60) return `${Math.round(delta)} s ago`;
  if (delta < 3600) return `${Math.round(delta / 60)} min ago`;
  if (delta < 86400) return `${Math.round(delta / 3600)} h ago`;
  return when(seconds);
}

export function bytes(count) {
  if (count === null || count === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

// A message area: role=alert so screen readers say it; kind is "error", "info" or "ok".
export function notice(element, kind, message) {
  element.className = `notice ${kind}`;
  element.textContent = message;
  element.hidden = !message;
}

export function table(headers, rows, props = {}) {
  return h(
    "table",
    props,
    h("thead", {}, h("tr", {}, headers.map((title) => h("th", { text: title })))),
    h("tbody", {}, rows),
  );
}

export function copyButton(label, getText) {
  const button = h("button", { type: "button", class: "small" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(getText());
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed: select and copy by hand";
    }
    setTimeout(() => (button.textContent = label), 1500);
  });
  return button;
}
