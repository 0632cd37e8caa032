"""The agent's files channel: a real FileService behind a real pair of protocol Connections.

A :class:`Technician` plays the relay's side of a ``files`` channel: it opens
the channel on a relay-side Connection, the agent-side Connection accepts it,
and bytes are pumped between the two in memory (as in
``tests/unit/protocol/protocol_helpers.py``), with the agent's events routed to
the service as the session host routes them. Roots are temporary directories.

Permission failures need permission checks: when the tests run as root (who
ignores permission bits), those scenarios drop the effective uid to ``nobody``
for their duration, and each first checks that the denial is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import shutil
import stat
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.files import ESCAPE, FileRoots, FileService, partial_name
from agent.files import transfer as transfer_module
from protocol import (
    ChannelAccepted,
    ChannelData,
    ChannelMessage,
    ChannelOpened,
    Connection,
    CreditAvailable,
)
from protocol.errors import ErrorCode, NotPermitted
from protocol.files import FileDone, FileReply, FileRequest
from protocol.limits import Limits
from protocol.messages import Message, Role

CHANNEL = 7
NOBODY = 65534


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Technician:
    """The relay's end of one files channel, and the agent's FileService at the other end."""

    def __init__(self, roots: FileRoots, *, limits: Limits | None = None) -> None:
        self.relay = Connection(Role.RELAY, limits=limits, software="relay/test")
        self.agent = Connection(Role.AGENT, limits=limits, software="agent/test")
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.credit = asyncio.Event()
        self.auto_ack = True
        self.keep = True
        self.data = bytearray()
        self.received = 0
        self.unacknowledged = 0
        self.most_unacknowledged = 0
        self.hasher = hashlib.sha256()
        self._next_id = 1
        self._plain_pump()
        self.relay.events_received()
        self.agent.events_received()
        self.relay.open_channel(CHANNEL, "files", {"session": "s-1"})
        self._plain_pump()
        assert isinstance(self.agent.events_received()[0], ChannelOpened)
        self.agent.accept_channel(CHANNEL)
        self._plain_pump()
        assert self.relay.events_received() == [ChannelAccepted(CHANNEL)]
        self.service = FileService(roots, self.agent, CHANNEL, self.pump)

    def _plain_pump(self) -> None:
        busy = True
        while busy:
            busy = False
            for sender, receiver in ((self.relay, self.agent), (self.agent, self.relay)):
                for chunk in sender.data_to_send():
                    busy = True
                    receiver.receive_data(chunk)

    async def pump(self) -> None:
        """Deliver bytes both ways until quiet, routing the agent's events to the service."""
        busy = True
        while busy:
            busy = False
            for chunk in self.agent.data_to_send():
                busy = True
                self.relay.receive_data(chunk)
            for event in self.relay.events_received():
                if isinstance(event, ChannelData):
                    self._take(event.data)
                elif isinstance(event, ChannelMessage):
                    self.messages.put_nowait(event.message)
                elif isinstance(event, CreditAvailable):
                    self.credit.set()
            for chunk in self.relay.data_to_send():
                busy = True
                self.agent.receive_data(chunk)
            for event in self.agent.events_received():
                if isinstance(event, ChannelData):
                    await self.service.handle_data(event.data)
                elif isinstance(event, ChannelMessage):
                    await self.service.handle_message(event.message)
                elif isinstance(event, CreditAvailable):
                    self.service.credit_available()

    def _take(self, data: bytes) -> None:
        self.received += len(data)
        self.hasher.update(data)
        if self.keep:
            self.data += data
        self.unacknowledged += len(data)
        self.most_unacknowledged = max(self.most_unacknowledged, self.unacknowledged)
        if self.auto_ack:
            self.acknowledge()

    def acknowledge(self) -> None:
        if self.unacknowledged:
            self.relay.acknowledge(CHANNEL, self.unacknowledged)
            self.unacknowledged = 0

    def reset_sink(self) -> None:
        self.data = bytearray()
        self.received = 0
        self.hasher = hashlib.sha256()

    # -- speaking --------------------------------------------------------------------------

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def send(self, message: Message) -> None:
        self.relay.send_channel_message(CHANNEL, message)
        await self.pump()

    async def next_message(self) -> Message:
        return await asyncio.wait_for(self.messages.get(), 20)

    async def reply(self, request_id: int) -> FileReply:
        message = await self.next_message()
        assert isinstance(message, FileReply), message
        assert message.id == request_id, message
        return message

    async def request(self, op: str, path: str = "", **fields: Any) -> FileReply:
        request_id = self.new_id()
        await self.send(FileRequest(id=request_id, op=op, path=path, **fields))
        return await self.reply(request_id)

    async def send_bytes(self, data: bytes) -> None:
        """Send ``data`` as the channel's credit allows, waiting for more as needed."""
        view = memoryview(data)
        while view:
            credit = self.relay.send_credit(CHANNEL)
            if credit <= 0:
                self.credit.clear()
                await asyncio.wait_for(self.credit.wait(), 20)
                continue
            size = min(credit, len(view))
            self.relay.send_data(CHANNEL, bytes(view[:size]))
            view = view[size:]
            await self.pump()

    async def pull(
        self, path: str, offset: int = 0, prefix: str = ""
    ) -> tuple[FileReply, Message | None]:
        """A pull: its reply, then (if it started) the FileDone or failure that ends it."""
        self.reset_sink()
        reply = await self.request("pull", path, offset=offset, prefix_sha256=prefix)
        if not reply.ok:
            return reply, None
        end = await self.next_message()
        return reply, end

    async def push(
        self,
        path: str,
        content: bytes,
        *,
        mode: int = 0o644,
        mtime_ns: int = 0,
        cut_after: int | None = None,
        sha: str | None = None,
    ) -> tuple[FileReply, FileReply | None]:
        """A push: its reply, then the answer to FileDone (None when cut short)."""
        request_id = self.new_id()
        request = FileRequest(
            id=request_id, op="push", path=path, size=len(content), mode=mode, mtime_ns=mtime_ns
        )
        await self.send(request)
        first = await self.reply(request_id)
        if not first.ok:
            return first, None
        start = 0
        if first.offset and sha256(content[: first.offset]) == first.prefix_sha256:
            start = first.offset
        await self.send(FileRequest(id=request_id, op="write", path=path, offset=start))
        end = len(content) if cut_after is None else min(len(content), start + cut_after)
        await self.send_bytes(content[start:end])
        if cut_after is not None:
            return first, None
        done = FileDone(id=request_id, size=len(content), sha256=sha or sha256(content))
        await self.send(done)
        return first, await self.reply(request_id)

    async def close(self) -> None:
        await self.service.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_bytes(b"secret")
    return path


@pytest.fixture
async def tech(root: Path) -> Any:
    technician = Technician(FileRoots([str(root)]))
    yield technician
    await technician.close()


async def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def wait_for_size(path: Path, size: int) -> None:
    await wait_until(lambda: path.exists() and path.stat().st_size == size)


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def no_partials(directory: Path) -> bool:
    return not any(p.name.endswith(".helpline-partial") for p in directory.rglob("*"))


# -- FileRoots -----------------------------------------------------------------------------


def test_roots_default_to_the_home_directory() -> None:
    roots = FileRoots([])
    assert roots.roots == (os.path.realpath(os.path.expanduser("~")),)


def test_roots_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="absolute"):
        FileRoots(["relative/dir"])


def test_resolve_places_paths_under_roots(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (root / "a").mkdir()
    roots = FileRoots([str(root), str(other)])
    real = os.path.realpath(root)
    assert roots.resolve("a/x.txt").path == f"{real}/a/x.txt"
    assert roots.resolve("./a/../a/x.txt").path == f"{real}/a/x.txt"
    assert roots.resolve("").path == real
    assert roots.resolve(f"{other}/y").path == f"{os.path.realpath(other)}/y"
    assert roots.resolve(f"/{root}//a/").path == f"{real}/a"


@pytest.mark.parametrize(
    "path",
    ["..", "../x", "a/../../x", "/etc/passwd", "/", "a\0b", "{outside}/secret.txt"],
)
def test_resolve_refuses_lexical_escapes(root: Path, outside: Path, path: str) -> None:
    (root / "a").mkdir()
    roots = FileRoots([str(root)])
    with pytest.raises(NotPermitted, match=ESCAPE):
        roots.resolve(path.format(outside=outside))


def test_resolve_refuses_symbolic_links_anywhere(root: Path, outside: Path) -> None:
    (root / "dirlink").symlink_to(outside)
    (root / "filelink").symlink_to(outside / "secret.txt")
    (root / "inner").mkdir()
    (root / "innerlink").symlink_to(root / "inner")  # even one that stays inside
    roots = FileRoots([str(root)])
    for path in ("dirlink/secret.txt", "filelink", "innerlink/x", "dirlink"):
        with pytest.raises(NotPermitted, match=ESCAPE):
            roots.resolve(path)
    assert roots.resolve("filelink", allow_final_link=True).name == "filelink"


def test_a_directory_swapped_for_a_link_after_the_check_is_not_followed(
    root: Path, outside: Path
) -> None:
    (root / "d").mkdir()
    roots = FileRoots([str(root)])
    resolved = roots.resolve("d/secret.txt")
    (root / "d").rmdir()
    (root / "d").symlink_to(outside)
    with pytest.raises(NotPermitted, match=ESCAPE):
        roots.open_parent(resolved)


def test_a_root_reached_through_a_link_is_known_by_both_names(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    roots = FileRoots([str(tmp_path / "alias")])
    assert roots.roots == (str(real.resolve()),)
    assert roots.resolve(f"{tmp_path}/alias/f").path == f"{real.resolve()}/f"
    assert roots.resolve(f"{real}/f").path == f"{real.resolve()}/f"


# -- stat, list, mkdir, remove, rename -----------------------------------------------------


async def test_stat(tech: Technician, root: Path) -> None:
    (root / "f.txt").write_bytes(b"hello")
    os.utime(root / "f.txt", ns=(1_000_000_000, 1_700_000_000_123_456_789))
    reply = await tech.request("stat", "f.txt")
    assert reply.ok
    assert (reply.kind, reply.size, reply.mtime_ns) == ("file", 5, 1_700_000_000_123_456_789)
    assert stat.S_ISREG(reply.mode)
    assert (await tech.request("stat", "")).kind == "dir"
    missing = await tech.request("stat", "nope")
    assert (missing.ok, missing.code) == (False, ErrorCode.NOT_FOUND)
    assert "nope" in missing.message


async def test_list_reports_kinds_sorted(tech: Technician, root: Path) -> None:
    (root / "b.txt").write_bytes(b"12345")
    (root / "a").mkdir()
    (root / "c").symlink_to("/etc")
    os.mkfifo(root / "d")
    reply = await tech.request("list", "")
    assert reply.ok
    assert not reply.more
    assert [(e[0], e[1]) for e in reply.entries] == [
        ("a", "dir"),
        ("b.txt", "file"),
        ("c", "link"),
        ("d", "other"),
    ]
    _name, _kind, size, mode, mtime_ns = reply.entries[1]
    assert (size, stat.S_IMODE(mode)) == (5, stat.S_IMODE((root / "b.txt").stat().st_mode))
    assert mtime_ns == (root / "b.txt").stat().st_mtime_ns


async def test_list_pages_by_max_list(root: Path) -> None:
    for index in range(120):
        (root / f"f{index:03d}").write_bytes(b"")
    tech = Technician(FileRoots([str(root)]), limits=Limits(max_list=50))
    try:
        names: list[str] = []
        pages = []
        offset = 0
        while True:
            reply = await tech.request("list", "", offset=offset)
            assert reply.ok
            pages.append(len(reply.entries))
            names += [e[0] for e in reply.entries]
            offset += len(reply.entries)
            if not reply.more:
                break
        assert pages == [50, 50, 20]
        assert names == [f"f{index:03d}" for index in range(120)]
    finally:
        await tech.close()


async def test_list_pages_fit_a_control_frame(tech: Technician, root: Path) -> None:
    names = sorted(f"{index:03d}" + "x" * 240 for index in range(300))
    for name in names:
        (root / name).write_bytes(b"")
    listed: list[str] = []
    while True:
        reply = await tech.request("list", "", offset=len(listed))
        assert 0 < len(reply.entries) < 256  # bounded by bytes before max_list
        listed += [e[0] for e in reply.entries]
        if not reply.more:
            break
    assert listed == names


async def test_list_errors(tech: Technician, root: Path) -> None:
    (root / "f").write_bytes(b"")
    assert (await tech.request("list", "f")).code == ErrorCode.CONFLICT
    assert (await tech.request("list", "missing")).code == ErrorCode.NOT_FOUND


async def test_mkdir(tech: Technician, root: Path) -> None:
    reply = await tech.request("mkdir", "new")
    assert reply.ok
    assert reply.kind == "dir"
    assert (root / "new").is_dir()
    again = await tech.request("mkdir", "new")
    assert (again.ok, again.code) == (False, ErrorCode.CONFLICT)
    assert (await tech.request("mkdir", "x/y/z")).code == ErrorCode.NOT_FOUND
    assert (await tech.request("mkdir", "x/y/z", recursive=True)).ok
    assert (root / "x" / "y" / "z").is_dir()
    assert (await tech.request("mkdir", "x/y", recursive=True)).ok  # exists: fine with -p
    (root / "file").write_bytes(b"")
    assert (await tech.request("mkdir", "file/sub", recursive=True)).code == ErrorCode.CONFLICT


async def test_remove(tech: Technician, root: Path, outside: Path) -> None:
    (root / "f").write_bytes(b"x")
    (root / "empty").mkdir()
    tree = root / "tree" / "deep"
    tree.mkdir(parents=True)
    (tree / "g").write_bytes(b"y")
    (tree / "out").symlink_to(outside)  # removed as a link, never followed
    assert (await tech.request("remove", "f")).ok
    assert not (root / "f").exists()
    assert (await tech.request("remove", "empty")).ok
    refused = await tech.request("remove", "tree")
    assert (refused.ok, refused.code) == (False, ErrorCode.CONFLICT)
    assert "not empty" in refused.message
    assert (await tech.request("remove", "tree", recursive=True)).ok
    assert not (root / "tree").exists()
    assert (outside / "secret.txt").read_bytes() == b"secret"
    assert (await tech.request("remove", "f")).code == ErrorCode.NOT_FOUND
    assert (await tech.request("remove", "")).code == ErrorCode.NOT_PERMITTED


async def test_rename(tech: Technician, root: Path) -> None:
    (root / "a.txt").write_bytes(b"a")
    (root / "b.txt").write_bytes(b"b")
    (root / "dir").mkdir()
    assert (await tech.request("rename", "a.txt", target="dir/c.txt")).ok
    assert (root / "dir" / "c.txt").read_bytes() == b"a"
    taken = await tech.request("rename", "b.txt", target="dir/c.txt")
    assert (taken.ok, taken.code) == (False, ErrorCode.CONFLICT)
    assert (root / "dir" / "c.txt").read_bytes() == b"a"
    assert (await tech.request("rename", "nope", target="x")).code == ErrorCode.NOT_FOUND
    inside = await tech.request("rename", "dir", target="dir/sub")
    assert inside.code == ErrorCode.INVALID_MESSAGE
    assert (await tech.request("rename", "b.txt")).code == ErrorCode.INVALID_MESSAGE


async def test_requests_are_answered_in_order(tech: Technician, root: Path) -> None:
    (root / "f").write_bytes(b"x")
    ids = [tech.new_id() for _ in range(20)]
    for request_id in ids:
        tech.relay.send_channel_message(
            CHANNEL, FileRequest(id=request_id, op="stat", path="f" if request_id % 2 else "no")
        )
    await tech.pump()
    answers = [await tech.next_message() for _ in ids]
    assert [a.id for a in answers] == ids  # type: ignore[attr-defined]
    assert [a.ok for a in answers] == [bool(i % 2) for i in ids]  # type: ignore[attr-defined]


# -- pull ----------------------------------------------------------------------------------


async def test_pull_whole(tech: Technician, root: Path) -> None:
    content = random.randbytes(700_000)
    (root / "f.bin").write_bytes(content)
    os.chmod(root / "f.bin", 0o640)
    reply, end = await tech.pull("f.bin")
    assert reply.ok
    assert (reply.size, reply.offset, stat.S_IMODE(reply.mode)) == (len(content), 0, 0o640)
    assert reply.mtime_ns == (root / "f.bin").stat().st_mtime_ns
    assert end == FileDone(id=reply.id, size=len(content), sha256=sha256(content))
    assert bytes(tech.data) == content


async def test_pull_empty_file(tech: Technician, root: Path) -> None:
    (root / "empty").write_bytes(b"")
    reply, end = await tech.pull("empty")
    assert reply.ok
    assert end == FileDone(id=reply.id, size=0, sha256=sha256(b""))


async def test_pull_resumes_from_a_matching_prefix(tech: Technician, root: Path) -> None:
    content = random.randbytes(1_000_000)
    (root / "f.bin").write_bytes(content)
    have = 300_001
    reply, end = await tech.pull("f.bin", offset=have, prefix=sha256(content[:have]))
    assert reply.offset == have
    assert bytes(tech.data) == content[have:]
    assert end == FileDone(id=reply.id, size=len(content), sha256=sha256(content))


@pytest.mark.parametrize("case", ["wrong prefix", "no prefix", "beyond the end"])
async def test_pull_restarts_when_the_prefix_does_not_match(
    tech: Technician, root: Path, case: str
) -> None:
    content = random.randbytes(200_000)
    (root / "f.bin").write_bytes(content)
    offset, prefix = {
        "wrong prefix": (50_000, sha256(b"something else")),
        "no prefix": (50_000, ""),
        "beyond the end": (300_000, sha256(content)),
    }[case]
    reply, end = await tech.pull("f.bin", offset=offset, prefix=prefix)
    assert reply.offset == 0
    assert bytes(tech.data) == content
    assert isinstance(end, FileDone)
    assert end.sha256 == sha256(content)


async def test_pull_refuses_what_is_not_a_regular_file(tech: Technician, root: Path) -> None:
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")  # opening it for reading must not hang
    for path in ("dir", "fifo", ""):
        reply, _ = await tech.pull(path)
        assert (reply.ok, reply.code) == (False, ErrorCode.CONFLICT), path
    reply, _ = await tech.pull("missing")
    assert reply.code == ErrorCode.NOT_FOUND


async def test_closing_during_a_pull_stops_it(root: Path) -> None:
    (root / "big").write_bytes(random.randbytes(1_000_000))
    tech = Technician(FileRoots([str(root)]), limits=Limits(channel_window=65536))
    tech.auto_ack = False
    reply = await tech.request("pull", "big")
    assert reply.ok
    await wait_until(lambda: tech.received == 65536)
    await tech.close()
    assert tech.service.closed
    assert tech.received == 65536
    assert tech.messages.empty()


# -- push ----------------------------------------------------------------------------------


async def test_push_whole(tech: Technician, root: Path) -> None:
    content = random.randbytes(600_000)
    mtime = 1_600_000_000_987_654_321
    first, last = await tech.push("dir/f.bin", content, mode=0o640, mtime_ns=mtime)
    assert first.code == ErrorCode.NOT_FOUND  # no such directory: refused at the push step
    (root / "dir").mkdir()
    first, last = await tech.push("dir/f.bin", content, mode=0o640, mtime_ns=mtime)
    assert first.ok
    assert (first.offset, first.prefix_sha256) == (0, sha256(b""))
    assert last is not None
    assert last.ok
    assert (last.sha256, last.size) == (sha256(content), len(content))
    target = root / "dir" / "f.bin"
    assert target.read_bytes() == content
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.stat().st_mtime_ns == mtime
    assert no_partials(root)


async def test_push_replaces_an_existing_file_only_when_verified(
    tech: Technician, root: Path
) -> None:
    (root / "f").write_bytes(b"old")
    await tech.push("f", b"new content", cut_after=4)
    await wait_for_size(root / partial_name("f"), 4)
    assert (root / "f").read_bytes() == b"old"
    await tech.close()
    again = Technician(FileRoots([str(root)]))
    try:
        first, last = await again.push("f", b"new content")
        assert first.offset == 4
        assert last is not None
        assert last.ok
        assert (root / "f").read_bytes() == b"new content"
    finally:
        await again.close()


async def test_push_empty_file(tech: Technician, root: Path) -> None:
    _, last = await tech.push("empty", b"")
    assert last is not None
    assert last.ok
    assert (root / "empty").read_bytes() == b""


async def test_push_resumes_after_a_cut(root: Path) -> None:
    content = random.randbytes(3 * 1024 * 1024)
    limits = Limits(channel_window=65536)
    tech = Technician(FileRoots([str(root)]), limits=limits)
    first, _ = await tech.push("f.bin", content, cut_after=1024 * 1024)
    assert first.offset == 0
    await tech.close()  # the connection dropped mid-transfer
    assert not (root / "f.bin").exists()
    partial = root / partial_name("f.bin")
    kept = partial.stat().st_size
    assert 1024 * 1024 - 65536 <= kept <= 1024 * 1024
    assert stat.S_IMODE(partial.stat().st_mode) == 0o600
    tech = Technician(FileRoots([str(root)]), limits=limits)
    try:
        first, last = await tech.push("f.bin", content)
        assert (first.offset, first.prefix_sha256) == (kept, sha256(content[:kept]))
        assert last is not None
        assert last.ok
        assert last.sha256 == sha256(content)
    finally:
        await tech.close()
    assert (root / "f.bin").read_bytes() == content
    assert no_partials(root)


async def test_push_survives_many_cuts(root: Path) -> None:
    content = random.randbytes(1024 * 1024 + 17)
    limits = Limits(channel_window=32768)
    rng = random.Random(4)
    for _ in range(12):
        tech = Technician(FileRoots([str(root)]), limits=limits)
        try:
            await tech.push("f.bin", content, cut_after=rng.randrange(0, 200_000))
        finally:
            await tech.close()
        assert not (root / "f.bin").exists()  # never a partial file under the real name
    tech = Technician(FileRoots([str(root)]), limits=limits)
    try:
        first, last = await tech.push("f.bin", content)
        assert first.offset > 0
        assert last is not None
        assert last.ok
    finally:
        await tech.close()
    assert (root / "f.bin").read_bytes() == content
    assert no_partials(root)


async def test_a_partial_that_is_not_a_prefix_is_started_over(tech: Technician, root: Path) -> None:
    content = b"the real content"
    (root / partial_name("f")).write_bytes(b"corrupted")
    os.chmod(root / partial_name("f"), 0o600)
    first, last = await tech.push("f", content)
    assert (first.offset, first.prefix_sha256) == (9, sha256(b"corrupted"))
    assert last is not None
    assert last.ok  # the technician saw the mismatch and wrote from 0, which truncates
    assert (root / "f").read_bytes() == content
    assert no_partials(root)


async def test_a_partial_larger_than_announced_is_started_over(
    tech: Technician, root: Path
) -> None:
    (root / partial_name("f")).write_bytes(b"x" * 100)
    os.chmod(root / partial_name("f"), 0o600)
    first, last = await tech.push("f", b"short")
    assert first.offset == 0
    assert last is not None
    assert last.ok
    assert (root / "f").read_bytes() == b"short"


async def test_hash_mismatch_is_rejected(tech: Technician, root: Path) -> None:
    content = random.randbytes(100_000)
    _, last = await tech.push("f.bin", content, sha=sha256(b"other"))
    assert last is not None
    assert (last.ok, last.code) == (False, ErrorCode.INVALID_MESSAGE)
    assert "hash mismatch" in last.message
    assert not (root / "f.bin").exists()
    assert no_partials(root)


async def test_size_mismatch_is_rejected(tech: Technician, root: Path) -> None:
    request_id = tech.new_id()
    await tech.send(FileRequest(id=request_id, op="push", path="f", size=10))
    assert (await tech.reply(request_id)).ok
    await tech.send(FileRequest(id=request_id, op="write", path="f"))
    await tech.send_bytes(b"12345")
    await tech.send(FileDone(id=request_id, size=10, sha256=sha256(b"12345")))
    reply = await tech.reply(request_id)
    assert (reply.ok, reply.code) == (False, ErrorCode.INVALID_MESSAGE)
    assert not (root / "f").exists()


async def test_push_step_errors(tech: Technician, root: Path) -> None:
    (root / "dir").mkdir()
    (root / "file").write_bytes(b"")
    os.mkfifo(root / "fifo")
    cases = {
        "dir": ErrorCode.CONFLICT,
        "": ErrorCode.CONFLICT,
        "fifo": ErrorCode.CONFLICT,
        "missing/f": ErrorCode.NOT_FOUND,
        "file/f": ErrorCode.CONFLICT,
    }
    for path, code in cases.items():
        first, _ = await tech.push(path, b"data")
        assert (first.ok, first.code) == (False, code), path
    assert (root / "dir").is_dir()


async def test_two_transfers_to_one_file_do_not_mix(root: Path) -> None:
    one = Technician(FileRoots([str(root)]))
    two = Technician(FileRoots([str(root)]))
    try:
        await one.push("f", b"a" * 100, cut_after=10)
        first, _ = await two.push("f", b"b" * 100)
        assert (first.ok, first.code) == (False, ErrorCode.CONFLICT)
    finally:
        await one.close()
        await two.close()


# -- a technician that does it wrong -------------------------------------------------------


async def test_data_without_a_write_is_refused_and_acknowledged(root: Path) -> None:
    tech = Technician(FileRoots([str(root)]), limits=Limits(channel_window=65536))
    try:
        await tech.send_bytes(b"z" * 65536)
        reply = await tech.next_message()
        assert isinstance(reply, FileReply)
        assert (reply.ok, reply.code) == (False, ErrorCode.INVALID_MESSAGE)
        assert "without a write" in reply.message
        for _ in range(50):
            await tech.pump()
            if tech.relay.send_credit(CHANNEL) == 65536:
                break
            await asyncio.sleep(0.01)
        assert tech.relay.send_credit(CHANNEL) == 65536  # the window did not leak
        assert (await tech.request("stat", "")).ok  # one error, then business as usual
        assert names(root) == []
    finally:
        await tech.close()


async def test_write_without_push(tech: Technician) -> None:
    await tech.send(FileRequest(id=5, op="write", path="f"))
    reply = await tech.reply(5)
    assert (reply.ok, reply.code) == (False, ErrorCode.INVALID_MESSAGE)
    await tech.send_bytes(b"ignored")
    await tech.send(FileDone(id=5, size=7, sha256=sha256(b"ignored")))
    assert (await tech.request("stat", "")).ok  # nothing else was answered in between


async def test_write_beyond_the_partial(tech: Technician, root: Path) -> None:
    request_id = tech.new_id()
    await tech.send(FileRequest(id=request_id, op="push", path="f", size=100))
    assert (await tech.reply(request_id)).offset == 0
    await tech.send(FileRequest(id=request_id, op="write", path="f", offset=50))
    reply = await tech.reply(request_id)
    assert (reply.ok, reply.code) == (False, ErrorCode.INVALID_MESSAGE)
    assert "beyond the partial" in reply.message


async def test_more_data_than_announced(tech: Technician, root: Path) -> None:
    request_id = tech.new_id()
    await tech.send(FileRequest(id=request_id, op="push", path="f", size=10))
    await tech.reply(request_id)
    await tech.send(FileRequest(id=request_id, op="write", path="f"))
    await tech.send_bytes(b"0123456789abcdef")
    reply = await tech.reply(request_id)
    assert (reply.ok, reply.code) == (False, ErrorCode.INVALID_MESSAGE)
    assert "announced" in reply.message
    await tech.send(FileDone(id=request_id, size=10, sha256=sha256(b"0123456789")))
    assert (await tech.request("stat", "")).ok  # the FileDone got no second answer
    assert not (root / "f").exists()


async def test_done_without_an_upload(tech: Technician) -> None:
    await tech.send(FileDone(id=9, size=0, sha256=sha256(b"")))
    reply = await tech.reply(9)
    assert (reply.ok, reply.code) == (False, ErrorCode.INVALID_MESSAGE)


# -- escapes -------------------------------------------------------------------------------


@pytest.fixture
def trap(root: Path, outside: Path) -> Path:
    (root / "dirlink").symlink_to(outside)
    (root / "filelink").symlink_to(outside / "secret.txt")
    (root / "a.txt").write_bytes(b"a")
    return outside


ESCAPES = [
    "../outside/secret.txt",
    "{outside}/secret.txt",
    "dirlink/secret.txt",
    "filelink",
    "nul\0byte",
    "a.txt/../../outside/secret.txt",
]


@pytest.mark.parametrize("path", ESCAPES)
async def test_escapes_are_refused_for_every_operation(
    tech: Technician, root: Path, trap: Path, path: str
) -> None:
    path = path.format(outside=trap)
    before = names(trap)
    replies = {
        "pull": (await tech.pull(path))[0],
        "push": (await tech.push(path, b"evil"))[0],
        "list": await tech.request("list", path),
        "stat": await tech.request("stat", path) if path != "filelink" else None,
        "mkdir": await tech.request("mkdir", path, recursive=True),
        "remove": await tech.request("remove", path, recursive=True),
        "rename source": await tech.request("rename", path, target="stolen.txt"),
        "rename target": await tech.request("rename", "a.txt", target=path),
    }
    for op, reply in replies.items():
        if reply is None:
            continue
        assert (reply.ok, reply.code) == (False, ErrorCode.NOT_PERMITTED), (op, reply)
        assert ESCAPE in reply.message, (op, reply)
    assert names(trap) == before
    assert (trap / "secret.txt").read_bytes() == b"secret"
    assert (root / "a.txt").read_bytes() == b"a"
    assert not (root / "stolen.txt").exists()


async def test_a_link_itself_is_only_reported(tech: Technician, root: Path, trap: Path) -> None:
    for path in ("filelink", "dirlink"):
        reply = await tech.request("stat", path)
        assert (reply.ok, reply.kind) == (True, "link")
    listing = await tech.request("list", "dirlink")
    assert listing.code == ErrorCode.NOT_PERMITTED
    assert (root / "dirlink").is_symlink()


async def test_a_link_planted_as_the_partial_file_is_not_followed(
    tech: Technician, root: Path, outside: Path
) -> None:
    (outside / "victim").write_bytes(b"victim")
    (root / partial_name("f.txt")).symlink_to(outside / "victim")
    first, _ = await tech.push("f.txt", b"evil data")
    assert (first.ok, first.code) == (False, ErrorCode.NOT_PERMITTED)
    assert (outside / "victim").read_bytes() == b"victim"
    assert not (root / "f.txt").exists()


async def test_a_hard_link_planted_as_the_partial_file_is_refused(
    tech: Technician, root: Path
) -> None:
    (root / "precious").write_bytes(b"precious")
    os.link(root / "precious", root / partial_name("f.txt"))
    first, _ = await tech.push("f.txt", b"")
    assert (first.ok, first.code) == (False, ErrorCode.NOT_PERMITTED)
    assert (root / "precious").read_bytes() == b"precious"


# -- permissions ---------------------------------------------------------------------------


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Permission bits apply for the duration (root drops its effective uid to nobody)."""
    if os.geteuid() != 0:
        yield
        return
    groups = os.getgroups()
    os.setgroups([])
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


@pytest.fixture
def owned_root() -> Iterator[Path]:
    """A root the unprivileged user owns (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="helpline-files-"))
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        for directory, _dirs, _files in os.walk(path):
            os.chmod(directory, 0o700)
        shutil.rmtree(path)


def _make(path: Path, mode: int, content: bytes | None = None) -> None:
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    os.chmod(path, mode)


async def test_unreadable_files_and_directories(owned_root: Path) -> None:
    _make(owned_root / "locked.txt", 0o000, b"private")
    _make(owned_root / "closed", 0o000)
    _make(owned_root / "nosearch", 0o600)
    tech = Technician(FileRoots([str(owned_root)]))
    try:
        with unprivileged():
            with pytest.raises(PermissionError):  # the denial is real
                (owned_root / "locked.txt").read_bytes()
            reply, _ = await tech.pull("locked.txt")
            assert (reply.ok, reply.code) == (False, ErrorCode.NOT_PERMITTED)
            assert "permission denied" in reply.message
            listing = await tech.request("list", "closed")
            assert (listing.ok, listing.code) == (False, ErrorCode.NOT_PERMITTED)
            reply, _ = await tech.pull("nosearch/anything")
            assert (reply.ok, reply.code) == (False, ErrorCode.NOT_PERMITTED)
    finally:
        await tech.close()


async def test_a_destination_that_is_not_writable(owned_root: Path) -> None:
    _make(owned_root / "readonly", 0o755)
    _make(owned_root / "readonly" / "existing", 0o644, b"old")
    os.chmod(owned_root / "readonly", 0o555)  # noqa: S103 - read-only is the point
    tech = Technician(FileRoots([str(owned_root)]))
    try:
        with unprivileged():
            with pytest.raises(PermissionError):  # the denial is real
                (owned_root / "readonly" / "probe").write_bytes(b"")
            for path in ("readonly/new.txt", "readonly/existing"):
                first, _ = await tech.push(path, b"content")
                assert (first.ok, first.code) == (False, ErrorCode.NOT_PERMITTED), path
            mkdir = await tech.request("mkdir", "readonly/sub")
            assert mkdir.code == ErrorCode.NOT_PERMITTED
            remove = await tech.request("remove", "readonly/existing")
            assert remove.code == ErrorCode.NOT_PERMITTED
    finally:
        await tech.close()
    assert names(owned_root / "readonly") == ["existing"]
    assert (owned_root / "readonly" / "existing").read_bytes() == b"old"


# -- flow control and memory ---------------------------------------------------------------

WINDOW = 65536
BIG = 4 * 1024 * 1024


async def test_pull_stops_at_the_window_and_holds_little_memory(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = random.randbytes(BIG)
    (root / "big").write_bytes(content)
    digest = sha256(content)
    del content
    reads: list[int] = []
    original = transfer_module.Source.read

    def spy(self: transfer_module.Source, position: int, size: int) -> bytes:
        reads.append(size)
        return original(self, position, size)

    monkeypatch.setattr(transfer_module.Source, "read", spy)
    tech = Technician(FileRoots([str(root)]), limits=Limits(channel_window=WINDOW))
    tech.keep = False
    try:
        tech.auto_ack = False
        tracemalloc.start()
        reply = await tech.request("pull", "big")
        assert reply.ok
        await wait_until(lambda: tech.received >= WINDOW)
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert tech.received == WINDOW  # the agent stopped at the window...
        tech.auto_ack = True
        tech.acknowledge()
        await tech.pump()
        end = await tech.next_message()  # ...and went on as it was granted more
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await tech.close()
    assert end == FileDone(id=reply.id, size=BIG, sha256=digest)
    assert tech.hasher.hexdigest() == digest
    assert tech.received == BIG
    assert max(reads) <= WINDOW  # never read ahead of the credit
    assert tech.most_unacknowledged <= WINDOW
    assert peak < 1024 * 1024, peak


async def test_push_under_a_small_window_holds_little_memory(root: Path) -> None:
    content = random.randbytes(BIG)
    tech = Technician(FileRoots([str(root)]), limits=Limits(channel_window=WINDOW))
    try:
        tracemalloc.start()
        first, last = await tech.push("big", content)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await tech.close()
    assert first.ok
    assert last is not None
    assert last.ok
    assert (root / "big").read_bytes() == content
    assert peak < 1024 * 1024, peak
