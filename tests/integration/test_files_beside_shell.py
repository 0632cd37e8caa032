"""A download and a shell on the same device at once: while a shell shares the agent's
connection the download keeps less in flight (so the shell's echo is not queued behind a
whole window of file data); it still arrives whole and verified, and the shell answers
every keystroke meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from console.client import HelplineClient
from console.files import FilesClient

from .conftest import RelayProcess
from .files_helpers import enrol_confined, start_headless
from .session_helpers import wait_online

pytestmark = pytest.mark.integration

DEVICE = "busy-desk"


async def test_a_download_beside_a_shell_arrives_whole_and_the_shell_keeps_answering(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    agent = enrol_confined(
        relay, tmp_path, DEVICE, root, consent={"files": "allow", "shell": "allow"}
    )
    data = os.urandom(24 * 1024 * 1024 + 5)  # many windows, so the cap is exercised
    (root / "big.bin").write_bytes(data)
    start_headless(agent)
    try:
        await wait_online(admin_client, DEVICE)
        async with admin_client.connect() as console:
            shell = await console.open_session(
                DEVICE, "shell", params={"command": "stty raw -echo; echo R; cat", "pty": "1"}
            )
            seen = b""
            async with asyncio.timeout(30):
                while b"R" not in seen:
                    seen += await shell.read()
            files = FilesClient(await console.open_session(DEVICE, "files"))
            pull = asyncio.create_task(files.pull("big.bin", tmp_path / "back.bin"))
            echoes = 0
            async with asyncio.timeout(120):
                while not pull.done():
                    await shell.write(b"k")
                    got = b""
                    while got != b"k":
                        got += await shell.read()
                    echoes += 1
                result = await pull
            await shell.close()
        assert (tmp_path / "back.bin").read_bytes() == data
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert echoes > 0
    finally:
        agent.stop()
