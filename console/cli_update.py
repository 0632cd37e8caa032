"""``helpline package`` (keygen, build, sign, verify: local, offline) and ``helpline update``
(push, status, list, cancel: through the relay).

A publisher keeps the private key offline; ``package sign`` is the only step that needs
it. Agents install a package only when it is signed by a key pinned in their own
``agent.toml``.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.files import write_public, write_secret
from certs.packages import (
    PackageError,
    PublisherKeys,
    build_package,
    generate_publisher_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_key_pem,
    read_header_file,
    sign_package,
    verify_package,
)

from .clicommon import CliError
from .clicommon import logged_in_client as _client
from .client import HelplineClient
from .output import as_json, printable, table, when

#: Seconds between status polls of ``update push --wait``.
POLL = 0.5

# -- packages (no relay involved) ----------------------------------------------------------


def _package_error(error: PackageError) -> CliError:
    return CliError(str(error))


def _keygen(out: Path) -> tuple[Path, Ed25519PrivateKey]:
    public = out.with_name(out.name + ".pub")
    if out.exists() or public.exists():
        raise CliError(f"{out} or {public} already exists; not overwriting a key")
    key = generate_publisher_key()
    write_secret(out, private_key_pem(key))
    write_public(public, public_key_pem(key.public_key()))
    return public, key


async def cmd_package_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    public, key = await asyncio.to_thread(_keygen, out)
    print(f"private key: {out} (0600: keep it offline)")
    print(f"public key:  {public} (pin it on agents: helpline-agent enroll --publisher-key)")
    print(f"key id:      {key_id(key.public_key())}")
    return 0


async def cmd_package_build(args: argparse.Namespace) -> int:
    try:
        install = shlex.split(args.install)
    except ValueError as exc:
        raise CliError(f"--install: {exc}") from None
    try:
        manifest = await asyncio.to_thread(
            build_package,
            Path(args.directory),
            Path(args.output),
            name=args.name,
            version=args.version,
            install=install,
            kind=args.kind,
            platform=args.platform,
        )
    except PackageError as error:
        raise _package_error(error) from None
    print(
        f"built {args.output}: {manifest.name} {manifest.version} ({manifest.kind},"
        f" {manifest.platform}), payload {manifest.payload_size} bytes"
        f" sha256 {manifest.payload_sha256}; unsigned: run 'helpline package sign'"
    )
    return 0


async def cmd_package_sign(args: argparse.Namespace) -> int:
    try:
        data = await asyncio.to_thread(Path(args.key).read_bytes)
        header = await asyncio.to_thread(
            sign_package,
            Path(args.file),
            load_private_key(data),
            Path(args.output) if args.output else None,
        )
    except PackageError as error:
        raise _package_error(error) from None
    manifest = header.manifest
    print(f"signed {manifest.name} {manifest.version} with {header.signer}")
    return 0


async def cmd_package_verify(args: argparse.Namespace) -> int:
    try:
        trusted = PublisherKeys.from_pem_files(Path(p) for p in args.pubkey)
        header = await asyncio.to_thread(verify_package, Path(args.file), trusted)
    except PackageError as error:
        raise CliError(f"{args.file}: REFUSED: {error}") from None
    if args.json:
        as_json({"signer": header.signer, "manifest": header.manifest.to_dict()})
        return 0
    _print_manifest(header.manifest.to_dict())
    print(f"OK: signed by {header.signer}, payload verified")
    return 0


def _print_manifest(manifest: dict[str, Any]) -> None:
    for key in ("name", "version", "kind", "platform", "install", "payload_size", "created"):
        value = manifest[key]
        if key == "install":
            value = shlex.join(value)
        elif key == "created":
            value = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))
        print(f"{key + ':':14} {printable(value)}")
    print(f"{'sha256:':14} {manifest['payload_sha256']}")


# -- updates through the relay ---------------------------------------------------------------


def _unique(prefix: str, rollouts: list[dict[str, Any]]) -> str:
    matches = [r["id"] for r in rollouts if r["id"].startswith(prefix)]
    if len(matches) != 1:
        raise CliError(
            f"no rollout matches {prefix!r}" if not matches else f"{prefix!r} is ambiguous"
        )
    return str(matches[0])


async def _resolve(client: HelplineClient, prefix: str) -> str:
    if len(prefix) == 32:
        return prefix
    body = await client.request("GET", "/api/v1/updates/rollouts")
    return _unique(prefix, body["rollouts"])


async def cmd_update_push(args: argparse.Namespace) -> int:
    path = Path(args.package)
    try:
        header = await asyncio.to_thread(read_header_file, path)
    except (PackageError, OSError) as error:
        raise CliError(f"{path}: {error}") from None
    if header.signer is None:
        raise CliError(f"{path}: the package is not signed; run 'helpline package sign'")
    fields: dict[str, Any] = {"max_failures": args.max_failures, "downgrade": args.downgrade}
    fields["device" if args.device else "group"] = args.device or args.group
    for name in ("batch", "percent", "timeout", "expires", "reason"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    async with _client() as client:
        uploaded = await client.upload("/api/v1/updates/packages", path)
        fields["package"] = uploaded["sha256"]
        rollout = await client.request("POST", "/api/v1/updates/rollouts", json=fields)
        if args.wait:
            while rollout["state"] == "running":
                await asyncio.sleep(POLL)
                rollout = await client.request("GET", f"/api/v1/updates/rollouts/{rollout['id']}")
    if args.json:
        as_json(rollout)
    elif args.wait:
        _print_status(rollout)
    else:
        print(
            f"rollout {rollout['id']}: {rollout['package_name']} {rollout['package_version']}"
            f" to {len(rollout['devices'])} device(s) in batches of {rollout['batch_size']};"
            f" follow it with: helpline update status {rollout['id'][:8]}"
        )
    return 0 if rollout["state"] in ("running", "completed") else 2


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:60] if lines else ""


def _print_status(rollout: dict[str, Any]) -> None:
    print(
        f"rollout {rollout['id']}  {rollout['package_name']} {rollout['package_version']}"
        f" ({rollout['package_kind']})  to {rollout['target_kind']} {printable(rollout['target'])}"
    )
    print(
        f"state: {rollout['state']}{'  (' + rollout['message'] + ')' if rollout['message'] else ''}"
        f"  by {rollout['created_by']}  batches of {rollout['batch_size']},"
        f" max failures {rollout['max_failures']}  signer {rollout['signer']}"
    )
    table(
        ("device", "batch", "state", "exit", "message", "log"),
        [
            (
                d["device_name"],
                d["batch"] + 1,
                d["state"],
                "-" if d["exit_code"] is None else d["exit_code"],
                d["message"][:80],
                _last_line(d["log_tail"]),
            )
            for d in rollout["devices"]
        ],
    )


async def cmd_update_status(args: argparse.Namespace) -> int:
    async with _client() as client:
        rollout_id = await _resolve(client, args.id)
        rollout = await client.request("GET", f"/api/v1/updates/rollouts/{rollout_id}")
    if args.json:
        as_json(rollout)
    else:
        _print_status(rollout)
    return 0


async def cmd_update_list(args: argparse.Namespace) -> int:
    async with _client() as client:
        body = await client.request("GET", "/api/v1/updates/rollouts")
    rollouts = body["rollouts"]
    if args.json:
        as_json(rollouts)
        return 0
    table(
        ("id", "package", "version", "target", "state", "results", "by", "created"),
        [
            (
                r["id"][:8],
                r["package_name"],
                r["package_version"],
                f"{r['target_kind']}:{r['target']}",
                r["state"],
                " ".join(f"{k}={v}" for k, v in sorted(r["counts"].items())),
                r["created_by"],
                when(r["created_at"]),
            )
            for r in rollouts
        ],
    )
    return 0


async def cmd_update_cancel(args: argparse.Namespace) -> int:
    async with _client() as client:
        rollout_id = await _resolve(client, args.id)
        rollout = await client.request("POST", f"/api/v1/updates/rollouts/{rollout_id}/cancel")
    print(f"rollout {rollout['id']}: {rollout['state']}")
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``package`` and ``update`` in the ``helpline`` parser."""
    package = commands.add_parser("package", help="build, sign and verify update packages")
    package_commands = package.add_subparsers(dest="package_command", required=True)
    keygen = package_commands.add_parser("keygen", help="a new Ed25519 publisher key pair")
    keygen.add_argument("out", help="private key file (the public key goes to OUT.pub)")
    keygen.set_defaults(run=cmd_package_keygen)
    build = package_commands.add_parser("build", help="pack a directory (unsigned)")
    build.add_argument("directory")
    build.add_argument("--name", required=True)
    build.add_argument("--version", required=True, help="dotted numbers, e.g. 1.4.2")
    build.add_argument(
        "--install", required=True, help="the command run in the unpacked directory (quoted)"
    )
    build.add_argument("--platform", default="any", help="linux, darwin, ... or any")
    build.add_argument("--kind", choices=("software", "agent"), default="software")
    build.add_argument("-o", "--output", required=True)
    build.set_defaults(run=cmd_package_build)
    sign = package_commands.add_parser("sign", help="sign a package with a publisher key")
    sign.add_argument("file")
    sign.add_argument("--key", required=True, help="the private key from 'package keygen'")
    sign.add_argument("-o", "--output", help="write here instead of in place")
    sign.set_defaults(run=cmd_package_sign)
    verify = package_commands.add_parser("verify", help="check signature and payload")
    verify.add_argument("file")
    verify.add_argument("--pubkey", action="append", required=True, help="trusted key (repeat)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=cmd_package_verify)

    update = commands.add_parser("update", help="push packages to devices, follow rollouts")
    update_commands = update.add_subparsers(dest="update_command", required=True)
    push = update_commands.add_parser("push", help="upload a signed package and start a rollout")
    push.add_argument("package")
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--device")
    target.add_argument("--group")
    size = push.add_mutually_exclusive_group()
    size.add_argument("--batch", type=int, help="devices per batch")
    size.add_argument("--percent", type=int, help="batch size as a percentage of the devices")
    push.add_argument("--max-failures", type=int, default=0, help="halt when more fail")
    push.add_argument("--reason", help="shown to the customer and audited")
    push.add_argument("--downgrade", action="store_true", help="a deliberate downgrade")
    push.add_argument("--timeout", type=int, help="seconds the install command may run")
    push.add_argument("--expires", type=int, help="seconds to wait for offline devices")
    push.add_argument(
        "--wait",
        action="store_true",
        help="wait for the end and show the status (exit status 2 unless it completed)",
    )
    push.add_argument("--json", action="store_true")
    push.set_defaults(run=cmd_update_push)
    status = update_commands.add_parser("status", help="per-device results of a rollout")
    status.add_argument("id", help="rollout id (or a unique prefix)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=cmd_update_status)
    listing = update_commands.add_parser("list", help="rollouts")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_update_list)
    cancel = update_commands.add_parser("cancel", help="stop a running rollout")
    cancel.add_argument("id")
    cancel.set_defaults(run=cmd_update_cancel)
