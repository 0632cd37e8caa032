"""The web console's relay-side rules that need no socket: the CSRF key and tokens, the
Origin check, download resumption, and what the shell socket accepts."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from protocol.errors import InvalidMessage
from relay.web.files import _attachment, _path, _resume_from
from relay.web.legs import page_control
from relay.web.outbound import MAX_QUEUED, Outbound
from relay.web.security import CSRF_KEY, csrf_token, load_csrf_key, same_origin
from relay.web.shell import dimension

MODIFIED = "Fri, 27 Nov 2026 10:00:00 GMT"


def test_csrf_key_is_a_0600_secret_kept_across_restarts(tmp_path: Path) -> None:
    first = load_csrf_key(tmp_path)
    assert len(first) == 32
    assert stat.S_IMODE((tmp_path / "web-csrf.key").stat().st_mode) == 0o600
    assert load_csrf_key(tmp_path) == first


def test_csrf_tokens_differ_per_sign_in_and_per_relay(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    app = web.Application()
    app[CSRF_KEY] = load_csrf_key(tmp_path / "one")
    other = web.Application()
    other[CSRF_KEY] = load_csrf_key(tmp_path / "two")
    token = csrf_token(app, "a" * 64)
    assert token == csrf_token(app, "a" * 64)
    assert token != csrf_token(app, "b" * 64)
    assert token != csrf_token(other, "a" * 64)


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://relay.example:8443", True),
        ("http://relay.example:8443", False),
        ("https://relay.example", False),
        ("https://evil.example", False),
        ("null", False),
        (None, False),
    ],
)
def test_same_origin(origin: str | None, expected: bool) -> None:
    headers = {"Host": "relay.example:8443"}
    if origin is not None:
        headers["Origin"] = origin
    request = make_mocked_request("POST", "/web/login", headers=headers)
    assert same_origin(request) is expected


@pytest.mark.parametrize(
    ("headers", "start"),
    [
        ({}, 0),
        ({"Range": "bytes=100-"}, 100),
        ({"Range": "bytes=100-", "If-Range": MODIFIED}, 100),
        ({"Range": "bytes=100-", "If-Range": "Thu, 01 Jan 2026 00:00:00 GMT"}, 0),
        ({"Range": "bytes=100-200"}, 0),  # a slice, not a resume: the whole file
        ({"Range": "bytes=-100"}, 0),
        ({"Range": "bytes=0-"}, 0),
        ({"Range": "bytes=1000-"}, 0),  # at or past the end
        ({"Range": "bytes=5000-"}, 0),
        ({"Range": "bytes=1-2,5-"}, 0),
        ({"Range": "items=100-"}, 0),
        ({"Range": "bytes=abc-"}, 0),
    ],
)
def test_resume_from(headers: dict[str, str], start: int) -> None:
    request = make_mocked_request("GET", "/web/files/x/download", headers=headers)
    assert _resume_from(request, MODIFIED, 1000) == start


def test_paths_and_attachment_names() -> None:
    assert _path("./a/../b") == "b"
    for bad in ("", None, 7, "a\0b", "x" * 4097):
        with pytest.raises(InvalidMessage):
            _path(bad)
    assert _attachment('dir/r\u00e9sum\u00e9 "1".pdf') == (
        "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.pdf"
    )
    assert _attachment("/") == "attachment; filename*=UTF-8''download"


def test_shell_control_messages_and_sizes() -> None:
    assert page_control('{"type": "resize", "cols": 10}') == {"type": "resize", "cols": 10}
    for bad in ("not json", "[1]", '{"cols": 1}', '{"type": 5}'):
        with pytest.raises(InvalidMessage):
            page_control(bad)
    assert [dimension(v, 80) for v in (120, "40", 0, -5, 5000, None, "x", 2.9)] == [
        120,
        40,
        1,
        1,
        1000,
        80,
        80,
        2,
    ]


class StuckSocket:
    """A browser socket whose peer never reads: the first send never completes."""

    def __init__(self) -> None:
        self.closed = False
        self.sent: list[str | bytes] = []
        self.close_code: int | None = None
        self._never = asyncio.Event()

    async def send_str(self, data: str) -> None:
        self.sent.append(data)
        await self._never.wait()

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)
        await self._never.wait()

    async def close(self, *, code: int, message: bytes) -> None:
        self.closed = True
        self.close_code = code


async def test_a_browser_that_never_reads_is_disconnected_not_buffered() -> None:
    socket = StuckSocket()
    out = Outbound(socket)  # type: ignore[arg-type]
    out.json(type="first")
    await asyncio.sleep(0)
    for number in range(MAX_QUEUED):
        out.json(type="event", number=number)
    assert len(out._queue) == MAX_QUEUED
    out.json(type="one too many")
    assert len(out._queue) == 0  # dropped, and the socket is to be closed
    out.binary(b"later")
    assert len(out._queue) == 0
    await out.stop()
    assert socket.sent == ['{"type": "first"}']
