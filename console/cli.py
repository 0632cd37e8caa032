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
import posixpath
import shlex
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from certs.bootstrap import fetch_ca, fetch_pinned_ca
from certs.fingerprints import fingerprint
from protocol.auditchain import verify_chain
from protocol.errors import AuthError, HelplineError, NotFound

from .client import HelplineClient
from .credentials import Credentials, forget_credentials, load_credentials, save_credentials
from .files import Entry, FilesClient, Result
from .output import as_json, printable, table, when
from .progress import ProgressBar

Command = Callable[[argparse.Namespace], Awaitable[int]]


class CliError(Exception):
    """A problem to report in one line, with exit status 1."""


def _client() -> HelplineClient:
    credentials = load_credentials()
    if credentials is None:
        raise CliError("not logged in; run 'helpline login URL --user NAME'")
    if credentials.expired:
        raise CliError("your login has expired; run 'helpline login' again")
    return HelplineClient(credentials.url, credentials.ca_pem, credentials.token)


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


def _device_state(device: dict[str, Any]) -> str:
    if device.get("revoked_at"):
        return "revoked"
    return "online" if device["online"] else "offline"


def _print_devices(devices: list[dict[str, Any]]) -> None:
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


async def cmd_devices(args: argparse.Namespace) -> int:
    async with _client() as client:
        devices = await client.devices()
    if args.json:
        as_json(devices)
    else:
        _print_devices(devices)
    return 0


# -- admin -----------------------------------------------------------------------------------


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
        _print_devices(devices)
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


# -- audit -----------------------------------------------------------------------------------


async def cmd_audit_list(args: argparse.Namespace) -> int:
    async with _client() as client:
        page = await client.audit(
            after=args.after,
            limit=args.limit,
            actor=args.actor,
            action=args.action,
            target=args.target,
        )
    entries = page["entries"]
    if args.json:
        as_json(entries)
        return 0
    table(
        ("seq", "time", "actor", "action", "target", "details"),
        [
            (
                e["seq"],
                e["ts"][:19].replace("T", " "),
                e["actor"],
                e["action"],
                e["target"],
                " ".join(f"{k}={printable(v)}" for k, v in sorted(e["details"].items())),
            )
            for e in entries
        ],
    )
    return 0


async def cmd_audit_verify(args: argparse.Namespace) -> int:
    async with _client() as client:
        entries, head = await client.audit_all()
        report = verify_chain(entries, head=head)
        problems = [] if args.skip_recordings else await client.verify_recordings(entries)
    if not report.ok:
        print(f"audit chain BROKEN at entry {report.bad_seq}: {report.reason}", file=sys.stderr)
        print(f"({report.checked} entries before it verified)", file=sys.stderr)
        return 3
    if problems:
        for seq, session_id, problem in problems:
            print(f"entry {seq}: session {session_id}: {problem}", file=sys.stderr)
        return 3
    sealed = sum(1 for e in entries if e.get("details", {}).get("recording_sha256"))
    checked = "not checked" if args.skip_recordings else f"{sealed} verified"
    print(f"audit chain intact: {report.checked} entries verified; recordings: {checked}")
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
    await asyncio.to_thread(
        play, data.decode("utf-8", errors="replace"), speed=args.speed, idle_limit=args.idle_limit
    )
    return 0


async def cmd_recordings_export(args: argparse.Namespace) -> int:
    async with _client() as client:
        session_id = await _resolve_recording(client, args.id)
        data = await client.recording(session_id)
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


# -- files -----------------------------------------------------------------------------------


def _waiting_for_consent(state: str, message: str) -> None:
    print(f"helpline: {message or 'waiting for the customer to accept'}...", file=sys.stderr)


@contextlib.asynccontextmanager
async def _open_files(args: argparse.Namespace) -> AsyncIterator[FilesClient]:
    """A ``files`` session on ``args.device``, ended on the way out."""
    async with _client() as client, client.connect() as console:
        channel = await console.open_session(
            args.device, "files", reason=args.reason or "", on_status=_waiting_for_consent
        )
        files = FilesClient(channel)
        try:
            yield files
        finally:
            await files.close()


@contextlib.contextmanager
def _local_errors() -> Iterator[None]:
    """A local file problem in one line (main() would call any OSError a network one)."""
    try:
        yield
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        raise CliError(f"{where}{error.strerror or error}") from error


class _TransferOutput:
    """A progress bar on a terminal (stderr); summary lines on stdout either way."""

    def __init__(self, name: str) -> None:
        self.bar = ProgressBar(name) if sys.stderr.isatty() else None
        self.progress: Callable[[int, int], None] | None = self.bar

    def warn(self, message: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        print(f"helpline: warning: {printable(message)}", file=sys.stderr)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.finish()


def _file_line(result: Result) -> str:
    """``PATH  SIZE bytes  sha256 HEX  [resumed from N]``: one transferred file."""
    text = f"{printable(result.path)}  {result.size} bytes  sha256 {result.sha256}"
    if result.resumed_from:
        text += f"  resumed from {result.resumed_from}"
    return text


def _summary(verb: str, source: str, result: Result) -> str:
    return f"{verb} {printable(source)} -> {_file_line(result)}"


def _tree_total(results: list[Result]) -> str:
    count = len(results)
    return f"{count} file{'' if count == 1 else 's'}, {sum(r.size for r in results)} bytes"


def _last_name(remote: str) -> str:
    """The last component of a device path, or "" when it has none worth using."""
    name = posixpath.basename(posixpath.normpath(remote))
    return "" if name in ("", ".", "..", "/") else name


async def cmd_files_ls(args: argparse.Namespace) -> int:
    async with _open_files(args) as files:
        entry = await files.stat(args.path)
        entries = await files.list(args.path) if entry.is_dir else [entry]
    if args.json:
        as_json(
            [
                {
                    "name": e.name,
                    "kind": e.kind,
                    "size": e.size,
                    "mode": e.mode & 0o7777,
                    "mtime_ns": e.mtime_ns,
                }
                for e in entries
            ]
        )
        return 0
    table(
        ("mode", "size", "modified", "name"),
        [
            (
                _file_mode(e),
                e.size,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime_ns / 1e9)),
                e.name + {"dir": "/", "link": "@"}.get(e.kind, ""),
            )
            for e in entries
        ],
    )
    return 0


def _file_mode(entry: Entry) -> str:
    kinds = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "link": stat.S_IFLNK}
    text = stat.filemode(kinds.get(entry.kind, 0) | (entry.mode & 0o7777))
    return text if entry.kind in kinds else "?" + text[1:]


async def cmd_files_pull(args: argparse.Namespace) -> int:
    local = Path(args.local)
    name = _last_name(args.remote)
    into_directory: bool = await asyncio.to_thread(local.is_dir)
    if name and into_directory:
        local = local / name  # into an existing directory, as cp and scp do
    output = _TransferOutput(name or args.remote)
    try:
        async with _open_files(args) as files:
            files.on_warning = output.warn
            with _local_errors():
                if args.recursive:
                    results = await files.pull_tree(
                        args.remote,
                        local,
                        output.progress,
                        on_file=lambda r: output.line(_file_line(r)),
                    )
                    output.line(f"pulled {_tree_total(results)} into {local}")
                else:
                    result = await files.pull(args.remote, local, output.progress)
                    output.line(_summary("pulled", args.remote, result))
    finally:
        output.close()
    return 0


async def cmd_files_push(args: argparse.Namespace) -> int:
    local = Path(args.local)
    is_dir = await asyncio.to_thread(local.is_dir)
    if is_dir and not args.recursive:
        raise CliError(f"{local} is a directory (use -r to push a whole tree)")
    name = (await asyncio.to_thread(local.absolute)).name
    output = _TransferOutput(name)
    try:
        async with _open_files(args) as files:
            files.on_warning = output.warn
            remote = args.remote
            with contextlib.suppress(NotFound):
                if (await files.stat(remote)).is_dir:
                    remote = posixpath.join(remote, name)  # into it, as cp and scp do
            with _local_errors():
                if args.recursive:
                    results = await files.push_tree(
                        local,
                        remote,
                        output.progress,
                        on_file=lambda r: output.line(_file_line(r)),
                    )
                    output.line(f"pushed {_tree_total(results)} into {remote}")
                else:
                    result = await files.push(local, remote, output.progress)
                    output.line(_summary("pushed", str(local), result))
    finally:
        output.close()
    return 0


async def cmd_files_mkdir(args: argparse.Namespace) -> int:
    async with _open_files(args) as files:
        await files.mkdir(args.path, parents=args.parents)
    print(f"created {printable(args.path)}")
    return 0


async def cmd_files_rm(args: argparse.Namespace) -> int:
    async with _open_files(args) as files:
        await files.remove(args.path, recursive=args.recursive)
    print(f"removed {printable(args.path)}")
    return 0


async def cmd_files_mv(args: argparse.Namespace) -> int:
    async with _open_files(args) as files:
        await files.rename(args.source, args.target)
    print(f"renamed {printable(args.source)} to {printable(args.target)}")
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
    export = recordings_commands.add_parser("export", help="save the .cast file")
    export.add_argument("id")
    export.add_argument("file")
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

    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_list = audit_commands.add_parser("list", help="show entries")
    audit_list.add_argument("--json", action="store_true")
    audit_list.add_argument("--after", type=int, default=0, help="entries after this seq")
    audit_list.add_argument("--limit", type=int, default=100)
    audit_list.add_argument("--actor")
    audit_list.add_argument("--action")
    audit_list.add_argument("--target")
    audit_list.set_defaults(run=cmd_audit_list)
    verify = audit_commands.add_parser("verify", help="recompute the hash chain and recordings")
    verify.add_argument("--skip-recordings", action="store_true")
    verify.set_defaults(run=cmd_audit_verify)
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
