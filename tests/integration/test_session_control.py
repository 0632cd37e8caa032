"""Who may open a session, who decides, and every way one ends: consent by the agent's
policy with nobody at the machine, refusals by the relay (no grant, auditor, unknown
device), the agent or the technician vanishing, an admin's kill, the customer ending it,
and the sessions table that shows all of it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from console.client import HelplineClient
from protocol import ChannelClosed, ChannelOpened, Hello
from protocol.errors import ConsentDenied, NotFound, NotPermitted
from protocol.events import ChannelMessage
from protocol.sessions import ExitStatus, SessionRequest, SessionStatus

from .conftest import BIN, AgentProcess, RelayProcess, run_helpline, wait_for
from .helpers import api, audit_entries, logged_in, raw_console_link
from .session_helpers import (
    WITHIN,
    RawConsole,
    agent_sessions,
    cli_as,
    cli_as_admin,
    ended_record,
    headless_agent,
    helpline_env,
    marker,
    marker_command,
    on_pty,
    pgrep,
    read_to_end,
    read_until,
    session_end,
    session_entries,
    session_record,
    spawn_cli,
    staff,
    technician,
    wait_online,
)

pytestmark = pytest.mark.integration

StartAgent = Callable[..., AgentProcess]
ALLOW = {"shell": "allow"}


async def test_consent_with_nobody_at_the_device(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    """No display and no terminal: "prompt" denies (no-user), "notify" grants."""
    with (
        headless_agent(relay, tmp_path, "unattended", {"shell": "prompt"}),
        headless_agent(relay, tmp_path, "kiosk", {"shell": "notify"}),
    ):
        await wait_online(admin_client, "unattended", "kiosk")
        tech = await technician(admin_client, "tom")
        config = cli_as(relay, tmp_path / "cli", tech)
        refused = run_helpline(config, "shell", "unattended", "--", "echo", "should-not-run")
        assert refused.returncode == 1
        assert "nobody is at the device to approve the session" in refused.stderr
        assert "should-not-run" not in refused.stdout
        async with logged_in(relay, tech) as client, client.connect() as console:
            statuses: list[str] = []
            with pytest.raises(ConsentDenied, match="nobody is at the device"):
                await console.open_session(
                    "unattended",
                    "shell",
                    reason="printer",
                    params={"command": "echo should-not-run", "pty": "0"},
                    on_status=lambda state, message: statuses.append(state),
                )
            assert statuses == ["waiting"]

            channel = await console.open_session(
                "kiosk", "shell", params={"command": "echo granted", "pty": "0"}
            )
            assert await read_to_end(channel) == b"granted\n"
            assert channel.exit_status == (0, "")

            denied = [s for s in await client.sessions() if s["device_name"] == "unattended"]
        assert len(denied) == 2  # the CLI's request, then the library's
        assert {s["state"] for s in denied} == {"denied"}
        assert {s["consent"] for s in denied} == {"denied:no-user"}
        assert {s["started_at"] for s in denied} == {None}
        assert {s["has_recording"] for s in denied} == {False}
        denied_id = denied[0]["id"]
        [consent] = await session_entries(admin_client, denied_id, "session.consent")
        assert consent["details"]["granted"] is False
        assert consent["details"]["how"] == "no-user"
        assert consent["details"]["technician"] == "tom"
        end = await session_end(admin_client, denied_id)
        assert end["details"]["state"] == "denied"
        assert end["details"]["reason"] == "denied"
        assert not await session_entries(admin_client, denied_id, "session.start")

        [granted] = await session_entries(admin_client, channel.session_id, "session.consent")
        assert granted["details"]["granted"] is True
        assert granted["details"]["how"] == "notify"
        assert (await session_end(admin_client, channel.session_id))["details"][
            "reason"
        ] == "exited"


async def test_the_relay_refuses_requests_it_may_not_pass_on(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    start_agent("front-desk", consent=ALLOW)
    start_agent("payroll", consent=ALLOW)
    await wait_online(admin_client, "front-desk", "payroll")
    await admin_client.create_group("finance")
    await admin_client.update_device("payroll", group="finance")
    tech = await technician(admin_client, "tom")  # granted "default" only
    auditor = await staff(admin_client, "audrey", role="auditor")

    async with logged_in(relay, tech) as client, client.connect() as console:
        with pytest.raises(NotFound, match="payroll"):
            await console.open_session("payroll", "shell", params={"command": "id"})
        with pytest.raises(NotFound, match="no-such-device"):
            await console.open_session("no-such-device", "shell", params={"command": "id"})
        # The granted device still works on the same connection.
        channel = await console.open_session(
            "front-desk", "shell", params={"command": "echo fine", "pty": "0"}
        )
        assert await read_to_end(channel) == b"fine\n"
    async with logged_in(relay, auditor) as client, client.connect() as console:
        with pytest.raises(NotPermitted, match="auditors cannot open sessions"):
            await console.open_session("front-desk", "shell", params={"command": "id"})

    refused = await audit_entries(admin_client, "session.refused")
    assert {(e["actor"], e["target"]) for e in refused} == {
        ("tom", "payroll"),
        ("tom", "no-such-device"),
        ("audrey", "front-desk"),
    }
    assert all(e["details"]["kind"] == "shell" for e in refused)
    # Nothing refused ever became a session or reached an agent.
    sessions = await admin_client.sessions()
    assert [(s["username"], s["device_name"]) for s in sessions] == [("tom", "front-desk")]
    assert [e["target"] for e in await audit_entries(admin_client, "session.request")] == [
        "front-desk"
    ]


async def test_agent_vanishes_mid_session(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    agent = start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    async with admin_client.connect() as console:
        channel = await console.open_session(
            "desk-1", "shell", params={"command": "echo started; exec sleep 31338", "pty": "1"}
        )
        await read_until(channel, b"started")
        assert agent.process is not None
        agent.process.send_signal(signal.SIGKILL)
        agent.process.wait(10)
        await read_to_end(channel)  # the channel closes: no hang
        closed = await asyncio.wait_for(channel.wait_closed(), WITHIN)
    try:
        assert channel.exit_status is None
        assert closed.code == 4462
        assert "disconnected" in closed.message
        end = await session_end(admin_client, channel.session_id)
        assert end["details"]["reason"] == "agent lost"
        cast = relay.data_dir / end["details"]["recording"]
        assert cast == relay.data_dir / "recordings" / f"{channel.session_id}.cast"
        assert end["details"]["recording_sha256"] == hashlib.sha256(cast.read_bytes()).hexdigest()
        record = await session_record(admin_client, channel.session_id)
        assert (record["state"], record["end_reason"]) == ("ended", "agent lost")
        assert record["recording_sha256"] == end["details"]["recording_sha256"]
    finally:  # the agent was killed outright: its terminal hung up, reap what may be left
        wait_for(lambda: not pgrep("sleep 31338"), what="the hung-up sleep to go")


async def test_technician_vanishes_mid_session(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    config = cli_as(relay, tmp_path / "cli", await technician(admin_client, "tom"))
    cli = spawn_cli(config, "shell", "desk-1", "--", "sleep", "31337")
    try:
        wait_for(lambda: bool(set(pgrep("sleep 31337")) - {cli.pid}), what="remote sleep")
        [live] = [s for s in await admin_client.sessions() if s["live"]]
        assert live["state"] == "active"
        cli.kill()  # no goodbye: the connection just drops
        cli.wait(10)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
    record = await ended_record(admin_client, live["id"])
    assert record["end_reason"] == "technician lost"
    assert (await session_end(admin_client, live["id"]))["details"]["reason"] == "technician lost"
    wait_for(lambda: not pgrep("sleep 31337"), what="the remote sleep to be ended")


async def test_admin_kills_a_live_session(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    tech = await technician(admin_client, "tom")
    tech_cli = cli_as(relay, tmp_path / "tech", tech)
    admin_cli = cli_as_admin(relay, tmp_path / "admin")
    argv: list[str | Path] = [BIN / "helpline", "shell", "desk-1"]
    with on_pty(argv, env=helpline_env(tech_cli)) as terminal:
        before = terminal.attributes()
        await asyncio.to_thread(terminal.wait_raw)
        terminal.write(marker_command("up", "yes"))
        await asyncio.to_thread(terminal.read_until, marker("up", "yes"))

        listed = run_helpline(admin_cli, "sessions", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [live] = json.loads(listed.stdout)
        assert (live["live"], live["state"], live["username"]) == (True, "active", "tom")

        # A technician may not kill, not even their own session.
        status, body = await api(
            relay, "POST", f"/api/v1/sessions/{live['id']}/kill", token=tech_token(tech_cli)
        )
        assert status == 403, body
        refused = run_helpline(tech_cli, "sessions", "kill", live["id"][:12])
        assert refused.returncode == 1
        assert "admin" in refused.stderr
        assert (await session_record(admin_client, live["id"]))["live"] is True

        killed = run_helpline(admin_cli, "sessions", "kill", live["id"][:12])
        assert killed.returncode == 0, killed.stderr
        assert live["id"] in killed.stdout
        status_code = await asyncio.to_thread(terminal.wait)
        await asyncio.to_thread(terminal.read_until, b"session ended")
        after = terminal.attributes()
    assert status_code == 255
    assert b"ended by admin" in terminal.output
    assert after == before
    record = await ended_record(admin_client, live["id"])
    assert record["end_reason"] == "admin"
    [kill] = await session_entries(admin_client, live["id"], "session.kill")
    assert kill["actor"] == relay.admin["username"]
    assert kill["details"]["technician"] == "tom"
    assert (await session_end(admin_client, live["id"]))["details"]["reason"] == "admin"


def tech_token(config: Path) -> str:
    return str(json.loads((config / "credentials.json").read_text())["token"])


async def test_customer_ends_a_session_and_the_list_shows_every_ending(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    """``helpline sessions list --json``: live, then ended by the command's exit, by the
    technician and by the customer (``helpline-agent sessions end``), with durations and
    byte counts; a technician sees their own sessions, an admin everyone's."""
    agent = start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    tech = await technician(admin_client, "tom")
    other = await technician(admin_client, "tess")
    tech_cli = cli_as(relay, tmp_path / "tech", tech)

    def listed(config: Path) -> dict[str, dict[str, object]]:
        result = run_helpline(config, "sessions", "list", "--json")
        assert result.returncode == 0, result.stderr
        return {s["id"]: s for s in json.loads(result.stdout)}

    async with logged_in(relay, tech) as client, client.connect() as console:
        cat = await console.open_session(
            "desk-1", "shell", reason="echo test", params={"command": "cat", "pty": "0"}
        )
        await cat.write(b"ping\n")
        await read_until(cat, b"ping\n")
        live = listed(tech_cli)[cat.session_id]
        assert (live["live"], live["state"], live["reason"]) == (True, "active", "echo test")
        assert (live["bytes_to_device"], live["bytes_from_device"]) == (5, 5)
        assert live["end_reason"] is None
        await cat.write(b"pong!\n")
        await read_until(cat, b"pong!\n")
        await cat.send_eof()
        await read_to_end(cat)

        shell = await console.open_session("desk-1", "shell", params={"pty": "1"})
        await shell.write(marker_command("up", "yes"))
        await read_until(shell, marker("up", "yes"))
        await shell.close()  # the technician ends it

        # The customer sees the session on their machine and ends it.
        printer = await console.open_session(
            "desk-1", "shell", reason="fix the printer", params={"pty": "1"}
        )
        await printer.write(marker_command("up", "yes"))
        await read_until(printer, marker("up", "yes"))
        on_device = await asyncio.to_thread(agent_sessions, agent, "list")
        assert on_device.returncode == 0, on_device.stderr
        assert printer.session_id in on_device.stdout
        assert "tom" in on_device.stdout and "fix the printer" in on_device.stdout
        unknown = await asyncio.to_thread(agent_sessions, agent, "end", "0" * 32)
        assert unknown.returncode == 1
        assert "no such session" in unknown.stderr
        ended = await asyncio.to_thread(agent_sessions, agent, "end", printer.session_id)
        assert ended.returncode == 0, ended.stderr
        await read_to_end(printer)
        closed = await asyncio.wait_for(printer.wait_closed(), WITHIN)
        assert closed.code == 4460
        assert "customer" in closed.message
    async with logged_in(relay, other) as client, client.connect() as console:
        theirs = await console.open_session(
            "desk-1", "shell", params={"command": "echo theirs", "pty": "0"}
        )
        await read_to_end(theirs)

    for session in (cat, shell, printer):
        await ended_record(admin_client, session.session_id)
    mine = listed(tech_cli)
    # A technician sees their own sessions only.
    assert set(mine) == {cat.session_id, shell.session_id, printer.session_id}
    done = mine[cat.session_id]
    assert (done["live"], done["state"], done["end_reason"]) == (False, "ended", "exited")
    assert (done["bytes_to_device"], done["bytes_from_device"]) == (11, 11)
    assert done["exit_code"] == 0
    assert isinstance(done["duration"], float) and done["duration"] >= 0
    assert done["has_recording"] is True
    assert done["consent"] == "granted:allow"
    assert mine[shell.session_id]["end_reason"] == "technician"
    assert mine[shell.session_id]["exit_code"] is None
    assert mine[printer.session_id]["end_reason"] == "customer"

    everything = {s["id"] for s in await admin_client.sessions()}
    assert everything == {cat.session_id, shell.session_id, printer.session_id, theirs.session_id}
    end = await session_end(admin_client, cat.session_id)
    assert end["details"]["duration"] == pytest.approx(done["duration"], abs=0.01)
    assert (end["details"]["bytes_to_device"], end["details"]["bytes_from_device"]) == (11, 11)
    assert (await session_end(admin_client, printer.session_id))["details"]["reason"] == "customer"

    table = run_helpline(tech_cli, "sessions", "list")
    assert table.returncode == 0, table.stderr
    assert cat.session_id[:12] in table.stdout and "customer" in table.stdout


async def test_silent_command_ends_cleanly_when_the_technician_accepts_late(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    """A command that prints nothing and exits at once: its exit status and close reach the
    relay before the technician's side accepted the channel. They must wait for it."""
    agent = start_agent("desk-1", consent=ALLOW)
    await wait_online(admin_client, "desk-1")
    tech = await technician(admin_client, "tom")
    async with logged_in(relay, tech) as client:
        assert client.token is not None
        async with raw_console_link(relay, client.token) as link:
            console = RawConsole(link)
            await console.flush()  # our Hello
            await console.expect(lambda e: isinstance(e, Hello))
            silent = {"command": "exit 9", "pty": "0"}
            await console.send(
                SessionRequest(request=1, device="desk-1", kind="shell", params=silent)
            )
            offered = await console.expect(lambda e: isinstance(e, ChannelOpened))
            assert isinstance(offered, ChannelOpened)
            await asyncio.to_thread(
                wait_for, lambda: "shell exited (9)" in agent.log(), what="the command to end"
            )
            # A barrier: the agent answers a second request on the same connection after it
            # sent the first one's end, so once this is answered the relay has that end.
            await console.send(
                SessionRequest(
                    request=2, device="desk-1", kind="shell", params={"command": "echo barrier"}
                )
            )
            await console.expect(
                lambda e: (
                    (isinstance(e, ChannelOpened) and e.params.get("request") == "2")
                    or (isinstance(e, SessionStatus) and e.request == 2 and e.state != "waiting")
                )
            )
            early = [
                e
                for e in console.seen
                if getattr(e, "channel", None) == offered.channel
                and not isinstance(e, ChannelOpened)
            ]
            assert not early, f"the offered channel ended before it was accepted: {early}"
            link.conn.accept_channel(offered.channel)  # only now
            await console.flush()
            exits = []
            while True:
                event = await console.expect(
                    lambda e: getattr(e, "channel", None) == offered.channel
                )
                if isinstance(event, ChannelMessage) and isinstance(event.message, ExitStatus):
                    exits.append(event.message.code)
                if isinstance(event, ChannelClosed):
                    break
    assert "relay closed the connection" not in agent.log()  # the device stayed connected
    assert exits == [9]
    assert event.code == 1000
    record = await ended_record(admin_client, offered.params["session"])
    assert (record["end_reason"], record["exit_code"]) == ("exited", 9)
