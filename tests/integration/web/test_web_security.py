"""The web console's defences: untrusted agent text stays text, live presence, CSRF,
Origin checks on sockets, the Content-Security-Policy, sign-out."""

from __future__ import annotations

import http.client
import json

import pytest
from playwright.sync_api import Dialog, expect
from playwright.sync_api import Error as PlaywrightError

from certs.contexts import pinned_client_context

from .conftest import CHROMIUM, WebRig
from .test_web_console import wait_for_line, wait_for_prompt

pytestmark = pytest.mark.integration

EVIL = "<img src=x onerror=alert(1)>"


def test_hostile_hostname_is_text_and_presence_is_live(web: WebRig) -> None:
    page = web.admin_page()
    dialogs: list[Dialog] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog), dialog.dismiss()))
    page.goto("/#/devices")
    expect(page.locator("#live-state")).to_have_text("● live")
    # A device comes online while the page is open: it shows without a reload.
    agent = web.start_agent("evil-box", hostname=EVIL)
    row = page.locator("#devices tr", has_text="evil-box")
    expect(row.locator("td.state")).to_have_text("online")
    expect(row.locator("td.hostname")).to_have_text(EVIL)
    page.click("#devices a.device-name:text-is('evil-box')")
    expect(page.locator("#device-hostname")).to_have_text(EVIL)
    expect(page.locator("#device-state")).to_have_text("online")
    assert page.locator("main img").count() == 0
    assert not dialogs
    # ...and going offline shows too.
    agent.stop()
    expect(page.locator("#device-state")).to_contain_text("offline", timeout=30_000)
    page.goto("/#/devices")
    expect(row.locator("td.state")).to_have_text("offline")
    assert page.locator("img").count() == 0
    assert not dialogs


def _raw(
    web: WebRig, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes, http.client.HTTPResponse]:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", web.relay.port, timeout=30, context=pinned_client_context(web.relay.ca_pem)
    )
    connection.request(method, path, body or None, headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data, response


def _cookie(web: WebRig) -> str:
    cookies = web.admin_state["cookies"]
    value = next(c["value"] for c in cookies if c["name"] == "__Host-helpline")
    return f"__Host-helpline={value}"


def test_state_changes_need_the_csrf_token_and_our_origin(web: WebRig) -> None:
    origin = web.url
    cookie = _cookie(web)
    body = json.dumps({"name": "csrf-probe"}).encode()
    base = {"Cookie": cookie, "Content-Type": "application/json"}
    status, data, _ = _raw(web, "POST", "/api/v1/groups", {**base, "Origin": origin}, body)
    assert status == 403, data
    assert json.loads(data)["error"]["message"] == "missing or wrong CSRF token; reload the page"
    status, data, _ = _raw(web, "GET", "/web/session", {"Cookie": cookie})
    csrf = json.loads(data)["csrf"]
    status, data, _ = _raw(
        web,
        "POST",
        "/api/v1/groups",
        {**base, "Origin": "https://evil.example", "X-CSRF-Token": csrf},
        body,
    )
    assert status == 403 and b"cross-origin" in data
    groups = [g["name"] for g in web.api("GET", "/api/v1/groups")["groups"]]
    assert "csrf-probe" not in groups  # nothing was made by the refused requests
    status, data, _ = _raw(
        web, "POST", "/api/v1/groups", {**base, "Origin": origin, "X-CSRF-Token": csrf}, body
    )
    assert status == 201, data
    # A socket opened from another site's page is refused before it opens.
    status, data, _ = _raw(
        web,
        "GET",
        "/web/ws/events",
        {
            "Cookie": cookie,
            "Origin": "https://evil.example",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert status == 403, data
    denied = web.api("GET", "/api/v1/audit?action=api.denied")["entries"]
    assert any(e["target"] == "/web/ws/events" for e in denied)


def test_headers_csp_and_no_inline_script(web: WebRig) -> None:
    status, data, response = _raw(web, "GET", "/", {})
    assert status == 200
    csp = response.getheader("Content-Security-Policy") or ""
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-eval'" not in csp.replace("'wasm-unsafe-eval'", "")
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert b"<script>" not in data and b"onload=" not in data  # no inline script
    # The browser enforces it: an inline script injected at run time does not run.
    page = web.admin_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto("/#/devices")
    expect(page.locator("#devices")).to_be_visible()
    ran = page.evaluate(
        """() => {
            window.injected = false;
            const s = document.createElement('script');
            s.textContent = 'window.injected = true';
            document.body.append(s);
            return window.injected;
        }"""
    )
    assert ran is False
    assert any("script-src" in v for v in violations), violations


def test_sign_out_ends_the_token(web: WebRig) -> None:
    page = web.context().new_page()
    account = web.user("leaver", "technician")
    page.goto("/")
    page.fill("#username", "leaver")
    page.fill("#password", account["password"])
    page.click("#sign-in")
    expect(page.locator("#signed-in-as")).to_contain_text("leaver")
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "__Host-helpline")
    page.click("#sign-out")
    expect(page.locator("#login-form")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "__Host-helpline"]
    status, _, _ = _raw(web, "GET", "/web/session", {"Cookie": f"__Host-helpline={token}"})
    assert status == 401  # revoked on the relay, not only forgotten by the browser


def test_a_bad_shell_message_ends_only_that_session(web: WebRig) -> None:
    page = web.admin_page()
    page.goto("/#/shell/demo-agent")
    page.click("#start-session")  # a deep link only fills the form in
    expect(page.locator("#shell-status")).to_contain_text("Connected to demo-agent")
    wait_for_prompt(page)
    answers = page.evaluate(
        """() => new Promise((resolve) => {
            const seen = [];
            const socket = new WebSocket(`wss://${location.host}/web/ws/shell?device=demo-agent`);
            let prompted = false;
            socket.onmessage = (event) => {
                if (typeof event.data !== 'string') {
                    // The shell's first output (its prompt): its start-up files have run.
                    if (!prompted) socket.send('{"type": "launch-missiles"}');
                    prompted = true;
                    return;
                }
                seen.push(JSON.parse(event.data));
            };
            socket.onclose = (event) => resolve({seen, code: event.code});
        })"""
    )
    errors = [m for m in answers["seen"] if m["type"] == "error"]
    assert errors == [{"type": "error", "message": "unknown control message 'launch-missiles'"}]
    assert answers["code"] == 1008
    # The page's own session on the same device carries on.
    page.locator("#terminal").click()
    page.keyboard.type("echo still-$((1+1))\n")
    wait_for_line(page, "still-2")


def test_devices_search_and_filters(web: WebRig) -> None:
    page = web.admin_page()
    page.goto("/#/devices")
    rows = page.locator("#devices tbody tr")
    expect(rows.filter(has_text="demo-agent")).to_have_count(1)
    page.fill("#device-search", "no-such-device")
    expect(page.locator("main")).to_contain_text("No device matches.")
    page.fill("#device-search", "demo")
    expect(rows.filter(has_text="demo-agent")).to_have_count(1)
    page.select_option("#device-state", "offline")
    expect(rows.filter(has_text="demo-agent")).to_have_count(0)
    page.select_option("#device-state", "online")
    page.select_option("#device-group", "default")
    expect(rows.filter(has_text="demo-agent")).to_have_count(1)


def test_the_browser_checks_the_relays_certificate(web: WebRig) -> None:
    # The suite's browser trusts the relay's key only; without that, Chromium refuses.
    stranger = web.browser.browser_type.launch(executable_path=CHROMIUM, headless=True)
    try:
        page = stranger.new_page()
        with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
            page.goto(web.url + "/")
    finally:
        stranger.close()
