"""The SSH gateway with the real OpenSSH client (``/usr/bin/ssh``, Debian's openssh-client):
``ssh -p PORT USER:DEVICE@127.0.0.1 [CMD]`` against a real relay and agent.

Logins use throw-away Ed25519 keys registered through the API, and the TOTP prompt is
answered by an ``SSH_ASKPASS`` program printing the code of the moment. A TOTP code
works once, so each test logs a TOTP account in at most once (and uses accounts
without a second factor where it needs several sessions).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest

from console.client import HelplineClient
from protocol.errors import AuthError, TooManyAttempts

from .conftest import BIN, AgentProcess, RelayProcess, async_wait_for, enroll_agent, wait_for
from .helpers import NewUser, audit_entries, logged_in, new_user
from .session_helpers import (
    WITHIN,
    PtyProcess,
    headless_agent,
    marker,
    marker_command,
    on_pty,
    session_end,
    wait_online,
)

pytestmark = pytest.mark.integration

StartAgent = Callable[..., AgentProcess]
SSH = "/usr/bin/ssh"
NO_DISPLAY = ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY")

ASKPASS = """\
#!{python}
# SSH_ASKPASS for the tests: logs the prompt, prints a fixed code or the TOTP of the moment.
import os, sys
with open(os.environ["HELPLINE_TEST_ASKPASS_LOG"], "a") as log:
    log.write((sys.argv[1] if len(sys.argv) > 1 else "") + "\\n")
fixed = os.environ.get("HELPLINE_TEST_OTP")
if fixed:
    print(fixed)
else:
    import pyotp
    print(pyotp.TOTP(os.environ["HELPLINE_TEST_TOTP_SECRET"]).now())
"""


@dataclass
class Technician:
    user: NewUser
    key: Path  # private key file; its .pub is registered to the user

    @property
    def name(self) -> str:
        return self.user.username


@dataclass
class SshClient:
    """Runs ``/usr/bin/ssh`` against the relay's gateway, with nothing from ~/.ssh."""

    relay: RelayProcess
    port: int
    directory: Path
    known_hosts: Path
    askpass: Path
    askpass_log: Path

    def keygen(self, name: str) -> Path:
        path = self.directory / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path],
            check=True,
            timeout=30,
        )
        return path

    def argv(
        self, login: str, key: Path | None, *args: str, options: tuple[str, ...] = ()
    ) -> list[str]:
        identity = ["-o", f"IdentityFile={key}"] if key is not None else []
        return [
            SSH, "-F", "/dev/null", "-p", str(self.port),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "BatchMode=no",
            "-o", "PreferredAuthentications=publickey,keyboard-interactive",
            "-o", "NumberOfPasswordPrompts=1",
            "-o", "ConnectTimeout=10",
            *identity, *options,
            f"{login}@127.0.0.1", *args,
        ]  # fmt: skip

    def env(
        self, *, totp: str | None = None, otp: str | None = None, **extra: str
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", *NO_DISPLAY)}
        env.update(
            SSH_ASKPASS=str(self.askpass),
            SSH_ASKPASS_REQUIRE="force",
            DISPLAY=":helpline-tests",  # some OpenSSH versions want one before using askpass
            HELPLINE_TEST_ASKPASS_LOG=str(self.askpass_log),
            **extra,
        )
        if totp is not None:
            env["HELPLINE_TEST_TOTP_SECRET"] = totp
        if otp is not None:
            env["HELPLINE_TEST_OTP"] = otp
        return env

    def run(
        self,
        login: str,
        key: Path | None,
        *command: str,
        totp: str | None = None,
        otp: str | None = None,
        options: tuple[str, ...] = (),
        stdin: bytes | None = None,
        term: str | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        extra = {"TERM": term} if term else {}
        return subprocess.run(
            self.argv(login, key, *command, options=options),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            env=self.env(totp=totp, otp=otp, **extra),
            check=False,
            timeout=60,
        )

    def spawn(self, login: str, key: Path, *command: str) -> subprocess.Popen[bytes]:
        """ssh in the background, output to pipes."""
        return subprocess.Popen(
            self.argv(login, key, *command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(),
        )

    def prompts(self) -> list[str]:
        """What the askpass program was asked so far (OpenSSH prefixes "(LOGIN@HOST) ")."""
        if not self.askpass_log.exists():
            return []
        return [line.rpartition(") ")[2] for line in self.askpass_log.read_text().splitlines()]


@pytest.fixture
def ssh(relay: RelayProcess, tmp_path: Path) -> SshClient:
    assert Path(SSH).exists(), "these tests need the OpenSSH client (Debian: openssh-client)"
    listen = tomllib.loads((relay.data_dir / "relay.toml").read_text())["ssh"]["listen"]
    port = int(listen.rpartition(":")[2])
    directory = tmp_path / "ssh"
    directory.mkdir(mode=0o700)
    host_key = (relay.data_dir / "ssh_host_ed25519_key.pub").read_text().split()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    askpass = directory / "askpass"
    askpass.write_text(ASKPASS.format(python=sys.executable))
    askpass.chmod(0o700)
    return SshClient(relay, port, directory, known_hosts, askpass, directory / "askpass.log")


async def technician(
    relay: RelayProcess,
    admin: HelplineClient,
    ssh: SshClient,
    username: str,
    *,
    totp: bool = False,
    group: str | None = "default",
) -> Technician:
    """A user with a fresh key registered through the API (their own login adds it).

    The account logs in to the API without a second factor, so that the one TOTP step
    the SSH login will use is still unused; TOTP is then required when ``totp``.
    """
    user = await new_user(admin, username, full_name=f"{username.title()} Doe", totp_required=False)
    if group is not None:
        await admin.add_grant(username, group)
    key = ssh.keygen(f"id_{username}")
    async with logged_in(relay, user) as client:
        await client.add_key(key.with_suffix(".pub").read_text(), name=f"{username}-laptop")
    if totp:
        await admin.update_user(username, totp_required=True)
    return Technician(user, key)


def not_the_code(secret: str) -> str:
    """A six-digit code valid in none of the steps the relay accepts now."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    accepted = {totp.at(now, counter_offset=offset) for offset in range(-2, 3)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in accepted)


def fingerprint(public_key: Path) -> str:
    result = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", public_key],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.split()[1]


async def ssh_session(admin: HelplineClient, username: str) -> dict[str, Any]:
    """The one gateway session of ``username`` (bounded wait for it to be listed)."""

    async def found() -> dict[str, Any] | None:
        sessions = [
            s
            for s in await admin.sessions(limit=1000)
            if s["username"] == username and s["via"] == "ssh"
        ]
        return sessions[0] if len(sessions) == 1 else None

    record: dict[str, Any] = await async_wait_for(found, what=f"the ssh session of {username}")
    return record


async def login_failures(admin: HelplineClient, actor: str) -> list[str]:
    return [
        e["details"]["reason"]
        for e in await audit_entries(admin, action="ssh.login_failed")
        if e["actor"] == actor
    ]


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


@pytest.fixture
def customer_at_terminal(
    relay: RelayProcess, tmp_path: Path
) -> Iterator[Callable[[str], PtyProcess]]:
    """An agent whose consent policy is ``prompt`` and whose user answers on its terminal
    (no display): the agent runs on a pseudo-terminal the test reads and types into."""
    terminals: list[PtyProcess] = []

    def start(name: str) -> PtyProcess:
        agent = enroll_agent(relay, tmp_path, name, consent={"shell": "prompt"})
        env = {k: v for k, v in os.environ.items() if k not in NO_DISPLAY}
        terminal = PtyProcess.spawn(
            [BIN / "helpline-agent", "run", "--config", agent.config_dir], env=env
        )
        terminals.append(terminal)
        return terminal

    try:
        yield start
    finally:
        for terminal in terminals:
            if terminal.process.poll() is None:
                terminal.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    terminal.process.wait(15)
            terminal.close()


class StderrReader:
    """Collects a running process's stderr on a thread, so the test can wait for a line."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        self.stream = process.stderr
        self.data = bytearray()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := self.stream.read1(65536):  # type: ignore[attr-defined]
            with self.lock:
                self.data += chunk

    def text(self) -> str:
        with self.lock:
            return text(bytes(self.data))

    def wait_for(self, needle: str) -> None:
        wait_for(lambda: needle in self.text(), seconds=WITHIN, what=f"{needle!r} on stderr")


# -- logging in and running commands --------------------------------------------------------------


async def test_exec_with_key_and_totp_returns_output_and_exit_status(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, ssh: SshClient
) -> None:
    start_agent("desk", consent={"shell": "allow"})
    await wait_online(admin_client, "desk")
    tina = await technician(relay, admin_client, ssh, "tina", totp=True)

    command = (
        "printf 'out:%s\\n' $((6*7)); [ -t 0 ] && echo tty:yes || echo tty:no;"
        " echo oops >&2; exit 7"
    )
    result = ssh.run("tina:desk", tina.key, command, totp=tina.user.totp_secret)

    assert result.returncode == 7, text(result.stderr)
    assert "out:42" in text(result.stdout)
    assert "tty:no" in text(result.stdout), "no PTY unless the client asks for one"
    assert "oops" in text(result.stdout), "the device sends one stream (stderr merged)"
    assert ssh.prompts() == ["One-time code: "], "the code was asked by keyboard-interactive"

    logins = [
        e for e in await audit_entries(admin_client, action="ssh.login") if e["actor"] == "tina"
    ]
    assert len(logins) == 1
    assert logins[0]["details"]["methods"] == "publickey,keyboard-interactive"
    assert logins[0]["details"]["key"] == fingerprint(tina.key.with_suffix(".pub"))
    assert logins[0]["details"]["device"] == "desk"
    record = await ssh_session(admin_client, "tina")
    assert record["kind"] == "shell"
    assert record["reason"] == "ssh gateway"
    end = await session_end(admin_client, record["id"])
    assert end["details"]["exit_code"] == 7
    assert end["details"]["reason"] == "exited"


async def test_large_output_and_input_keep_every_byte(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, ssh: SshClient
) -> None:
    """More than any window each way: the gateway's flow control loses and adds nothing."""
    agent = start_agent("desk", consent={"shell": "allow"})
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")

    output = ssh.run(f"tom:{agent.device_id}", tom.key, "seq 1 300000")  # the device by id
    assert output.returncode == 0, text(output.stderr)
    assert output.stdout == b"".join(b"%d\n" % n for n in range(1, 300001))

    payload = os.urandom(3 * 1024 * 1024)
    counted = ssh.run("tom:desk", tom.key, "sha256sum", stdin=payload)
    assert counted.returncode == 0, text(counted.stderr)
    assert text(counted.stdout).split()[0] == hashlib.sha256(payload).hexdigest()


# -- interactive shells ---------------------------------------------------------------------------


async def test_interactive_shell_echo_exit_status_and_recording(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, ssh: SshClient
) -> None:
    start_agent("desk", consent={"shell": "allow"})
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")

    typed = marker_command("term", "$TERM") + marker_command("sum", "$((40+2))") + b"exit 3\r"
    process = ssh.run("tom:desk", tom.key, options=("-tt",), stdin=typed, term="vt220")
    out = process.stdout
    assert process.returncode == 3, text(process.stderr)
    assert b"printf '<%s[%s]>" in out, "the typed line is echoed by the remote terminal"
    assert marker("term", "vt220") in out, "TERM comes from the client"
    assert marker("sum", "42") in out

    record = await ssh_session(admin_client, "tom")
    end = await session_end(admin_client, record["id"])
    cast = relay.data_dir / end["details"]["recording"]
    assert cast.exists()
    assert end["details"]["recording_sha256"] == hashlib.sha256(cast.read_bytes()).hexdigest()
    assert b"<sum[42]>" in cast.read_bytes()
    assert end["details"]["exit_code"] == 3


async def test_terminal_size_from_the_client_and_window_changes(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, ssh: SshClient
) -> None:
    start_agent("desk", consent={"shell": "allow"})
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")

    argv = ssh.argv("tom:desk", tom.key, options=("-t",))
    with on_pty(argv, env=ssh.env(TERM="xterm-256color"), cols=101, rows=33) as terminal:
        terminal.wait_raw()  # ssh took the terminal: the session is up
        terminal.write(marker_command("size", "$(stty size)"))
        assert terminal.read_marker("size") == "33 101"

        terminal.resize(120, 40)
        # The change travels beside the typed lines; ask until the shell sees it (bounded).
        for attempt in range(100):
            terminal.write(marker_command(f"size{attempt}", "$(stty size)"))
            if terminal.read_marker(f"size{attempt}") == "40 120":
                break
        else:
            pytest.fail(f"the window change never reached the device: {terminal.output!r}")
        terminal.write(b"exit\r")
        assert terminal.wait() == 0


# -- consent --------------------------------------------------------------------------------------


async def test_waiting_for_consent_then_allowed_or_denied_by_the_customer(
    relay: RelayProcess,
    admin_client: HelplineClient,
    ssh: SshClient,
    customer_at_terminal: Callable[[str], PtyProcess],
) -> None:
    customer = customer_at_terminal("desk")
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")

    for answer in (b"y\n", b"n\n"):
        client = ssh.spawn("tom:desk", tom.key, "echo ran-on-desk")
        stderr = StderrReader(client)
        try:
            stderr.wait_for("helpline: waiting for the customer on desk to accept...")
            shown = customer.read_until(b"Allow? [y/N]")
            assert b"Tom Doe" in shown
            customer.output.clear()
            customer.write(answer)
            client.wait(60)  # the output is small: it waits in the pipe
            stderr.thread.join(10)
            assert client.stdout is not None
            out = client.stdout.read()
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(10)
            stderr.thread.join(10)
            for pipe in (client.stdout, client.stderr):
                if pipe is not None:
                    pipe.close()
        if answer == b"y\n":
            assert client.returncode == 0, stderr.text()
            assert b"ran-on-desk" in out
        else:
            assert client.returncode == 1, stderr.text()
            assert out == b""
            assert "helpline: session denied: the customer denied the session" in stderr.text()

    decisions = [
        e["details"]["granted"]
        for e in await audit_entries(admin_client, action="session.consent")
        if e["details"]["technician"] == "tom"
    ]
    assert decisions == [True, False]


async def test_consent_denied_when_nobody_is_at_the_device(
    relay: RelayProcess, admin_client: HelplineClient, ssh: SshClient, tmp_path: Path
) -> None:
    with headless_agent(relay, tmp_path, "desk", {"shell": "prompt"}):
        await wait_online(admin_client, "desk")
        tom = await technician(relay, admin_client, ssh, "tom")
        result = ssh.run("tom:desk", tom.key, "echo should-not-run")

    assert result.returncode == 1, text(result.stderr)
    assert result.stdout == b""
    assert "helpline: session denied: nobody is at the device to approve the session" in text(
        result.stderr
    )
    record = await ssh_session(admin_client, "tom")
    assert record["state"] == "denied"


# -- refusals -------------------------------------------------------------------------------------


async def test_unknown_device_no_grant_bad_user_names_and_disabled_accounts_are_refused(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, ssh: SshClient
) -> None:
    start_agent("desk", consent={"shell": "allow"})
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")
    nina = await technician(relay, admin_client, ssh, "nina", group=None)

    unknown = ssh.run("tom:no-such-desk", tom.key, "true")
    assert unknown.returncode == 1
    assert "helpline: cannot open a session: no device 'no-such-desk'" in text(unknown.stderr)

    ungranted = ssh.run("nina:desk", nina.key, "echo should-not-run")
    assert ungranted.returncode == 1
    assert ungranted.stdout == b""
    assert "helpline: cannot open a session: no device 'desk'" in text(ungranted.stderr)

    refused = {
        (e["actor"], e["target"], e["details"]["via"])
        for e in await audit_entries(admin_client, action="session.refused")
    }
    assert {
        ("tom", "no-such-desk", "ssh"),
        ("nina", "desk", "ssh"),
    } <= refused

    no_device = ssh.run("tom", tom.key, "true")
    assert no_device.returncode == 255
    assert "log in as USER:DEVICE" in text(no_device.stderr)
    assert "Permission denied" in text(no_device.stderr)
    assert "user name is not USER:DEVICE" in await async_wait_for(
        lambda: login_failures(admin_client, "tom"), what="the failed login audited"
    )

    await admin_client.update_user("tom", disabled=True)
    disabled = ssh.run("tom:desk", tom.key, "echo should-not-run")
    assert disabled.returncode == 255
    assert disabled.stdout == b""
    assert "Permission denied" in text(disabled.stderr)
    assert "account disabled" in await login_failures(admin_client, "tom")


async def test_wrong_key_skipped_key_and_wrong_code_are_refused(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, ssh: SshClient
) -> None:
    start_agent("desk", consent={"shell": "allow"})
    await wait_online(admin_client, "desk")
    tina = await technician(relay, admin_client, ssh, "tina", totp=True)
    secret = tina.user.totp_secret
    stranger = ssh.keygen("id_stranger")

    wrong_key = ssh.run("tina:desk", stranger, "echo should-not-run", totp=secret)
    assert wrong_key.returncode == 255
    assert "Permission denied" in text(wrong_key.stderr)
    assert ssh.prompts() == [], "no code is asked for before a key is proven"

    skipped_key = ssh.run(
        "tina:desk",
        None,
        "echo should-not-run",
        totp=secret,
        options=(
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=keyboard-interactive",
        ),
    )
    assert skipped_key.returncode == 255
    assert "Permission denied (publickey)" in text(skipped_key.stderr)
    assert ssh.prompts() == [], "keyboard-interactive is not offered without a key"

    wrong_code = ssh.run("tina:desk", tina.key, "echo should-not-run", otp=not_the_code(secret))
    assert wrong_code.returncode == 255
    assert wrong_code.stdout == b""
    assert "Permission denied" in text(wrong_code.stderr)
    assert ssh.prompts() == ["One-time code: "]

    reasons = await async_wait_for(
        lambda: _reasons_complete(admin_client), what="the failed logins audited"
    )
    assert reasons.count("wrong one-time code") == 1
    users = {u["username"]: u for u in await admin_client.users()}
    assert users["tina"]["locked_until"] is None

    # The right key and the right code still get in; nothing above used up the code.
    right = ssh.run("tina:desk", tina.key, "echo let-in", totp=secret)
    assert right.returncode == 0, text(right.stderr)
    assert b"let-in" in right.stdout
    requests = await audit_entries(admin_client, action="session.request")
    assert [e["actor"] for e in requests] == ["tina"], "refused logins never reach the broker"


async def test_wrong_codes_count_toward_the_same_lockout_as_web_logins(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, ssh: SshClient
) -> None:
    start_agent("desk", consent={"shell": "allow"})
    await wait_online(admin_client, "desk")
    tina = await technician(relay, admin_client, ssh, "tina", totp=True)
    secret = tina.user.totp_secret

    async with HelplineClient(relay.url, relay.ca_pem) as web:
        for _ in range(4):  # one short of the lockout threshold (5)
            with pytest.raises(AuthError):
                await web.login("tina", "not-her-password", tina.user.code())
    wrong_code = ssh.run("tina:desk", tina.key, "true", otp=not_the_code(secret))
    assert wrong_code.returncode == 255

    locked = await audit_entries(admin_client, action="user.locked")
    assert [e["target"] for e in locked] == ["tina"], "the SSH failure was the fifth"
    # Locked: the right key and code are refused, without asking for the code, like any
    # refused login (a locked account does not say so)...
    right = ssh.run("tina:desk", tina.key, "echo should-not-run", totp=secret)
    assert right.returncode == 255
    assert right.stdout == b""
    assert "Permission denied" in text(right.stderr)
    assert "locked" not in text(right.stderr)
    assert ssh.prompts() == ["One-time code: "], "only the wrong code was ever asked for"
    # ...and so is the web login.
    async with HelplineClient(relay.url, relay.ca_pem) as web:
        with pytest.raises(AuthError) as refused:
            await web.login("tina", tina.user.password, tina.user.code())
        assert not isinstance(refused.value, TooManyAttempts)
    assert "account locked" in await login_failures(admin_client, "tina")


async def _reasons_complete(admin: HelplineClient) -> list[str] | None:
    reasons = await login_failures(admin, "tina")
    wanted = {"no registered key offered", "no key offered", "wrong one-time code"}
    return reasons if wanted <= set(reasons) else None


# -- the end of a session -------------------------------------------------------------------------


async def test_technician_vanishing_and_device_vanishing_end_the_session(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, ssh: SshClient
) -> None:
    agent = start_agent("desk", consent={"shell": "allow"})
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")
    ann = await technician(relay, admin_client, ssh, "ann")

    # The technician's ssh is killed mid-session.
    with on_pty(ssh.argv("tom:desk", tom.key, options=("-t",)), env=ssh.env()) as terminal:
        terminal.wait_raw()
        terminal.write(marker_command("up", "$((1+1))"))
        assert terminal.read_marker("up") == "2"
        terminal.process.kill()
        terminal.process.wait(10)
    record = await ssh_session(admin_client, "tom")
    end = await session_end(admin_client, record["id"])
    assert end["details"]["reason"] == "technician lost"

    # The device goes away mid-session: the technician is told, ssh exits 255.
    with on_pty(ssh.argv("ann:desk", ann.key, options=("-t",)), env=ssh.env()) as terminal:
        terminal.wait_raw()
        terminal.write(marker_command("up", "$((2+2))"))
        assert terminal.read_marker("up") == "4"
        assert agent.process is not None
        agent.process.kill()
        assert terminal.wait() == 255
        assert b"helpline: session ended: the device disconnected" in terminal.output
    record = await ssh_session(admin_client, "ann")
    end = await session_end(admin_client, record["id"])
    assert end["details"]["reason"] == "agent lost"
    cast = relay.data_dir / end["details"]["recording"]
    assert end["details"]["recording_sha256"] == hashlib.sha256(cast.read_bytes()).hexdigest()


async def test_admin_kill_and_relay_shutdown_end_ssh_sessions(
    relay: RelayProcess, admin_client: HelplineClient, start_agent: StartAgent, ssh: SshClient
) -> None:
    start_agent("desk", consent={"shell": "allow"})
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")
    ann = await technician(relay, admin_client, ssh, "ann")

    with on_pty(ssh.argv("tom:desk", tom.key, options=("-t",)), env=ssh.env()) as terminal:
        terminal.wait_raw()
        terminal.write(marker_command("up", "$((1+1))"))
        assert terminal.read_marker("up") == "2"
        record = await ssh_session(admin_client, "tom")
        await admin_client.kill_session(record["id"])
        assert terminal.wait() == 255
        assert b"helpline: session ended: ended by admin admin" in terminal.output
    end = await session_end(admin_client, record["id"])
    assert end["details"]["reason"] == "admin"

    with on_pty(ssh.argv("ann:desk", ann.key, options=("-t",)), env=ssh.env()) as terminal:
        terminal.wait_raw()
        terminal.write(marker_command("up", "$((2+2))"))
        assert terminal.read_marker("up") == "4"
        relay.stop()
        assert terminal.wait() == 255
        assert b"helpline: session ended: the relay is shutting down" in terminal.output
    assert "Traceback" not in relay.log()
