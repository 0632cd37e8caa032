"""Roles and grants, enforced by the relay: a technician is refused every admin API and sees
only the devices of the groups granted to them; an auditor reads and verifies the audit
log and nothing else. Refusals are 403 NotPermitted, audited, and change nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from console.client import HelplineClient
from protocol import DeviceStatus, Heartbeat, HeartbeatAck, Hello
from protocol.errors import ErrorCode, NotFound, NotPermitted

from .conftest import AgentProcess, RelayProcess, async_wait_for, run_helpline
from .helpers import api, audit_entries, cli_login, logged_in, new_user, raw_console_link

StartAgent = Callable[..., AgentProcess]


async def online_names(client: HelplineClient) -> set[str]:
    return {d["name"] for d in await client.devices() if d["online"]}


async def wait_online(client: HelplineClient, *names: str) -> None:
    async def ready() -> bool:
        return set(names) <= await online_names(client)

    await async_wait_for(ready, what=f"{names} online")


async def console_device_statuses(relay: RelayProcess, token: str) -> set[str]:
    """What the relay's console endpoint announces to this user, up to a heartbeat's echo."""
    async with raw_console_link(relay, token) as link:
        await link.send_hello()
        assert isinstance(await link.next_message(), Hello)
        await link.send_message(Heartbeat(seq=7))
        names = set()
        while True:
            message = await link.next_message()
            if isinstance(message, HeartbeatAck):
                assert message.seq == 7
                return names
            assert isinstance(message, DeviceStatus), message
            names.add(message.name)


def admin_calls(
    device: str, username: str
) -> dict[str, Callable[[HelplineClient], Awaitable[Any]]]:
    return {
        "list users": lambda c: c.users(),
        "create user": lambda c: c.create_user("mallory", role="admin"),
        "promote self": lambda c: c.update_user(username, role="admin"),
        "unlock": lambda c: c.unlock_user(username),
        "reset totp": lambda c: c.reset_totp("admin"),
        "delete user": lambda c: c.delete_user("admin"),
        "list groups": lambda c: c.groups(),
        "create group": lambda c: c.create_group("mine"),
        "delete group": lambda c: c.delete_group("default"),
        "list grants": lambda c: c.grants(),
        "grant self": lambda c: c.add_grant(username, "default"),
        "remove grant": lambda c: c.remove_grant(username, "default"),
        "list tokens": lambda c: c.enrolment_tokens(),
        "create token": lambda c: c.create_enrolment_token("default"),
        "revoke token": lambda c: c.revoke_enrolment_token(1),
        "revoke device": lambda c: c.revoke_device(device),
        "move device": lambda c: c.update_device(device, group="default"),
    }


async def not_permitted(
    what: str, call: Callable[[HelplineClient], Awaitable[Any]], client: HelplineClient
) -> NotPermitted:
    try:
        await call(client)
    except NotPermitted as error:
        return error
    raise AssertionError(f"{(await client.me())['role']} was allowed to {what}")


async def test_technician_is_refused_every_admin_api(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    start_agent("desk-1")
    await wait_online(admin_client, "desk-1")
    tech = await new_user(admin_client, "tina", role="technician")
    users_before = await admin_client.users()
    groups_before = await admin_client.groups()
    tokens_before = await admin_client.enrolment_tokens()

    calls = admin_calls("desk-1", "tina")
    async with logged_in(relay, tech) as client:
        for what, call in calls.items():
            error = await not_permitted(what, call, client)
            assert error.code == ErrorCode.NOT_PERMITTED, what
            assert error.message == "this needs the admin role", what
        status, body = await api(relay, "GET", "/api/v1/users", token=client.token)
        assert status == 403
        assert body["error"]["code"] == ErrorCode.NOT_PERMITTED

        # Every refusal is audited under the technician's name; none changed a thing.
        denied = await audit_entries(admin_client, action="api.denied")
        assert len(denied) == len(calls) + 1
        assert {e["actor"] for e in denied} == {"tina"}
        assert {"/api/v1/users", "/api/v1/devices/desk-1/revoke"} <= {e["target"] for e in denied}
        assert await admin_client.users() == users_before
        assert await admin_client.groups() == groups_before
        assert await admin_client.enrolment_tokens() == tokens_before
        assert await admin_client.grants() == []
        device = await admin_client.device("desk-1")
        assert device["revoked_at"] is None
        assert device["online"]
        assert (await client.me())["role"] == "technician"

    # The CLI says so in one line and exits non-zero.
    config = tmp_path / "tina-cli"
    cli_login(relay, config, "tina", tech.password, tech.code(step_offset=1))
    result = run_helpline(config, "admin", "users", "list")
    assert result.returncode != 0
    assert result.stderr == "helpline: this needs the admin role\n"
    assert result.stdout == ""
    assert len(await audit_entries(admin_client, action="api.denied")) == len(calls) + 2
    assert (await admin_client.verify_audit()).ok


async def test_technician_sees_only_devices_of_granted_groups(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    start_agent("east-1")
    west = start_agent("west-1")
    await wait_online(admin_client, "east-1", "west-1")
    await admin_client.create_group("east")
    moved = await admin_client.update_device("east-1", group="east")
    assert moved["group"] == "east"
    tech = await new_user(admin_client, "tom", role="technician")

    async with logged_in(relay, tech) as client:
        assert await client.devices() == []
        await admin_client.add_grant("tom", "east")
        assert (await client.me())["groups"] == ["east"]
        devices = await client.devices()
        assert [(d["name"], d["group"], d["online"]) for d in devices] == [("east-1", "east", True)]
        assert (await client.device("east-1"))["name"] == "east-1"
        # Other groups' devices do not exist as far as tom can tell, by name or by id.
        for key in ("west-1", west.device_id):
            with pytest.raises(NotFound) as caught:
                await client.device(key)
            assert caught.value.message == f"no device {key!r}"
        assert client.token is not None
        assert await console_device_statuses(relay, client.token) == {"east-1"}

        await admin_client.remove_grant("tom", "east")
        assert await client.devices() == []
        assert await console_device_statuses(relay, client.token) == set()

    # The admin still sees everything, both agents still online.
    assert await online_names(admin_client) == {"east-1", "west-1"}
    actions = [e["action"] for e in await audit_entries(admin_client)]
    assert {"group.create", "device.update", "grant.add", "grant.remove"} <= set(actions)


async def test_auditor_reads_the_audit_log_and_nothing_else(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent
) -> None:
    start_agent("desk-1")
    await wait_online(admin_client, "desk-1")
    auditor = await new_user(admin_client, "audrey", role="auditor")

    async with logged_in(relay, auditor) as client:
        entries = (await client.audit())["entries"]
        assert {"relay.init", "device.enroll", "user.create"} <= {e["action"] for e in entries}
        assert (await client.verify_audit()).ok
        status, body = await api(relay, "GET", "/api/v1/audit/verify", token=client.token)
        assert status == 200
        assert body["ok"] is True

        refused: dict[str, Callable[[HelplineClient], Awaitable[Any]]] = {
            "list devices": lambda c: c.devices(),
            "show device": lambda c: c.device("desk-1"),
            **admin_calls("desk-1", "audrey"),
        }
        for what, call in refused.items():
            error = await not_permitted(what, call, client)
            assert error.message.startswith("this needs the admin"), what
        status, body = await api(relay, "GET", "/api/v1/devices", token=client.token)
        assert status == 403
        assert body["error"]["message"] == "this needs the admin or technician role"
        assert client.token is not None
        assert await console_device_statuses(relay, client.token) == set()

    denied = await audit_entries(admin_client, action="api.denied")
    assert len(denied) == len(refused) + 1
    assert {e["details"]["role"] for e in denied} == {"auditor"}
    device = await admin_client.device("desk-1")
    assert device["online"]
    assert device["revoked_at"] is None
    assert "mallory" not in {u["username"] for u in await admin_client.users()}
