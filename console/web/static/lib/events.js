// The relay's live device events (/web/ws/events), reconnecting after a drop.

import { socketUrl } from "./api.js";

export function deviceEvents(onEvent, onState = () => {}) {
  let socket = null;
  let stopped = false;
  let delay = 500;
  let timer = null;

  function connect() {
    socket = new WebSocket(socketUrl("/web/ws/events"));
    socket.addEventListener("open", () => {
      delay = 500;
      onState("live");
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      onEvent(message);
    });
    socket.addEventListener("close", () => {
      if (stopped) return;
      onState("reconnecting");
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    });
  }

  connect();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (socket) socket.close();
  };
}
