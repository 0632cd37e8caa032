// The browser's mouse and keyboard as the screen channel names them (protocol/screen.py):
// buttons, wheel notches, and the key combinations a page cannot type itself.

const BUTTONS = { 0: "left", 1: "middle", 2: "right" };

export function buttonName(button) {
  return BUTTONS[button] || "";
}

// Wheel movement in notches (at least one per event that moved), positive right and down.
export function wheelNotches(event) {
  const unit = event.deltaMode === 1 ? 3 : event.deltaMode === 2 ? 1 / 100 : 100;
  const notches = (delta) => {
    if (!delta) return 0;
    const count = Math.max(1, Math.round(Math.abs(delta) / unit));
    return Math.sign(delta) * Math.min(count, 100);
  };
  return [notches(event.deltaX), notches(event.deltaY)];
}

const combo = (...codes) => [
  ...codes.map((code) => ["down", code]),
  ...codes.slice().reverse().map((code) => ["up", code]),
];

// Keys the browser or the technician's own system would take for itself.
export const SPECIAL_KEYS = [
  { label: "Ctrl+Alt+Del", keys: combo("ControlLeft", "AltLeft", "Delete") },
  { label: "Ctrl+Shift+Esc", keys: combo("ControlLeft", "ShiftLeft", "Escape") },
  { label: "Alt+Tab", keys: combo("AltLeft", "Tab") },
  { label: "Alt+F4", keys: combo("AltLeft", "F4") },
  { label: "Windows / Super", keys: combo("MetaLeft") },
  { label: "Super+L (lock)", keys: combo("MetaLeft", "KeyL") },
  { label: "Ctrl+Esc", keys: combo("ControlLeft", "Escape") },
  { label: "Print Screen", keys: combo("PrintScreen") },
  { label: "Escape", keys: combo("Escape") },
];
