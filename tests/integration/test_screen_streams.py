"""Screen sessions beyond one picture: monitor switching (two RandR monitors on one Xvfb
screen), a viewer that stops acknowledging (bounded frames in flight, flat memory), a
recording replayed to the viewer's final frame, and bad streams and messages from the
wrong side refused with clear errors."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path

import psutil
import pytest
from PIL import Image

from agent.screen.streamer import MAX_IN_FLIGHT
from console.client import HelplineClient
from console.screen import ScreenViewer
from protocol import ChannelOpened, Heartbeat, HeartbeatAck
from protocol.errors import ErrorCode
from protocol.frames import FrameKind, encode_frame
from protocol.screen import (
    KeyInput,
    ScreenFrame,
    ScreenInfo,
    Tile,
    TileEncoding,
    encode_frame_record,
)
from protocol.sessions import ConsentDecision

from .conftest import RelayProcess, enroll_agent, run_helpline
from .helpers import admin_token, audit_entries, raw_agent_link, raw_console_link
from .screen_app import BLOCKS
from .screen_helpers import DemoWindow, grab_mss, same_pixels, screen_agent, xvfb
from .session_helpers import WITHIN, cli_as_admin, ended_record, wait_online

pytestmark = pytest.mark.integration

ALLOW_SCREEN = {"view": "allow", "control": "allow"}


def two_monitors(display: str) -> None:
    """Split the 1600x600 screen into two 800x600 RandR monitors, as a desktop with two
    displays side by side has them (``xrandr --listmonitors`` shows both)."""
    for name, geometry, output in (
        ("left", "800/211x600/158+0+0", "screen"),
        ("right", "800/211x600/158+800+0", "none"),
    ):
        subprocess.run(
            ["xrandr", "-d", display, "--setmonitor", name, geometry, output],
            check=True,
            timeout=15,
        )


async def test_monitor_list_and_switching(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    with xvfb("-screen", "0", "1600x600x24") as display:
        two_monitors(display)
        window = DemoWindow(display, 850, 100)  # on the right-hand monitor
        try:
            with screen_agent(relay, tmp_path, "desk", display, ALLOW_SCREEN):
                await wait_online(admin_client, "desk")
                async with admin_client.connect() as console:
                    channel = await console.open_session(
                        "desk", "view", params={"mode": "lossless"}
                    )
                    viewer = ScreenViewer(channel)
                    left = await viewer.full_frame()
                    assert viewer.info is not None
                    assert viewer.info.monitors == ((0, 0, 800, 600), (800, 0, 800, 600))
                    assert viewer.info.monitor == 0
                    assert same_pixels(left, grab_mss(display, (0, 0, 800, 600)))
                    await viewer.select_monitor(1)
                    right = await viewer.full_frame(monitor=1)
                    assert viewer.info.monitor == 1
                    assert right.size == (800, 600)
                    assert same_pixels(right, grab_mss(display, (800, 0, 800, 600)))
                    x, y, _w, _h, colour = BLOCKS[0]
                    assert right.getpixel((50 + x + 5, 100 + y + 5)) == (255, 0, 0), colour
                    await viewer.select_monitor(5)
                    refusal = await viewer.next_refusal()
                    assert refusal.code == ErrorCode.NOT_FOUND
                    assert "no monitor 5" in refusal.message
                    await viewer.close()
                config = cli_as_admin(relay, tmp_path / "cli")
                target = tmp_path / "right.png"
                result = await asyncio.to_thread(
                    run_helpline,
                    config,
                    "screen",
                    "snapshot",
                    "desk",
                    str(target),
                    "--monitor",
                    "1",
                )
                assert result.returncode == 0, result.stderr
                with Image.open(target) as snapshot:
                    assert snapshot.size == (800, 600)
                    assert snapshot.convert("RGB").getpixel((55, 105)) == (255, 0, 0)
        finally:
            window.close()


async def test_a_viewer_that_stops_acknowledging_holds_the_agent_back(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    with xvfb() as display:
        window = DemoWindow(display, 40, 40, "animate")  # a square repainted every 20 ms
        try:
            with screen_agent(relay, tmp_path, "desk", display, ALLOW_SCREEN) as agent:
                await wait_online(admin_client, "desk")
                assert agent.process is not None and relay.process is not None
                agent_proc = psutil.Process(agent.process.pid)
                relay_proc = psutil.Process(relay.process.pid)
                async with admin_client.connect() as console:
                    channel = await console.open_session("desk", "view")
                    viewer = ScreenViewer(channel, acknowledge=False)
                    first = await viewer.next_frame()
                    assert first.full
                    agent_before = agent_proc.memory_info().rss
                    relay_before = relay_proc.memory_info().rss
                    # the screen changes 50 times a second; nobody acknowledges
                    frames = [first]
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 6
                    while (left := deadline - loop.time()) > 0:
                        try:
                            frames.append(await viewer.next_frame(left))
                        except TimeoutError:
                            break
                    assert len(frames) == MAX_IN_FLIGHT
                    agent_growth = agent_proc.memory_info().rss - agent_before
                    relay_growth = relay_proc.memory_info().rss - relay_before
                    assert agent_growth < 16 * 2**20, agent_growth
                    assert relay_growth < 16 * 2**20, relay_growth
                    # acknowledging lets frames flow again, newest picture first
                    await viewer.ack(frames[-1].seq)
                    resumed = await viewer.next_frame()
                    assert resumed.seq == frames[-1].seq + 1
                    assert not resumed.full and resumed.tiles
                    await viewer.close()
        finally:
            window.close()


async def test_a_recording_replays_to_the_viewers_final_frame(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    with xvfb() as display:
        window = DemoWindow(display, 100, 80)
        try:
            with screen_agent(relay, tmp_path, "desk", display, ALLOW_SCREEN):
                await wait_online(admin_client, "desk")
                async with admin_client.connect() as console:
                    channel = await console.open_session(
                        "desk", "control", params={"mode": "lossless"}
                    )
                    viewer = ScreenViewer(channel)
                    await viewer.full_frame()
                    await viewer.click(100 + 200 + 90, 80 + 185 + 15)  # into the entry
                    await viewer.type_text("recorded")
                    assert await asyncio.to_thread(window.wait_line, lambda s: s == "text recorded")
                    await viewer.pointer("move", 10, 10)
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + WITHIN
                    direct = await asyncio.to_thread(grab_mss, display, (0, 0, 1024, 768))
                    while not same_pixels(viewer.canvas.image, direct):  # type: ignore[arg-type]
                        assert loop.time() < deadline, "the viewer never caught up"
                        await viewer.next_frame(WITHIN)
                        direct = await asyncio.to_thread(grab_mss, display, (0, 0, 1024, 768))
                    final = viewer.canvas.image.copy()  # type: ignore[union-attr]
                    session_id = channel.session_id
                    await viewer.close()
                record = await ended_record(admin_client, session_id)
                assert record["has_recording"] is True
                assert (relay.data_dir / "recordings" / f"{session_id}.screen").is_file()
                config = cli_as_admin(relay, tmp_path / "cli")
                out = tmp_path / "at-end.png"
                result = await asyncio.to_thread(
                    run_helpline,
                    config,
                    "recordings",
                    "export",
                    session_id[:10],
                    str(out),
                    "--at",
                    "100000",
                )
                assert result.returncode == 0, result.stderr
                with Image.open(out) as replayed:
                    assert same_pixels(replayed.convert("RGB"), final)
                # before anything was drawn: a clear error, no file
                early = await asyncio.to_thread(
                    run_helpline,
                    config,
                    "recordings",
                    "export",
                    session_id[:10],
                    str(tmp_path / "early.png"),
                    "--at",
                    "-1",
                )
                assert early.returncode == 1
                assert "shows no screen by -1 seconds" in early.stderr
                assert not (tmp_path / "early.png").exists()
                # the file is sealed into the audit chain and the chain verifies
                raw = await admin_client.recording(session_id)
                ends = await audit_entries(admin_client, action="session.end")
                assert ends[-1]["details"]["recording_sha256"] == hashlib.sha256(raw).hexdigest()
                verify = await asyncio.to_thread(run_helpline, config, "audit", "verify")
                assert verify.returncode == 0, verify.stdout + verify.stderr
        finally:
            window.close()


async def _serve_view_session(link, tile_stream: bytes) -> int:  # type: ignore[no-untyped-def]
    """As a (raw) agent: grant the next view session and send ``tile_stream`` on it."""
    while True:
        message = await link.ws.receive(timeout=WITHIN)
        link.conn.receive_data(message.data)
        for event in link.conn.events_received():
            if isinstance(event, ChannelOpened):
                channel = event.channel
                link.conn.send_channel_message(channel, ConsentDecision(granted=True, how="allow"))
                link.conn.accept_channel(channel)
                info = ScreenInfo(monitors=((0, 0, 64, 64),), monitor=0, mode="auto", control=False)
                link.conn.send_channel_message(channel, info)
                link.conn.send_data(channel, tile_stream)
                for frame in link.conn.data_to_send():
                    await link.ws.send_bytes(frame)
                return channel
        for frame in link.conn.data_to_send():
            await link.ws.send_bytes(frame)


async def test_a_malformed_tile_stream_ends_the_session_not_the_agent(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    agent = enroll_agent(relay, tmp_path, "forger")
    good = ScreenFrame(
        1, 0, 64, 64, True, None, (Tile(0, 0, 64, 64, TileEncoding.FILL, b"\1\2\3"),)
    )
    outside = ScreenFrame(
        2, 0, 64, 64, False, None, (Tile(32, 32, 64, 64, TileEncoding.FILL, b"abc"),)
    )
    async with raw_agent_link(relay, agent.config_dir) as link:
        await link.send_hello()
        await wait_online(admin_client, "forger")
        async with admin_client.connect() as console:
            opening = asyncio.create_task(console.open_session("forger", "view"))
            await _serve_view_session(
                link, encode_frame_record(good) + encode_frame_record(outside)
            )
            viewer = ScreenViewer(await opening)
            # the relay checks each chunk before passing it on: none of this one arrives
            with pytest.raises(ConnectionError, match="malformed screen stream"):
                await viewer.next_frame()
            closed = await asyncio.wait_for(viewer.channel.wait_closed(), WITHIN)
            assert closed.code == ErrorCode.MALFORMED_FRAME
            assert "malformed screen stream" in closed.message
            assert "tile 64x64 at (32, 32) lies outside the 64x64 frame" in closed.message
        refused = await audit_entries(admin_client, action="session.stream.refused")
        assert len(refused) == 1 and "outside" in refused[0]["details"]["reason"]
        # the agent's connection is unharmed: it still gets answers
        link.conn.send(Heartbeat(seq=7))
        for data in link.conn.data_to_send():
            await link.ws.send_bytes(data)
        while True:
            reply = await link.next_message()
            if isinstance(reply, HeartbeatAck):
                assert reply.seq == 7
                break


async def test_input_from_the_agent_and_screen_info_from_a_console_are_refused(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    agent = enroll_agent(relay, tmp_path, "forger")
    async with raw_agent_link(relay, agent.config_dir) as link:
        await link.send_hello()
        await wait_online(admin_client, "forger")
        async with admin_client.connect() as console:
            opening = asyncio.create_task(console.open_session("forger", "view"))
            channel = await _serve_view_session(link, b"")
            await opening
            # input only ever goes to the device: sent by a device, it is a protocol error
            # (written by hand: our own Connection refuses to send it)
            forged = KeyInput(action="press", code="KeyA")
            await link.ws.send_bytes(encode_frame(FrameKind.CONTROL, channel, forged.encode()))
            closed = await link.wait_closed()
            assert [g.code for g in closed.goodbyes] == [ErrorCode.UNEXPECTED_MESSAGE]
            assert "may not send input.key" in closed.goodbyes[0].message
    token = await asyncio.to_thread(admin_token, relay, 1)
    async with raw_console_link(relay, token) as link:
        await link.send_hello()
        info = ScreenInfo(monitors=((0, 0, 1, 1),), monitor=0, mode="auto", control=True)
        await link.ws.send_bytes(encode_frame(FrameKind.CONTROL, 1, info.encode()))
        closed = await link.wait_closed()
        assert [g.code for g in closed.goodbyes] == [ErrorCode.UNEXPECTED_MESSAGE]
        assert "a console may not send screen.info" in closed.goodbyes[0].message
