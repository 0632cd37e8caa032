"""Helpers for the screen tests: a private Xvfb, an agent on it, the test window, and
reading the X screen directly (mss, ``xwd``) to compare with what a session shows."""

from __future__ import annotations

import contextlib
import os
import queue
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import BIN, AgentProcess, RelayProcess, enroll_agent, stop_process

APP = Path(__file__).with_name("screen_app.py")


@contextlib.contextmanager
def xvfb(*screen: str) -> Iterator[str]:
    """A private X server (``-screen 0 WxHxD`` by default 1024x768x24); yields ``:N``."""
    for program in ("Xvfb", "xdotool", "xwd", "xrandr"):
        assert shutil.which(program), f"{program} is missing (see .ci/run)"
    read_end, write_end = os.pipe()
    # -noreset: the server keeps its state (RandR monitors) when its last client leaves
    size = screen or ("-screen", "0", "1024x768x24")
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), *size, "-nolisten", "tcp", "-noreset"],
        pass_fds=[write_end],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        number = b""
        deadline = time.monotonic() + 15
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([read_end], [], [], 0.5)
            if ready:
                chunk = os.read(read_end, 16)
                if not chunk:
                    break
                number += chunk
        assert number.strip().isdigit(), "Xvfb did not come up"
        yield f":{number.decode().strip()}"
    finally:
        os.close(read_end)
        stop_process(server)  # type: ignore[arg-type]


def x_env(display: str) -> dict[str, str]:
    return {**os.environ, "DISPLAY": display}


@contextlib.contextmanager
def screen_agent(
    relay: RelayProcess, directory: Path, name: str, display: str, consent: dict[str, str]
) -> Iterator[AgentProcess]:
    """An enrolled agent running on ``display`` with the given consent policies."""
    agent = enroll_agent(relay, directory, name, consent=consent)
    with agent.log_path.open("ab") as log:
        agent.process = subprocess.Popen(
            [BIN / "helpline-agent", "-v", "run", "--config", agent.config_dir],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=x_env(display),
        )
    try:
        yield agent
    finally:
        agent.stop()


class DemoWindow:
    """The Tk window of :mod:`screen_app`, at (x, y) of the desktop."""

    def __init__(self, display: str, x: int, y: int, *extra: str) -> None:
        self.x, self.y = x, y
        self.process = subprocess.Popen(
            [sys.executable, str(APP), str(x), str(y), *extra],
            env=x_env(display),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        #: Every line the window printed so far (as read by wait_line).
        self.printed: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_lines, daemon=True).start()
        assert self.wait_line(lambda line: line == "ready") == "ready"

    def _read_lines(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())

    def wait_line(self, wanted: object, seconds: float = 20.0) -> str | None:
        """The first line printed that ``wanted(line)`` accepts; None after ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                return None
            self.printed.append(line)
            if wanted(line):  # type: ignore[operator]
                return line
        return None

    def close(self) -> None:
        stop_process(self.process)  # type: ignore[arg-type]


def grab_mss(display: str, region: tuple[int, int, int, int]) -> Image.Image:
    """What mss reads from the X server for ``region`` (x, y, w, h), as RGB."""
    import mss

    x, y, w, h = region
    with mss.MSS(display=display) as grabber:
        shot = grabber.grab({"left": x, "top": y, "width": w, "height": h})
        return Image.frombytes("RGB", shot.size, shot.rgb)


def grab_xwd(display: str) -> Image.Image:
    """The root window as ``xwd -root`` dumps it (ZPixmap, 32 bits per pixel), as RGB."""
    dump = subprocess.run(
        ["xwd", "-root", "-silent", "-display", display],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    fields = struct.unpack(">25I", dump[:100])
    header_size, _version, pixmap_format = fields[0], fields[1], fields[2]
    width, height, byte_order = fields[4], fields[5], fields[7]
    bits_per_pixel, bytes_per_line, ncolors = fields[11], fields[12], fields[19]
    assert pixmap_format == 2 and bits_per_pixel == 32, "expected a 32-bit ZPixmap dump"
    start = header_size + 12 * ncolors
    pixels = np.frombuffer(dump[start : start + height * bytes_per_line], dtype=np.uint8)
    pixels = pixels.reshape(height, bytes_per_line)[:, : width * 4].reshape(height, width, 4)
    order = [2, 1, 0] if byte_order == 0 else [1, 2, 3]  # LSBFirst: B G R X
    return Image.fromarray(np.ascontiguousarray(pixels[:, :, order]), "RGB")


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
