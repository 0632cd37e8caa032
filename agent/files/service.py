"""One ``files`` channel on the agent: requests answered in order, bytes moved under flow control.

The session host feeds a :class:`FileService` what arrives on its channel
(``handle_message``, ``handle_data``, ``credit_available``) and calls
``close`` when the channel goes. Those calls only queue work: one worker task
runs the operations one at a time, in the order they arrived, data frames
included, and does every blocking file system call in a worker thread.

Nothing raises out of the service: a failed operation is answered with
``FileReply(ok=False, code=..., message=...)``, a stable code and a safe text.

Pull: the reply (size, mode, mtime, resume offset), data frames sent only as
the channel's credit allows (never more read than the credit, one chunk at a
time), then ``FileDone`` with the SHA-256 of the whole file. A pull that
cannot finish (the file shrank, a read failed) ends with ``FileReply(ok=False)``
instead of ``FileDone``.

Push: ``push`` is answered with what a partial upload already holds;
``write`` gets no answer unless it fails; data frames are written in order and
acknowledged once written; ``FileDone`` is answered once the file is verified
and in place. Each write phase gets exactly one answer: when it fails early
(bad ``write``, more data than announced, a write error), that answer comes
at once and the rest of its data (acknowledged, discarded) and its
``FileDone`` are dropped silently. Data with no write in progress at all is
acknowledged, discarded and answered with one error.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from protocol.channels import ACK_STEP
from protocol.connection import Connection
from protocol.errors import Conflict, HelplineError, InvalidMessage, UsageError
from protocol.files import FileDone, FileOp, FileReply, FileRequest
from protocol.limits import Limits
from protocol.messages import Message

from .failures import failure_reply
from .operations import (
    ListingCache,
    info_reply,
    list_directory,
    make_directory,
    remove,
    rename,
    stat_path,
)
from .roots import FileRoots
from .transfer import CHUNK, Source, Upload, open_source, open_upload

__all__ = ["FileService", "Flush"]

log = logging.getLogger("helpline.agent.files")

Flush = Callable[[], Awaitable[None]]
T = TypeVar("T")

#: Consecutive data frames written in one worker-thread call, at most.
_WRITE_BATCH = 1024 * 1024
#: Seconds ``close`` waits for the current step to finish before cancelling it.
_CLOSE_WAIT = 5.0
#: Room kept in a control frame beside a listing page's names.
_REPLY_MARGIN = 4096
#: Bytes of a download kept in flight while a shell shares the connection (the whole
#: window otherwise): a keystroke's echo queues behind at most this much on the way to the
#: relay. More than the relay's acknowledgement step (protocol.channels.ACK_STEP), so
#: credit keeps coming back.
IN_FLIGHT_BESIDE_A_SHELL = 2 * ACK_STEP

_Item = FileRequest | FileDone | bytes


class FileService:
    """Serves one ``files`` channel of ``conn`` from the directories in ``roots``."""

    def __init__(
        self,
        roots: FileRoots,
        conn: Connection,
        channel: int,
        flush: Flush,
        shell_beside: Callable[[], bool] = lambda: False,
    ) -> None:
        self.roots = roots
        self.conn = conn
        self.channel = channel
        self._flush = flush
        #: Whether a shell session shares the connection now.
        self._shell_beside = shell_beside
        #: The peer's window on this channel: the most credit ever seen (the first look, at
        #: the start of the first download, sees it whole).
        self._window = 0
        self._items: deque[_Item] = deque()
        self._ready = asyncio.Event()
        self._credit = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[Any] | None = None
        self._upload: Upload | None = None
        self._source: Source | None = None
        #: The write phase that already got its (error) answer: its data and FileDone are dropped.
        self._failed_id: int | None = None
        self._last_id = 0
        self._stray_reported = False
        self._listing = ListingCache()
        control = min(conn.limits.max_control_size, Limits().max_control_size)
        self._list_bytes = max(1024, control - _REPLY_MARGIN)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- what the session host calls ------------------------------------------------------

    async def handle_message(self, message: Message) -> None:
        """A ``FileRequest`` or ``FileDone`` from the technician (anything else is ignored)."""
        if self._closed:
            return
        if isinstance(message, FileRequest | FileDone):
            self._enqueue(message)
        else:
            log.debug("files channel %d: ignored %s", self.channel, message.TYPE)

    async def handle_data(self, data: bytes) -> None:
        """Bytes of the current push; acknowledged once written (or discarded)."""
        if not self._closed and data:
            self._enqueue(data)

    def credit_available(self) -> None:
        """The technician granted more window on this channel."""
        self._credit.set()

    async def close(self) -> None:
        """The channel is gone: stop at the next step. Partial uploads stay for a resume."""
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        self._credit.set()
        task = self._task
        if task is None:
            self._release()
        elif task is not asyncio.current_task():
            await asyncio.wait({task}, timeout=_CLOSE_WAIT)
            if not task.done():  # stuck flushing to a dead transport, say
                task.cancel()

    # -- the worker ----------------------------------------------------------------------------

    def _enqueue(self, item: _Item) -> None:
        self._items.append(item)
        self._ready.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"files-channel-{self.channel}"
            )

    def _stopped(self) -> bool:
        return self._closed

    async def _next(self) -> _Item | None:
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return None if self._closed else self._items.popleft()

    def _batch(self, first: bytes) -> list[bytes]:
        batch, total = [first], len(first)
        while self._items and isinstance(self._items[0], bytes) and total < _WRITE_BATCH:
            chunk = self._items.popleft()
            assert isinstance(chunk, bytes)
            batch.append(chunk)
            total += len(chunk)
        return batch

    async def _run(self) -> None:
        try:
            while True:
                item = await self._next()
                if item is None:
                    break
                try:
                    if isinstance(item, bytes):
                        await self._receive(self._batch(item))
                    elif isinstance(item, FileRequest):
                        await self._request(item)
                    else:
                        await self._done(item)
                except UsageError:
                    break  # the channel or the connection is going away
                except Exception:
                    log.exception("files channel %d: operation failed", self.channel)
                    if not isinstance(item, bytes):
                        await self._reply(failure_reply(item.id, RuntimeError()))
        except UsageError:
            pass
        except Exception:
            log.exception("files channel %d: stopped", self.channel)
        finally:
            self._closed = True
            self._release()

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in a worker thread; descriptors it uses outlive a cancellation."""
        future = asyncio.ensure_future(asyncio.to_thread(function, *args))
        self._inflight = future
        try:
            return await asyncio.shield(future)
        finally:
            if future.done():
                self._inflight = None

    def _release(self) -> None:
        """Close the descriptors of the current transfer, once no thread uses them."""
        upload, self._upload = self._upload, None
        source, self._source = self._source, None
        self._after_inflight(upload, source)

    def _after_inflight(self, *transfers: Upload | Source | None) -> None:
        def close(_: object = None) -> None:
            for transfer in transfers:
                if transfer is not None:
                    transfer.close()

        inflight = self._inflight
        if inflight is None or inflight.done():
            close()
            return

        def later(future: asyncio.Future[Any]) -> None:
            if not future.cancelled():
                future.exception()  # retrieved: it is logged nowhere else
            close()

        inflight.add_done_callback(later)

    async def _reply(self, message: FileReply | FileDone) -> None:
        self.conn.send_channel_message(self.channel, message)
        await self._flush()

    async def _fail(self, request_id: int, error: BaseException, path: str = "") -> None:
        if not isinstance(error, OSError | HelplineError):
            log.error("files channel %d: %r", self.channel, error, exc_info=error)
        await self._reply(failure_reply(request_id, error, path))

    # -- requests ------------------------------------------------------------------------------

    async def _request(self, request: FileRequest) -> None:
        self._last_id = request.id
        self._stray_reported = False
        op = request.op
        if op == FileOp.PULL:
            await self._pull(request)
        elif op == FileOp.PUSH:
            await self._push(request)
        elif op == FileOp.WRITE:
            await self._write(request)
        else:
            await self._simple(request)

    async def _simple(self, request: FileRequest) -> None:
        op = request.op
        path = request.path
        if op == FileOp.LIST:
            call: Callable[[], FileReply] = partial(
                list_directory,
                self.roots,
                request,
                self._listing,
                max_entries=self.conn.limits.max_list,
                max_bytes=self._list_bytes,
            )
        elif op == FileOp.STAT:
            call = partial(stat_path, self.roots, request)
        elif op == FileOp.MKDIR:
            call = partial(make_directory, self.roots, request)
        elif op == FileOp.REMOVE:
            call = partial(remove, self.roots, request)
        else:
            call = partial(rename, self.roots, request)
            path = f"{request.path} -> {request.target}"
        try:
            reply = await self._in_thread(call)
        except Exception as error:
            await self._fail(request.id, error, path)
            return
        if op != FileOp.STAT and op != FileOp.LIST:
            log.info("files channel %d: %s %r done", self.channel, op, path)
        await self._reply(reply)

    # -- pull --------------------------------------------------------------------------------

    async def _pull(self, request: FileRequest) -> None:
        try:
            source = await self._in_thread(open_source, self.roots, request, self._stopped)
        except Exception as error:
            await self._fail(request.id, error, request.path)
            return
        self._source = source
        try:
            await self._reply(info_reply(request.id, source.info, offset=source.offset))
            position = source.offset
            while position < source.size:
                if self._closed:
                    return
                credit = self._room()
                if credit <= 0:
                    self._credit.clear()
                    await self._credit.wait()
                    continue
                size = min(CHUNK, credit, source.size - position)
                try:
                    data = await self._in_thread(source.read, position, size)
                except OSError as error:
                    await self._fail(request.id, error, request.path)
                    return
                if self._closed:
                    return
                if not data:
                    await self._fail(
                        request.id, Conflict("the file shrank during the transfer"), request.path
                    )
                    return
                self.conn.send_data(self.channel, data)
                position += len(data)
                await self._flush()
            digest = source.hasher.hexdigest()
            await self._reply(FileDone(id=request.id, size=position, sha256=digest))
            log.info(
                "files channel %d: sent %r (%d bytes from %d, sha256 %s)",
                self.channel,
                request.path,
                position,
                source.offset,
                digest,
            )
        finally:
            if self._source is source:
                self._source = None
                self._after_inflight(source)

    def _room(self) -> int:
        """Bytes the download may send now: the credit, less while a shell is beside it."""
        credit = self.conn.send_credit(self.channel)
        self._window = max(self._window, credit)
        if not self._shell_beside():
            return credit
        return min(credit, IN_FLIGHT_BESIDE_A_SHELL - (self._window - credit))

    # -- push --------------------------------------------------------------------------------

    def _abandon_upload(self) -> None:
        upload, self._upload = self._upload, None
        self._after_inflight(upload)

    async def _push(self, request: FileRequest) -> None:
        self._failed_id = None
        self._abandon_upload()
        try:
            upload = await self._in_thread(open_upload, self.roots, request, self._stopped)
        except Exception as error:
            await self._fail(request.id, error, request.path)
            return
        if upload is None:
            return  # closed while hashing the partial file
        self._upload = upload
        if self._closed:
            return
        await self._reply(
            FileReply(
                id=request.id,
                ok=True,
                kind="file",
                size=request.size,
                offset=upload.existing,
                prefix_sha256=upload.prefix.hexdigest(),
            )
        )

    async def _fail_upload(self, upload: Upload, error: BaseException) -> None:
        """Answer the write phase now; drop the rest of it. The partial file stays."""
        self._failed_id = upload.id
        if self._upload is upload:
            self._abandon_upload()
        await self._fail(upload.id, error, upload.path)

    async def _write(self, request: FileRequest) -> None:
        self._failed_id = None
        upload = self._upload
        if upload is None or upload.id != request.id or upload.receiving:
            self._failed_id = request.id
            if upload is not None and upload.id == request.id:
                self._abandon_upload()
            await self._fail(request.id, InvalidMessage("write without a push"), request.path)
            return
        try:
            started = await self._in_thread(upload.start, request.offset, self._stopped)
        except Exception as error:
            await self._fail_upload(upload, error)
            return
        if not started:
            return  # closed while hashing

    def _acknowledge(self, size: int) -> None:
        self.conn.acknowledge(self.channel, size)

    async def _receive(self, batch: Sequence[bytes]) -> None:
        total = sum(len(chunk) for chunk in batch)
        upload = self._upload
        if upload is None or not upload.receiving:
            self._acknowledge(total)
            if self._failed_id is None and not self._stray_reported:
                self._stray_reported = True
                await self._fail(self._last_id, InvalidMessage("data without a write in progress"))
            else:
                await self._flush()
            return
        if upload.position + total > upload.size:
            self._acknowledge(total)
            await self._fail_upload(upload, InvalidMessage("more data than the announced size"))
            return
        try:
            await self._in_thread(upload.write, batch)
        except Exception as error:
            self._acknowledge(total)
            await self._fail_upload(upload, error)
            return
        if self._closed:
            return
        self._acknowledge(total)
        await self._flush()

    async def _done(self, done: FileDone) -> None:
        if self._failed_id is not None and self._failed_id == done.id:
            self._failed_id = None
            return  # its write phase was answered already
        upload = self._upload
        if upload is None or upload.id != done.id or not upload.receiving:
            await self._fail(done.id, InvalidMessage("no upload in progress"))
            return
        self._upload = None
        try:
            await self._finish(upload, done)
        finally:
            self._after_inflight(upload)

    async def _finish(self, upload: Upload, done: FileDone) -> None:
        if done.size != upload.size or upload.position != upload.size:
            await self._in_thread(upload.discard)
            error = InvalidMessage(
                f"size mismatch: {upload.size} bytes announced, {upload.position} received,"
                f" {done.size} declared"
            )
            await self._fail(done.id, error, upload.path)
            return
        digest = upload.hasher.hexdigest()
        if digest != done.sha256.lower():
            await self._in_thread(upload.discard)
            await self._fail(done.id, InvalidMessage("hash mismatch"), upload.path)
            return
        try:
            info = await self._in_thread(upload.commit)
        except Exception as error:
            await self._fail(done.id, error, upload.path)  # the verified partial file stays
            return
        log.info(
            "files channel %d: received %r (%d bytes, sha256 %s)",
            self.channel,
            upload.path,
            upload.size,
            digest,
        )
        await self._reply(info_reply(done.id, info, sha256=digest))
