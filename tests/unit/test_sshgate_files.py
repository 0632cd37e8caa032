"""The SFTP gateway's files client and spool, against a scripted broker (no sockets).

What the real clients cannot provoke: a device that sends other bytes than its
SHA-256 says, a resume offered by the device, a refusal; and the spool's files
(0600, gone on close, leftovers purged).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from protocol.errors import ErrorCode
from protocol.files import FileDone, FileOp, FileReply, FileRequest
from relay.sshgate.sftp_files import RECEIVE_HIGH, DeviceFiles
from relay.sshgate.spool import PREFIX, SpoolFile, purge
from relay.sshgate.transfers import FilesError

Device = Callable[["FakeBroker", Any], Awaitable[None]]


class FakeBroker:
    """Grants the session and hands each message to ``device``, a script of the agent."""

    def __init__(self, device: Device, *, deny: str | None = None) -> None:
        self.device = device
        self.deny = deny
        self.leg: DeviceFiles | None = None
        self.session = SimpleNamespace(ended=False, device=SimpleNamespace(name="desk"))
        self.sent: list[Any] = []  # messages and data for the device, in order
        self.closed: list[bool] = []

    async def request(self, user: Any, device: str, kind: str, reason: str, params: Any, leg: Any):
        assert (kind, reason) == ("files", "ssh gateway (sftp)")
        self.leg = leg
        await leg.waiting(self.session)
        if self.deny is not None:
            await leg.refused(self.session, "denied", ErrorCode.CONSENT_DENIED, self.deny)
        else:
            await leg.opened(self.session)
        return self.session

    async def tech_accepted(self, session: Any) -> None:
        return None

    async def tech_credit(self, session: Any) -> None:
        return None

    async def tech_message(self, session: Any, message: Any) -> None:
        self.sent.append(message)
        asyncio.get_running_loop().create_task(self.device(self, message))

    async def tech_data(self, session: Any, data: bytes) -> None:
        self.sent.append(bytes(data))
        assert self.leg is not None
        await self.leg.consumed(len(data))

    async def tech_closed(self, session: Any, *, lost: bool = False) -> None:
        self.closed.append(lost)
        session.ended = True

    # what the device says
    async def reply(self, **fields: Any) -> None:
        assert self.leg is not None
        await self.leg.message(FileReply(**fields))

    async def done(self, request_id: int, data: bytes, *, sha256: str | None = None) -> None:
        assert self.leg is not None
        digest = sha256 or hashlib.sha256(data).hexdigest()
        await self.leg.message(FileDone(id=request_id, size=len(data), sha256=digest))

    async def data(self, data: bytes) -> None:
        assert self.leg is not None
        for start in range(0, len(data), 100_000):
            assert self.leg.credit() <= RECEIVE_HIGH
            await self.leg.send(data[start : start + 100_000])


def make_files(tmp_path: Path, broker: FakeBroker) -> tuple[DeviceFiles, list[str], list[int]]:
    lines: list[str] = []
    closes: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coroutine: Any, what: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        tasks.add(task)
        return task

    async def get_user_by_id(user_id: int) -> Any:
        return SimpleNamespace(id=user_id, username="tom", disabled=False)

    relay = SimpleNamespace(
        broker=broker,
        store=SimpleNamespace(get_user_by_id=get_user_by_id),
        config=SimpleNamespace(data_dir=tmp_path),
    )
    gateway = SimpleNamespace(relay=relay, spawn=spawn)
    user = SimpleNamespace(id=1, username="tom")
    files = DeviceFiles(
        gateway,  # type: ignore[arg-type]
        user,  # type: ignore[arg-type]
        "desk",
        notify=lines.append,
        close_channel=closes.append,
    )
    return files, lines, closes


def serve_pull(content: bytes, *, sha256: str | None = None, size: int | None = None) -> Device:
    async def device(broker: FakeBroker, message: Any) -> None:
        if isinstance(message, FileRequest) and message.op == FileOp.PULL:
            await broker.reply(id=message.id, ok=True, kind="file", size=size or len(content))
            await broker.data(content)
            await broker.done(message.id, content, sha256=sha256)

    return device


CONTENT = os.urandom(3 * 1024 * 1024 + 5)


async def test_a_pull_is_served_as_it_arrives_and_verified(tmp_path: Path) -> None:
    broker = FakeBroker(serve_pull(CONTENT))
    files, lines, _ = make_files(tmp_path, broker)
    download = await files.download("report.bin")
    assert download.size == len(CONTENT)
    assert await download.read(1000, 5000) == CONTENT[1000:6000]
    assert await download.read(len(CONTENT) - 10, 100) == CONTENT[-10:]
    assert download.verified
    assert await download.read(len(CONTENT), 100) == b""
    files.close_download(download)
    assert list((tmp_path / "spool").iterdir()) == []
    await files.finish()
    assert broker.closed == [False]
    assert lines == ["helpline: waiting for the customer on desk to accept..."]


@pytest.mark.parametrize(
    ("sha256", "size", "reason"),
    [("0" * 64, None, "SHA-256 mismatch"), (None, len(CONTENT) + 1, "size mismatch")],
    ids=["hash", "size"],
)
async def test_a_pull_that_does_not_verify_fails_the_end_of_the_file(
    tmp_path: Path, sha256: str | None, size: int | None, reason: str
) -> None:
    broker = FakeBroker(serve_pull(CONTENT, sha256=sha256, size=size))
    files, lines, _ = make_files(tmp_path, broker)
    download = await files.download("report.bin")
    assert await download.read(0, 100) == CONTENT[:100], "bytes before the end are served"
    with pytest.raises(FilesError, match=reason):
        await download.read(len(CONTENT) - 100, 100)
    with pytest.raises(FilesError, match=reason):
        await download.read(0, 100)  # and nothing after the mismatch is known
    assert any(reason in line for line in lines), lines
    await files.finish()
    assert list((tmp_path / "spool").iterdir()) == []


def serve_push(stored: bytearray, *, partial: bytes = b"", corrupt_prefix: bool = False) -> Device:
    """A device holding ``partial`` of an earlier upload; what it stores goes to ``stored``."""
    state: dict[str, Any] = {}

    async def device(broker: FakeBroker, message: Any) -> None:
        if isinstance(message, FileRequest) and message.op == FileOp.PUSH:
            prefix = hashlib.sha256(partial + (b"x" if corrupt_prefix else b"")).hexdigest()
            await broker.reply(
                id=message.id, ok=True, offset=len(partial), prefix_sha256=prefix, size=message.size
            )
        elif isinstance(message, FileRequest) and message.op == FileOp.WRITE:
            state["start"] = message.offset
        elif isinstance(message, FileDone):
            data_sent = b"".join(item for item in broker.sent if isinstance(item, bytes))
            stored[:] = partial[: state["start"]] + data_sent
            digest = hashlib.sha256(bytes(stored)).hexdigest()
            assert digest == message.sha256
            await broker.reply(id=message.id, ok=True, kind="file", sha256=digest)

    return device


@pytest.mark.parametrize("corrupt_prefix", [False, True], ids=["resumed", "prefix-differs"])
async def test_a_push_resumes_after_what_the_device_holds_when_the_prefix_matches(
    tmp_path: Path, corrupt_prefix: bool
) -> None:
    stored = bytearray()
    partial = CONTENT[:1_000_000]
    broker = FakeBroker(serve_push(stored, partial=partial, corrupt_prefix=corrupt_prefix))
    files, _, _ = make_files(tmp_path, broker)
    upload = await files.new_upload("up.bin", 0o640, 0)
    for start in range(0, len(CONTENT), 32768):
        await upload.write(start, CONTENT[start : start + 32768])
    digest = await files.push(upload)
    files.discard(upload)

    assert digest == hashlib.sha256(CONTENT).hexdigest()
    assert bytes(stored) == CONTENT
    [push, write] = [m for m in broker.sent if isinstance(m, FileRequest)]
    assert (push.op, push.size, push.mode) == ("push", len(CONTENT), 0o640)
    sent = sum(len(item) for item in broker.sent if isinstance(item, bytes))
    if corrupt_prefix:
        assert (write.offset, sent) == (0, len(CONTENT))
    else:
        assert (write.offset, sent) == (len(partial), len(CONTENT) - len(partial))
    assert {m.id for m in broker.sent if not isinstance(m, bytes)} == {push.id}
    await files.finish()
    assert list((tmp_path / "spool").iterdir()) == []


async def test_a_refusal_fails_the_operation_with_its_reason_and_closes_the_channel(
    tmp_path: Path,
) -> None:
    async def device(broker: FakeBroker, message: Any) -> None:
        raise AssertionError("nothing reaches a device that refused")

    broker = FakeBroker(device, deny="the customer denied the session")
    files, lines, closes = make_files(tmp_path, broker)
    with pytest.raises(FilesError) as refused:
        await files.call(FileOp.STAT, ".")
    assert refused.value.code == ErrorCode.CONSENT_DENIED
    assert refused.value.message == "permission denied: the customer denied the session"
    assert "helpline: session denied: the customer denied the session" in lines
    await asyncio.sleep(0)
    assert closes and closes[0] == 1
    assert broker.sent == []


async def test_spool_files_are_private_and_deleted(tmp_path: Path) -> None:
    spool = await SpoolFile.create(tmp_path / "spool")
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
    await spool.write(10, b"abc")
    assert spool.size == 13
    assert await spool.read(0, 100) == b"\0" * 10 + b"abc"
    prefix = await spool.hash_prefix(11)
    assert (
        prefix is not None and prefix.hexdigest() == hashlib.sha256(b"\0" * 10 + b"a").hexdigest()
    )
    assert await spool.hash_prefix(14) is None
    spool.close()
    spool.close()
    assert not spool.path.exists()
    with pytest.raises(ValueError, match="closed"):
        await spool.read(0, 1)

    leftover = tmp_path / "spool" / f"{PREFIX}dead"
    leftover.write_bytes(b"x")
    other = tmp_path / "spool" / "keep"
    other.write_bytes(b"y")
    assert purge(tmp_path) == 1
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["keep"]
