"""More of the web console's pages: the session ending under the page, an admin ending a
live session, copy and paste in the shell, drag and drop uploads, the audit export, and a
technician without a grant."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from ..conftest import wait_for
from .conftest import WebRig, sign_in
from .test_web_console import wait_for_line, wait_for_prompt

pytestmark = pytest.mark.integration


def signed_in(
    web: WebRig, username: str, role: str = "technician", group: str | None = "default"
) -> Page:
    account = web.user(username, role, group)
    page = web.context().new_page()
    sign_in(page, username, account["password"])
    expect(page.locator("#signed-in-as")).to_contain_text(username)
    return page


def test_an_ended_sign_in_sends_the_page_back_to_sign_in(web: WebRig) -> None:
    page = signed_in(web, "expiring")
    expect(page.locator("#devices")).to_be_visible()
    shell = page.context.new_page()  # another tab of the same sign-in
    shell.goto("/#/shell/demo-agent")
    shell.click("#start-session")  # a deep link only fills the form in
    expect(shell.locator("#shell-status")).to_contain_text("Connected to demo-agent")
    wait_for_prompt(shell)
    # The token goes away under the page (expired, or signed out in another tab).
    revoked = page.evaluate(
        """async () => {
            const csrf = (await (await fetch('/web/session')).json()).csrf;
            const response = await fetch('/web/logout',
                {method: 'POST', headers: {'X-CSRF-Token': csrf}});
            return response.status;
        }"""
    )
    assert revoked == 200
    # Signing out closes what that sign-in opened: the shell ends as a technician lost.
    expect(shell.locator("#shell-status")).to_have_text("The connection to the relay was lost.")

    def ended() -> bool:
        listed = web.api("GET", "/api/v1/sessions?limit=20")["sessions"]
        mine = [s for s in listed if s["username"] == "expiring"]
        return bool(mine) and mine[0]["end_reason"] == "technician lost"

    wait_for(ended, what="the signed-out technician's session to end")
    page.click("#nav a[data-nav=Sessions]")
    expect(page.locator("#login-message")).to_have_text(
        "Your session has ended (it expired or was signed out). Sign in again."
    )
    expect(page.locator("#signed-in-as")).to_have_count(0)


def test_an_admin_ends_a_live_session(web: WebRig) -> None:
    tech = signed_in(web, "carol")
    tech.goto("/#/shell/demo-agent?reason=slow+printer")
    tech.click("#start-session")  # a deep link only fills the form in
    expect(tech.locator("#shell-status")).to_contain_text("Connected to demo-agent")
    wait_for_prompt(tech)
    admin = web.admin_page()
    admin.goto("/#/sessions")
    live = admin.locator("#live-sessions tr", has_text="carol")
    expect(live).to_contain_text("slow printer")
    admin.once("dialog", lambda dialog: dialog.accept())
    live.locator("button", has_text="End").click()
    expect(admin.locator("p[role=alert]")).to_contain_text("ended.")
    expect(tech.locator("#shell-status")).to_have_text(
        f"Session ended: ended by admin {web.relay.admin['username']}"
    )
    expect(admin.locator("#live-sessions")).not_to_contain_text("carol")
    expect(admin.locator("#session-history tr", has_text="carol").first).to_contain_text("admin")


def test_copy_and_paste_in_the_shell(web: WebRig) -> None:
    page = web.admin_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web.url)
    page.goto("/#/shell/demo-agent")
    page.click("#start-session")  # a deep link only fills the form in
    expect(page.locator("#shell-status")).to_contain_text("Connected to demo-agent")
    page.evaluate("navigator.clipboard.writeText('echo pasted-$((40+2))')")
    page.click("#paste")
    # Pasted as a terminal pastes (bracketed, when the shell asks for it): on the command
    # line, not run, until the technician presses Enter.
    wait_for_line(page, r".*echo pasted-\$\(\(40\+2\)\)")
    page.keyboard.press("Enter")
    wait_for_line(page, "pasted-42")
    page.evaluate("helplineTerminal.selectAll()")
    page.click("#copy")
    page.wait_for_function(
        "navigator.clipboard.readText().then((text) => text.includes('pasted-42'))"
    )


def test_drag_and_drop_upload(web: WebRig) -> None:
    page = web.admin_page()
    page.goto("/#/files/demo-agent")
    page.click("#start-session")  # a deep link only fills the form in
    expect(page.locator("#file-list")).to_be_visible()
    content = "dropped by drag and drop\n" * 1000
    page.evaluate(
        """(content) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([content], 'dropped.txt', {type: 'text/plain'}));
            const zone = document.getElementById('dropzone');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
        }""",
        content,
    )
    digest = hashlib.sha256(content.encode()).hexdigest()
    expect(page.locator(".upload[data-name='dropped.txt'] .upload-state")).to_have_text(
        f"done, SHA-256 verified: {digest}"
    )
    assert (web.files_root / "dropped.txt").read_text() == content
    expect(page.locator("#file-list tr[data-name='dropped.txt']")).to_be_visible()


def test_audit_export_is_json_lines_of_what_is_shown(web: WebRig, tmp_path: Path) -> None:
    page = web.admin_page()
    page.goto("/#/audit")
    page.fill("#audit-action", "user.login")
    page.click("#audit-filters button[type=submit]")
    expect(page.locator("#audit-table td.action").first).to_have_text("user.login")
    shown = page.locator("#audit-table tbody tr").count()
    with page.expect_download() as started:
        page.click("#audit-export")
    path = tmp_path / "audit.jsonl"
    started.value.save_as(path)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(entries) == shown
    assert {e["action"] for e in entries} == {"user.login"}
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
    assert all(len(e["hash"]) == 64 for e in entries)


def test_a_technician_without_a_grant_sees_and_reaches_nothing(web: WebRig) -> None:
    page = signed_in(web, "nogrant", group=None)
    expect(page.locator("main")).to_contain_text("No devices yet")
    page.goto("/#/shell/demo-agent")
    page.click("#start-session")  # a deep link only fills the form in
    expect(page.locator("#shell-status")).to_contain_text(
        "The session could not be opened: no device 'demo-agent'"
    )
    status = page.evaluate("fetch('/api/v1/devices/demo-agent').then((r) => r.status)")
    assert status == 404  # not even its existence


def test_admin_locks_unlocks_resets_totp_moves_and_revokes(web: WebRig) -> None:
    web.user("dave", "technician")
    web.api("POST", "/api/v1/groups", {"name": "branch-office"})
    spare = web.start_agent("spare-pc")

    def spare_online() -> bool:
        listed = web.api("GET", "/api/v1/devices")["devices"]
        return any(d["name"] == "spare-pc" and d["online"] for d in listed)

    wait_for(spare_online, what="spare-pc online")  # the admin page lists, it does not push
    page = web.admin_page()
    page.goto("/#/admin")
    user = page.locator("#users tr[data-user=dave]")
    user.locator("button", has_text="Lock").click()
    expect(page.locator("#admin-message")).to_have_text("dave locked.")
    expect(user.locator("td").nth(3)).to_have_text("locked by an admin")
    accounts = {u["username"]: u for u in web.api("GET", "/api/v1/users")["users"]}
    assert accounts["dave"]["disabled"] is True
    user.locator("button", has_text="Unlock").click()
    expect(page.locator("#admin-message")).to_have_text("dave unlocked.")
    expect(user.locator("td").nth(3)).to_have_text("active")
    user.locator("button", has_text="Reset TOTP").click()
    expect(page.locator("#secret-text")).to_contain_text("otpauth://totp/Helpline:dave")

    device = page.locator("#admin-devices tr", has_text="spare-pc")
    expect(device).to_contain_text("online")
    device.locator("select").select_option("branch-office")
    expect(page.locator("#admin-message")).to_have_text("spare-pc moved to branch-office.")
    moved = [d for d in web.api("GET", "/api/v1/devices")["devices"] if d["name"] == "spare-pc"]
    assert moved[0]["group"] == "branch-office"
    page.once("dialog", lambda dialog: dialog.accept())
    device.locator("button", has_text="Revoke").click()
    expect(page.locator("#admin-message")).to_have_text("spare-pc revoked.")
    expect(device).to_contain_text("revoked")
    revoked = [d for d in web.api("GET", "/api/v1/devices")["devices"] if d["name"] == "spare-pc"]
    assert revoked[0]["revoked_at"] is not None and revoked[0]["online"] is False
    spare.stop()
