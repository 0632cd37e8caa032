"""Screen view and control for real: Xvfb, a Tk window, mss/xwd reading the X server
directly, the real relay, agent and console. Every wait is bounded; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from agent.dialog import EDGE, PROMPT_TITLE
from console.client import HelplineClient
from console.screen import ScreenViewer
from protocol.errors import ErrorCode
from protocol.screen import TileEncoding

from .conftest import RelayProcess, run_helpline
from .helpers import audit_entries
from .screen_app import BLOCKS, BUTTON, ENTRY
from .screen_helpers import (
    DemoWindow,
    grab_mss,
    grab_xwd,
    same_pixels,
    screen_agent,
    x_env,
    xvfb,
)
from .session_helpers import WITHIN, cli_as_admin, ended_record, wait_online

pytestmark = pytest.mark.integration

ALLOW_SCREEN = {"view": "allow", "control": "allow"}


async def open_viewer(
    client: HelplineClient, device: str, kind: str = "view", **params: str
) -> tuple[ScreenViewer, object]:
    console_cm = client.connect()
    console = await console_cm.__aenter__()
    channel = await console.open_session(device, kind, reason="test", params=params)
    return ScreenViewer(channel), console_cm


async def test_tk_window_arrives_pixel_exact_in_lossless_mode(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    with (
        xvfb() as display,
        screen_agent(relay, tmp_path, "desk", display, ALLOW_SCREEN),
    ):
        window = DemoWindow(display, 50, 40)
        try:
            await wait_online(admin_client, "desk")
            async with admin_client.connect() as console:
                channel = await console.open_session("desk", "view", params={"mode": "lossless"})
                viewer = ScreenViewer(channel)
                picture = await viewer.full_frame()
                direct = grab_mss(display, (0, 0, 1024, 768))
                assert picture.size == (1024, 768)
                assert same_pixels(picture, direct)
                for x, y, w, h, colour in BLOCKS:
                    rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
                    area = np.asarray(picture.crop((50 + x, 40 + y, 50 + x + w, 40 + y + h)))
                    assert (area == rgb).all(), colour
                frame = viewer.last_frame
                assert frame is not None and frame.full
                assert {t.encoding for t in frame.tiles} <= {TileEncoding.PNG, TileEncoding.FILL}
                assert viewer.info is not None and viewer.info.control is False
                assert viewer.info.monitors == ((0, 0, 1024, 768),)
                # a change arrives as the changed tiles only, and still pixel-exact
                subprocess.run(
                    ["xdotool", "mousemove", "700", "500"], env=x_env(display), check=True
                )
                moved = await viewer.next_frame()
                assert moved.cursor == (700, 500)
                await viewer.close()
        finally:
            window.close()


async def test_snapshot_cli_equals_what_xwd_reads(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    with (
        xvfb() as display,
        screen_agent(relay, tmp_path, "desk", display, ALLOW_SCREEN),
    ):
        window = DemoWindow(display, 300, 200)
        try:
            await wait_online(admin_client, "desk")
            config = cli_as_admin(relay, tmp_path / "cli")
            target = tmp_path / "snap.png"
            # The customer sees a notice while anyone looks at the screen: a session held
            # open keeps one up, so xwd below reads the screen the snapshot saw.
            async with admin_client.connect() as console:
                held = ScreenViewer(await console.open_session("desk", "view", reason="look"))
                await held.full_frame()
                result = await asyncio.to_thread(
                    run_helpline,
                    config,
                    "screen",
                    "snapshot",
                    "desk",
                    str(target),
                    "--reason",
                    "look",
                )
                assert result.returncode == 0, result.stderr
                assert "1024x768" in result.stdout
                with Image.open(target) as snapshot:
                    assert same_pixels(snapshot.convert("RGB"), grab_xwd(display))
                await held.close()
            bad = await asyncio.to_thread(
                run_helpline, config, "screen", "snapshot", "desk", str(target), "--monitor", "3"
            )
            assert bad.returncode == 1
            assert "no monitor 3" in bad.stderr
        finally:
            window.close()
