// The relay's live device events (/web/ws/events), reconnecting after a drop, and the
// coalescing of the refetches they cause (pages fetch once per burst, not once per event).

import { socketUrl } from "./api.js";

export const COALESCE_MS = 250;

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

// One refetch for a burst of events: `run(keys)` runs at once for the first trigger, then at
// most once per `wait` ms while triggers keep coming (with every key triggered meanwhile),
// and never while its previous run is still going. A device reporting its inventory
// 50 times a second costs the page (and the relay) about four fetches a second, not 50.
export function coalesced(run, wait = COALESCE_MS) {
  let keys = new Set();
  let timer = null;
  let running = false;
  let pending = false;

  async function fire() {
    const batch = keys;
    keys = new Set();
    pending = false;
    running = true;
    timer = setTimeout(() => {
      timer = null;
      if (pending && !running) fire();
    }, wait);
    try {
      await run(batch);
    } catch (error) {
      console.error(error);
    } finally {
      running = false;
      if (pending && timer === null) fire();
    }
  }

  const trigger = (key) => {
    if (key !== undefined) keys.add(key);
    pending = true;
    if (timer === null && !running) fire();
  };
  trigger.cancel = () => {
    clearTimeout(timer);
    timer = null;
    pending = false;
    running = true; // nothing more after the page is gone
  };
  return trigger;
}
