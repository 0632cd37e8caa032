"""Screen sessions: frames per second, KB per frame, KB/s and agent CPU on a 1080p Xvfb.

One relay and one real agent (:class:`~tests.bench.rig.HelplineRig`) on a private
1920x1080 Xvfb; a viewer in this process opens a ``view`` session per row and
acknowledges every frame as soon as it has parsed it (a fast viewer: it does not
decode the tiles, so the figures are the agent's and the link's, not Pillow's in
this process). Workloads:

* ``idle``: nothing moves (the customer's session notice is on screen);
* ``scrolling``: an xterm larger than the screen with a shell loop printing lines;
* ``fullscreen``: a window covering the screen repainted 30 times a second with a
  moving colour pattern (photo-like content; frames are precomputed).

Each runs in the ``lossless`` and ``lossy`` modes (and ``auto``). For ``fullscreen``,
the last row is the baseline without tiles: every changed frame grabbed (mss) and
sent whole as zlib (level 1), measured in this process for the same time.
``BENCH_SCREEN_SECONDS`` (default 8) is the measuring time per row.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import psutil

from protocol.screen import ScreenFrame, TileStreamParser
from tests.integration.screen_helpers import xvfb

from .rig import DEVICE, HelplineRig

WIDTH, HEIGHT = 1920, 1080
SECONDS = float(os.environ.get("BENCH_SCREEN_SECONDS", "8"))
MODES = ("lossless", "lossy", "auto")

PAINTER = r"""
import sys, time
import numpy as np
from Xlib import X, display
d = display.Display()
screen = d.screen()
w, h = int(sys.argv[1]), int(sys.argv[2])
win = screen.root.create_window(0, 0, w, h, 0, screen.root_depth, X.InputOutput, X.CopyFromParent,
                                override_redirect=True, background_pixel=screen.black_pixel)
win.map()
gc = win.create_gc()
ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
frames = []
for k in range(30):
    t = k / 30 * 2 * np.pi
    r = 127 + 127 * np.sin(xs / 97 + t)
    g = 127 + 127 * np.sin(ys / 53 - 2 * t)
    b = 127 + 127 * np.sin((xs + ys) / 151 + 3 * t)
    bgrx = np.stack([b, g, r, np.zeros_like(r)], axis=-1).astype(np.uint8)
    frames.append(bgrx.tobytes())
print("ready", flush=True)
band = 8  # a PutImage request is at most 65535 words without BIG-REQUESTS
n = 0
while True:
    start = time.monotonic()
    data = frames[n % len(frames)]
    for y in range(0, h, band):
        rows = min(band, h - y)
        win.put_image(gc, 0, y, w, rows, X.ZPixmap, 24, 0, data[y * w * 4:(y + rows) * w * 4])
    d.sync()
    n += 1
    time.sleep(max(0.0, 1 / 30 - (time.monotonic() - start)))
"""


def start_workload(name: str, display: str) -> subprocess.Popen[bytes] | None:
    env = {**os.environ, "DISPLAY": display}
    if name == "idle":
        return None
    if name == "scrolling":
        text = "the quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        loop = f'i=0; while :; do i=$((i+1)); echo "$i {text} $i"; done'
        process = subprocess.Popen(
            ["xterm", "-geometry", "300x90+0+0", "-fa", "Monospace", "-fs", "10",
             "-e", "sh", "-c", loop],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(2)
        return process
    process = subprocess.Popen(
        [sys.executable, "-c", PAINTER, str(WIDTH), str(HEIGHT)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        raise RuntimeError("the full-screen painter did not start")
    time.sleep(1)
    return process


async def measure_session(rig: HelplineRig, mode: str, agent: psutil.Process) -> dict[str, float]:
    async with rig.client() as client, client.connect() as console:
        channel = await console.open_session(DEVICE, "view", params={"mode": mode})
        parser = TileStreamParser()
        frames = 0
        size = 0

        async def pump(until: float) -> None:
            nonlocal frames, size
            loop = asyncio.get_running_loop()
            while (left := until - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(channel.receive(), left)
                except TimeoutError:
                    return
                if item is None:
                    raise RuntimeError("the session ended")
                if isinstance(item, bytes):
                    for frame in parser.feed(item):
                        if not isinstance(frame, ScreenFrame):
                            continue  # a cursor shape
                        frames += 1
                        size += frame.size
                        await channel.send_message(_ack(frame.seq))

        loop = asyncio.get_running_loop()
        await pump(loop.time() + 2.0)  # the first full frame and warm-up
        frames = size = 0
        cpu_before = sum(agent.cpu_times()[:2])
        started = loop.time()
        await pump(started + SECONDS)
        elapsed = loop.time() - started
        cpu = (sum(agent.cpu_times()[:2]) - cpu_before) / elapsed
        await channel.close()
    return {
        "fps": frames / elapsed,
        "kb_per_frame": size / 1024 / frames if frames else 0.0,
        "kb_per_s": size / 1024 / elapsed,
        "cpu": cpu,
    }


def _ack(seq: int):  # type: ignore[no-untyped-def]
    from protocol.screen import ScreenAck

    return ScreenAck(seq=seq)


def measure_whole_frames(display: str) -> dict[str, float]:
    """Every changed frame grabbed and compressed whole with zlib, in this process."""
    import mss

    frames = size = 0
    previous: np.ndarray | None = None
    with mss.MSS(display=display) as grabber:
        region = {"left": 0, "top": 0, "width": WIDTH, "height": HEIGHT}
        cpu_before = time.process_time()
        started = time.monotonic()
        while time.monotonic() - started < SECONDS:
            shot = grabber.grab(region)
            pixels = np.frombuffer(shot.raw, dtype=np.uint8)
            if previous is not None and np.array_equal(previous, pixels):
                time.sleep(0.005)
                continue
            previous = pixels.copy()
            size += len(zlib.compress(shot.rgb, 1))
            frames += 1
        elapsed = time.monotonic() - started
        cpu = (time.process_time() - cpu_before) / elapsed
    return {
        "fps": frames / elapsed,
        "kb_per_frame": size / 1024 / frames if frames else 0.0,
        "kb_per_s": size / 1024 / elapsed,
        "cpu": cpu,
    }


def main() -> int:
    rows: list[tuple[str, str, dict[str, float]]] = []
    load_before = f"{os.getloadavg()[0]:.1f}"
    with (
        xvfb("-screen", "0", f"{WIDTH}x{HEIGHT}x24") as display,
        tempfile.TemporaryDirectory(prefix="helpline-bench-screen-") as directory,
    ):
        os.environ["DISPLAY"] = display  # the agent started by the rig inherits it
        with HelplineRig(Path(directory), consent=("view",)) as rig:
            assert rig.agent is not None and rig.agent.process is not None
            agent = psutil.Process(rig.agent.process.pid)
            for workload in ("idle", "scrolling", "fullscreen"):
                painter = start_workload(workload, display)
                try:
                    for mode in MODES:
                        print(f"  {workload} / {mode}...", file=sys.stderr, flush=True)
                        rows.append(
                            (workload, mode, asyncio.run(measure_session(rig, mode, agent)))
                        )
                    if workload == "fullscreen":
                        print(f"  {workload} / whole frames...", file=sys.stderr, flush=True)
                        rows.append((workload, "whole zlib", measure_whole_frames(display)))
                finally:
                    if painter is not None:
                        painter.kill()
                        painter.wait()
    print(f"screen {WIDTH}x{HEIGHT} (Xvfb), {SECONDS:g} s per row, {os.cpu_count()} CPUs")
    print(f"load average before: {load_before}; after: {os.getloadavg()[0]:.1f}")
    header = f"{'workload':<11} {'mode':<11} {'fps':>7} {'KB/frame':>9} {'KB/s':>9}"
    print(f"{header} {'agent CPU':>10} {'CPU ms/frame':>13}")
    for workload, mode, r in rows:
        cpu = f"{r['cpu'] * 100:.0f}%"
        per_frame = f"{r['cpu'] * 1000 / r['fps']:.1f}" if r["fps"] else "-"
        print(
            f"{workload:<11} {mode:<11} {r['fps']:>7.1f} {r['kb_per_frame']:>9.1f}"
            f" {r['kb_per_s']:>9.1f} {cpu:>10} {per_frame:>13}"
        )
    print(
        "agent CPU: share of one core over the row (100% = one core busy); CPU ms/frame ="
        " that CPU per frame delivered. 'whole zlib' is measured in this process."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
