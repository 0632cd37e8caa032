"""Shell recordings: asciicast v2 files the real ``asciinema`` (Debian's) plays, with the
header, output and resize events and no input unless the relay is told to record it; a
readable prefix when the relay is killed, sealed after it restarts; listing, exporting
and playing them from the CLI; who may read them; and ``helpline audit verify`` catching
a changed byte."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from console.client import HelplineClient
from protocol.errors import NotFound

from .conftest import AgentProcess, RelayProcess, run_helpline, wait_for
from .helpers import api, logged_in
from .session_helpers import (
    WITHIN,
    asciinema_cat,
    cast_lines,
    cli_as,
    cli_as_admin,
    ended_record,
    marker,
    marker_command,
    pgrep,
    read_to_end,
    read_until,
    session_end,
    session_entries,
    session_record,
    staff,
    technician,
    wait_online,
)

pytestmark = pytest.mark.integration

StartAgent = Callable[..., AgentProcess]
ALLOW = {"shell": "allow"}
SECRET = "hunter2-not-for-the-record"


async def test_recording_plays_in_asciinema_with_header_and_resizes(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    tech = await technician(admin_client, "tom")
    before = int(time.time())
    async with logged_in(relay, tech) as client, client.connect() as console:
        channel = await console.open_session(
            "desk-1", "shell", params={"pty": "1", "cols": "90", "rows": "25", "term": "vt220"}
        )
        seen = bytearray()
        await channel.write(marker_command("greeting", "$((6*7)) ünïcode"))
        await read_until(channel, marker("greeting", "42 ünïcode"), seen=seen)
        # A password typed with echo off: only input would hold it.
        await channel.write(
            b"stty -echo; printf '<%s[%s]>\\n' echo off; read -r pw; stty echo;"
            b" echo got-${#pw}-chars\r"
        )
        await read_until(channel, marker("echo", "off"), seen=seen)
        await channel.write(SECRET.encode() + b"\r")
        await read_until(channel, f"got-{len(SECRET)}-chars".encode(), seen=seen)
        await channel.resize(100, 30)
        await channel.write(marker_command("size", "$(stty size)"))
        await read_until(channel, marker("size", "30 100"), seen=seen)
        await channel.write(b"exit\r")
        await read_to_end(channel)
    after = int(time.time())
    end = await session_end(admin_client, channel.session_id)
    cast = relay.data_dir / "recordings" / f"{channel.session_id}.cast"
    assert end["details"]["recording_sha256"] == hashlib.sha256(cast.read_bytes()).hexdigest()

    header, events = cast_lines(cast)
    assert header["version"] == 2
    assert (header["width"], header["height"]) == (90, 25)
    assert isinstance(header["timestamp"], int) and before <= header["timestamp"] <= after
    assert "tom" in header["title"] and "desk-1" in header["title"]
    assert header["env"]["TERM"] == "vt220"
    assert header["helpline"] == {
        "session": channel.session_id,
        "technician": "tom",
        "device": "desk-1",
    }
    kinds = {kind for _, kind, _ in events}
    assert kinds == {"o", "r"}  # no "i": input is not recorded by default
    assert [data for _, kind, data in events if kind == "r"] == ["100x30"]
    times = [at for at, _, _ in events]
    assert times == sorted(times) and all(isinstance(at, float | int) for at in times)
    assert SECRET not in cast.read_text()

    played = await asyncio.to_thread(asciinema_cat, cast)
    assert "<greeting[42 ünïcode]>" in played
    assert f"got-{len(SECRET)}-chars" in played
    assert "<size[30 100]>" in played
    assert SECRET not in played


async def test_relay_killed_mid_session_leaves_a_playable_prefix_sealed_on_restart(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    # Accounts without a second factor: they log in again after each restart.
    tom = await technician(admin_client, "tom")
    audrey = await staff(admin_client, "audrey", role="auditor")
    async with logged_in(relay, tom) as client, client.connect() as console:
        channel = await console.open_session(
            "desk-1", "shell", params={"command": "echo before-the-crash; exec sleep 31339"}
        )
        await read_until(channel, b"before-the-crash")
        assert relay.process is not None
        relay.process.send_signal(signal.SIGKILL)
        relay.process.wait(10)
        await read_to_end(channel)
        closed = await asyncio.wait_for(channel.wait_closed(), WITHIN)
    assert closed.code == 1006  # the console saw its connection go
    crashed_id = channel.session_id
    cast = relay.data_dir / "recordings" / f"{crashed_id}.cast"
    assert "before-the-crash" in await asyncio.to_thread(asciinema_cat, cast)
    crashed = cast.read_bytes()
    # The agent lost the relay: it ended the session and hung up the shell.
    await asyncio.to_thread(wait_for, lambda: not pgrep("sleep 31339"), what="the shell to go")

    # Restarted (with input recording switched on, for the session after).
    toml = relay.data_dir / "relay.toml"
    toml.write_text(toml.read_text().replace("record_input = false", "record_input = true"))
    relay.process = None
    relay.start()
    async with logged_in(relay, audrey) as auditor:
        record = await ended_record(auditor, crashed_id)
        assert (record["state"], record["end_reason"]) == ("ended", "relay restarted")
        end = await session_end(auditor, crashed_id)
        assert end["details"]["reason"] == "relay restarted"
        assert end["details"]["recording_sha256"] == hashlib.sha256(crashed).hexdigest()
    assert cast.read_bytes() == crashed

    # Stopped the orderly way mid-session: ended "relay shutdown", sealed before it exits.
    async with logged_in(relay, tom) as client:
        await wait_online(client, "desk-1")
        async with client.connect() as console:
            channel = await console.open_session(
                "desk-1", "shell", params={"command": "cat", "pty": "0"}
            )
            await channel.write(b"typed-and-recorded\n")
            await read_until(channel, b"typed-and-recorded\n")
            relay.stop()  # SIGTERM
            await read_to_end(channel)
            closed = await asyncio.wait_for(channel.wait_closed(), WITHIN)
    assert closed.code == 1001, closed
    assert "shutting down" in closed.message
    stopped_cast = relay.data_dir / "recordings" / f"{channel.session_id}.cast"
    _, events = cast_lines(stopped_cast)
    assert [data for _, kind, data in events if kind == "i"] == ["typed-and-recorded\n"]
    assert "typed-and-recorded" in await asyncio.to_thread(asciinema_cat, stopped_cast)

    relay.start()
    async with logged_in(relay, audrey) as auditor:
        record = await session_record(auditor, channel.session_id)
        assert (record["state"], record["end_reason"]) == ("ended", "relay shutdown")
        [end] = await session_entries(auditor, channel.session_id, "session.end")
        assert end["details"]["reason"] == "relay shutdown"
        sealed = hashlib.sha256(stopped_cast.read_bytes()).hexdigest()
        assert end["details"]["recording_sha256"] == sealed
        entries, _ = await auditor.audit_all()
        assert (await auditor.verify_audit()).ok
        assert await auditor.verify_recordings(entries) == []


async def test_cli_lists_exports_plays_and_verifies_recordings(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    tech_cli = cli_as(relay, tmp_path / "tech", await technician(admin_client, "tom"))
    admin_cli = cli_as_admin(relay, tmp_path / "admin")
    ran = run_helpline(tech_cli, "shell", "desk-1", "--", "printf", "recorded-%s\\n", "output")
    assert ran.returncode == 0, ran.stderr
    [record] = await admin_client.sessions()
    await ended_record(admin_client, record["id"])
    session_id = record["id"]
    cast = relay.data_dir / "recordings" / f"{session_id}.cast"

    listed = run_helpline(tech_cli, "recordings", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["id"] == session_id
    assert (entry["username"], entry["device_name"], entry["end_reason"]) == (
        "tom",
        "desk-1",
        "exited",
    )
    assert entry["has_recording"] is True

    exported = tmp_path / "copy.cast"
    result = run_helpline(tech_cli, "recordings", "export", session_id[:12], str(exported))
    assert result.returncode == 0, result.stderr
    assert exported.read_bytes() == cast.read_bytes()

    played = run_helpline(tech_cli, "recordings", "play", session_id, "--speed", "100")
    assert played.returncode == 0, played.stderr
    assert "recorded-output" in played.stdout

    verified = run_helpline(admin_cli, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "1 verified" in verified.stdout

    data = bytearray(cast.read_bytes())
    at = data.index(b"recorded-output")
    data[at] = ord("R")  # one byte
    cast.write_bytes(bytes(data))
    tampered = run_helpline(admin_cli, "audit", "verify")
    assert tampered.returncode != 0
    assert session_id in tampered.stderr
    assert "altered" in tampered.stderr


async def test_who_may_read_recordings(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    tom = await technician(admin_client, "tom")
    tess = await technician(admin_client, "tess")
    audrey = await staff(admin_client, "audrey", role="auditor")

    ids = {}
    for person in (tom, tess):
        async with logged_in(relay, person) as client, client.connect() as console:
            channel = await console.open_session(
                "desk-1", "shell", params={"command": f"echo by-{person.username}", "pty": "0"}
            )
            await read_to_end(channel)
        ids[person.username] = channel.session_id
        await session_end(admin_client, channel.session_id)
    files = {
        name: (relay.data_dir / "recordings" / f"{session}.cast").read_bytes()
        for name, session in ids.items()
    }

    assert {r["id"] for r in await admin_client.recordings()} == set(ids.values())
    for name, session in ids.items():
        assert await admin_client.recording(session) == files[name]
    async with logged_in(relay, audrey) as auditor:
        assert {r["id"] for r in await auditor.recordings()} == set(ids.values())
        for name, session in ids.items():
            assert await auditor.recording(session) == files[name]

    async with logged_in(relay, tom) as client:
        assert [r["id"] for r in await client.recordings()] == [ids["tom"]]
        assert await client.recording(ids["tom"]) == files["tom"]
        with pytest.raises(NotFound):
            await client.recording(ids["tess"])
        status, _ = await api(relay, "GET", f"/api/v1/recordings/{ids['tess']}", token=client.token)
        assert status == 404

        status, body = await api(
            relay,
            "PATCH",
            "/api/v1/users/tom",
            token=admin_client.token,
            body={"read_all_recordings": True},
        )
        assert status == 200, body
        assert body["user"]["read_all_recordings"] is True
        assert {r["id"] for r in await client.recordings()} == set(ids.values())
        assert await client.recording(ids["tess"]) == files["tess"]

    async with logged_in(relay, tess) as client:  # tess was not granted anything
        assert [r["id"] for r in await client.recordings()] == [ids["tess"]]
        with pytest.raises(NotFound):
            await client.recording(ids["tom"])
