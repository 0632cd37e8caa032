"""The audit page as a witness: the browser keeps the head it last saw verified (in
localStorage, the relay's own), and when the chain is later rewritten whole on disk
(relay stopped, every hash recomputed, head file rewritten: the relay verifies it as
intact) the page shows a loud warning until an admin accepts the new head. A browser
that never saw the chain before cannot tell (the limit the README states)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from ..test_audit_witness import rewrite_whole_chain
from .conftest import WebRig

pytestmark = pytest.mark.integration


def test_a_rewritten_chain_is_shown_loudly_to_a_browser_that_saw_it(web: WebRig) -> None:
    context = web.context(web.admin_state)
    page = context.new_page()
    page.goto("/#/audit")
    status = page.locator("#witness-status")
    expect(page.locator("#chain-status")).to_contain_text("Hash chain verified")
    expect(status).to_contain_text("First check in this browser")
    web.api("POST", "/api/v1/groups", {"name": "seen-later"})
    page.reload()
    expect(status).to_contain_text("Extends entry")
    expect(status).to_have_class("notice ok witness")
    seen = page.evaluate("() => JSON.parse(localStorage.getItem('helpline.audit-witness'))")
    assert seen["seq"] >= 2 and len(seen["hash"]) == 64

    rewrite_whole_chain(web.relay)
    page.reload()
    # The relay vouches for the rewritten chain; the browser does not.
    expect(page.locator("#chain-status")).to_contain_text("Hash chain verified")
    expect(status).to_contain_text("AUDIT LOG REWRITTEN.")
    expect(status).to_contain_text(f"entry {seen['seq']} has hash")
    expect(status).to_have_class("notice error witness")
    page.reload()  # it stays until someone decides
    expect(status).to_contain_text("AUDIT LOG REWRITTEN.")

    # A browser that never saw the chain cannot tell: the witness detects only rewrites
    # after its last look.
    fresh = web.context(web.admin_state)
    other = fresh.new_page()
    other.goto("/#/audit")
    expect(other.locator("#witness-status")).to_contain_text("First check in this browser")
    fresh.close()

    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#accept-new-head")
    expect(status).to_contain_text("Re-anchored on entry")
    page.reload()
    expect(status).to_contain_text("Extends entry")
    # The console still works after the relay's restart.
    page.click("#nav a[data-nav=Devices]")
    expect(page.locator("#devices tr", has_text="demo-agent")).to_be_visible()
    context.close()
