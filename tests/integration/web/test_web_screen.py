"""The screen viewer and player in a real Chromium, on a real Xvfb screen with the agent
capturing it: the canvas read back in the page (getImageData) equals what mss reads from
the X server; clicks and keys through the page press a real Tk button and type into a real
Tk entry; input in a view session is refused where the technician sees it; asking for
control prompts the customer in a real dialog; the monitor picker switches RandR monitors;
a screen recording plays in the page to the viewer's final frame."""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from agent.dialog import PROMPT_TITLE
from console.screen import render_recording_at

from ..screen_app import BLOCKS, BUTTON, ENTRY
from ..screen_helpers import DemoWindow, grab_mss, same_pixels, screen_agent, xvfb
from ..test_screen_sessions import centre, click_allow, find_window, xdotool
from ..test_screen_streams import two_monitors
from .conftest import SCREENSHOTS, WebRig, sign_in

pytestmark = pytest.mark.integration

ALLOW_SCREEN = {"view": "allow", "control": "allow"}
WITHIN = 30.0

CANVAS_PIXELS = """(selector) => {
    const canvas = document.querySelector(selector);
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let text = "";
    for (let i = 0; i < data.length; i += 0x8000) {
        text += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
    }
    return [canvas.width, canvas.height, btoa(text)];
}"""


def canvas_image(page: Page, selector: str = "#screen-canvas") -> Image.Image:
    """The canvas's pixels as the page reads them (getImageData), as RGB."""
    width, height, data = page.evaluate(CANVAS_PIXELS, selector)
    return Image.frombytes("RGBA", (width, height), base64.b64decode(data)).convert("RGB")


def differing(a: Image.Image, b: Image.Image) -> str:
    if a.size != b.size:
        return f"sizes differ: {a.size} != {b.size}"
    diff = np.any(np.asarray(a) != np.asarray(b), axis=2)
    return f"{int(diff.sum())} pixels differ"


def wait_same_as_screen(page: Page, display: str, region: tuple[int, int, int, int]) -> Image.Image:
    """Until the page's canvas equals what mss reads of ``region`` (the screen may still
    change for a moment: the customer's notice of the session appears)."""
    deadline = time.monotonic() + WITHIN
    while True:
        shown = canvas_image(page)
        direct = grab_mss(display, region)
        if same_pixels(shown, direct):
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the canvas never equalled the screen: {differing(shown, direct)}"
            )
        time.sleep(0.3)


def wait_online(web: WebRig, name: str) -> str:
    """The device's id once it is online."""
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        for device in web.api("GET", "/api/v1/devices")["devices"]:
            if device["name"] == name and device["online"]:
                return str(device["id"])
        time.sleep(0.2)
    raise AssertionError(f"{name} never came online")


@contextmanager
def desk(
    web: WebRig, name: str, consent: dict[str, str], *screen: str
) -> Iterator[tuple[str, str]]:
    """An Xvfb display with an agent on it: (display, device id)."""
    with xvfb(*screen) as display, screen_agent(web.relay, web.directory, name, display, consent):
        yield display, wait_online(web, name)


def open_screen(page: Page, device: str, kind: str, **query: str) -> None:
    page.goto(f"/#/screen/{device}?{urlencode({'kind': kind, 'reason': 'test', **query})}")
    page.click("#start-session")  # a deep link only fills the form in
    expect(page.locator("#screen-status")).to_contain_text("Connected to")
    page.wait_for_function(
        "() => Number(document.querySelector('#screen-canvas').dataset.frames) > 0"
    )


def click_on_screen(page: Page, x: int, y: int) -> None:
    """Click the page's picture where the device's screen has (x, y), whatever the scale."""
    box = page.locator("#screen-pointer").bounding_box()
    assert box is not None
    width = page.evaluate("() => document.querySelector('#screen-pointer').width")
    scale = box["width"] / width
    page.mouse.click(box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale)


def hover_on_screen(page: Page, x: int, y: int) -> None:
    box = page.locator("#screen-pointer").bounding_box()
    assert box is not None
    scale = box["width"] / page.evaluate("() => document.querySelector('#screen-pointer').width")
    page.mouse.move(box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale)


def wait_pointer(display: str, where: tuple[int, int]) -> bool:
    """Whether the X pointer reaches ``where`` (as ``xdotool getmouselocation`` says)."""
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        fields = dict(
            item.split(":", 1)
            for item in xdotool(display, "getmouselocation").split()
            if ":" in item
        )
        if (int(fields.get("x", -1)), int(fields.get("y", -1))) == where:
            return True
        time.sleep(0.2)
    return False


def shot(page: Page, name: str) -> None:
    """A README screenshot, written only with HELPLINE_UPDATE_SCREENSHOTS=1 (as in
    test_web_screenshots), so a plain test run leaves the checkout as it was."""
    image = page.screenshot()
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    if os.environ.get("HELPLINE_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / f"{name}.png").write_bytes(image)


def test_the_viewer_shows_a_tk_window_pixel_exact_and_its_recording_plays_to_the_same_end(
    web: WebRig,
) -> None:
    with desk(web, "web-desk", ALLOW_SCREEN) as (display, device_id):
        window = DemoWindow(display, 50, 40)
        try:
            page = web.admin_page()
            page.goto(f"/#/device/{device_id}")
            page.fill("#session-reason", "ticket 77: colours look wrong")
            page.click("#open-view")
            expect(page.locator("#screen-status")).to_contain_text("Connected to web-desk")
            page.select_option("#mode", "lossless")
            shown = wait_same_as_screen(page, display, (0, 0, 1024, 768))
            for x, y, w, h, colour in BLOCKS:
                rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
                area = np.asarray(shown.crop((50 + x, 40 + y, 50 + x + w, 40 + y + h)))
                assert (area == rgb).all(), colour
            expect(page.locator("#monitor option")).to_have_count(1)
            expect(page.locator("#screen-stats")).to_contain_text("fps")
            expect(page.locator("#screen-stats")).to_contain_text("KB/s")
            expect(page.locator("#screen-stats")).to_contain_text("1024\u00d7768")
            shot(page, "screen")
            session_id = page.evaluate("() => helplineScreen.state.session")
            page.click("#end-session")
            expect(page.locator("#screen-status")).to_contain_text("Session ended")
            last_seen = canvas_image(page)
        finally:
            window.close()

    # the recording: listed, played on a canvas at 16x to the end: the viewer's last picture
    page.goto("/#/recordings")
    page.locator(f"#recordings tr[data-session='{session_id}'] a.play").click()
    expect(page.locator("#recording-about")).to_contain_text("view session")
    page.select_option("#speed", "16")
    page.click("#play")
    expect(page.locator("#screen-stage")).to_have_attribute("data-ended", "true", timeout=60_000)
    played = canvas_image(page)
    assert same_pixels(played, last_seen), differing(played, last_seen)
    # the same picture as the Python renderer of the file the relay keeps
    data = (web.relay.data_dir / "recordings" / f"{session_id}.screen").read_bytes()
    assert same_pixels(played, render_recording_at(data, 1e9))
    shot(page, "screen-recording")
    # seek back to the start: the first full frame, then forward to the end again
    seek = """(v) => {
        const slider = document.querySelector("#seek");
        slider.value = v;
        slider.dispatchEvent(new Event("input"));
    }"""
    page.evaluate(seek, "0")
    expect(page.locator("#screen-stage")).to_have_attribute("data-position", "0.000")
    first_at = page.evaluate("() => helplineScreenPlayer.frames[0].seconds")
    page.evaluate(seek, repr(first_at))
    page.wait_for_function(
        "(t) => Math.abs(Number(helplineScreenPlayer.stage.dataset.position) - t) < 0.001",
        arg=first_at,
    )
    assert same_pixels(canvas_image(page), render_recording_at(data, first_at))
    duration = page.evaluate("() => helplineScreenPlayer.duration")
    page.evaluate(seek, repr(duration))
    expect(page.locator("#screen-stage")).to_have_attribute("data-ended", "true")
    assert same_pixels(canvas_image(page), played)

    # a damaged file: a cut tail plays what is whole; a bad header is refused plainly
    path = web.relay.data_dir / "recordings" / f"{session_id}.screen"
    try:
        path.write_bytes(data[:-5])
        page.reload()
        expect(page.locator("#recording-about")).to_contain_text("cut short")
        page.evaluate(seek, repr(duration))
        expect(page.locator("#screen-stage")).to_have_attribute("data-ended", "true")
        assert same_pixels(canvas_image(page), render_recording_at(data[:-5], 1e9))
        path.write_bytes(b'{"format": "something else"}\n' + data)
        page.reload()
        alert = page.locator("main p[role=alert]")
        expect(alert).to_have_text("Cannot play this recording: not a screen recording")
    finally:
        path.write_bytes(data)


def test_a_control_session_clicks_a_real_button_and_types_into_a_real_entry(
    web: WebRig,
) -> None:
    with desk(web, "web-control", ALLOW_SCREEN) as (display, device_id):
        window = DemoWindow(display, 60, 60)
        try:
            page = web.admin_page()
            open_screen(page, device_id, "control", mode="lossless")
            expect(page.locator("#screen-stage")).to_have_attribute("data-control", "true")
            expect(page.locator("#ask-control")).to_have_text("You have control")
            # the picture is scaled to the window; input lands where it points on the device
            box = page.locator("#screen-pointer").bounding_box()
            assert box is not None and box["width"] < 1024
            hover_on_screen(page, 700, 500)
            assert wait_pointer(display, (700, 500))
            click_on_screen(page, *centre(window, BUTTON))
            assert window.wait_line(lambda line: line == "clicked"), window.printed
            click_on_screen(page, *centre(window, ENTRY))
            page.keyboard.down("Shift")
            page.keyboard.press("KeyH")
            page.keyboard.up("Shift")
            page.keyboard.press("KeyI")
            page.keyboard.press("Space")
            page.fill("#send-text", "there, 42!")
            page.click("#send-text-button")
            typed = window.wait_line(lambda line: line == "text Hi there, 42!")
            assert typed == "text Hi there, 42!", window.printed
            # what was typed shows up in the picture too (the entry is no longer empty)
            wait_same_as_screen(page, display, (0, 0, 1024, 768))
            page.click("#end-session")
        finally:
            window.close()


def test_input_in_a_view_session_is_refused_visibly_then_control_is_asked_again(
    web: WebRig,
) -> None:
    consent = {"view": "prompt", "control": "prompt"}
    with desk(web, "web-view", consent) as (display, device_id):
        window = DemoWindow(display, 60, 60)
        try:
            page = web.admin_page()
            # the consent wait is shown until the customer answers the real dialog
            page.goto(f"/#/screen/{device_id}?kind=view&reason=printer")
            page.click("#start-session")  # a deep link only fills the form in
            status = page.locator("#screen-status")
            expect(status).to_contain_text("waiting for the customer on web-view to accept")
            click_allow(display, find_window(display, PROMPT_TITLE))
            expect(status).to_contain_text("Connected to web-view")
            page.wait_for_function(
                "() => Number(document.querySelector('#screen-canvas').dataset.frames) > 0"
            )
            expect(page.locator("#screen-stage")).to_have_attribute("data-control", "false")
            click_on_screen(page, *centre(window, BUTTON))
            refusal = page.locator("#screen-refusal")
            expect(refusal).to_be_visible()
            expect(refusal).to_contain_text("input refused: the customer allowed viewing only")
            frames = int(page.locator("#screen-canvas").get_attribute("data-frames") or 0)
            page.click("#refresh")  # the session goes on: a full frame on request
            page.wait_for_function(
                "(n) => Number(document.querySelector('#screen-canvas').dataset.frames) > n",
                arg=frames,
            )
            assert "clicked" not in window.printed
            refused = web.api("GET", "/api/v1/audit?action=session.input.refused&target=web-view")
            assert [e["details"]["input"] for e in refused["entries"]] == ["input.pointer"]
            page.click("#ask-control")
            expect(page.locator("#screen-status")).to_contain_text(
                "Asking the customer for control"
            )
            dialog = find_window(display, PROMPT_TITLE)
            click_allow(display, dialog)
            expect(page.locator("#screen-stage")).to_have_attribute("data-control", "true")
            expect(page.locator("#screen-status")).to_contain_text("The customer gave you control")
            click_on_screen(page, *centre(window, BUTTON))
            assert window.wait_line(lambda line: line == "clicked"), window.printed
            assert window.printed.count("clicked") == 1
            page.click("#end-session")
        finally:
            window.close()


def test_the_monitor_picker_switches_between_two_randr_monitors(web: WebRig) -> None:
    with desk(web, "web-two", ALLOW_SCREEN, "-screen", "0", "1600x600x24") as (display, device_id):
        two_monitors(display)
        window = DemoWindow(display, 850, 100)  # on the right-hand monitor
        try:
            page = web.admin_page()
            open_screen(page, device_id, "view", mode="lossless")
            options = page.locator("#monitor option")
            expect(options).to_have_count(2)
            expect(options.nth(1)).to_have_text("2: 800\u00d7600 at 800,0")
            wait_same_as_screen(page, display, (0, 0, 800, 600))
            page.select_option("#monitor", "1")
            right = wait_same_as_screen(page, display, (800, 0, 800, 600))
            x, y, _w, _h, _colour = BLOCKS[0]
            assert right.getpixel((50 + x + 5, 100 + y + 5)) == (255, 0, 0)
            page.click("#end-session")
        finally:
            window.close()


RAW_SESSION = """async ([device, payloads, flood]) => {
    const url = `wss://${location.host}/web/ws/screen?device=${device}&kind=view`;
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    const seen = [];
    return await new Promise((resolve) => {
        socket.addEventListener("message", (event) => {
            if (typeof event.data !== "string") return;
            const message = JSON.parse(event.data);
            seen.push(message);
            if (message.type === "opened") {
                for (const payload of payloads) {
                    socket.send(payload === "BINARY" ? new Uint8Array([1, 2, 3]) : payload);
                }
                // flood: the same message in batches until the relay closes (bounded)
                let sent = 0;
                const more = () => {
                    if (!flood || socket.readyState !== WebSocket.OPEN || sent >= 200000) return;
                    for (let i = 0; i < 500; i += 1) socket.send(flood);
                    sent += 500;
                    setTimeout(more, 0);
                };
                more();
            }
        });
        socket.addEventListener("close", (event) => resolve([seen, event.code]));
    });
}"""


def test_bad_messages_from_a_page_end_only_that_session(web: WebRig) -> None:
    with desk(web, "web-bad", ALLOW_SCREEN) as (_display, device_id):
        page = web.admin_page()
        open_screen(page, device_id, "view", mode="lossless")
        cases = [
            (['{"type": "input.pointer", "action": "fly", "x": 1, "y": 1}'], "action", ""),
            (['{"type": "screen.select", "monitor": 99}'], "monitor", ""),
            (['{"type": "agent.update"}'], "unknown control message 'agent.update'", ""),
            (["not json"], "not JSON", ""),
            (["BINARY"], "no binary messages", ""),
            ([], "more than 250 requests a second", '{"type": "screen.refresh"}'),
            ([], "more than 2000 acknowledgements a second", '{"type": "ack", "bytes": 0}'),
        ]
        for payloads, wanted, flood in cases:
            seen, code = page.evaluate(RAW_SESSION, [device_id, payloads, flood])
            errors = [m["message"] for m in seen if m["type"] == "error"]
            assert code == 1008, (wanted, seen)
            assert len(errors) == 1 and wanted in errors[0], (wanted, seen)
        # a kind the relay does not know: refused before any session exists
        bad_kind = RAW_SESSION.replace("kind=view", "kind=admin")
        seen, code = page.evaluate(bad_kind, [device_id, [], ""])
        assert seen == [] and code == 1006
        # the page's own session was never disturbed: it still gets frames on request
        frames = int(page.locator("#screen-canvas").get_attribute("data-frames") or 0)
        page.click("#refresh")
        page.wait_for_function(
            "(n) => Number(document.querySelector('#screen-canvas').dataset.frames) > n",
            arg=frames,
        )
        expect(page.locator("#screen-status")).to_contain_text("Connected to web-bad")
        ends = web.api("GET", "/api/v1/audit?action=session.end&target=web-bad")["entries"]
        assert len(ends) == len(cases)  # each bad session ended (and was audited) on its own
        page.click("#end-session")


def test_a_device_without_a_display_denies_the_screen_plainly(web: WebRig) -> None:
    page = web.admin_page()
    page.goto("/#/screen/demo-agent?kind=control&reason=look")
    page.click("#start-session")  # a deep link only fills the form in
    status = page.locator("#screen-status")
    expect(status).to_contain_text("The customer denied the session")
    expect(page.locator("#screen-stage")).to_have_class(re.compile(r"\bended\b"))
    expect(page.locator("#end-session")).to_be_disabled()


def test_the_page_acknowledges_what_it_draws_so_a_changing_screen_keeps_flowing(
    web: WebRig,
) -> None:
    """The agent sends at most a couple of frames ahead of the acknowledgements: frames
    keep coming only because the page acknowledges each one it drew."""
    with desk(web, "web-anim", ALLOW_SCREEN) as (display, device_id):
        window = DemoWindow(display, 60, 60, "animate")
        try:
            page = web.admin_page()
            open_screen(page, device_id, "view", mode="auto")
            page.wait_for_function(
                "() => Number(document.querySelector('#screen-canvas').dataset.frames) > 40",
                timeout=60_000,
            )
            expect(page.locator("#screen-stats")).to_contain_text(re.compile(r"[1-9][\d.]* fps"))
            page.click("#end-session")
        finally:
            window.close()


def test_screen_sessions_are_authorised_on_the_relay(web: WebRig) -> None:
    """A technician without a grant on the device's group, and an auditor, are refused by
    the relay (audited), whatever the page lets them try."""
    for username, role, wanted in [
        ("ungranted", "technician", "no device 'demo-agent'"),
        ("reader", "auditor", "auditors cannot open sessions"),
    ]:
        account = web.user(username, role, group=None)
        page = web.context().new_page()
        sign_in(page, account["username"], account["password"])
        expect(page.locator("#signed-in-as")).to_contain_text(username)
        seen, _code = page.evaluate(RAW_SESSION, ["demo-agent", [], ""])
        refused = [m for m in seen if m["type"] == "refused"]
        assert len(refused) == 1 and wanted in refused[0]["message"], seen
        assert not any(m["type"] == "opened" for m in seen)
        audit = web.api("GET", f"/api/v1/audit?action=session.refused&actor={username}")
        assert [e["details"]["kind"] for e in audit["entries"]] == ["view"]
