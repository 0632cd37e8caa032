"""What one Python hop costs: the floor under the keystroke round trip.

A Helpline keystroke crosses three Python processes (console, relay, agent) and
two TLS + WebSocket legs each way; OpenSSH's ``ssh -J`` crosses three C
processes. To show how much of the difference is the language and transport
rather than Helpline's own code, the keystroke benchmark also times the
simplest possible Python hops, between this process and one echo server in a
child process, on loopback, one byte (or one 10-byte message) at a time:

* ``tcp``: a bare asyncio ``Protocol`` echo, no TLS, no framing;
* ``wss``: an aiohttp WebSocket echo over TLS 1.3 with a throw-away P-256
  certificate, the transport Helpline's legs use (``compress=0``).

Both sides use the default asyncio event loop, as Helpline does. The server runs
``python -m tests.bench.floor serve KIND PORTFILE``; nothing here is Helpline
code, so it measures only what any design built on these parts pays per hop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from certs.authority import certificate_pem, create_ca, issue_server_certificate
from certs.keys import private_key_pem

KINDS = ("tcp", "wss")
MESSAGE = b"x"
WSS_MESSAGE = b"0123456789"


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _serve(kind: str, port_file: Path) -> None:
    loop = asyncio.get_running_loop()
    if kind == "tcp":
        server = await loop.create_server(_Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:

        async def echo(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(compress=False)
            await ws.prepare(request)
            async for message in ws:
                await ws.send_bytes(message.data)
            return ws

        app = web.Application()
        app.router.add_get("/", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        directory = port_file.parent
        context.load_cert_chain(directory / "server.pem", directory / "server.key")
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
    await asyncio.to_thread(port_file.write_text, str(port))
    await asyncio.Event().wait()


class FloorServer:
    """One echo server of ``kind`` in a child process; a context manager."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> FloorServer:
        port_file = self.directory / f"{self.kind}.port"
        if self.kind == "wss":
            ca_key, ca_cert = create_ca("floor benchmark CA", valid_days=1)
            key, cert = issue_server_certificate(ca_key, ca_cert, ["127.0.0.1"], valid_days=1)
            (self.directory / "ca.pem").write_bytes(certificate_pem(ca_cert))
            (self.directory / "server.pem").write_bytes(certificate_pem(cert))
            (self.directory / "server.key").write_bytes(private_key_pem(key))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.floor", "serve", self.kind, str(port_file)],
            cwd=Path(__file__).resolve().parents[2],
        )
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.kind} echo server did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)


async def tcp_round_trips(port: int, count: int, warmup: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    samples: list[float] = []
    try:
        for index in range(warmup + count):
            start = time.perf_counter()
            writer.write(MESSAGE)
            got = b""
            while len(got) < len(MESSAGE):
                got += await reader.read(64)
            if index >= warmup:
                samples.append(time.perf_counter() - start)
    finally:
        writer.close()
    return samples


async def wss_round_trips(port: int, ca_file: Path, count: int, warmup: int) -> list[float]:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    samples: list[float] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"https://127.0.0.1:{port}/", ssl=context, compress=0) as ws,
    ):
        for index in range(warmup + count):
            start = time.perf_counter()
            await ws.send_bytes(WSS_MESSAGE)
            message = await ws.receive()
            if message.data != WSS_MESSAGE:
                raise RuntimeError(f"the wss echo returned {message.data!r}")
            if index >= warmup:
                samples.append(time.perf_counter() - start)
    return samples


def measure(count: int, warmup: int = 100) -> dict[str, list[float]]:
    """Round trips of each kind, ``count`` each after ``warmup`` uncounted ones."""
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="helpline-bench-floor-") as temporary:
        directory = Path(temporary)
        with FloorServer("tcp", directory) as tcp:
            results["tcp"] = asyncio.run(tcp_round_trips(tcp.port, count, warmup))
        with FloorServer("wss", directory) as wss:
            results["wss"] = asyncio.run(
                wss_round_trips(wss.port, directory / "ca.pem", count, warmup)
            )
    return results


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "serve" or sys.argv[2] not in KINDS:
        raise SystemExit("usage: python -m tests.bench.floor serve tcp|wss PORTFILE")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(_serve(sys.argv[2], Path(sys.argv[3])))
