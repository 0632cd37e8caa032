"""The relay's own client of a ``files`` session: what the SFTP/SCP gateway asks the device.

One SSH channel running ``sftp`` (or ``scp``) is one :class:`DeviceFiles`: the
technician's leg of one broker session of kind ``files`` (reason ``ssh
gateway (sftp)``), so consent, authorisation, limits and the transfer audit
are those of every other files session. The session is requested on the
channel's first file operation; until the device decides, operations wait
(the client sees nothing but a line on stderr). A refusal fails them with
"permission denied: <reason>" and closes the channel.

It speaks :mod:`protocol.files` as the console does
(``console/files.py``, which the relay may not import):

* one operation at a time on the channel, each with its own request id, which
  every message of that operation carries (``push`` + ``write`` +
  :class:`FileDone`; ``pull`` + its reply + :class:`FileDone`);
* a pull (:class:`Download`) streams into a spool file
  (:mod:`relay.sshgate.spool`) while the client reads what has arrived; its
  size and SHA-256 are checked against the device's :class:`FileDone`, and the
  end of the file is served only once they match;
* a push sends a spool file, resuming after what the device already holds of
  it when the device's hash of that prefix matches ours, then sends its SHA-256
  and waits for the device's verdict.

Flow control, both ways bounded: bytes from the device wait in memory only up
to ``RECEIVE_HIGH`` before they are written to the spool (:meth:`credit` stops
the broker beyond that); bytes for the device are handed to the broker while
fewer than ``SEND_HIGH`` of them are not yet passed on (:meth:`consumed`).

Every wait is bounded: the device's decision (``DECISION_TIMEOUT``), each
answer (``REPLY_TIMEOUT``) and each stretch of a transfer without progress
(``STALL_TIMEOUT``). A device that misses one leaves the channel in an unknown
state, so the session is ended rather than reused.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from protocol import Message
from protocol.errors import ErrorCode
from protocol.files import FileDone, FileOp, FileReply, FileRequest

from ..broker import Session
from ..legs import TechnicianLeg
from ..models import User
from ..state import RelayState
from .session import clean_line
from .spool import SpoolFile, SpoolFull, check_room, spool_dir
from .transfers import STALL_TIMEOUT, Download, FilesError, Upload

__all__ = ["REASON", "DeviceFiles", "TaskHost"]

log = logging.getLogger("helpline.sshgate")

#: The reason every gateway files session carries (audited, shown to the customer).
REASON = "ssh gateway (sftp)"
#: Bytes from the device not yet written to the spool before the device must wait.
RECEIVE_HIGH = 1024 * 1024
#: Bytes given to the broker for the device, not yet passed on, before an upload waits.
SEND_HIGH = 1024 * 1024
#: Bytes read from a spool and sent per step of an upload.
CHUNK = 256 * 1024
#: Seconds for the device's consent decision. The customer's prompt has its own,
#: shorter countdown (30 s by default); this only bounds a device that never answers.
DECISION_TIMEOUT = 300.0
#: Seconds for the answer to one request (hashing a large partial upload takes a while).
REPLY_TIMEOUT = 120.0


class TaskHost(Protocol):
    """Who runs a files session's background tasks: the SSH gateway, or the web console."""

    relay: RelayState

    def spawn(self, coroutine: Coroutine[Any, Any, None], what: str) -> Any: ...


class DeviceFiles(TechnicianLeg):
    """The files session behind one SFTP/SCP channel, and the requests made on it."""

    via = "ssh"
    #: The session request's reason (audited, shown to the customer).
    reason = REASON

    def __init__(
        self,
        gateway: TaskHost,
        user: User,
        device_key: str,
        *,
        notify: Callable[[str], None],
        close_channel: Callable[[int], None],
    ) -> None:
        self.gateway = gateway
        self.broker = gateway.relay.broker
        self.user = user
        self.device_key = device_key
        self.spool_dir = spool_dir(gateway.relay.config.data_dir)
        #: Writes a line on the channel's stderr (for the technician).
        self.notify = notify
        self._close_channel = close_channel
        self.session: Session | None = None
        self._started = False
        self._decided: asyncio.Future[str | None] | None = None  # None: granted; else why not
        self._over: FilesError | None = None  # why no operation can succeed any more
        self._waiting_ops = 0  # operations waiting for the decision
        self._refused = False
        self._lock = asyncio.Lock()  # one operation at a time on the channel
        self._ids = itertools.count(1)
        self._inbox: deque[FileReply | FileDone] = deque()
        self._wake = asyncio.Event()
        self._sink: Download | None = None  # where data from the device goes
        self._outstanding = 0  # bytes for the device not yet passed on by the broker
        self._spools: set[SpoolFile] = set()
        #: The client sent its end of input or the channel closed: nothing more will be asked.
        self.leaving = False
        self.lost = False
        self._finished = False

    # -- the session ------------------------------------------------------------------------------

    def _decision(self) -> asyncio.Future[str | None]:
        if self._decided is None:
            self._decided = asyncio.get_running_loop().create_future()
        return self._decided

    async def _open_session(self) -> None:
        try:
            user = await self.gateway.relay.store.get_user_by_id(self.user.id)
            if user is None or user.disabled:
                await self.refused(None, "denied", ErrorCode.NOT_PERMITTED, "account disabled")
                return
            self.user = user
            session = await self.broker.request(
                user, self.device_key, "files", self.reason, {}, self
            )
        except Exception:
            log.exception("files session request of %s failed", self.user.username)
            await self.refused(None, "failed", ErrorCode.INTERNAL, "internal error in the relay")
            return
        if session is not None:
            self.session = session
            if self._finished and not session.ended:  # the client left while we asked
                await self.broker.tech_closed(session, lost=self.lost)

    async def _ready(self) -> Session:
        """The granted session, once the device decided (the first call asks for it)."""
        if self._over is not None:
            raise self._over
        decided = self._decision()
        if not self._started:
            self._started = True
            self.gateway.spawn(self._open_session(), f"files session for {self.user.username}")
        if not decided.done():
            self._waiting_ops += 1
            try:
                async with asyncio.timeout(DECISION_TIMEOUT):
                    await asyncio.shield(decided)
            except TimeoutError:
                self._break("the device did not answer the session request")
            finally:
                self._waiting_ops -= 1
        if self._over is not None:
            if self._refused:
                self._close_soon(1)  # once this operation's status reached the client
            raise self._over
        assert self.session is not None
        return self.session

    def _break(self, reason: str) -> None:
        """The channel cannot be trusted any more: fail everything and end the session."""
        if self._over is None:
            self._over = FilesError(ErrorCode.INTERNAL, reason, session=True)
            self.notify(f"helpline: {clean_line(reason)}")
        self._wake.set()
        if self._sink is not None:
            self._sink.fail(reason)
        session = self.session
        if session is not None and not session.ended:
            self.gateway.spawn(self.broker.tech_closed(session), "end a files session")
        self._close_soon(255)

    def _close_soon(self, status: int) -> None:
        """Close the SSH channel once the current operation's answer is written."""
        asyncio.get_running_loop().call_soon(self._close_channel, status)

    async def finish(self) -> None:
        """The channel is done (the client left or it closed): end the session, drop spools."""
        if self._finished:
            return
        self._finished = True
        self.leaving = True
        if self._over is None:
            self._over = FilesError(ErrorCode.INTERNAL, "the SFTP session ended", session=True)
        decided = self._decision()
        if not decided.done():
            decided.set_result("the SFTP session ended")
        self._wake.set()
        if self._sink is not None:
            self._sink.abandoned = True
            self._sink.fail("the SFTP session ended")
        for spool in list(self._spools):
            spool.close()
        self._spools.clear()
        session = self.session
        if session is not None and not session.ended:
            await self.broker.tech_closed(session, lost=self.lost)

    # -- the broker's side (TechnicianLeg) ---------------------------------------------------------

    def credit(self) -> int:
        sink = self._sink
        return RECEIVE_HIGH if sink is None else max(0, RECEIVE_HIGH - sink.pending)

    async def waiting(self, session: Session) -> None:
        self.session = session
        if not self._decision().done():
            device = clean_line(session.device.name)
            self.notify(f"helpline: waiting for the customer on {device} to accept...")

    async def refused(self, session: Session | None, state: str, code: int, message: str) -> None:
        decided = self._decision()
        if decided.done():
            return
        text = clean_line(message)
        what = "session denied" if code == ErrorCode.CONSENT_DENIED else "cannot open a session"
        self.notify(f"helpline: {what}: {text}")
        denied = f"permission denied: {text}"
        self._over = FilesError(ErrorCode.CONSENT_DENIED, denied, session=True)
        self._refused = True
        decided.set_result(text)
        if not self._waiting_ops:
            self._close_soon(1)

    async def opened(self, session: Session) -> None:
        self.session = session
        decided = self._decision()
        if not decided.done():
            decided.set_result(None)
        await self.broker.tech_accepted(session)

    async def send(self, data: bytes) -> None:
        sink = self._sink
        if sink is None:
            log.debug("files channel: dropped %d bytes nobody asked for", len(data))
            return
        sink.feed(data)
        self._wake.set()

    async def consumed(self, size: int) -> None:
        self._outstanding = max(0, self._outstanding - size)
        self._wake.set()

    async def message(self, message: Message) -> None:
        if isinstance(message, FileReply | FileDone):
            self._inbox.append(message)
            self._wake.set()

    async def exit_status(self, code: int, signal: str) -> None:
        return None

    async def eof(self) -> None:
        return None

    async def close(self, code: int, message: str) -> None:
        text = clean_line(message)
        if self._over is None:
            self._over = FilesError(ErrorCode.INTERNAL, f"session ended: {text}", session=True)
            self.notify(f"helpline: session ended: {text}")
        decided = self._decision()
        if not decided.done():
            decided.set_result(text)
        self._wake.set()
        if self._sink is not None:
            self._sink.fail(f"session ended: {text}")
        self._close_soon(255)

    # -- requests and answers ---------------------------------------------------------------------

    async def _send(self, session: Session, message: FileRequest | FileDone) -> None:
        if session.ended:
            raise self._over or FilesError(ErrorCode.INTERNAL, "session ended", session=True)
        await self.broker.tech_message(session, message)

    async def _wait(self, seconds: float, what: str) -> None:
        """Until something arrives (data, an answer, credit, the end); ends a stuck session."""
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            self._break(f"the device stopped answering ({what})")

    def _take(self, request_id: int) -> FileReply | FileDone | None:
        """The next message for ``request_id`` (stale ones are dropped), if any."""
        while self._inbox:
            item = self._inbox.popleft()
            if item.id == request_id:
                return item
            log.debug("files channel: dropped a stale %s for request %d", item.TYPE, item.id)
        return None

    async def _answer(self, request_id: int, what: str) -> FileReply | FileDone:
        while True:
            item = self._take(request_id)
            if isinstance(item, FileReply) and not item.ok:
                raise FilesError(item.code or ErrorCode.INTERNAL, item.message or "failed")
            if item is not None:
                return item
            if self._over is not None:
                raise self._over
            await self._wait(REPLY_TIMEOUT, what)

    async def _reply(self, request_id: int, what: str) -> FileReply:
        answer = await self._answer(request_id, what)
        if not isinstance(answer, FileReply):
            self._break(f"the device sent an unexpected {answer.TYPE} ({what})")
            raise self._over or FilesError(ErrorCode.INTERNAL, "protocol error")
        return answer

    async def call(self, op: FileOp, path: str, **fields: object) -> FileReply:
        """One request, one reply (stat, list, mkdir, remove, rename)."""
        session = await self._ready()
        async with self._lock:
            request_id = next(self._ids)
            request = FileRequest(id=request_id, op=op, path=path, **fields)  # type: ignore[arg-type]
            await self._send(session, request)
            return await self._reply(request_id, f"{op} {path}")

    # -- downloads ---------------------------------------------------------------------------------

    async def download(self, path: str, spool: SpoolFile | None = None) -> Download:
        """Start pulling ``path`` (into ``spool``, or a new one); returns once the device
        answered (size, mode, mtime known); the bytes keep arriving in the background."""
        session = await self._ready()
        await self._lock.acquire()  # released when the pull ends (see _receive)
        download: Download | None = None
        try:
            owned = spool is None
            if spool is None:
                spool = await SpoolFile.create(self.spool_dir)
                self._own(spool)
            download = Download(spool, path)
            download.owns_spool = owned
            self._sink = download
            request_id = next(self._ids)
            await self._send(session, FileRequest(id=request_id, op=FileOp.PULL, path=path))
            reply = await self._reply(request_id, f"pull {path}")
        except BaseException:
            self._sink = None
            if download is not None and download.owns_spool:
                self._drop(download.spool)
            self._lock.release()
            raise
        if reply.offset != 0:  # we asked for no resume
            self._sink = None
            if download.owns_spool:
                self._drop(download.spool)
            self._lock.release()
            self._break(f"the device resumed a pull at {reply.offset} unasked")
            raise self._over or FilesError(ErrorCode.INTERNAL, "protocol error")
        download.size, download.mode, download.mtime_ns = reply.size, reply.mode, reply.mtime_ns
        room: FilesError | None = None
        try:
            await asyncio.to_thread(check_room, self.spool_dir, reply.size)
        except SpoolFull as full:
            room = FilesError(ErrorCode.INTERNAL, str(full))
            download.abandoned = True  # the device sends it anyway: drop it as it comes
            download.fail(str(full))
        self.gateway.spawn(self._receive(session, download, request_id), f"pull {path}")
        if room is not None:
            raise room
        return download

    async def _receive(self, session: Session, download: Download, request_id: int) -> None:
        """The data of one pull into its spool, then its verification. Holds the lock."""
        try:
            while True:
                if download.chunks:
                    batch = download.take()
                    if not download.abandoned and download.error is None:
                        try:
                            download.arrived += await download.spool.append(batch, download.hasher)
                        except (OSError, ValueError) as exc:
                            log.warning("spool write for %r failed: %s", download.path, exc)
                            download.fail("the relay could not store the file")
                            download.abandoned = True
                        download.changed()
                    if not session.ended:
                        await self.broker.tech_credit(session)
                    continue
                item = self._take(request_id)
                if isinstance(item, FileDone):
                    self._check_done(download, item)
                    return
                if isinstance(item, FileReply):
                    download.fail(item.message or "the device gave up the transfer")
                    return
                if self._over is not None:
                    download.fail(self._over.message)
                    return
                await self._wait(STALL_TIMEOUT, f"pull {download.path}")
        except Exception:
            log.exception("pull of %r failed", download.path)
            download.fail("internal error in the relay")
            self._break("internal error in the relay")
        finally:
            if self._sink is download:
                self._sink = None
            download.changed()
            if download.abandoned and download.owns_spool:
                self._drop(download.spool)
            self._lock.release()

    def _check_done(self, download: Download, done: FileDone) -> None:
        if download.error is not None:
            return
        digest = download.hasher.hexdigest()
        if download.arrived != done.size or done.size != download.size:
            download.fail(
                f"{download.path}: size mismatch (announced {download.size} bytes,"
                f" received {download.arrived}, the device says {done.size})"
            )
        elif not hmac.compare_digest(digest, done.sha256.lower()):
            download.fail(f"{download.path}: SHA-256 mismatch (the bytes changed in transit)")
        else:
            download.verified = True
            download.changed()
            log.info(
                "gateway pull of %r verified (%d bytes, sha256 %s)",
                download.path,
                done.size,
                digest,
            )
            return
        self.notify(f"helpline: {clean_line(download.error or '')}")

    def close_download(self, download: Download) -> None:
        """The client closed the file: drop it now, or (still arriving) as it ends."""
        if download.over or download.abandoned:
            if download.owns_spool:
                self._drop(download.spool)
        else:
            download.abandoned = True
            download.changed()

    # -- uploads -----------------------------------------------------------------------------------

    async def new_upload(self, path: str, mode: int, mtime_ns: int) -> Upload:
        await asyncio.to_thread(check_room, self.spool_dir, 0)
        spool = await SpoolFile.create(self.spool_dir)
        self._own(spool)
        return Upload(spool, path, mode, mtime_ns)

    async def fill(self, upload: Upload) -> None:
        """Put the device's current ``upload.path`` into the upload's spool (the client
        changes part of an existing file)."""
        download = await self.download(upload.path, upload.spool)
        await download.wait_for(download.size)

    def discard(self, upload: Upload) -> None:
        self._drop(upload.spool)

    async def push(self, upload: Upload) -> str:
        """Send the upload's spool to the device; its SHA-256 once the device verified it."""
        session = await self._ready()
        spool, path, size = upload.spool, upload.path, upload.size
        async with self._lock:
            request_id = next(self._ids)
            fields: dict[str, object] = {
                "path": path,
                "size": size,
                "mode": upload.mode & 0o7777,
                "mtime_ns": upload.mtime_ns,
            }
            push = FileRequest(id=request_id, op=FileOp.PUSH, **fields)  # type: ignore[arg-type]
            await self._send(session, push)
            reply = await self._reply(request_id, f"push {path}")
            start, hasher = 0, hashlib.sha256()
            if 0 < reply.offset <= size and reply.prefix_sha256:
                prefix = await spool.hash_prefix(reply.offset)
                if prefix is not None and hmac.compare_digest(
                    prefix.hexdigest(), reply.prefix_sha256.lower()
                ):
                    start, hasher = reply.offset, prefix
            write = FileRequest(id=request_id, op=FileOp.WRITE, offset=start, **fields)  # type: ignore[arg-type]
            await self._send(session, write)
            position = start
            while position < size:
                early = self._take(request_id)
                if early is not None:  # the device gave up before the end
                    if isinstance(early, FileReply) and not early.ok:
                        raise FilesError(early.code or ErrorCode.INTERNAL, early.message)
                    self._break(f"the device sent an unexpected {early.TYPE} (push {path})")
                if self._over is not None:
                    raise self._over
                if self._outstanding >= SEND_HIGH:
                    await self._wait(STALL_TIMEOUT, f"push {path}")
                    continue
                chunk = await spool.read(position, min(CHUNK, size - position), hasher)
                if not chunk:
                    raise FilesError(ErrorCode.INTERNAL, "the relay's copy of the file shrank")
                # counted first: the broker may report it passed on before tech_data returns
                self._outstanding += len(chunk)
                await self.broker.tech_data(session, chunk)
                position += len(chunk)
            digest = hasher.hexdigest()
            await self._send(session, FileDone(id=request_id, size=size, sha256=digest))
            final = await self._reply(request_id, f"push {path}")
            if not hmac.compare_digest(final.sha256.lower(), digest):
                raise FilesError(
                    ErrorCode.INTERNAL, f"{path}: the device stored other bytes than were sent"
                )
            log.info(
                "gateway push of %r verified (%d bytes from %d, sha256 %s)",
                path,
                size,
                start,
                digest,
            )
            return digest

    # -- spools -----------------------------------------------------------------------------------

    def _own(self, spool: SpoolFile) -> None:
        if self._finished:
            spool.close()
            raise self._over or FilesError(ErrorCode.INTERNAL, "the SFTP session ended")
        self._spools.add(spool)

    def _drop(self, spool: SpoolFile) -> None:
        self._spools.discard(spool)
        spool.close()
