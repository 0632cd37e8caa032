"""Screen view and control for real: Xvfb, a Tk window, mss/xwd reading the X server
directly, the real relay, agent and console. Every wait is bounded; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import numpy as np
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
                await asyncio.to_thread(xdotool, display, "mousemove", "700", "500")
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


def centre(window: DemoWindow, box: tuple[int, int, int, int]) -> tuple[int, int]:
    x, y, w, h = box
    return window.x + x + w // 2, window.y + y + h // 2


async def test_control_session_clicks_a_real_button_and_types_into_a_real_entry(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    with (
        xvfb() as display,
        screen_agent(relay, tmp_path, "desk", display, ALLOW_SCREEN),
    ):
        window = DemoWindow(display, 60, 60)
        try:
            await wait_online(admin_client, "desk")
            async with admin_client.connect() as console:
                viewer = ScreenViewer(await console.open_session("desk", "control"))
                await viewer.full_frame()
                assert viewer.info is not None and viewer.info.control is True
                await viewer.click(*centre(window, BUTTON))
                assert await asyncio.to_thread(window.wait_line, lambda line: line == "clicked")
                await viewer.click(*centre(window, ENTRY))
                for code, action in [
                    ("ShiftLeft", "down"),
                    ("KeyH", "press"),
                    ("ShiftLeft", "up"),
                    ("KeyI", "press"),
                    ("Space", "press"),
                ]:
                    await viewer.key(code, action)
                await viewer.type_text("there, 42!")
                typed = await asyncio.to_thread(
                    window.wait_line, lambda line: line == "text Hi there, 42!"
                )
                assert typed == "text Hi there, 42!", window.printed
                await viewer.key("NoSuchKey")
                refusal = await viewer.next_refusal()
                assert refusal.code == ErrorCode.INVALID_MESSAGE
                assert "unknown key code 'NoSuchKey'" in refusal.message
                await viewer.close()
        finally:
            window.close()


async def test_input_in_a_view_session_is_refused_and_audited_then_control_is_asked_again(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    with (
        xvfb() as display,
        screen_agent(relay, tmp_path, "desk", display, {"view": "allow", "control": "prompt"}),
    ):
        window = DemoWindow(display, 60, 60)
        try:
            await wait_online(admin_client, "desk")
            async with admin_client.connect() as console:
                viewer = ScreenViewer(await console.open_session("desk", "view"))
                await viewer.full_frame()
                assert viewer.info is not None and viewer.info.control is False
                for _ in range(3):
                    await viewer.click(*centre(window, BUTTON))
                refusal = await viewer.next_refusal()
                assert refusal.code == ErrorCode.NOT_PERMITTED
                assert "viewing only" in refusal.message
                # the session goes on: a full frame on request
                await viewer.refresh()
                await viewer.full_frame()
                session_id = viewer.channel.session_id
                refused = await audit_entries(admin_client, action="session.input.refused")
                assert [e["details"]["session"] for e in refused] == [session_id]
                assert refused[0]["details"]["input"] == "input.pointer"
                # asking for control prompts the customer again: a real dialog on the screen
                await viewer.request_control("to fix the printer")
                dialog = await asyncio.to_thread(find_window, display, PROMPT_TITLE)
                await asyncio.to_thread(click_allow, display, dialog)
                info = await viewer.wait_info()
                assert info.control is True
                await viewer.click(*centre(window, BUTTON))
                assert await asyncio.to_thread(window.wait_line, lambda line: line == "clicked")
                await viewer.close()
            granted = await audit_entries(admin_client, action="session.control.granted")
            assert [e["details"]["session"] for e in granted] == [session_id]
            end = await ended_record(admin_client, session_id)
            assert end["state"] == "ended"
            ends = await audit_entries(admin_client, action="session.end")
            assert [e["details"].get("input_refused") for e in ends] == [
                9
            ]  # 3 clicks: move, down, up
            # nothing of the refused clicks reached the window before control was granted
            assert window.printed.count("clicked") == 1
        finally:
            window.close()


def xdotool(display: str, *args: str) -> str:
    result = subprocess.run(
        ["xdotool", *args], env=x_env(display), capture_output=True, text=True, timeout=15
    )
    return result.stdout


def find_window(display: str, title: str) -> str:
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        found = xdotool(display, "search", "--name", f"^{title}$").split()
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no window {title!r}")


def click_allow(display: str, window: str) -> None:
    """Click the prompt's Allow button (bottom right), again until the dialog is gone
    (it ignores clicks for its first moments)."""
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        fields = dict(
            line.split("=", 1)
            for line in xdotool(display, "getwindowgeometry", "--shell", window).split()
        )
        if "WIDTH" not in fields:
            return  # answered: the window is gone
        x, y = int(fields["WIDTH"]) - EDGE - 6, int(fields["HEIGHT"]) - EDGE - 6
        xdotool(display, "mousemove", "--window", window, str(x), str(y), "click", "1")
        time.sleep(0.5)
    raise AssertionError("the prompt did not take the click")
