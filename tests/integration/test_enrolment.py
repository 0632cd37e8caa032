"""Enrolling with a bad token, a wrong CA fingerprint or a taken name, with the real
``helpline-agent enroll``: a clear one-line refusal, a non-zero exit, no key left on disk,
the token not spent unless it was really used, every relay-side refusal audited, and the
agents already enrolled undisturbed."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from certs.authority import build_agent_csr
from certs.keys import generate_private_key
from console.client import HelplineClient
from protocol.errors import ErrorCode

from .conftest import BIN, AgentProcess, RelayProcess, async_wait_for, wait_for
from .helpers import api, audit_entries

StartAgent = Callable[..., AgentProcess]
REFUSED = "helpline-agent: enrolment token unknown, expired, revoked or used up\n"


def enroll(
    relay: RelayProcess, config: Path, token: str, name: str, fingerprint: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            BIN / "helpline-agent",
            "enroll",
            relay.url,
            "--token",
            token,
            "--ca-fingerprint",
            fingerprint or relay.ca_fingerprint,
            "--config",
            config,
            "--name",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def assert_nothing_written(config: Path) -> None:
    left = sorted(p.name for p in config.rglob("*")) if config.exists() else []
    assert left == [], f"enrolment refused but left {left} in {config}"


async def token_uses(admin: HelplineClient, token_id: int) -> int:
    tokens = {t["id"]: t for t in await admin.enrolment_tokens()}
    return int(tokens[token_id]["uses"])


async def refusals(admin: HelplineClient) -> list[tuple[str, str]]:
    return [
        (e["target"], e["details"]["reason"])
        for e in await audit_entries(admin, action="device.enroll_refused")
    ]


async def wait_online(admin: HelplineClient, name: str) -> None:
    async def online() -> bool:
        return any(d["name"] == name and d["online"] for d in await admin.devices())

    await async_wait_for(online, what=f"{name} online")


async def test_unknown_expired_used_up_and_revoked_tokens_are_refused(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    start_agent("bystander")
    await wait_online(admin_client, "bystander")

    # An operator's token that lives one second.
    made = relay.cli("token", "create", "--data", relay.data_dir, "--expires", "1", "--json")
    expiring: dict[str, Any] = json.loads(made.stdout)
    revoked = await admin_client.create_enrolment_token(max_uses=5)
    await admin_client.revoke_enrolment_token(revoked["id"])
    single = await admin_client.create_enrolment_token(max_uses=1)
    first = enroll(relay, tmp_path / "first", single["token"], "first")
    assert first.returncode == 0, first.stderr

    wait_for(lambda: time.time() > expiring["expires_at"], what="the one-second token to expire")
    cases = {
        "unknown": ("hle_" + "x" * 32, "unknown token"),
        "expired": (expiring["token"], "expired"),
        "used-up": (single["token"], "used up"),
        "revoked": (revoked["token"], "revoked"),
    }
    for name, (token, _) in cases.items():
        config = tmp_path / name
        result = enroll(relay, config, token, name)
        assert result.returncode != 0, name
        assert result.stderr == REFUSED, name
        assert_nothing_written(config)

    assert await refusals(admin_client) == [(n, reason) for n, (_, reason) in cases.items()]
    assert await token_uses(admin_client, expiring["id"]) == 0
    assert await token_uses(admin_client, revoked["id"]) == 0
    assert await token_uses(admin_client, single["id"]) == 1
    names = {d["name"] for d in await admin_client.devices()}
    assert names == {"bystander", "first"}
    assert (await admin_client.device("bystander"))["online"]
    assert (await admin_client.verify_audit()).ok


async def test_wrong_ca_fingerprint_is_refused_before_the_token_is_sent(
    relay: RelayProcess, admin_client: HelplineClient, tmp_path: Path
) -> None:
    token = await admin_client.create_enrolment_token(max_uses=1)
    audit_before = await audit_entries(admin_client)
    wrong = "sha256:" + "ab" * 32

    result = enroll(relay, tmp_path / "desk", token["token"], "desk", fingerprint=wrong)
    assert result.returncode != 0
    assert result.stderr.startswith("helpline-agent: the relay's CA is sha256:")
    assert f"not the expected {wrong}; refusing to trust it" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert_nothing_written(tmp_path / "desk")
    # The relay never saw the token: not spent, nothing to audit.
    assert await token_uses(admin_client, token["id"]) == 0
    assert await audit_entries(admin_client) == audit_before

    good = enroll(relay, tmp_path / "desk", token["token"], "desk")
    assert good.returncode == 0, good.stderr
    assert await token_uses(admin_client, token["id"]) == 1


async def test_duplicate_device_name_is_refused_without_spending_the_token(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    original = start_agent("desk")
    await wait_online(admin_client, "desk")
    token = await admin_client.create_enrolment_token(max_uses=1)

    result = enroll(relay, tmp_path / "impostor", token["token"], "desk")
    assert result.returncode != 0
    assert result.stderr == (
        "helpline-agent: a device named 'desk' is already enrolled; choose another --name\n"
    )
    assert_nothing_written(tmp_path / "impostor")
    csr = build_agent_csr(generate_private_key(), "desk").decode()
    status, body = await api(
        relay, "POST", "/api/v1/enroll", body={"token": token["token"], "csr": csr, "name": "desk"}
    )
    assert status == 409
    assert body["error"]["code"] == ErrorCode.CONFLICT

    assert await token_uses(admin_client, token["id"]) == 0
    assert await refusals(admin_client) == [("desk", "name taken"), ("desk", "name taken")]
    device = await admin_client.device("desk")
    assert device["id"] == original.device_id
    assert device["online"]

    # The unspent token still enrols a machine under a free name.
    other = enroll(relay, tmp_path / "desk-2", token["token"], "desk-2")
    assert other.returncode == 0, other.stderr
    assert await token_uses(admin_client, token["id"]) == 1
    assert {d["name"] for d in await admin_client.devices()} == {"desk", "desk-2"}


async def test_a_dead_token_does_not_tell_which_device_names_exist(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, tmp_path: Path
) -> None:
    """Revoked, expired and used-up tokens get the same refusal for a taken name as for a
    free one: the token is checked before the name, so only a usable token learns names."""
    start_agent("desk")
    await wait_online(admin_client, "desk")
    made = relay.cli("token", "create", "--data", relay.data_dir, "--expires", "1", "--json")
    expired: dict[str, Any] = json.loads(made.stdout)
    revoked = await admin_client.create_enrolment_token(max_uses=5)
    await admin_client.revoke_enrolment_token(revoked["id"])
    used_up = await admin_client.create_enrolment_token(max_uses=1)
    assert enroll(relay, tmp_path / "first", used_up["token"], "first").returncode == 0
    wait_for(lambda: time.time() > expired["expires_at"], what="the one-second token to expire")

    answers = []
    for token in (expired, revoked, used_up):
        for name in ("desk", "free-name"):
            csr = build_agent_csr(generate_private_key(), name).decode()
            body = {"token": token["token"], "csr": csr, "name": name}
            answers.append(await api(relay, "POST", "/api/v1/enroll", body=body))
        result = enroll(relay, tmp_path / f"cli-{token['id']}", token["token"], "desk")
        assert result.returncode != 0
        assert result.stderr == REFUSED
        assert_nothing_written(tmp_path / f"cli-{token['id']}")

    refused = {"error": {"code": ErrorCode.AUTH_FAILED, "message": REFUSED[16:-1]}}
    assert answers == [(401, refused)] * 6
    reasons = [r for n, r in await refusals(admin_client)]
    assert "name taken" not in reasons
    assert sorted(set(reasons)) == ["expired", "revoked", "used up"]
    # Nothing spent, nothing enrolled, the device with that name untouched.
    assert await token_uses(admin_client, revoked["id"]) == 0
    assert await token_uses(admin_client, expired["id"]) == 0
    assert {d["name"] for d in await admin_client.devices()} == {"desk", "first"}
    assert (await admin_client.device("desk"))["online"]
    assert (await admin_client.verify_audit()).ok
