// One shell recording in asciinema-player (from the npm registry, served by the relay):
// play, pause, seek with its progress bar or the arrow keys, and a speed of your choice.

import { h, notice } from "../lib/dom.js";

let loading = null;

function loadPlayer() {
  if (window.AsciinemaPlayer) return Promise.resolve(window.AsciinemaPlayer);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = h("script", { src: "/vendor/asciinema-player.min.js" });
      script.addEventListener("load", () => resolve(window.AsciinemaPlayer));
      script.addEventListener("error", () => reject(new Error("asciinema-player did not load")));
      document.head.append(script);
    });
  }
  return loading;
}

export async function render(root, ctx) {
  const [id] = ctx.params;
  const message = h("p", { role: "alert", hidden: true });
  const speed = h(
    "select",
    { id: "speed" },
    ["0.5", "1", "2", "4", "8"].map((value) => h("option", { value, selected: value === "1" }, `${value}×`)),
  );
  const holder = h("div", { class: "player", id: "player" });
  const file = `/api/v1/recordings/${encodeURIComponent(id)}`;
  root.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Recording"), h("label", {}, "Speed", speed),
      h("a", { href: file, download: `${id}.cast` }, "Download .cast"),
      h("a", { href: "#/recordings" }, "all recordings")),
    message,
    holder,
  );
  let player = null;
  let Player;
  try {
    Player = await loadPlayer();
  } catch (error) {
    notice(message, "error", error.message);
    return undefined;
  }

  function start(at = 0, autoPlay = false) {
    if (player) player.dispose();
    holder.replaceChildren();
    player = Player.create(file, holder, { speed: Number(speed.value), startAt: at, autoPlay, fit: "width", idleTimeLimit: 2 });
    player.addEventListener("ended", () => holder.setAttribute("data-ended", "true"));
    player.addEventListener("play", () => holder.setAttribute("data-playing", "true"));
    window.helplinePlayer = player;
  }

  speed.addEventListener("change", () => {
    const at = player ? player.getCurrentTime() || 0 : 0;
    start(at, true);
  });
  start();
  return () => {
    if (player) player.dispose();
    delete window.helplinePlayer;
  };
}
