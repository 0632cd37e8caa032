"""Deep links cannot open sessions: an address such as
``#/screen/X?kind=control&reason=…`` (in a mail, a chat, a ticket) only fills in the
session page's form. No session socket is opened and the relay sees no session request
until the technician clicks on the page; the click sends what the form shows. From the
device page, its own button is that click (one click, as before)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, WebSocket, expect

from .conftest import WebRig

pytestmark = pytest.mark.integration

SESSION_SOCKETS = ("/web/ws/shell", "/web/ws/files", "/web/ws/screen")
#: How long a page is given to (wrongly) open a session on its own after it rendered.
SETTLE = 1.5


def watch_session_sockets(page: Page) -> list[str]:
    """Every session socket the page opens, by URL, from now on."""
    opened: list[str] = []

    def seen(socket: WebSocket) -> None:
        if urlsplit(socket.url).path in SESSION_SOCKETS:
            opened.append(socket.url)

    page.on("websocket", seen)
    return opened


def session_ids(web: WebRig) -> set[str]:
    return {s["id"] for s in web.api("GET", "/api/v1/sessions?limit=500")["sessions"]}


def new_sessions(web: WebRig, before: set[str]) -> list[dict[str, object]]:
    listed = web.api("GET", "/api/v1/sessions?limit=500")["sessions"]
    return [s for s in listed if s["id"] not in before]


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.mark.parametrize(
    ("link", "status", "kind", "sent_kind"),
    [
        ("/#/shell/demo-agent?reason=from+a+mail", "#shell-status", None, "shell"),
        ("/#/files/demo-agent?reason=from+a+mail", "#files-status", None, "files"),
        (
            "/#/screen/demo-agent?kind=control&reason=from+a+mail",
            "#screen-status",
            "control",
            "control",
        ),
        ("/#/screen/demo-agent?kind=view&reason=from+a+mail", "#screen-status", "view", "view"),
    ],
)
def test_a_deep_link_only_fills_the_form_and_the_click_opens(
    web: WebRig, link: str, status: str, kind: str | None, sent_kind: str
) -> None:
    before = session_ids(web)
    page = web.admin_page()
    opened = watch_session_sockets(page)
    page.goto(link)
    form = page.locator("#start-form")
    expect(form).to_be_visible()
    expect(page.locator("#start-reason")).to_have_value("from a mail")
    if kind is not None:
        expect(page.locator("#start-kind")).to_have_value(kind)
    time.sleep(SETTLE)
    assert opened == [], "a session socket was opened before any click"
    assert new_sessions(web, before) == [], "the relay saw a session request before any click"
    # The page says what it is waiting for, not "asking the relay".
    expect(page.locator(status)).not_to_contain_text("Asking the relay")

    # The technician changes the reason and starts: what the form shows is what is sent.
    page.fill("#start-reason", "checked by me")
    page.click("#start-session")
    expect(form).to_be_hidden()
    deadline = time.monotonic() + 20
    while not opened and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(opened) == 1, opened
    sent = query_of(opened[0])
    assert sent["reason"] == "checked by me"
    if kind is not None:
        assert sent["kind"] == kind
    deadline = time.monotonic() + 20
    while not (created := new_sessions(web, before)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(created) == 1, created
    assert created[0]["reason"] == "checked by me"
    assert created[0]["kind"] == sent_kind
    page.context.close()


def test_changing_the_address_under_an_open_page_opens_nothing(web: WebRig) -> None:
    """A link followed inside the signed-in console (a hash change, no reload) is the same
    deep link: it renders the form and waits."""
    before = session_ids(web)
    page = web.admin_page()
    page.goto("/#/devices")
    expect(page.locator("#devices")).to_be_visible()
    opened = watch_session_sockets(page)
    for link in (
        "#/screen/demo-agent?kind=control&reason=urgent",
        "#/shell/demo-agent?reason=urgent",
        "#/files/demo-agent",
    ):
        page.evaluate("(hash) => { location.hash = hash; }", link)
        expect(page.locator("#start-session")).to_be_visible()
    time.sleep(SETTLE)
    assert opened == []
    assert new_sessions(web, before) == []
    # A script's synthetic submit is not a click either.
    page.evaluate("() => document.querySelector('#start-form').requestSubmit()")
    time.sleep(0.5)
    assert opened == []
    page.context.close()


def test_the_device_pages_button_is_the_click(web: WebRig) -> None:
    devices = web.api("GET", "/api/v1/devices")["devices"]
    device = next(d for d in devices if d["name"] == "demo-agent")
    page = web.admin_page()
    opened = watch_session_sockets(page)
    page.goto(f"/#/device/{device['id']}")
    expect(page.locator("#device-state")).to_have_text("online")
    time.sleep(0.5)
    assert opened == []
    page.fill("#session-reason", "one click")
    page.click("#open-shell")
    expect(page.locator("#shell-status")).to_contain_text("Connected to demo-agent")
    expect(page.locator("#start-form")).to_be_hidden()
    assert len(opened) == 1
    assert query_of(opened[0])["reason"] == "one click"
    # Reloading that page is a deep link again: the form comes back, nothing opens.
    page.reload()
    expect(page.locator("#start-session")).to_be_visible()
    expect(page.locator("#start-reason")).to_have_value("one click")
    time.sleep(SETTLE)
    assert len(opened) == 1
    page.context.close()
