"""A Tk window for the screen tests: known colours and text, a button and an entry.

Run as ``python tests/integration/screen_app.py X Y`` on the display under test. It
puts its window at (X, Y) without decorations, prints ``ready`` once it is mapped,
then one line per event: ``clicked`` when the button is pressed, ``text <value>``
whenever the entry's text changes. ``animate`` as a third argument repaints a
square with a new colour every 20 ms (changing content for pacing tests).
"""

from __future__ import annotations

import sys
import tkinter

#: The colour blocks drawn at the top of the window: (x, y, width, height, #rrggbb).
BLOCKS = [
    (0, 0, 100, 60, "#ff0000"),
    (100, 0, 100, 60, "#00ff00"),
    (200, 0, 100, 60, "#0000ff"),
    (300, 0, 100, 60, "#123456"),
]
WIDTH, HEIGHT = 400, 260
#: Where the button and the entry are, relative to the window.
BUTTON = (20, 180, 140, 40)
ENTRY = (200, 185, 180, 30)


def main() -> None:
    x, y = int(sys.argv[1]), int(sys.argv[2])
    animate = len(sys.argv) > 3 and sys.argv[3] == "animate"
    root = tkinter.Tk()
    root.overrideredirect(True)
    root.geometry(f"{WIDTH}x{HEIGHT}+{x}+{y}")
    canvas = tkinter.Canvas(root, width=WIDTH, height=170, highlightthickness=0, bg="#ffffff")
    canvas.place(x=0, y=0)
    for bx, by, bw, bh, colour in BLOCKS:
        canvas.create_rectangle(bx, by, bx + bw, by + bh, fill=colour, outline=colour)
    canvas.create_text(10, 90, anchor="nw", text="Helpline screen test 0123456789", fill="#000000")
    square = canvas.create_rectangle(300, 100, 400, 170, fill="#808080", outline="")

    def clicked() -> None:
        print("clicked", flush=True)

    button = tkinter.Button(root, text="Press me", command=clicked)
    button.place(x=BUTTON[0], y=BUTTON[1], width=BUTTON[2], height=BUTTON[3])
    value = tkinter.StringVar()
    value.trace_add("write", lambda *_: print("text", value.get(), flush=True))
    entry = tkinter.Entry(root, textvariable=value)
    entry.place(x=ENTRY[0], y=ENTRY[1], width=ENTRY[2], height=ENTRY[3])

    step = [0]

    def repaint() -> None:
        step[0] += 1
        n = step[0]
        canvas.itemconfigure(square, fill=f"#{(n * 37) % 256:02x}{(n * 91) % 256:02x}{n % 256:02x}")
        root.after(20, repaint)

    def ready() -> None:
        print("ready", flush=True)
        if animate:
            repaint()

    root.after(300, ready)
    root.mainloop()


if __name__ == "__main__":
    main()
