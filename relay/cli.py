"""``helpline-relay``: init a data directory, serve, and a few local operator commands.

The local commands (``token create``, ``audit verify``) act on the data
directory directly: whoever can read it already holds the CA key, so they need
no login, but every change they make is audited as ``relay-cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path

from .config import ConfigError, load_config
from .logsafe import SafeFormatter

log = logging.getLogger("helpline.relay")


def _setup_logging(verbose: bool, serving: bool) -> None:
    """Serving logs at INFO; one-shot commands only say something when it matters."""
    # Untrusted text (login names, agents' reasons) is escaped in every record: one line each.
    handler = logging.StreamHandler()
    handler.setFormatter(
        SafeFormatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO if serving else logging.WARNING,
        handlers=[handler],
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _init(args: argparse.Namespace) -> int:
    from .init import AlreadyInitialised, init_data_dir

    try:
        admin = asyncio.run(
            init_data_dir(
                args.data, names=args.name or None, listen=args.listen, ssh_listen=args.ssh_listen
            )
        )
    except AlreadyInitialised as exc:
        print(f"helpline-relay: {exc}", file=sys.stderr)
        return 1
    print(f"Initialised relay data directory {args.data}")
    print(f"  URL:                  {admin.url}")
    print(f"  CA fingerprint:       {admin.ca_fingerprint}")
    print(f"  SSH host key:         {admin.ssh_host_key_fingerprint}")
    print(
        "First admin (shown once; also in initial-admin.json, mode 0600, which the relay"
        " removes after this admin's first successful login):"
    )
    print(f"  username:             {admin.username}")
    print(f"  password:             {admin.password}")
    print(f"  TOTP secret:          {admin.totp_secret}")
    print(f"  TOTP URI:             {admin.totp_uri}")
    return 0


async def _serve(data: Path, listen: str | None) -> None:
    from .app import start_relay

    config = load_config(data)
    relay = await start_relay(config, listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"helpline-relay serving on port {relay.port}", flush=True)
    await stop.wait()
    log.info("shutting down")
    await relay.stop()


async def _create_token(data: Path, group: str, uses: int, expires: int) -> dict[str, object]:
    from .api.admin import enrol_command, issue_enrolment_token
    from .app import build_state

    state = await build_state(load_config(data))
    try:
        raw, record = await issue_enrolment_token(state, "relay-cli", group, expires, uses)
        return {"token": raw, **record, "command": enrol_command(state, raw)}
    finally:
        await state.store.close()


async def _verify(data: Path) -> int:
    from .app import build_state

    state = await build_state(load_config(data))
    try:
        report = await state.audit.verify()
    finally:
        await state.store.close()
    if report.ok:
        print(f"audit chain intact: {report.checked} entries")
        return 0
    print(f"audit chain BROKEN at entry {report.bad_seq}: {report.reason}", file=sys.stderr)
    return 2


def _info(data: Path) -> int:
    """What an operator needs to start: URL, fingerprints and, while it exists, the
    first admin's login with a current one-time code."""
    import pyotp

    from .pki import RelayPKI

    config = load_config(data)
    pki = RelayPKI(data)
    print(f"Helpline relay        {config.server.public_url}")
    print(f"CA fingerprint        {pki.ca_fingerprint}")
    host_key = data / "ssh_host_ed25519_key.pub"
    if host_key.exists():
        from .init import ssh_fingerprint

        print(f"SSH host key          {ssh_fingerprint(host_key.read_bytes())}")
    initial = data / "initial-admin.json"
    if initial.exists():
        admin = json.loads(initial.read_text())
        code = pyotp.TOTP(admin["totp_secret"]).now()
        print(f"Admin login           {admin['username']} / {admin['password']}")
        print(f"Admin TOTP secret     {admin['totp_secret']}  (code right now: {code})")
        print("Log in with:")
        print(
            f"  helpline login {config.server.public_url} --user {admin['username']}"
            f" --ca-fingerprint {pki.ca_fingerprint}"
        )
        print(f"  ({initial} is removed after {admin['username']}'s first successful login:")
        print("   keep the password and TOTP secret elsewhere)")
    else:
        print("Admin login           (initial-admin.json is gone: removed at the first login)")
    return 0


async def _wait(data: Path, seconds: float) -> int:
    """Poll the relay's health endpoint (TLS verified against our CA) until it answers."""
    import aiohttp

    from certs.contexts import pinned_client_context

    config = load_config(data)
    context = pinned_client_context((data / "ca.pem").read_text())
    url = config.server.public_url + "/api/v1/health"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            try:
                async with session.get(url, ssl=context) as response:
                    if response.status == 200:
                        return 0
            except (aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.2)
    print(f"helpline-relay: no answer from {url} within {seconds:.0f} s", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="helpline-relay", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="create a new data directory")
    init.add_argument("--data", type=Path, required=True)
    init.add_argument("--name", action="append", help="DNS name or IP for the TLS certificate")
    init.add_argument("--listen", default="127.0.0.1:8443")
    init.add_argument("--ssh-listen", default="127.0.0.1:2222")

    serve = commands.add_parser("serve", help="run the relay")
    serve.add_argument("--data", type=Path, required=True)
    serve.add_argument("--listen", help="HOST:PORT, overriding relay.toml")

    token = commands.add_parser("token", help="enrolment tokens (local operator)")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create")
    create.add_argument("--data", type=Path, required=True)
    create.add_argument("--group", default="default")
    create.add_argument("--uses", type=int, default=1)
    create.add_argument("--expires", type=int, default=86400, help="seconds")
    create.add_argument("--json", action="store_true")

    audit = commands.add_parser("audit", help="the audit log (local operator)")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify")
    verify.add_argument("--data", type=Path, required=True)

    info = commands.add_parser("info", help="URL, fingerprints and the first admin's login")
    info.add_argument("--data", type=Path, required=True)

    wait = commands.add_parser("wait", help="wait until the relay answers")
    wait.add_argument("--data", type=Path, required=True)
    wait.add_argument("--timeout", type=float, default=30.0)

    args = parser.parse_args(argv)
    _setup_logging(args.verbose, serving=args.command == "serve")
    try:
        if args.command == "init":
            return _init(args)
        if args.command == "serve":
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_serve(args.data, args.listen))
            return 0
        if args.command == "token":
            result = asyncio.run(_create_token(args.data, args.group, args.uses, args.expires))
            print(json.dumps(result) if args.json else result["token"])
            return 0
        if args.command == "info":
            return _info(args.data)
        if args.command == "wait":
            return asyncio.run(_wait(args.data, args.timeout))
        return asyncio.run(_verify(args.data))
    except ConfigError as exc:
        print(f"helpline-relay: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from protocol.errors import HelplineError

        if isinstance(exc, HelplineError):
            print(f"helpline-relay: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
