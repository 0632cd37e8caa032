"""``helpline``: the technician's and admin's command line.

Log in once (``helpline login``); the token is kept 0600 under
``$HELPLINE_CONFIG`` or ``$XDG_CONFIG_HOME/helpline`` and used by every other
command until it expires.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from certs.bootstrap import fetch_ca, fetch_pinned_ca
from certs.fingerprints import fingerprint
from protocol.errors import AuthError, HelplineError

from .cli_admin import cmd_admin, print_devices
from .cli_audit import add_audit_commands
from .cli_files import (
    cmd_files_ls,
    cmd_files_mkdir,
    cmd_files_mv,
    cmd_files_pull,
    cmd_files_push,
    cmd_files_rm,
)
from .cli_screen import add_screen_commands, export_screen_at
from .cli_update import add_commands as add_update_commands
from .clicommon import CliError, logged_in_client
from .client import HelplineClient
from .credentials import Credentials, forget_credentials, load_credentials, save_credentials
from .output import as_json, printable, table, when

Command = Callable[[argparse.Namespace], Awaitable[int]]


_client = logged_in_client


# -- login / logout ----------------------------------------------------------------------


def _pin_ca(url: str, expected: str | None) -> str:
    if expected:
        return fetch_pinned_ca(url, expected)
    saved = load_credentials()
    if saved is not None and saved.url == url:
        return saved.ca_pem
    from cryptography import x509

    pem = fetch_ca(url)
    actual = fingerprint(x509.load_pem_x509_certificate(pem.encode()))
    if not sys.stdin.isatty():
        raise CliError(f"the relay's CA is {actual}; pass --ca-fingerprint to trust it")
    answer = input(f"The relay's CA fingerprint is\n  {actual}\nTrust it? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("not trusted; nothing saved")
    return pem


def _login_inputs(args: argparse.Namespace, url: str) -> tuple[str, str, str]:
    """Pin the CA and ask for what is missing (blocking: run in a thread)."""
    ca_pem = _pin_ca(url, args.ca_fingerprint)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"Password for {args.user}: ")
    otp = args.otp
    if otp is None:
        otp = input("One-time code: ").strip() if sys.stdin.isatty() else ""
    return ca_pem, password, otp


async def cmd_login(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/")
    ca_pem, password, otp = await asyncio.to_thread(_login_inputs, args, url)
    async with HelplineClient(url, ca_pem) as client:
        body = await client.login(args.user, password, otp)
    path = save_credentials(
        Credentials(url, ca_pem, body["token"], body["user"]["username"], body["expires_at"])
    )
    user = body["user"]
    print(f"logged in to {url} as {user['username']} ({user['role']}); token saved in {path}")
    return 0


async def cmd_logout(args: argparse.Namespace) -> int:
    credentials = load_credentials()
    if credentials is not None and not credentials.expired:
        async with _client() as client:
            # Already invalid on the relay: forgetting it here is all that is left.
            with contextlib.suppress(AuthError):
                await client.logout()
    forget_credentials()
    print("logged out")
    return 0


# -- devices ---------------------------------------------------------------------------------


async def cmd_devices(args: argparse.Namespace) -> int:
    async with _client() as client:
        devices = await client.devices()
    if args.json:
        as_json(devices)
    else:
        print_devices(devices)
    return 0


# -- sessions ------------------------------------------------------------------------------------


async def cmd_shell(args: argparse.Namespace) -> int:
    from .terminal import run_shell, terminal_size

    command = list(args.command)
    interactive = not command and sys.stdin.isatty()
    use_pty = (not command) or (sys.stdin.isatty() and sys.stdout.isatty())
    cols, rows = terminal_size()
    params = {
        "term": os.environ.get("TERM", "xterm-256color"),
        "cols": str(cols),
        "rows": str(rows),
        "pty": "1" if use_pty else "0",
    }
    if command:
        params["command"] = shlex.join(command) if len(command) > 1 else command[0]

    def waiting(state: str, message: str) -> None:
        print(f"helpline: {message or 'waiting for the customer to accept'}...", file=sys.stderr)

    async with _client() as client, client.connect() as console:
        channel = await console.open_session(
            args.device, "shell", reason=args.reason or "", params=params, on_status=waiting
        )
        return await run_shell(channel, interactive=interactive)


async def cmd_sessions_list(args: argparse.Namespace) -> int:
    async with _client() as client:
        sessions = await client.sessions(limit=args.limit)
    if args.json:
        as_json(sessions)
        return 0
    table(
        ("id", "user", "device", "kind", "state", "started", "duration", "end reason"),
        [
            (
                s["id"][:12],
                s["username"],
                s["device_name"],
                s["kind"],
                s["state"],
                when(s.get("started_at")),
                "-" if s.get("duration") is None else f"{s['duration']:.0f}s",
                s.get("end_reason") or "",
            )
            for s in sessions
        ],
    )
    return 0


async def cmd_sessions_kill(args: argparse.Namespace) -> int:
    async with _client() as client:
        session_id = await _resolve_session(client, args.session)
        await client.kill_session(session_id)
    print(f"ended session {session_id}")
    return 0


def _unique(prefix: str, records: list[dict[str, Any]], what: str) -> str:
    """A full id from a unique prefix (the tables show 12 characters)."""
    matches = [r["id"] for r in records if r["id"].startswith(prefix)]
    if len(matches) != 1:
        raise CliError(f"{'no' if not matches else 'more than one'} {what} matches {prefix!r}")
    return str(matches[0])


async def _resolve_session(client: HelplineClient, prefix: str) -> str:
    return _unique(prefix, await client.sessions(limit=1000), "session")


async def cmd_recordings_list(args: argparse.Namespace) -> int:
    async with _client() as client:
        recordings = await client.recordings()
    if args.json:
        as_json(recordings)
        return 0
    table(
        ("id", "user", "device", "started", "duration", "end reason"),
        [
            (
                r["id"][:12],
                r["username"],
                r["device_name"],
                when(r.get("started_at")),
                "-" if r.get("duration") is None else f"{r['duration']:.0f}s",
                r.get("end_reason") or "",
            )
            for r in recordings
        ],
    )
    return 0


async def cmd_recordings_play(args: argparse.Namespace) -> int:
    from .player import play

    async with _client() as client:
        data = await client.recording(await _resolve_recording(client, args.id))
    if data.startswith(b'{"format": "helpline-screen"'):
        raise CliError(
            "that is a screen recording: see it with 'helpline recordings export ID"
            " --at SECONDS FILE.png'"
        )
    await asyncio.to_thread(
        play, data.decode("utf-8", errors="replace"), speed=args.speed, idle_limit=args.idle_limit
    )
    return 0


async def cmd_recordings_export(args: argparse.Namespace) -> int:
    async with _client() as client:
        session_id = await _resolve_recording(client, args.id)
        data = await client.recording(session_id)
    if args.at is not None:
        print(await export_screen_at(data, args.at, args.file))
        return 0
    await asyncio.to_thread(Path(args.file).write_bytes, data)
    print(f"wrote {len(data)} bytes of session {session_id} to {args.file}")
    return 0


async def _resolve_recording(client: HelplineClient, prefix: str) -> str:
    return _unique(prefix, await client.recordings(), "recording")


async def cmd_keys(args: argparse.Namespace) -> int:
    async with _client() as client:
        if args.keys_command == "add":
            source = sys.stdin if args.file == "-" else None
            if source is not None:
                line = source.readline()
            else:
                line = await asyncio.to_thread(Path(args.file).read_text)
            key = await client.add_key(line.strip(), args.name)
            print(f"added {key['name']} {key['fingerprint']}")
        elif args.keys_command == "remove":
            await client.remove_key(args.key)
            print(f"removed {args.key}")
        else:
            keys = await client.keys()
            if args.json:
                as_json(keys)
            else:
                table(
                    ("id", "name", "fingerprint", "added"),
                    [(k["id"], k["name"], k["fingerprint"], when(k["created_at"])) for k in keys],
                )
    return 0


# -- wiring ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helpline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    login = commands.add_parser("login", help="log in to a relay and keep the token")
    login.add_argument("url")
    login.add_argument("--user", required=True)
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.add_argument("--otp", help="the current TOTP code (prompted for when absent)")
    login.add_argument("--ca-fingerprint", help="sha256:HEX of the relay's CA, to pin it")
    login.set_defaults(run=cmd_login)

    commands.add_parser("logout", help="revoke and forget the token").set_defaults(run=cmd_logout)

    devices = commands.add_parser("devices", help="devices you may open sessions on")
    devices.add_argument("--json", action="store_true")
    devices.set_defaults(run=cmd_devices)

    admin = commands.add_parser("admin", help="users, groups, grants, enrolment tokens, devices")
    areas = admin.add_subparsers(dest="area", required=True)

    def action(
        area: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
    ) -> argparse.ArgumentParser:
        sub = area.add_parser(name, help=help_text)
        sub.add_argument("--json", action="store_true")
        sub.set_defaults(run=cmd_admin, action=name)
        return sub

    users = areas.add_parser("users").add_subparsers(dest="action", required=True)
    action(users, "list", "list accounts")
    create = action(users, "create", "create an account (password and TOTP secret shown once)")
    create.add_argument("username")
    create.add_argument("--role", choices=("admin", "technician", "auditor"), default="technician")
    create.add_argument("--full-name")
    create.add_argument("--password-stdin", action="store_true")
    create.add_argument("--no-totp", action="store_true", help="do not require a second factor")
    for name, text in (
        ("delete", "delete an account"),
        ("unlock", "clear a lockout"),
        ("disable", "disable an account"),
        ("enable", "re-enable an account"),
        ("reset-totp", "issue a new TOTP secret"),
    ):
        action(users, name, text).add_argument("username")

    groups = areas.add_parser("groups").add_subparsers(dest="action", required=True)
    action(groups, "list", "list device groups")
    action(groups, "create", "create a group").add_argument("name")
    action(groups, "delete", "delete an empty group").add_argument("name")

    grants = areas.add_parser("grants").add_subparsers(dest="action", required=True)
    action(grants, "list", "who may work on which group")
    for name in ("add", "remove"):
        sub = action(grants, name, f"{name} a technician's grant on a group")
        sub.add_argument("username")
        sub.add_argument("group")

    tokens = areas.add_parser("tokens").add_subparsers(dest="action", required=True)
    action(tokens, "list", "list enrolment tokens")
    create_token = action(tokens, "create", "create an enrolment token")
    create_token.add_argument("--group", default="default")
    create_token.add_argument("--expires", type=int, help="lifetime in seconds")
    create_token.add_argument("--uses", type=int, help="how many machines may use it")
    action(tokens, "revoke", "revoke an enrolment token").add_argument("id", type=int)

    admin_devices = areas.add_parser("devices").add_subparsers(dest="action", required=True)
    action(admin_devices, "list", "all devices")
    action(admin_devices, "revoke", "revoke a device's certificate").add_argument("device")
    move = action(admin_devices, "move", "move a device to another group")
    move.add_argument("device")
    move.add_argument("group")

    shell = commands.add_parser(
        "shell",
        help="a shell on a device (raw terminal), or run a command",
        usage="helpline shell DEVICE [--reason TEXT] [-- CMD ARGS...]",
    )
    shell.add_argument("device")
    shell.add_argument("--reason", help="why: shown to the customer and audited")
    shell.set_defaults(command=[])  # "-- CMD ARGS..." after the options: see main()
    shell.set_defaults(run=cmd_shell)

    files = commands.add_parser("files", help="list, push and pull files on a device")
    files_commands = files.add_subparsers(dest="files_command", required=True)

    def files_command(name: str, help_text: str, run: Command) -> argparse.ArgumentParser:
        sub = files_commands.add_parser(name, help=help_text)
        sub.add_argument("device")
        sub.add_argument("--reason", help="why: shown to the customer and audited")
        sub.set_defaults(run=run)
        return sub

    files_ls = files_command("ls", "list a directory on the device", cmd_files_ls)
    files_ls.add_argument("path")
    files_ls.add_argument("--json", action="store_true")
    files_push = files_command(
        "push", "copy a local file (or tree, -r) to the device; resumes after a cut", cmd_files_push
    )
    files_push.add_argument("local")
    files_push.add_argument("remote", help="a path, or a directory to copy into")
    files_push.add_argument("-r", "--recursive", action="store_true", help="a whole directory")
    files_pull = files_command(
        "pull", "copy a file (or tree, -r) from the device; resumes after a cut", cmd_files_pull
    )
    files_pull.add_argument("remote")
    files_pull.add_argument("local", help="a path, or a directory to copy into")
    files_pull.add_argument("-r", "--recursive", action="store_true", help="a whole directory")
    files_mkdir = files_command("mkdir", "make a directory on the device", cmd_files_mkdir)
    files_mkdir.add_argument("path")
    files_mkdir.add_argument("-p", "--parents", action="store_true", help="and its parents")
    files_rm = files_command("rm", "remove a file (or a tree, -r) on the device", cmd_files_rm)
    files_rm.add_argument("path")
    files_rm.add_argument("-r", "--recursive", action="store_true", help="a whole directory")
    files_mv = files_command("mv", "rename or move on the device", cmd_files_mv)
    files_mv.add_argument("source")
    files_mv.add_argument("target")

    sessions = commands.add_parser("sessions", help="live and recent sessions")
    sessions_commands = sessions.add_subparsers(dest="sessions_command", required=True)
    sessions_list = sessions_commands.add_parser("list")
    sessions_list.add_argument("--json", action="store_true")
    sessions_list.add_argument("--limit", type=int, default=50)
    sessions_list.set_defaults(run=cmd_sessions_list)
    kill = sessions_commands.add_parser("kill", help="end a live session (admins)")
    kill.add_argument("session", help="session id (or a unique prefix)")
    kill.set_defaults(run=cmd_sessions_kill)

    add_screen_commands(commands)

    recordings = commands.add_parser("recordings", help="session recordings (asciicast)")
    recordings_commands = recordings.add_subparsers(dest="recordings_command", required=True)
    recordings_list = recordings_commands.add_parser("list")
    recordings_list.add_argument("--json", action="store_true")
    recordings_list.set_defaults(run=cmd_recordings_list)
    play = recordings_commands.add_parser("play", help="replay in this terminal")
    play.add_argument("id")
    play.add_argument("--speed", type=float, default=1.0, help="2 = twice as fast")
    play.add_argument("--idle-limit", type=float, default=2.0, help="cap pauses at this many s")
    play.set_defaults(run=cmd_recordings_play)
    export = recordings_commands.add_parser(
        "export", help="save the recording file (.cast or .screen), or a screen at a moment"
    )
    export.add_argument("id")
    export.add_argument("file")
    export.add_argument(
        "--at", type=float, help="screen recordings: write the screen at this second as PNG"
    )
    export.set_defaults(run=cmd_recordings_export)

    keys = commands.add_parser("keys", help="your SSH public keys for the gateway")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    keys_list = keys_commands.add_parser("list")
    keys_list.add_argument("--json", action="store_true")
    keys_add = keys_commands.add_parser("add")
    keys_add.add_argument("file", help="public key file (e.g. ~/.ssh/id_ed25519.pub), - for stdin")
    keys_add.add_argument("--name")
    keys_remove = keys_commands.add_parser("remove")
    keys_remove.add_argument("key", help="id, name or fingerprint")
    keys.set_defaults(run=cmd_keys)

    add_audit_commands(commands)
    add_update_commands(commands)
    return parser


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """``helpline shell DEVICE [options] -- CMD ARGS``: what follows the first ``--`` is the
    remote command, whatever it looks like (argparse cannot take it after options)."""
    if argv and argv[0] == "shell" and "--" in argv:
        split = argv.index("--")
        return argv[:split], argv[split + 1 :]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    own, command = split_command(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(own)
    if command:
        args.command = command
    try:
        status: int = asyncio.run(args.run(args))
        return status
    except (CliError, HelplineError, ValueError) as exc:
        print(f"helpline: {printable(exc)}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as exc:
        print(f"helpline: cannot reach the relay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
