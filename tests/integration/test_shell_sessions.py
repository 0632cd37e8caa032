"""Shell sessions end to end: the console library and the ``helpline shell`` CLI against a
real relay and agent. Commands return their output and exit status, an interactive PTY
session follows resizes, a megabyte goes through ``cat`` and back unchanged, and the
interactive CLI runs in a real pseudo-terminal that it puts back as it found it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from console.client import HelplineClient

from .conftest import BIN, AgentProcess, RelayProcess, run_helpline
from .helpers import audit_entries
from .session_helpers import (
    cli_as,
    ended_record,
    helpline_env,
    marker,
    marker_command,
    on_pty,
    read_to_end,
    read_until,
    run_cli_with_stdin,
    technician,
    wait_online,
)

pytestmark = pytest.mark.integration

StartAgent = Callable[..., AgentProcess]
ALLOW = {"shell": "allow"}


async def test_commands_return_their_output_and_exit_status(
    admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    statuses: list[str] = []
    async with admin_client.connect() as console:
        channel = await console.open_session(
            "desk-1",
            "shell",
            reason="check the exit status",
            params={"command": "echo hello; echo oops >&2; exit 7", "pty": "0"},
            on_status=lambda state, message: statuses.append(state),
        )
        output = await read_to_end(channel)
        closed = await channel.wait_closed()
        assert output == b"hello\noops\n"  # stderr comes with stdout, in order
        assert channel.exit_status == (7, "")
        assert closed.code == 1000
        assert statuses == ["waiting"]
        assert channel.device == "desk-1"

        killed = await console.open_session(
            "desk-1", "shell", params={"command": "echo going; kill -TERM $$", "pty": "0"}
        )
        assert await read_to_end(killed) == b"going\n"
        await killed.wait_closed()
        assert killed.exit_status == (-1, "SIGTERM")


async def test_interactive_pty_session_types_resizes_and_exits(
    admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    async with admin_client.connect() as console:
        channel = await console.open_session(
            "desk-1",
            "shell",
            params={"pty": "1", "cols": "100", "rows": "30", "term": "xterm-256color"},
        )
        seen = bytearray()
        await channel.write(marker_command("tty", "$(tty)"))
        output = await read_until(channel, b"<tty[/dev/pts/", seen=seen)
        assert b"<tty[not a tty]>" not in output
        await channel.write(marker_command("term", "$TERM"))
        await read_until(channel, marker("term", "xterm-256color"), seen=seen)
        await channel.write(marker_command("size", "$(stty size)"))
        await read_until(channel, marker("size", "30 100"), seen=seen)

        await channel.resize(132, 43)
        await channel.write(marker_command("size2", "$(stty size)"))
        await read_until(channel, marker("size2", "43 132"), seen=seen)

        await channel.write(b"exit 5\r")
        await read_to_end(channel)
        closed = await channel.wait_closed()
    assert channel.exit_status == (5, "")
    assert closed.code == 1000


async def test_a_mebibyte_through_cat_comes_back_identical(
    admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    """More than a window in flight on every hop: both directions wait for credit."""
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    payload = os.urandom(1 << 20)
    big = os.urandom(5 << 20)  # five channel windows
    async with admin_client.connect() as console:
        channel = await console.open_session(
            "desk-1", "shell", params={"command": "cat", "pty": "0"}
        )

        async def send(data: bytes) -> None:
            for start in range(0, len(data), 100_000):  # many writes, as a terminal would
                await channel.write(data[start : start + 100_000])
            await channel.send_eof()

        _, echoed = await asyncio.gather(send(payload), read_to_end(channel, seconds=60))
        await channel.wait_closed()
        assert channel.exit_status == (0, "")
        assert len(echoed) == len(payload)
        assert echoed == payload

        # Bigger than every window: the input side must wait for the agent's credit.
        channel = await console.open_session(
            "desk-1",
            "shell",
            params={"command": "sha256sum; head -c 3145728 /dev/zero", "pty": "0"},
        )
        _, output = await asyncio.gather(send(big), read_to_end(channel, seconds=60))
        await channel.wait_closed()
    assert output[:64].decode() == hashlib.sha256(big).hexdigest()
    assert output[64:].lstrip(b" -\n") == bytes(3 << 20)
    assert channel.exit_status == (0, "")


async def test_cli_runs_a_command_with_its_exit_status_and_stdin(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    config = cli_as(relay, tmp_path / "cli", await technician(admin_client, "tom"))

    result = run_helpline(config, "shell", "desk-1", "--", "sh", "-c", "echo out; exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "out\n"

    # stdin that epoll cannot watch: /dev/null, then a regular file.
    command = ["shell", "desk-1", "--", "sh", "-c", "cat; echo end; exit 3"]
    input_file = tmp_path / "input.txt"
    input_file.write_bytes(b"from a file\n")
    for source in (os.devnull, input_file):
        ran = run_cli_with_stdin(config, source, *command)
        assert ran.returncode == 3, ran.stderr
        assert ran.stdout == (b"" if source == os.devnull else b"from a file\n") + b"end\n"

    result = run_helpline(config, "shell", "desk-1", "--", "cat", stdin="abc")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "abc"  # and it returned: end of input reached the remote cat

    result = run_helpline(config, "shell", "desk-1", "--", "sh", "-c", "echo bye; kill -TERM $$")
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stdout == "bye\n"


async def test_cli_interactive_shell_in_a_real_terminal_restored_on_exit_and_sigterm(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    config = cli_as(relay, tmp_path / "cli", await technician(admin_client, "tom"))
    with on_pty([BIN / "helpline", "shell", "desk-1"], env=helpline_env(config)) as terminal:
        before = terminal.attributes()
        await asyncio.to_thread(terminal.wait_raw)
        await asyncio.to_thread(terminal.read_until, b"waiting for consent on desk-1")
        terminal.write(b"echo hi-$((40+2))\r")
        await asyncio.to_thread(terminal.read_until, b"hi-42\r\n")
        assert terminal.is_raw()  # while the session runs, keys go to the remote shell
        terminal.write(b"exit\r")
        status = await asyncio.to_thread(terminal.wait)
        after = terminal.attributes()
    assert status == 0, terminal.output.decode(errors="replace")
    assert after == before  # the terminal is restored

    # SIGTERM (kill, a closing window) is a way out too: the terminal is put back and the
    # session is ended by the technician, not dropped.
    with on_pty([BIN / "helpline", "shell", "desk-1"], env=helpline_env(config)) as terminal:
        before = terminal.attributes()
        await asyncio.to_thread(terminal.wait_raw)
        terminal.write(marker_command("up", "yes"))
        await asyncio.to_thread(terminal.read_until, marker("up", "yes"))
        terminal.process.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(terminal.wait)
        after = terminal.attributes()
    assert after == before, "the terminal was left in raw mode"
    assert status == 128 + signal.SIGTERM
    first, second = await admin_client.sessions()  # newest first
    assert (await ended_record(admin_client, first["id"]))["end_reason"] == "technician"
    assert (await ended_record(admin_client, second["id"]))["end_reason"] == "exited"


async def test_cli_interactive_shell_follows_the_window_size(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    config = cli_as(relay, tmp_path / "cli", await technician(admin_client, "tom"))
    argv: list[str | Path] = [BIN / "helpline", "shell", "desk-1"]
    with on_pty(argv, env=helpline_env(config), cols=91, rows=27) as terminal:
        await asyncio.to_thread(terminal.wait_raw)
        terminal.write(marker_command("size", "$(stty size)"))
        assert await asyncio.to_thread(terminal.read_marker, "size") == "27 91"

        terminal.resize(120, 40)  # TIOCSWINSZ, then SIGWINCH to the CLI

        def resized() -> None:  # bounded: the resize may reach the agent after the next line
            for attempt in range(40):
                terminal.write(marker_command(f"s{attempt}", "$(stty size)"))
                if terminal.read_marker(f"s{attempt}") == "40 120":
                    return
            raise AssertionError(f"size never followed: {bytes(terminal.output)!r}")

        await asyncio.to_thread(resized)
        terminal.write(b"exit 4\r")
        assert await asyncio.to_thread(terminal.wait) == 4


async def test_cli_reason_after_the_device_is_the_reason(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    config = cli_as(relay, tmp_path / "cli", await technician(admin_client, "tom"))
    result = run_helpline(
        config, "shell", "desk-1", "--reason", "printer", "--", "cat", stdin="abc"
    )
    assert (result.returncode, result.stdout) == (0, "abc"), result.stderr
    requests = await audit_entries(admin_client, "session.request")
    assert [e["details"]["reason"] for e in requests] == ["printer"]
