"""Roles in the web console, refused by the relay (not only hidden), and the pages of
the admin and the auditor: users, enrolment tokens, audit, recordings and their player."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from .conftest import WebRig, sign_in
from .test_web_console import wait_for_line

pytestmark = pytest.mark.integration


def signed_in_as(web: WebRig, username: str, password: str) -> Page:
    page = web.context().new_page()
    sign_in(page, username, password)
    expect(page.locator("#signed-in-as")).to_contain_text(username)
    return page


def test_admin_creates_a_technician_and_an_enrolment_token(web: WebRig) -> None:
    page = web.admin_page()
    page.goto("/#/admin")
    page.fill("#new-username", "tina")
    page.fill("#new-fullname", "Tina <script>alert(1)</script>")
    page.select_option("#new-role", "technician")
    page.click("#new-user button[type=submit]")
    expect(page.locator("#admin-message")).to_have_text("User tina created.")
    expect(page.locator("#secret-text")).to_contain_text("user name: tina")
    secret = page.locator("#secret-text").inner_text()
    password = secret.split("password: ", 1)[1].split("\n", 1)[0]
    assert "TOTP secret: " in secret
    expect(page.locator("#users tr[data-user=tina] td").nth(1)).to_have_text(
        "Tina <script>alert(1)</script>"
    )
    page.fill("#grant-user", "tina")
    page.select_option("#grant-group", "default")
    page.click("#grant-group + button")
    expect(page.locator("#grants")).to_contain_text("tina")

    page.fill("#token-hours", "2")
    page.fill("#token-uses", "3")
    page.click("#new-token button[type=submit]")
    expect(page.locator("#admin-message")).to_have_text("Enrolment token created.")
    expect(page.locator("#secret-text")).to_contain_text("helpline-agent enroll")
    command = page.locator("#secret-text").inner_text()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web.url)
    page.click("#admin-secret button:text-is('Copy')")
    expect(page.locator("#admin-secret button", has_text="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == command
    assert command.startswith(f"helpline-agent enroll https://127.0.0.1:{web.relay.port} --token ")
    assert web.relay.ca_fingerprint in command
    tokens = web.api("GET", "/api/v1/enrolment-tokens")["tokens"]
    newest = max(tokens, key=lambda t: t["id"])
    assert newest["max_uses"] == 3 and newest["group"] == "default"
    assert 7000 < newest["expires_at"] - newest["created_at"] <= 7200

    # The new technician signs in (the account was made with a TOTP secret: use it).
    from ..conftest import totp_now

    totp = secret.split("TOTP secret: ", 1)[1].split("\n", 1)[0]
    tech = web.context().new_page()
    sign_in(tech, "tina", password, totp_now(totp))
    expect(tech.locator("#signed-in-as")).to_have_text("tina (technician)")
    expect(tech.locator("#devices tr", has_text="demo-agent")).to_be_visible()
    expect(tech.locator("#nav a[data-nav=Admin]")).to_have_count(0)
    # The relay refuses the admin API to her, whatever the page shows.
    status = tech.evaluate("fetch('/api/v1/users').then((r) => r.status)")
    assert status == 403


def test_auditor_reads_audit_and_recordings_but_cannot_open_a_shell(web: WebRig) -> None:
    account = web.user("audrey", "auditor")
    page = signed_in_as(web, "audrey", account["password"])
    expect(page).to_have_url(f"{web.url}/#/audit")
    expect(page.locator("#chain-status")).to_contain_text("Hash chain verified")
    expect(page.locator("#audit-table")).to_contain_text("user.login")
    page.fill("#audit-action", "user.create")
    page.click("#audit-filters button[type=submit]")
    expect(page.locator("#audit-table td.action").first).to_have_text("user.create")
    page.goto("/#/recordings")
    expect(page.locator("h1")).to_have_text("Recordings")
    # No shell for an auditor: the page does not offer one, and the relay refuses the
    # socket's session request when the page is forced.
    page.goto("/#/shell/demo-agent")
    expect(page.locator("main")).to_contain_text("This page is not for the auditor role.")
    refusal = page.evaluate(
        """() => new Promise((resolve) => {
            const socket = new WebSocket(`wss://${location.host}/web/ws/shell?device=demo-agent`);
            socket.onmessage = (event) => resolve(event.data);
            socket.onclose = () => resolve("closed without a message");
        })"""
    )
    answer = json.loads(refusal)
    assert answer["type"] == "refused", answer
    assert answer["message"] == "auditors cannot open sessions"
    status = page.evaluate("fetch('/api/v1/devices').then((r) => r.status)")
    assert status == 403
    refused = web.api("GET", "/api/v1/audit?action=session.refused&actor=audrey")["entries"]
    assert refused and refused[-1]["details"]["via"] == "web"


def test_a_recording_plays_in_asciinema_player(web: WebRig) -> None:
    page = web.admin_page()
    page.goto("/#/shell/demo-agent?reason=recorded")
    page.click("#start-session")  # a deep link only fills the form in
    expect(page.locator("#shell-status")).to_contain_text("Connected to demo-agent")
    page.locator("#terminal").click()
    page.keyboard.type("echo rec$((6*7))orded\n")
    wait_for_line(page, "rec42orded")
    page.keyboard.type("exit\n")
    expect(page.locator("#shell-status")).to_contain_text("Session ended")
    page.goto("/#/recordings")
    row = page.locator("#recordings tr", has_text="recorded").first
    row.locator("a.play").click()
    expect(page.locator("#player .ap-player")).to_be_visible()
    page.select_option("#speed", "4")  # restarts the player at that speed, playing
    expect(page.locator("#player")).to_have_attribute("data-ended", "true", timeout=30_000)
    expect(page.locator("#player")).to_contain_text("rec42orded")
    assert page.evaluate("helplinePlayer.getDuration()") > 0
