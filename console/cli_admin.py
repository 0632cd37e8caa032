"""``helpline admin``: users, groups, grants, enrolment tokens and devices."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from .clicommon import logged_in_client as _client
from .client import HelplineClient
from .output import as_json, table, when


def _device_state(device: dict[str, Any]) -> str:
    if device.get("revoked_at"):
        return "revoked"
    return "online" if device["online"] else "offline"


def print_devices(devices: list[dict[str, Any]]) -> None:
    rows = [
        (
            d["name"],
            d["group"],
            _device_state(d),
            when(d.get("last_seen")),
            d.get("inventory", {}).get("os", ""),
            d.get("inventory", {}).get("agent_version", ""),
            d["id"],
        )
        for d in devices
    ]
    table(("name", "group", "state", "last seen", "os", "agent", "id"), rows)


async def cmd_admin(args: argparse.Namespace) -> int:
    async with _client() as client:
        result = await ADMIN_ACTIONS[(args.area, args.action)](client, args)
    if args.json:
        as_json(result)
    elif isinstance(result, str):
        print(result)
    return 0


async def _users_list(client: HelplineClient, args: argparse.Namespace) -> Any:
    users = await client.users()
    if not args.json:
        table(
            ("username", "full name", "role", "totp", "locked until", "disabled"),
            [
                (
                    u["username"],
                    u["full_name"],
                    u["role"],
                    "yes" if u["totp_required"] else "no",
                    when(u["locked_until"]) if u["locked_until"] else "-",
                    "yes" if u["disabled"] else "no",
                )
                for u in users
            ],
        )
    return users


async def _users_create(client: HelplineClient, args: argparse.Namespace) -> Any:
    fields: dict[str, Any] = {"full_name": args.full_name, "role": args.role}
    if args.password_stdin:
        fields["password"] = sys.stdin.readline().rstrip("\n")
    if args.no_totp:
        fields["totp_required"] = False
    body = await client.create_user(args.username, **fields)
    if args.json:
        return body
    lines = [f"created {args.username} ({args.role})"]
    if "password" in body:
        lines.append(f"  password:    {body['password']}")
    lines.append(f"  TOTP secret: {body['totp_secret']}")
    lines.append(f"  TOTP URI:    {body['totp_uri']}")
    return "\n".join(lines)


async def _users_delete(client: HelplineClient, args: argparse.Namespace) -> Any:
    await client.delete_user(args.username)
    return f"deleted {args.username}"


async def _users_unlock(client: HelplineClient, args: argparse.Namespace) -> Any:
    await client.unlock_user(args.username)
    return f"unlocked {args.username}"


async def _users_disable(client: HelplineClient, args: argparse.Namespace) -> Any:
    await client.update_user(args.username, disabled=True)
    return f"disabled {args.username}"


async def _users_enable(client: HelplineClient, args: argparse.Namespace) -> Any:
    await client.update_user(args.username, disabled=False)
    return f"enabled {args.username}"


async def _users_reset_totp(client: HelplineClient, args: argparse.Namespace) -> Any:
    body = await client.reset_totp(args.username)
    return body if args.json else f"new TOTP secret for {args.username}: {body['totp_secret']}"


async def _groups_list(client: HelplineClient, args: argparse.Namespace) -> Any:
    groups = await client.groups()
    if not args.json:
        table(("name", "created"), [(g["name"], when(g["created_at"])) for g in groups])
    return groups


async def _groups_create(client: HelplineClient, args: argparse.Namespace) -> Any:
    await client.create_group(args.name)
    return f"created group {args.name}"


async def _groups_delete(client: HelplineClient, args: argparse.Namespace) -> Any:
    await client.delete_group(args.name)
    return f"deleted group {args.name}"


async def _grants_list(client: HelplineClient, args: argparse.Namespace) -> Any:
    grants = await client.grants()
    if not args.json:
        table(("username", "group"), [(g["username"], g["group"]) for g in grants])
    return grants


async def _grants_add(client: HelplineClient, args: argparse.Namespace) -> Any:
    await client.add_grant(args.username, args.group)
    return f"{args.username} may now open sessions on devices of {args.group}"


async def _grants_remove(client: HelplineClient, args: argparse.Namespace) -> Any:
    await client.remove_grant(args.username, args.group)
    return f"removed {args.username}'s grant on {args.group}"


async def _tokens_list(client: HelplineClient, args: argparse.Namespace) -> Any:
    tokens = await client.enrolment_tokens()
    if not args.json:
        table(
            ("id", "group", "uses", "expires", "revoked", "created by"),
            [
                (
                    t["id"],
                    t["group"],
                    f"{t['uses']}/{t['max_uses']}",
                    when(t["expires_at"]),
                    "yes" if t["revoked"] else "no",
                    t["created_by"],
                )
                for t in tokens
            ],
        )
    return tokens


async def _tokens_create(client: HelplineClient, args: argparse.Namespace) -> Any:
    body = await client.create_enrolment_token(
        args.group, expires_in=args.expires, max_uses=args.uses
    )
    if args.json:
        return body
    return f"token: {body['token']}\nenrol a machine with:\n  {body['command']}"


async def _tokens_revoke(client: HelplineClient, args: argparse.Namespace) -> Any:
    await client.revoke_enrolment_token(args.id)
    return f"revoked enrolment token {args.id}"


async def _devices_list(client: HelplineClient, args: argparse.Namespace) -> Any:
    devices = await client.devices()
    if not args.json:
        print_devices(devices)
    return devices


async def _devices_revoke(client: HelplineClient, args: argparse.Namespace) -> Any:
    await client.revoke_device(args.device)
    return f"revoked {args.device}: its certificate is refused from now on"


async def _devices_move(client: HelplineClient, args: argparse.Namespace) -> Any:
    await client.update_device(args.device, group=args.group)
    return f"moved {args.device} to {args.group}"


ADMIN_ACTIONS: dict[
    tuple[str, str], Callable[[HelplineClient, argparse.Namespace], Awaitable[Any]]
] = {
    ("users", "list"): _users_list,
    ("users", "create"): _users_create,
    ("users", "delete"): _users_delete,
    ("users", "unlock"): _users_unlock,
    ("users", "disable"): _users_disable,
    ("users", "enable"): _users_enable,
    ("users", "reset-totp"): _users_reset_totp,
    ("groups", "list"): _groups_list,
    ("groups", "create"): _groups_create,
    ("groups", "delete"): _groups_delete,
    ("grants", "list"): _grants_list,
    ("grants", "add"): _grants_add,
    ("grants", "remove"): _grants_remove,
    ("tokens", "list"): _tokens_list,
    ("tokens", "create"): _tokens_create,
    ("tokens", "revoke"): _tokens_revoke,
    ("devices", "list"): _devices_list,
    ("devices", "revoke"): _devices_revoke,
    ("devices", "move"): _devices_move,
}
