"""The web console's shell path: keystroke round trip through ``/web/ws/shell`` against
the console protocol, same relay, same agent, same run.

One byte written to a remote ``cat`` on a raw-mode pty and its echo read back,
sequentially, ``BENCH_KEYSTROKES`` times (default 2,000) on each path:

* web: what the browser's page speaks (a WebSocket with the session cookie and the
  relay's Origin, keystrokes as binary messages, output acknowledged as xterm.js does)
  -> the relay, the technician's leg of the session -> ``helpline-agent run``;
* console: the console library's protocol connection -> relay -> agent.

The paths take turns in blocks (web, then console, ten times) after a warm-up of each.
The browser itself (xterm.js drawing) is not in the measurement: it is the relay's
gateway that is measured against the relay's native console path.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from certs.contexts import pinned_client_context

from .idle_agents import BenchError, format_table, log
from .rig import DEVICE, HelplineRig, echo_round_trip, ms, open_echo, percentile
from .shell_latency import BLOCKS, DEFAULT_KEYSTROKES, WARMUP_KEYSTROKES, env_int

#: Typed into the web shell: the quotes keep the typed line from containing the marker.
START = b"stty raw -echo; printf 'RE''ADY'; exec cat\r"


class WebEcho:
    """A shell over the web console's socket, turned into a byte echo."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def _output(self) -> bytes:
        while True:
            message = await self.ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                await self.ws.send_str(json.dumps({"type": "ack", "bytes": len(message.data)}))
                return bytes(message.data)
            if message.type == aiohttp.WSMsgType.TEXT:
                control = json.loads(message.data)
                if control["type"] in ("refused", "closed", "error"):
                    raise BenchError(f"the web shell ended: {control}")
                continue
            raise BenchError(f"the web shell's socket closed: {message.type}")

    async def start(self) -> None:
        async with asyncio.timeout(30):
            while True:  # until the session is granted
                message = await self.ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise BenchError(f"unexpected {message.type} before the session opened")
                control = json.loads(message.data)
                if control["type"] == "opened":
                    break
                if control["type"] == "refused":
                    raise BenchError(f"the web shell was refused: {control}")
            await self.ws.send_bytes(START)
            seen = b""
            while b"READY" not in seen:
                seen += await self._output()

    async def round_trip(self, byte: bytes = b"x") -> float:
        start = time.perf_counter()
        await self.ws.send_bytes(byte)
        got = b""
        async with asyncio.timeout(5):
            while len(got) < len(byte):
                got += await self._output()
        elapsed = time.perf_counter() - start
        if got != byte:
            raise BenchError(f"the web shell echoed {got!r}, not {byte!r}")
        return elapsed


async def measure(rig: HelplineRig, count: int) -> tuple[list[float], list[float]]:
    web: list[float] = []
    console: list[float] = []
    headers = {"Cookie": f"__Host-helpline={rig.token}", "Origin": rig.url}
    query = f"device={DEVICE}&reason=bench&cols=80&rows=24"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{rig.url}/web/ws/shell?{query}",
            headers=headers,
            ssl=pinned_client_context(rig.ca_pem),
            compress=0,
        ) as ws,
        rig.client() as client,
        client.connect() as link,
    ):
        echo = WebEcho(ws)
        await echo.start()
        channel = await open_echo(link)
        for _ in range(WARMUP_KEYSTROKES):
            await echo.round_trip()
            await echo_round_trip(channel)
        sizes = [count // BLOCKS + (1 if i < count % BLOCKS else 0) for i in range(BLOCKS)]
        for size in sizes:
            for _ in range(size):
                web.append(await echo.round_trip())
            for _ in range(size):
                console.append(await echo_round_trip(channel))
        await channel.close()
        await ws.send_str(json.dumps({"type": "end"}))
    return web, console


def report(web: list[float], console: list[float], load: tuple[float, float]) -> str:
    headers = ["path", "keystrokes", "p50 (ms)", "p99 (ms)", "mean (ms)", "max (ms)"]
    rows = [
        [
            name,
            f"{len(samples)}",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99)),
            ms(statistics.fmean(samples)),
            ms(max(samples)),
        ]
        for name, samples in (
            ("web: /web/ws/shell -> relay -> agent (TLS, TLS)", web),
            ("console: protocol link -> relay -> agent (TLS, TLS)", console),
        )
    ]
    notes = [
        "Keystroke: one byte to `stty raw -echo; cat` on a remote pty and its echo back,"
        f" sequential; the paths alternate in {BLOCKS} blocks after {WARMUP_KEYSTROKES}"
        " uncounted round trips each. Percentiles: nearest rank. The web client acknowledges"
        " each output message as the page does once xterm.js drew it.",
        "Load average (1 min) at start and end: {:.1f} / {:.1f}.".format(*load),
    ]
    return "\n".join([format_table(headers, rows), "", *notes])


def main() -> int:
    keystrokes = env_int("BENCH_KEYSTROKES", DEFAULT_KEYSTROKES)
    print(f"Web shell: {keystrokes} keystrokes per path")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="helpline-bench-web-") as temporary:
        rig = HelplineRig(Path(temporary) / "helpline")
        try:
            log("starting the relay and the agent")
            rig.start()
            log(f"keystroke round trips: {keystrokes} per path (web socket, console)")
            web, console = asyncio.run(measure(rig, keystrokes))
            rig.check_alive()
        except BenchError as error:
            raise BenchError(f"{error}\n{rig.logs()}") from None
        except (TimeoutError, OSError) as error:
            raise BenchError(f"{type(error).__name__}: {error}\n{rig.logs()}") from None
        finally:
            rig.stop()
    print(report(web, console, (load_before, os.getloadavg()[0])), flush=True)
    return 0
