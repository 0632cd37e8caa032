"""The agent's shell process keeps input in order: data fed before the end of input is
all delivered before it, on a pipe and on a terminal (a real PTY), however fast it comes."""

from __future__ import annotations

import asyncio
import os

import pytest

from agent.shell import ShellProcess

#: Lines of printable text: a terminal in canonical mode passes them on unchanged.
PAYLOAD = b"".join(b"%05d " % n + bytes(range(0x41, 0x5B)) * 3 + b"\n" for n in range(20000))


async def _output_of(shell: ShellProcess) -> bytes:
    got = b""
    async with asyncio.timeout(60):
        while data := await shell.read():
            got += data
    return got


@pytest.mark.parametrize("use_pty", [False, True], ids=["pipe", "pty"])
async def test_input_fed_back_to_back_then_end_of_input_arrives_whole(use_pty: bool) -> None:
    shell = await ShellProcess.start(
        ["/bin/sh", "-c", "stty -echo -onlcr; cat" if use_pty else "cat"],
        env={"PATH": os.environ["PATH"], "HOME": "/tmp", "TERM": "dumb"},
        cwd="/tmp",
        use_pty=use_pty,
    )
    if use_pty:
        await asyncio.sleep(0.5)  # stty first, or the terminal would echo the input
    reader = asyncio.create_task(_output_of(shell))
    chunks = [PAYLOAD[i : i + 4096] for i in range(0, len(PAYLOAD), 4096)]
    taken = [shell.feed(chunk) for chunk in chunks]  # all queued before the end of input
    shell.end_of_input()
    output = await reader
    await asyncio.gather(*taken)
    assert len(output) == len(PAYLOAD)
    assert output == PAYLOAD
    assert await shell.wait() == (0, "")
