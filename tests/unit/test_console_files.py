"""The console's file transfer (console/files.py) against a scripted device, in memory.

The real :class:`~console.client.ConsoleSession` runs over a fake WebSocket whose
other end is a ``Connection(Role.RELAY)`` playing relay and agent at once: it
opens a ``files`` channel for each session request and answers FileRequests per
protocol/files.py over a temporary directory. Faults (a cut after N bytes, a
corrupted byte, a lying FileDone) are switched on per test. Windows and frames
are small so flow control is exercised on both directions.

The last tests put the real agent's FileService (agent/files) behind the same
relay end, with cuts made by the relay mid-transfer: a cross-check of both
sides of protocol/files.py, short of the full end-to-end run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.files import FileRoots, FileService
from console import cli, cli_files
from console.client import ConsoleSession
from console.files import (
    Entry,
    FilesClient,
    Result,
    SessionEnded,
    TransferError,
    TransferInterrupted,
    partial_path,
)
from console.progress import ProgressBar, format_eta, format_progress, format_size
from protocol import Connection, Limits, Role
from protocol.errors import Conflict, ErrorCode, NotFound, NotPermitted
from protocol.events import (
    ChannelClosed,
    ChannelData,
    ChannelMessage,
    CreditAvailable,
)
from protocol.files import FileDone, FileReply, FileRequest
from protocol.sessions import SessionRequest

LIMITS = Limits(
    max_frame_size=16 * 1024, max_control_size=16 * 1024, channel_window=64 * 1024, max_list=32
)
DEVICE_PARTIAL = ".helpline-upload"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_empty(directory: Path) -> bool:
    return not os.listdir(directory)


def blob(size: int, seed: int = 0) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


# -- the fake relay + device ------------------------------------------------------------------


class FakeWebSocket:
    """What ConsoleSession needs of an aiohttp WebSocket, wired to a FakeDevice."""

    def __init__(self) -> None:
        self.closed = False
        self.close_code: int | None = None
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.device: FakeDevice | None = None

    async def send_bytes(self, data: bytes) -> None:
        assert self.device is not None
        if not self.closed:
            self.device.feed(data)

    def __aiter__(self) -> FakeWebSocket:
        return self

    async def __anext__(self) -> aiohttp.WSMessage:
        item = await self.incoming.get()
        if item is None:
            raise StopAsyncIteration
        return aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, item, None)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = 1000
            self.incoming.put_nowait(None)


class DeviceChannel:
    def __init__(self, number: int) -> None:
        self.number = number
        #: FileRequests, FileDones and data, in the order they arrived; None once closed.
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.credit = asyncio.Event()
        self.closed = False


class FakeDevice:
    """The relay and the agent in one, answering FileRequests over ``root``."""

    def __init__(self, root: Path, ws: FakeWebSocket) -> None:
        self.root = root
        self.ws = ws
        ws.device = self
        self.relay = Connection(Role.RELAY, limits=LIMITS)
        self.channels: dict[int, DeviceChannel] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.requests: list[FileRequest] = []
        self.page_size = 3
        #: Faults: close the channel once this many bytes of a transfer moved...
        self.cut_after: int | None = None
        #: ...flip a byte of pulled data, or announce a wrong hash in FileDone.
        self.corrupt = False
        self.lie_in_done = False
        #: ...or give up with an error reply once this many bytes moved.
        self.fail_after: int | None = None
        #: Extra listing entries (names a hostile agent might send).
        self.extra_entries: list[tuple[str, str, int, int, int]] = []
        self.flush()

    # -- transport --------------------------------------------------------------------------

    def flush(self) -> None:
        for frame in self.relay.data_to_send():
            self.ws.incoming.put_nowait(frame)

    def feed(self, data: bytes) -> None:
        self.relay.receive_data(data)
        for event in self.relay.events_received():
            self.dispatch(event)
        self.flush()

    def dispatch(self, event: Any) -> None:
        if isinstance(event, SessionRequest):
            number = len(self.channels) + 1
            params = {"request": str(event.request), "session": f"s{number}", "device": "dev"}
            self.relay.open_channel(number, "files", params)
            channel = self.channels[number] = DeviceChannel(number)
            self.tasks.append(asyncio.create_task(self.serve(channel)))
            return
        number = getattr(event, "channel", None)
        channel = self.channels.get(number) if number is not None else None
        if channel is None:
            return
        if isinstance(event, ChannelMessage):
            channel.inbox.put_nowait(event.message)
        elif isinstance(event, ChannelData):
            channel.inbox.put_nowait(event.data)
        elif isinstance(event, CreditAvailable):
            channel.credit.set()
        elif isinstance(event, ChannelClosed):
            channel.closed = True
            channel.inbox.put_nowait(None)
            channel.credit.set()

    def cut(self, channel: DeviceChannel) -> None:
        self.relay.close_channel(channel.number, ErrorCode.GOING_AWAY, "the device went away")
        self.flush()
        channel.closed = True

    async def send_data(self, channel: DeviceChannel, data: bytes) -> None:
        view = memoryview(data)
        while view and not channel.closed:
            credit = self.relay.send_credit(channel.number)
            if credit <= 0:
                channel.credit.clear()
                await channel.credit.wait()
                continue
            self.relay.send_data(channel.number, bytes(view[:credit]))
            view = view[credit:]
            self.flush()
            await asyncio.sleep(0)

    def reply(self, channel: DeviceChannel, request_id: int, **fields: Any) -> None:
        self.relay.send_channel_message(channel.number, FileReply(id=request_id, **fields))
        self.flush()

    def error(self, channel: DeviceChannel, request_id: int, code: int, message: str) -> None:
        self.reply(channel, request_id, ok=False, code=code, message=message)

    def local(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    # -- the agent's side of protocol/files.py ------------------------------------------------

    async def serve(self, channel: DeviceChannel) -> None:
        while True:
            message = await channel.inbox.get()
            if message is None or channel.closed:
                return
            assert isinstance(message, FileRequest), message
            self.requests.append(message)
            try:
                await getattr(self, f"op_{message.op}")(channel, message)
            except FileNotFoundError:
                self.error(channel, message.id, ErrorCode.NOT_FOUND, "no such file or directory")
            except FileExistsError:
                self.error(channel, message.id, ErrorCode.CONFLICT, "already exists")
            except OSError as error:
                self.error(channel, message.id, ErrorCode.NOT_PERMITTED, error.strerror or "")

    @staticmethod
    def _kind(path: Path) -> tuple[str, os.stat_result]:
        info = path.lstat()
        if path.is_symlink():
            return "link", info
        return ("dir" if path.is_dir() else "file" if path.is_file() else "other"), info

    async def op_list(self, channel: DeviceChannel, request: FileRequest) -> None:
        entries = []
        for child in sorted(self.local(request.path).iterdir()):
            kind, info = self._kind(child)
            entries.append(
                (child.name, kind, info.st_size, info.st_mode & 0o7777, info.st_mtime_ns)
            )
        entries += self.extra_entries
        page = entries[request.offset : request.offset + self.page_size]
        more = request.offset + self.page_size < len(entries)
        self.reply(channel, request.id, ok=True, entries=tuple(page), more=more)

    async def op_stat(self, channel: DeviceChannel, request: FileRequest) -> None:
        kind, info = self._kind(self.local(request.path))
        self.reply(
            channel,
            request.id,
            ok=True,
            kind=kind,
            size=info.st_size,
            mode=info.st_mode,
            mtime_ns=info.st_mtime_ns,
        )

    async def op_mkdir(self, channel: DeviceChannel, request: FileRequest) -> None:
        self.local(request.path).mkdir(parents=request.recursive)
        self.reply(channel, request.id, ok=True)

    async def op_remove(self, channel: DeviceChannel, request: FileRequest) -> None:
        path = self.local(request.path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path) if request.recursive else path.rmdir()
        else:
            path.unlink()
        self.reply(channel, request.id, ok=True)

    async def op_rename(self, channel: DeviceChannel, request: FileRequest) -> None:
        self.local(request.path).rename(self.local(request.target))
        self.reply(channel, request.id, ok=True)

    async def op_pull(self, channel: DeviceChannel, request: FileRequest) -> None:
        path = self.local(request.path)
        data = path.read_bytes()
        info = path.stat()
        start = 0
        if 0 < request.offset <= len(data) and sha(data[: request.offset]) == request.prefix_sha256:
            start = request.offset
        self.reply(
            channel,
            request.id,
            ok=True,
            kind="file",
            size=len(data),
            mode=info.st_mode & 0o7777,
            mtime_ns=info.st_mtime_ns,
            offset=start,
        )
        body = data[start:]
        if self.corrupt and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if self.cut_after is not None:
            await self.send_data(channel, body[: self.cut_after])
            self.cut(channel)
            return
        if self.fail_after is not None:
            await self.send_data(channel, body[: self.fail_after])
            self.error(channel, request.id, ErrorCode.NOT_PERMITTED, "read error")
            return
        await self.send_data(channel, body)
        digest = sha(b"wrong") if self.lie_in_done else sha(data)
        done = FileDone(id=request.id, size=len(data), sha256=digest)
        self.relay.send_channel_message(channel.number, done)
        self.flush()

    async def op_push(self, channel: DeviceChannel, request: FileRequest) -> None:
        path = self.local(request.path)
        if not path.parent.is_dir():
            raise FileNotFoundError(request.path)
        partial = path.with_name(path.name + DEVICE_PARTIAL)
        have = partial.read_bytes() if partial.exists() else b""
        self.reply(
            channel, request.id, ok=True, offset=len(have), prefix_sha256=sha(have) if have else ""
        )
        write = await channel.inbox.get()
        if write is None:
            return
        assert isinstance(write, FileRequest), write
        self.requests.append(write)
        assert write.op == "write"
        assert write.id == request.id
        assert write.offset in (0, len(have))
        received = bytearray(have[: write.offset])
        moved = 0
        while True:
            item = await channel.inbox.get()
            if item is None:
                partial.write_bytes(received)  # what arrived before the cut
                return
            if isinstance(item, bytes):
                received += item
                moved += len(item)
                self.relay.acknowledge(channel.number, len(item))
                self.flush()
                if self.cut_after is not None and moved >= self.cut_after:
                    partial.write_bytes(received)
                    self.cut(channel)
                    return
                if self.fail_after is not None and moved >= self.fail_after:
                    # disk full: say so, and read (and acknowledge) nothing more
                    self.error(channel, request.id, ErrorCode.NOT_PERMITTED, "no space left")
                    return
                continue
            assert isinstance(item, FileDone), item
            assert item.id == request.id
            digest = sha(bytes(received))
            if item.size != len(received) or item.sha256 != digest:
                partial.unlink(missing_ok=True)
                self.error(channel, request.id, ErrorCode.CONFLICT, "SHA-256 mismatch")
                return
            partial.write_bytes(received)
            os.chmod(partial, write.mode)
            os.utime(partial, ns=(write.mtime_ns, write.mtime_ns))
            partial.replace(path)
            self.reply(channel, request.id, ok=True, size=len(received), sha256=digest)
            return


class AgentDevice(FakeDevice):
    """The relay in front of the real agent's FileService (agent/files), roots = ``root``."""

    def __init__(self, root: Path, ws: FakeWebSocket) -> None:
        super().__init__(root, ws)
        self.roots = FileRoots([str(root)])
        self.services: dict[int, FileService] = {}

    def dispatch(self, event: Any) -> None:
        if isinstance(event, SessionRequest):
            super().dispatch(event)
            number = len(self.channels)
            self.services[number] = FileService(self.roots, self.relay, number, self.flush_async)
            return
        number = getattr(event, "channel", None)
        if number in self.channels:
            self.channels[number].inbox.put_nowait(event)

    async def flush_async(self) -> None:
        self.flush()

    async def serve(self, channel: DeviceChannel) -> None:
        await asyncio.sleep(0)  # the service is made right after this task
        service = self.services[channel.number]
        while True:
            event = await channel.inbox.get()
            if isinstance(event, ChannelData):
                await service.handle_data(event.data)
            elif isinstance(event, ChannelMessage):
                if isinstance(event.message, FileRequest):
                    self.requests.append(event.message)
                await service.handle_message(event.message)
            elif isinstance(event, CreditAvailable):
                service.credit_available()
            elif isinstance(event, ChannelClosed):
                await service.close()
                return

    def cut(self, channel: DeviceChannel) -> None:
        super().cut(channel)
        channel.inbox.put_nowait(ChannelClosed(channel.number, 1001, ""))


@contextlib.asynccontextmanager
async def device_session(
    root: Path, *, real_agent: bool = False
) -> AsyncIterator[tuple[FakeDevice, ConsoleSession]]:
    ws = FakeWebSocket()
    device = (AgentDevice if real_agent else FakeDevice)(root, ws)
    console = ConsoleSession(ws, LIMITS, 30.0)  # type: ignore[arg-type]
    await console.start()
    try:
        yield device, console
    finally:
        await console.close()
        for task in device.tasks:
            task.cancel()
        await asyncio.gather(*device.tasks, return_exceptions=True)


async def open_files(console: ConsoleSession, warnings: list[str] | None = None) -> FilesClient:
    channel = await console.open_session("dev", "files", reason="tests")
    return FilesClient(channel, on_warning=None if warnings is None else warnings.append)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "device"
    path.mkdir()
    return path


@pytest.fixture
def local(tmp_path: Path) -> Path:
    path = tmp_path / "console"
    path.mkdir()
    return path


# -- simple operations ------------------------------------------------------------------------


async def test_listing_follows_pages(remote: Path) -> None:
    for index in range(10):
        (remote / f"f{index}").write_bytes(b"x" * index)
    (remote / "sub").mkdir()
    async with device_session(remote) as (device, console):
        files = await open_files(console)
        entries = await files.list("/")
    assert [e.name for e in entries] == [f"f{i}" for i in range(10)] + ["sub"]
    assert entries[3] == Entry("f3", "file", 3, entries[3].mode, entries[3].mtime_ns)
    assert entries[-1].is_dir
    lists = [r for r in device.requests if r.op == "list"]
    assert [r.offset for r in lists] == [0, 3, 6, 9]
    assert len({r.id for r in lists}) == 4


async def test_stat_mkdir_rename_remove_and_errors(remote: Path) -> None:
    (remote / "a.txt").write_bytes(b"hello")
    async with device_session(remote) as (_, console):
        files = await open_files(console)
        entry = await files.stat("/a.txt")
        assert (entry.name, entry.kind, entry.size) == ("a.txt", "file", 5)
        with pytest.raises(NotFound, match="no such file"):
            await files.stat("/missing")
        await files.mkdir("/x/y/z", parents=True)
        with pytest.raises(Conflict):
            await files.mkdir("/x")
        await files.rename("/a.txt", "/x/b.txt")
        assert (remote / "x" / "b.txt").read_bytes() == b"hello"
        await files.remove("/x/b.txt")
        await files.remove("/x", recursive=True)
        assert is_empty(remote)
        # errors leave the session usable
        assert await files.list("/") == []


async def test_a_closed_session_raises_on_the_next_request(remote: Path) -> None:
    async with device_session(remote) as (device, console):
        files = await open_files(console)
        device.cut(device.channels[1])
        await files.channel.wait_closed()
        with pytest.raises(SessionEnded, match="went away"):
            await files.list("/")


# -- pull -------------------------------------------------------------------------------------


async def test_pull_whole_file(remote: Path, local: Path) -> None:
    data = blob(300_000)
    (remote / "big.bin").write_bytes(data)
    os.chmod(remote / "big.bin", 0o640)
    os.utime(remote / "big.bin", ns=(1_000_000_000, 1_500_000_000_123))
    calls: list[tuple[int, int]] = []
    async with device_session(remote) as (_, console):
        files = await open_files(console)
        result = await files.pull("/big.bin", local / "big.bin", lambda d, t: calls.append((d, t)))
    target = local / "big.bin"
    assert result == Result(sha(data), len(data), 0, str(target))
    assert target.read_bytes() == data
    assert target.stat().st_mode & 0o777 == 0o640
    assert target.stat().st_mtime_ns == 1_500_000_000_123
    assert not partial_path(target).exists()
    assert calls[0] == (0, len(data))
    assert calls[-1] == (len(data), len(data))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


async def test_pull_of_an_empty_file(remote: Path, local: Path) -> None:
    (remote / "empty").write_bytes(b"")
    async with device_session(remote) as (_, console):
        files = await open_files(console)
        result = await files.pull("/empty", local / "empty")
    assert result.size == 0
    assert result.sha256 == sha(b"")
    assert (local / "empty").read_bytes() == b""
    assert not partial_path(local / "empty").exists()


async def test_pull_cut_then_resumed(remote: Path, local: Path) -> None:
    data = blob(250_000, seed=1)
    (remote / "f.bin").write_bytes(data)
    target = local / "f.bin"
    async with device_session(remote) as (device, console):
        device.cut_after = 100_000
        files = await open_files(console)
        with pytest.raises(TransferInterrupted, match="run it again to resume") as caught:
            await files.pull("/f.bin", target)
        assert caught.value.done == 100_000
        assert not target.exists()
        partial = partial_path(target)
        assert partial.read_bytes() == data[:100_000]
        assert partial.stat().st_mode & 0o777 == 0o600
        with pytest.raises(SessionEnded):  # that session is over
            await files.stat("/f.bin")

        device.cut_after = None
        files = await open_files(console)
        calls: list[tuple[int, int]] = []
        result = await files.pull("/f.bin", target, lambda d, t: calls.append((d, t)))
    assert result.resumed_from == 100_000
    assert result.sha256 == sha(data)
    assert target.read_bytes() == data
    assert not partial_path(target).exists()
    assert calls[0] == (100_000, len(data))
    pulls = [r for r in device.requests if r.op == "pull"]
    assert pulls[1].offset == 100_000
    assert pulls[1].prefix_sha256 == sha(data[:100_000])


async def test_pull_restarts_when_the_partial_does_not_match(remote: Path, local: Path) -> None:
    data = blob(100_000, seed=2)
    (remote / "f.bin").write_bytes(data)
    target = local / "f.bin"
    partial_path(target).write_bytes(b"not the same prefix" * 100)
    async with device_session(remote) as (_, console):
        files = await open_files(console)
        result = await files.pull("/f.bin", target)
    assert result.resumed_from == 0
    assert target.read_bytes() == data


@pytest.mark.parametrize("fault", ["corrupt", "lie_in_done"])
async def test_pull_mismatch_keeps_nothing(remote: Path, local: Path, fault: str) -> None:
    data = blob(80_000, seed=3)
    (remote / "f.bin").write_bytes(data)
    target = local / "f.bin"
    target.write_bytes(b"the old version")
    async with device_session(remote) as (device, console):
        setattr(device, fault, True)
        files = await open_files(console)
        with pytest.raises(TransferError, match="SHA-256 mismatch"):
            await files.pull("/f.bin", target)
    assert target.read_bytes() == b"the old version"  # never replaced by unverified bytes
    assert not partial_path(target).exists()


async def test_pull_error_leaves_no_empty_partial(remote: Path, local: Path) -> None:
    async with device_session(remote) as (_, console):
        files = await open_files(console)
        with pytest.raises(NotFound):
            await files.pull("/nope", local / "nope")
        assert is_empty(local)
        with pytest.raises(IsADirectoryError):
            await files.pull("/nope", local)


async def test_pull_given_up_by_the_device_keeps_what_arrived(remote: Path, local: Path) -> None:
    data = blob(200_000, seed=11)
    (remote / "f.bin").write_bytes(data)
    target = local / "f.bin"
    async with device_session(remote) as (device, console):
        device.fail_after = 70_000
        files = await open_files(console)
        with pytest.raises(NotPermitted, match="read error"):
            await files.pull("/f.bin", target)
        assert partial_path(target).read_bytes() == data[:70_000]
        with pytest.raises(SessionEnded, match="out of step"):
            await files.stat("/f.bin")
        device.fail_after = None
        result = await (await open_files(console)).pull("/f.bin", target)
    assert result.resumed_from == 70_000
    assert target.read_bytes() == data


# -- push -------------------------------------------------------------------------------------


async def test_push_whole_file(remote: Path, local: Path) -> None:
    data = blob(600_000, seed=4)
    source = local / "up.bin"
    source.write_bytes(data)
    os.chmod(source, 0o750)  # noqa: S103
    os.utime(source, ns=(1_000_000_000, 1_600_000_000_000_000_001))
    calls: list[tuple[int, int]] = []
    async with device_session(remote) as (device, console):
        files = await open_files(console)
        result = await files.push(source, "/up.bin", lambda d, t: calls.append((d, t)))
    assert result == Result(sha(data), len(data), 0, "/up.bin")
    assert (remote / "up.bin").read_bytes() == data
    assert (remote / "up.bin").stat().st_mode & 0o777 == 0o750
    push, write = (r for r in device.requests if r.op in ("push", "write"))
    assert (push.size, push.mode, push.mtime_ns) == (len(data), 0o750, 1_600_000_000_000_000_001)
    assert write.offset == 0
    assert calls[0] == (0, len(data))
    assert calls[-1] == (len(data), len(data))


async def test_push_resumes_a_matching_partial(remote: Path, local: Path) -> None:
    data = blob(300_000, seed=5)
    source = local / "up.bin"
    source.write_bytes(data)
    (remote / ("up.bin" + DEVICE_PARTIAL)).write_bytes(data[:123_456])
    async with device_session(remote) as (device, console):
        files = await open_files(console)
        result = await files.push(source, "/up.bin")
    assert result.resumed_from == 123_456
    assert result.sha256 == sha(data)
    assert (remote / "up.bin").read_bytes() == data
    write = next(r for r in device.requests if r.op == "write")
    assert write.offset == 123_456


async def test_push_restarts_when_the_partial_does_not_match(remote: Path, local: Path) -> None:
    data = blob(200_000, seed=6)
    source = local / "up.bin"
    source.write_bytes(data)
    (remote / ("up.bin" + DEVICE_PARTIAL)).write_bytes(b"garbage" * 1000)
    async with device_session(remote) as (device, console):
        files = await open_files(console)
        result = await files.push(source, "/up.bin")
    assert result.resumed_from == 0
    assert (remote / "up.bin").read_bytes() == data
    assert next(r for r in device.requests if r.op == "write").offset == 0


async def test_push_ignores_a_device_partial_longer_than_the_file(
    remote: Path, local: Path
) -> None:
    source = local / "up.bin"
    source.write_bytes(b"short")
    (remote / ("up.bin" + DEVICE_PARTIAL)).write_bytes(b"much longer than the file")
    async with device_session(remote) as (_, console):
        files = await open_files(console)
        result = await files.push(source, "/up.bin")
    assert result.resumed_from == 0
    assert (remote / "up.bin").read_bytes() == b"short"


async def test_push_cut_then_resumed(remote: Path, local: Path) -> None:
    data = blob(500_000, seed=7)
    source = local / "up.bin"
    source.write_bytes(data)
    async with device_session(remote) as (device, console):
        device.cut_after = 150_000
        files = await open_files(console)
        with pytest.raises(TransferInterrupted):
            await files.push(source, "/up.bin")
        assert not (remote / "up.bin").exists()
        kept = (remote / ("up.bin" + DEVICE_PARTIAL)).stat().st_size
        assert kept >= 150_000
        device.cut_after = None
        files = await open_files(console)
        result = await files.push(source, "/up.bin")
    assert result.resumed_from == kept
    assert (remote / "up.bin").read_bytes() == data


async def test_push_refused_by_the_device(remote: Path, local: Path) -> None:
    source = local / "up.bin"
    source.write_bytes(b"data")
    async with device_session(remote) as (_, console):
        files = await open_files(console)
        with pytest.raises(NotFound):
            await files.push(source, "/no/such/dir/up.bin")
        with pytest.raises(IsADirectoryError):
            await files.push(local, "/x")
        with pytest.raises(FileNotFoundError):
            await files.push(local / "missing", "/x")
        # still in step
        assert (await files.push(source, "/up.bin")).size == 4


async def test_push_refused_mid_way_does_not_hang(remote: Path, local: Path) -> None:
    source = local / "up.bin"
    source.write_bytes(blob(1_000_000, seed=12))
    async with device_session(remote) as (device, console):
        device.fail_after = 100_000
        files = await open_files(console)
        with pytest.raises(NotPermitted, match="no space left"):
            await asyncio.wait_for(files.push(source, "/up.bin"), 10)
        with pytest.raises(SessionEnded, match="out of step"):
            await files.list("/")
    assert not (remote / "up.bin").exists()


# -- trees ------------------------------------------------------------------------------------


def make_tree(root: Path) -> dict[str, bytes]:
    contents = {
        "a.txt": b"alpha",
        "sub/b.bin": blob(70_000, seed=8),
        "sub/deeper/c.txt": b"",
        "z.bin": blob(40_000, seed=9),
    }
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "emptydir").mkdir()
    return contents


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


async def test_push_tree_skips_symlinks(remote: Path, local: Path, tmp_path: Path) -> None:
    tree = local / "project"
    contents = make_tree(tree)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key").write_bytes(b"do not send")
    (tree / "link-to-dir").symlink_to(outside)
    (tree / "sub" / "link-to-file").symlink_to(outside / "key")
    warnings: list[str] = []
    calls: list[tuple[int, int]] = []
    done: list[Result] = []
    async with device_session(remote) as (_, console):
        files = await open_files(console, warnings)
        (remote / "dest").mkdir()
        results = await files.push_tree(
            tree, "/dest/project", lambda d, t: calls.append((d, t)), on_file=done.append
        )
    assert read_tree(remote / "dest" / "project") == contents
    assert (remote / "dest" / "project" / "emptydir").is_dir()
    assert not (remote / "dest" / "project" / "link-to-dir").exists()
    assert len(warnings) == 2
    assert all("not followed" in w for w in warnings)
    assert done == results
    assert sorted(r.path for r in results) == sorted(f"/dest/project/{n}" for n in contents)
    total = sum(len(d) for d in contents.values())
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


async def test_pull_tree_skips_symlinks_and_unsafe_names(
    remote: Path, local: Path, tmp_path: Path
) -> None:
    contents = make_tree(remote / "project")
    (remote / "project" / "sub" / "link").symlink_to("/etc/passwd")
    warnings: list[str] = []
    calls: list[tuple[int, int]] = []
    async with device_session(remote) as (device, console):
        device.extra_entries = [("..", "file", 1, 0o644, 0), ("a/b", "file", 1, 0o644, 0)]
        files = await open_files(console, warnings)
        results = await files.pull_tree(
            "/project", local / "copy", lambda d, t: calls.append((d, t))
        )
    assert read_tree(local / "copy") == contents
    assert (local / "copy" / "emptydir").is_dir()
    assert not (local / "copy" / "sub" / "link").exists()
    assert any("sub/link" in w and "symbolic link" in w for w in warnings)
    assert sum("not a safe file name" in w for w in warnings) >= 2
    assert len(results) == len(contents)
    total = sum(len(d) for d in contents.values())
    assert calls[-1] == (total, total)


async def test_pull_tree_does_not_write_through_a_local_symlink(
    remote: Path, local: Path, tmp_path: Path
) -> None:
    make_tree(remote / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (local / "copy").mkdir()
    (local / "copy" / "sub").symlink_to(elsewhere)
    warnings: list[str] = []
    async with device_session(remote) as (_, console):
        files = await open_files(console, warnings)
        await files.pull_tree("/project", local / "copy")
    assert list(elsewhere.iterdir()) == []
    assert any("not a directory" in w for w in warnings)
    assert (local / "copy" / "a.txt").read_bytes() == b"alpha"


# -- the progress display ----------------------------------------------------------------------


def test_sizes_and_times_are_readable() -> None:
    assert format_size(0) == "0 B"
    assert format_size(999) == "999 B"
    assert format_size(1500) == "1.5 kB"
    assert format_size(999_960) == "1.0 MB"
    assert format_size(12_345_678) == "12.3 MB"
    assert format_size(2 * 10**12) == "2.0 TB"
    assert format_size(5 * 10**15) == "5000.0 TB"
    assert format_eta(None) == "--:--"
    assert format_eta(0) == "0:00"
    assert format_eta(75.4) == "1:15"
    assert format_eta(3 * 3600 + 62) == "3:01:02"
    assert format_eta(10**9) == "--:--"


def test_progress_line_fits_its_width() -> None:
    line = format_progress("report.pdf", 25_000_000, 100_000_000, 5_000_000, 15, 80)
    assert line.startswith("report.pdf  25% [")
    assert line.endswith("] 25.0 MB / 100.0 MB  5.0 MB/s  ETA 0:15")
    assert len(line) == 80
    bar = line.split("[")[1].split("]")[0]
    assert bar.count("#") == len(bar) // 4
    done = format_progress("x", 10, 10, None, None, 60)
    assert " 100% [" in done
    assert "--- MB/s  ETA --:--" in done
    assert "-" not in done.split("[")[1].split("]")[0]
    assert (
        format_progress("report.pdf", 25_000_000, 100_000_000, 5_000_000, 15, 50)
        == "report.pdf  25%  5.0 MB/s  ETA 0:15"  # no room for a bar, nor the byte counts
    )
    long_name = "a-very-long-directory-name/" * 5 + "file.bin"
    narrow = format_progress(long_name, 1, 2, 1e6, 1, 50)
    assert len(narrow) <= 50
    assert narrow.startswith("…")
    assert format_progress("empty", 0, 0, None, None, 80).startswith("empty 100%")


def test_progress_bar_throttles_measures_and_clears() -> None:
    now = [100.0]
    stream = io.StringIO()
    bar = ProgressBar("f.bin", stream, clock=lambda: now[0], width=81)
    bar(1_000_000, 11_000_000)  # resumed from 1 MB: not counted in the rate
    first = stream.getvalue()
    assert first.startswith("\r\x1b[K")
    assert "--- MB/s" in first
    for _ in range(20):  # 20 updates in 0.02 s: not redrawn
        now[0] += 0.001
        bar(bar.done + 1000, 11_000_000)
    assert stream.getvalue() == first
    now[0] = 102.0
    bar(5_000_000, 11_000_000)
    assert bar.rate() == pytest.approx(2_000_000)
    line = stream.getvalue()[len(first) :]
    assert " 45% " in line
    assert "2.0 MB/s  ETA 0:03" in line
    assert len(line) == len("\r\x1b[K") + 80
    now[0] = 102.01
    bar(11_000_000, 11_000_000)  # the end is always drawn
    assert "100%" in stream.getvalue().rsplit("\r", 1)[-1]
    bar.finish()
    assert stream.getvalue().endswith("\r\x1b[K")
    size = len(stream.getvalue())
    bar.finish()  # twice is harmless
    assert len(stream.getvalue()) == size


def test_progress_rate_forgets_old_samples() -> None:
    now = [0.0]
    bar = ProgressBar("f", io.StringIO(), clock=lambda: now[0], window=5.0, width=80)
    bar(0, 100_000_000)
    for second in range(1, 11):
        now[0] = float(second)
        bar(second * (1_000_000 if second <= 5 else 4_000_000), 100_000_000)
    # the last five seconds ran at 4 MB/s (the first five at 1 MB/s no longer count)
    assert bar.rate() is not None
    assert 3_000_000 < (bar.rate() or 0) <= 8_000_000


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def cli_device(remote: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    @contextlib.asynccontextmanager
    async def fake_open(args: Any) -> AsyncIterator[FilesClient]:
        async with device_session(remote) as (_, console):
            files = await open_files(console)
            try:
                yield files
            finally:
                await files.close()

    monkeypatch.setattr(cli_files, "_open_files", fake_open)
    return None  # type: ignore[return-value]


async def run_cli(*argv: str) -> int:
    args = cli.build_parser().parse_args(list(argv))
    status: int = await args.run(args)
    return status


async def test_cli_pull_push_and_ls(
    cli_device: None, remote: Path, local: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = blob(50_000, seed=10)
    (remote / "r.bin").write_bytes(data)
    assert await run_cli("files", "pull", "dev", "/r.bin", str(local)) == 0
    assert (local / "r.bin").read_bytes() == data
    out = capsys.readouterr()
    assert out.err == ""  # not a terminal: no progress bar
    assert out.out.strip() == f"pulled /r.bin -> {local / 'r.bin'}  50000 bytes  sha256 {sha(data)}"

    (remote / "inbox").mkdir()
    assert await run_cli("files", "push", "dev", str(local / "r.bin"), "/inbox") == 0
    assert (remote / "inbox" / "r.bin").read_bytes() == data
    assert "sha256 " + sha(data) in capsys.readouterr().out

    assert await run_cli("files", "ls", "dev", "/") == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["MODE", "SIZE", "MODIFIED", "NAME"]
    assert any(line.endswith(" inbox/") and line.startswith("drwx") for line in listing)
    assert await run_cli("files", "ls", "dev", "/", "--json") == 0
    import json

    names = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert names["r.bin"]["size"] == 50_000
    assert names["inbox"]["kind"] == "dir"


async def test_cli_trees_and_housekeeping(
    cli_device: None, remote: Path, local: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contents = make_tree(local / "proj")
    (local / "proj" / "link").symlink_to("/etc/hostname")
    with pytest.raises(cli.CliError, match="-r"):
        await run_cli("files", "push", "dev", str(local / "proj"), "/")
    assert await run_cli("files", "push", "-r", "dev", str(local / "proj"), "/") == 0
    assert read_tree(remote / "proj") == contents
    captured = capsys.readouterr()
    assert "skipped" in captured.err
    assert f"pushed {len(contents)} files" in captured.out

    assert await run_cli("files", "pull", "dev", "-r", "/proj", str(local / "back")) == 0
    assert read_tree(local / "back") == contents
    assert await run_cli("files", "mkdir", "dev", "-p", "/m/n") == 0
    assert await run_cli("files", "mv", "dev", "/m", "/moved") == 0
    assert (remote / "moved" / "n").is_dir()
    assert await run_cli("files", "rm", "dev", "-r", "/moved") == 0
    assert not (remote / "moved").exists()
    with pytest.raises(NotFound):
        await run_cli("files", "rm", "dev", "/moved")


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_cli_draws_a_bar_on_a_terminal(
    cli_device: None,
    remote: Path,
    local: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = blob(300_000, seed=13)
    (remote / "r.bin").write_bytes(data)
    stderr = TerminalStream()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert await run_cli("files", "pull", "dev", "/r.bin", str(local / "copy.bin")) == 0
    drawn = stderr.getvalue()
    assert drawn.startswith("\r\x1b[Kr.bin")
    assert "100% [" in drawn
    assert "MB/s" in drawn
    assert drawn.endswith("\r\x1b[K")  # cleared before the summary line
    assert capsys.readouterr().out.startswith("pulled /r.bin -> ")


# -- against the real agent (agent/files) -------------------------------------------------------


def cut_at(device: FakeDevice, size: int) -> Any:
    """A progress callback that makes the relay cut the session once ``size`` bytes moved."""

    def progress(done: int, total: int) -> None:
        channel = device.channels[len(device.channels)]
        if done >= size and not channel.closed:
            device.cut(channel)

    return progress


async def test_with_the_agent_pull_cut_resumed_and_verified(remote: Path, local: Path) -> None:
    data = blob(3_000_000, seed=20)
    (remote / "big.bin").write_bytes(data)
    source, target = str(remote / "big.bin"), local / "big.bin"
    async with device_session(remote, real_agent=True) as (device, console):
        files = await open_files(console)
        with pytest.raises(TransferInterrupted):
            await files.pull(source, target, cut_at(device, 1_000_000))
        kept = partial_path(target).stat().st_size
        assert 1_000_000 <= kept < len(data)
        assert not target.exists()
        result = await (await open_files(console)).pull(source, target)
    assert result.resumed_from == kept
    assert result.sha256 == sha(data)
    assert target.read_bytes() == data


async def test_with_the_agent_push_cut_resumed_and_verified(remote: Path, local: Path) -> None:
    data = blob(3_000_000, seed=21)
    (local / "up.bin").write_bytes(data)
    target = str(remote / "up.bin")
    async with device_session(remote, real_agent=True) as (device, console):
        files = await open_files(console)
        with pytest.raises(TransferInterrupted):
            await files.push(local / "up.bin", target, cut_at(device, 1_000_000))
        assert not (remote / "up.bin").exists()
        result = await (await open_files(console)).push(local / "up.bin", target)
        assert 0 < result.resumed_from < len(data)
        again = await (await open_files(console)).push(local / "up.bin", target)
    assert result.sha256 == again.sha256 == sha(data)
    assert again.resumed_from == 0  # nothing partial left over
    assert (remote / "up.bin").read_bytes() == data
    assert sorted(os.listdir(remote)) == ["up.bin"]


async def test_with_the_agent_trees_listing_and_refusals(
    remote: Path, local: Path, tmp_path: Path
) -> None:
    contents = make_tree(local / "proj")
    for index in range(80):  # pages of at most LIMITS.max_list
        (local / "proj" / "many" / f"n{index:03d}").parent.mkdir(exist_ok=True)
        (local / "proj" / "many" / f"n{index:03d}").write_bytes(b"%d" % index)
        contents[f"many/n{index:03d}"] = b"%d" % index
    (local / "proj" / "link").symlink_to(tmp_path)
    warnings: list[str] = []
    async with device_session(remote, real_agent=True) as (device, console):
        files = await open_files(console, warnings)
        await files.push_tree(local / "proj", str(remote / "proj"))
        many = str(remote / "proj" / "many")
        assert len(await files.list(many)) == 80
        assert sum(r.op == "list" and r.path == many for r in device.requests) == 3
        (remote / "proj" / "escape").symlink_to(tmp_path)
        await files.pull_tree(str(remote / "proj"), local / "back")
        with pytest.raises(NotPermitted):
            await files.stat(str(tmp_path))
        with pytest.raises(NotFound):
            await files.pull(str(remote / "missing"), local / "missing")
    assert read_tree(remote / "proj") == contents
    assert read_tree(local / "back") == contents
    assert len(warnings) == 2
