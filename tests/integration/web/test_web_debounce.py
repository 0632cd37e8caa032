"""The pages coalesce the refetches that live events cause: a burst of inventory events
for one device (what a device reporting its inventory without pause makes the relay send)
costs the devices page and the device page about two fetches, not one each, and the last
state is still fetched after the burst.

The events socket is the real one to the real relay; Playwright's WebSocket routing
passes the relay's messages through and adds the burst in the relay's own format, so
the page's side is measured whatever the relay's own rate limit lets through."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Request, WebSocketRoute, expect

from .conftest import WebRig

pytestmark = pytest.mark.integration

BURST = 60
#: Leading fetch + one trailing fetch per 250 ms window; the burst is sent within one.
MOST_FETCHES = 2


def demo_id(web: WebRig) -> str:
    devices = web.api("GET", "/api/v1/devices")["devices"]
    return str(next(d["id"] for d in devices if d["name"] == "demo-agent"))


def relayed_events(page: Page) -> list[WebSocketRoute]:
    """The page's events socket, connected to the relay, with a handle to add messages."""
    routes: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        ws.connect_to_server()  # everything the relay sends still reaches the page
        routes.append(ws)

    page.route_web_socket(re.compile(r".*/web/ws/events$"), route)
    return routes


def fetches_of(page: Page, path: str) -> list[float]:
    seen: list[float] = []

    def request(req: Request) -> None:
        if urlsplit(req.url).path == path:
            seen.append(time.monotonic())

    page.on("request", request)
    return seen


def burst(page: Page, routes: list[WebSocketRoute], device_id: str) -> None:
    deadline = time.monotonic() + 20
    while not routes and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert routes, "the page never opened its events socket"
    message = json.dumps({"type": "inventory", "id": device_id})
    for _ in range(BURST):
        routes[0].send(message)


@pytest.mark.parametrize("where", ["devices", "device"])
def test_a_burst_of_inventory_events_costs_about_two_fetches(web: WebRig, where: str) -> None:
    device_id = demo_id(web)
    page = web.admin_page()
    routes = relayed_events(page)
    one_device = fetches_of(page, f"/api/v1/devices/{device_id}")
    listing = fetches_of(page, "/api/v1/devices")
    if where == "devices":
        page.goto("/#/devices")
        expect(page.locator("#live-state")).to_have_text("● live")
        expect(page.locator("#devices tr", has_text="demo-agent")).to_be_visible()
    else:
        page.goto(f"/#/device/{device_id}")
        expect(page.locator("#device-state")).to_have_text("online")
    page.wait_for_timeout(1000)  # the "ready" reload is over
    one_device.clear()
    listing.clear()

    burst(page, routes, device_id)
    page.wait_for_timeout(1500)
    assert 1 <= len(one_device) <= MOST_FETCHES, (
        f"{len(one_device)} fetches of the device for {BURST} events"
    )
    assert listing == []  # one device changed: the whole list is not fetched again

    # Later events are not swallowed: the next burst is fetched again.
    one_device.clear()
    burst(page, routes, device_id)
    page.wait_for_timeout(1500)
    assert 1 <= len(one_device) <= MOST_FETCHES
    page.context.close()


def test_many_devices_at_once_are_one_list_fetch(web: WebRig) -> None:
    page = web.admin_page()
    routes = relayed_events(page)
    page.goto("/#/devices")
    expect(page.locator("#live-state")).to_have_text("● live")
    page.wait_for_timeout(1000)
    listing = fetches_of(page, "/api/v1/devices")
    singles: list[str] = []
    page.on(
        "request",
        lambda req: (
            singles.append(req.url)
            if urlsplit(req.url).path.startswith("/api/v1/devices/")
            else None
        ),
    )
    for number in range(40):
        routes[0].send(json.dumps({"type": "inventory", "id": f"device-{number}"}))
    page.wait_for_timeout(1500)
    # The first event is fetched on its own at once; the other 39 together are one list.
    assert len(singles) <= 1, singles
    assert 1 <= len(listing) <= MOST_FETCHES
    expect(page.locator("#devices tr", has_text="demo-agent")).to_be_visible()
    page.context.close()
