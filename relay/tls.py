"""TLS for the relay: the server context (TLS 1.3 only, optional client certificates
checked against our CA and CRL) and a listener that does not spend 256 KiB per connection.

Python 3.11's ``asyncio.sslproto.SSLProtocol`` allocates a 256 KiB read buffer
(``max_size``) in its constructor, for every connection, for the connection's
whole life. An idle agent costs the relay that much before it says a word. The
buffer is only ever used between ``get_buffer()`` and ``buffer_updated()``,
which the event loop calls back to back, and ``buffer_updated()`` copies the
bytes into the TLS object's incoming BIO at once. So one buffer per event loop
serves every connection: :class:`SharedBufferSSLProtocol` swaps the private
buffer for the loop's shared one right after construction, and the private one
is freed (and, being the same size every time, reused by the allocator for the
next connection's constructor rather than growing the heap).

The listener wraps aiohttp's request handler in that protocol ourselves
instead of passing ``ssl=`` to ``create_server``; that is exactly what asyncio
does internally, minus the buffer. The context is looked up per connection, so
revoking a device installs a new CRL for every handshake that follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import weakref
from asyncio import sslproto
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["AlertingSSLProtocol", "SharedBufferSSLProtocol", "server_context", "start_tls_server"]

_SHARED_BUFFER_SIZE = sslproto.SSLProtocol.max_size
_buffers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, memoryview] = (
    weakref.WeakKeyDictionary()
)


def _loop_buffer(loop: asyncio.AbstractEventLoop) -> memoryview:
    view = _buffers.get(loop)
    if view is None:
        view = memoryview(bytearray(_SHARED_BUFFER_SIZE))
        _buffers[loop] = view
    return view


class AlertingSSLProtocol(sslproto.SSLProtocol):
    """``SSLProtocol`` that tells a refused client why before hanging up.

    asyncio drops the connection on a failed handshake without writing the TLS
    alert OpenSSL queued, so a revoked or foreign agent saw only "server
    disconnected". Writing it first gives the client an SSL error naming the
    cause (``certificate revoked``, ``unknown ca``...).
    """

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None and self._transport is not None:
            # The transport may already be gone; refusing is what matters.
            with contextlib.suppress(OSError, RuntimeError):
                self._process_outgoing()  # type: ignore[attr-defined]  # asyncio 3.11+ internal
        super()._on_handshake_complete(handshake_exc)
        # asyncio keeps the peer certificate parsed into a dict for the connection's life;
        # the relay reads the DER form from the ssl object instead: ~2 KiB per agent.
        self._extra.pop("peercert", None)


class SharedBufferSSLProtocol(AlertingSSLProtocol):
    """``SSLProtocol`` whose socket read buffer is shared by every connection of a loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> None:
        super().__init__(loop, *args, **kwargs)
        shared = _loop_buffer(loop)
        self._ssl_buffer_view = shared
        self._ssl_buffer = shared.obj

    def get_buffer(self, n: int) -> memoryview:
        # Never grow a private buffer: hand out the loop's shared one.
        return self._ssl_buffer_view


def server_context(
    cert_file: Path, key_file: Path, ca_file: Path, crl_file: Path | None
) -> ssl.SSLContext:
    """TLS 1.3 only. Client certificates are optional (browsers and CLIs have none) but,
    when presented, must chain to our CA and not be on the CRL: a revoked agent is
    refused during the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cafile=ca_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    if crl_file is not None:
        context.load_verify_locations(cafile=crl_file)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    # No resumption (every handshake sees the current CRL): with TLS 1.3, OP_NO_TICKET alone
    # still issues stateful tickets; num_tickets = 0 issues none and caches no sessions.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    return context


async def start_tls_server(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    context: Callable[[], ssl.SSLContext],
    host: str,
    port: int,
    *,
    handshake_timeout: float = 10.0,
    backlog: int = 1024,
    shared_buffer: bool = True,
) -> asyncio.Server:
    """Listen on ``host:port``; every connection is TLS with the context current at accept."""
    loop = asyncio.get_running_loop()
    protocol_class = SharedBufferSSLProtocol if shared_buffer else AlertingSSLProtocol

    def make_protocol() -> asyncio.BaseProtocol:
        return protocol_class(
            loop,
            protocol_factory(),
            context(),
            None,  # type: ignore[arg-type]  # no waiter: this is a server connection
            server_side=True,
            ssl_handshake_timeout=handshake_timeout,  # type: ignore[arg-type]
        )

    return await loop.create_server(make_protocol, host, port, backlog=backlog)
