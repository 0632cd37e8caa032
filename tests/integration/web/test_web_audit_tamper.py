"""An edited audit log, as the auditor's page shows it: the chain's status turns to
BROKEN at the edited entry (a relay of its own: this one's log is spoiled on purpose)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from ..test_audit_tamper import attacker_sql
from .conftest import WebRig, sign_in

pytestmark = pytest.mark.integration


def test_the_audit_page_shows_a_broken_chain(web: WebRig) -> None:
    account = web.user("inspector", "auditor")
    page = web.context().new_page()
    sign_in(page, "inspector", account["password"])
    expect(page.locator("#chain-status")).to_contain_text("Hash chain verified")
    created = web.api("GET", "/api/v1/audit?action=user.create&target=inspector")["entries"]
    seq = created[0]["seq"]
    attacker_sql(web.relay, f"UPDATE audit SET target = 'someone-else' WHERE seq = {seq}")  # noqa: S608
    page.reload()
    expect(page.locator("#chain-status")).to_contain_text(f"Hash chain BROKEN at entry {seq}")
    expect(page.locator("#chain-status")).to_have_class("notice error")
