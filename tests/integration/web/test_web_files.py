"""Files in the web console: browse, upload with the picker, download back identical."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .conftest import WebRig

pytestmark = pytest.mark.integration


def test_upload_then_download_back_identical(web: WebRig, tmp_path: Path) -> None:
    (web.files_root / "reports").mkdir(exist_ok=True)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "bundle <b>1<b>.bin"  # a name with markup: shown as text
    source.write_bytes(payload)
    page = web.admin_page()
    page.goto("/#/files/demo-agent?reason=collect+logs")
    page.click("#start-session")  # a deep link only fills the form in
    expect(page.locator("#files-status")).to_contain_text("Connected to demo-agent")
    page.click("#file-list a.dir:text-is('reports/')")
    expect(page.locator("#files-path")).to_have_value("reports")
    page.set_input_files("#upload-input", str(source))
    state = page.locator(".upload[data-name='bundle <b>1<b>.bin'] .upload-state")
    digest = hashlib.sha256(payload).hexdigest()
    expect(state).to_have_text(f"done, SHA-256 verified: {digest}", timeout=60_000)
    stored = web.files_root / "reports" / source.name
    assert stored.read_bytes() == payload
    assert page.locator("#file-list b").count() == 0
    link = page.locator("#file-list a.file", has_text=source.name)
    with page.expect_download() as started:
        link.click()
    download = started.value
    assert download.failure() is None
    saved = tmp_path / "downloaded.bin"
    download.save_as(saved)
    # The relay names the file; Chromium replaces the characters it never puts in names.
    assert download.suggested_filename == "bundle _b_1_b_.bin"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest


def test_damaged_upload_is_refused_and_nothing_is_written(web: WebRig) -> None:
    page = web.admin_page()
    page.goto("/#/files/demo-agent")
    page.click("#start-session")  # a deep link only fills the form in
    expect(page.locator("#files-status")).to_contain_text("Connected to demo-agent")
    expect(page.locator("#file-list")).to_be_visible()
    # What a page whose bytes changed on the way would send: a body that does not match
    # the SHA-256 it declares.
    status, message = page.evaluate(
        """async () => {
            const csrf = (await (await fetch('/web/session')).json()).csrf;
            const socketHandle = window.__filesHandle;
            const response = await fetch(
                `/web/files/${socketHandle}/upload?path=damaged.bin`,
                {method: 'POST', body: 'these bytes',
                 headers: {'X-CSRF-Token': csrf, 'X-Content-SHA256': '0'.repeat(64)}});
            return [response.status, (await response.json()).error.message];
        }"""
    )
    assert status == 400
    assert message.startswith("the upload arrived damaged")
    assert not (web.files_root / "damaged.bin").exists()
    assert not list(web.files_root.glob(".*damaged*"))
    answers = page.evaluate(
        """async () => {
            const csrf = (await (await fetch('/web/session')).json()).csrf;
            const send = async (headers) => {
                const response = await fetch(
                    `/web/files/${window.__filesHandle}/upload?path=plain.txt`,
                    {method: 'POST', body: 'plain bytes',
                     headers: {'X-CSRF-Token': csrf, ...headers}});
                return [response.status, await response.json()];
            };
            return [await send({'X-Content-SHA256': 'not-hex'}), await send({})];
        }"""
    )
    (bad_status, bad), (plain_status, plain) = answers
    assert bad_status == 400
    assert bad["error"]["message"] == "X-Content-SHA256 must be a SHA-256 in hex"
    # Without the page's hash (a file too large to hash in a browser) the relay and the
    # device still check what arrived.
    assert plain_status == 200
    assert plain["sha256"] == hashlib.sha256(b"plain bytes").hexdigest()
    assert (web.files_root / "plain.txt").read_bytes() == b"plain bytes"
    # The session is unharmed: the page still lists the directory.
    page.click("#up")
    expect(page.locator("#files-status")).to_contain_text("Connected to demo-agent")
    expect(page.locator("#file-list")).to_be_visible()


def test_a_cut_download_resumes_with_a_range(web: WebRig) -> None:
    payload = os.urandom(600_000)
    (web.files_root / "big.bin").write_bytes(payload)
    page = web.admin_page()
    page.goto("/#/files/demo-agent")
    page.click("#start-session")  # a deep link only fills the form in
    expect(page.locator("#file-list tr[data-name='big.bin']")).to_be_visible()
    href = page.locator("#file-list a.file", has_text="big.bin").get_attribute("href")
    # What the browser's download manager sends to resume after 250000 bytes arrived.
    answers = page.evaluate(
        """async (href) => {
            const first = await fetch(href);
            const modified = first.headers.get('Last-Modified');
            await first.arrayBuffer();
            const get = async (headers) => {
                const response = await fetch(href, {headers});
                const body = new Uint8Array(await response.arrayBuffer());
                return {status: response.status, range: response.headers.get('Content-Range'),
                        body: Array.from(body.slice(0, 8)), length: body.length};
            };
            return [
                await get({'Range': 'bytes=250000-', 'If-Range': modified}),
                await get({'Range': 'bytes=250000-', 'If-Range': 'Mon, 01 Jan 2001 00:00:00 GMT'}),
                await get({'Range': 'bytes=0-10'}),
            ];
        }""",
        href,
    )
    resumed, changed, partial = answers
    assert resumed["status"] == 206
    assert resumed["range"] == f"bytes 250000-{len(payload) - 1}/{len(payload)}"
    assert resumed["length"] == len(payload) - 250000
    assert bytes(resumed["body"]) == payload[250000:250008]
    assert (changed["status"], changed["length"]) == (200, len(payload))  # file changed
    assert (partial["status"], partial["length"]) == (200, len(payload))  # not a resume
