"""``sftp`` and ``scp`` through the SSH gateway with the real OpenSSH clients
(``/usr/bin/sftp`` in batch mode, ``/usr/bin/scp`` in its default SFTP mode and the
legacy ``scp -O``) against a real relay and an agent confined to a fresh directory.

Logins are a registered key, plus the TOTP code through ``SSH_ASKPASS`` where the
account requires one, exactly as in :mod:`test_ssh_gateway`. OpenSSH's ``sftp`` and
``scp`` read ``USER:DEVICE@HOST`` as ``HOST:PATH``: scp runs here with the gateway's other
form, ``USER+DEVICE@HOST:path``, and sftp with ``-o User=USER:DEVICE``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from console.client import HelplineClient

from .conftest import AgentProcess, RelayProcess, async_wait_for, wait_for
from .files_helpers import (
    enrol_confined,
    partials_under,
    random_bytes,
    sha256_of,
    start_headless,
    write_random,
)
from .helpers import audit_entries
from .session_helpers import WITHIN, session_end, wait_online
from .test_ssh_gateway import SshClient, Technician, ssh, technician

__all__ = ["ssh"]  # the fixture, shared with test_ssh_gateway

pytestmark = pytest.mark.integration

SFTP = "/usr/bin/sftp"
SCP = "/usr/bin/scp"
#: Bound on one sftp/scp run (it moves a few MiB over loopback).
RUN_TIMEOUT = 120


# -- clients ------------------------------------------------------------------------------------


def client_options(ssh: SshClient, login: str, key: Path) -> list[str]:
    """What ``SshClient.argv`` gives ssh, as options sftp and scp pass on to it. They come
    before ``-b``: ssh takes the first value of an option, and ``sftp -b`` adds
    ``BatchMode=yes`` (which would stop the one-time code from being asked)."""
    return [
        "-F", "/dev/null", "-P", str(ssh.port),
        "-o", f"UserKnownHostsFile={ssh.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", "BatchMode=no",
        "-o", "PreferredAuthentications=publickey,keyboard-interactive",
        "-o", "NumberOfPasswordPrompts=1",
        "-o", "ConnectTimeout=10",
        "-o", f"IdentityFile={key}",
        "-o", f"User={login}",
    ]  # fmt: skip


def run(
    argv: list[str], ssh: SshClient, cwd: Path, totp: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=ssh.env(totp=totp),
        check=False,
        timeout=RUN_TIMEOUT,
    )


def sftp(
    ssh: SshClient, tech: Technician, device: str, commands: str, cwd: Path, *, totp: bool = False
) -> subprocess.CompletedProcess[str]:
    """``sftp -b BATCH`` as ``tech`` on ``device``, run in the local directory ``cwd``."""
    batch = cwd / "batch.txt"
    batch.write_text(commands)
    argv = [SFTP, *client_options(ssh, f"{tech.name}:{device}", tech.key), "-b", str(batch)]
    argv.append("127.0.0.1")
    try:
        return run(argv, ssh, cwd, tech.user.totp_secret if totp else None)
    finally:
        batch.unlink()


def scp(
    ssh: SshClient, tech: Technician, device: str, *args: str, cwd: Path, legacy: bool = False
) -> subprocess.CompletedProcess[str]:
    """``scp [-O] ARGS``; ``REMOTE:path`` in ``args`` names a path on ``device``, written the
    way the README shows: ``USER+DEVICE@RELAY:path`` (scp reads a ``:`` as a path)."""
    mode = ["-O"] if legacy else ["-s"]
    paths = [a.replace("REMOTE:", f"{tech.name}+{device}@127.0.0.1:") for a in args]
    options = client_options(ssh, "unused", tech.key)[:-2]  # no -o User=: it is in the path
    argv = [SCP, *mode, *options, *paths]
    return run(argv, ssh, cwd)


def stolen(directory: Path) -> list[Path]:
    return list(directory.glob("stolen-*"))


async def connect(ssh: SshClient, tech: Technician, device: str) -> asyncssh.SSHClientConnection:
    """asyncssh as the client, where a test needs to stop mid-way (a key-only account)."""
    return await asyncssh.connect(
        "127.0.0.1",
        ssh.port,
        username=f"{tech.name}:{device}",
        client_keys=[asyncssh.read_private_key(tech.key)],
        known_hosts=str(ssh.known_hosts),
        agent_path=None,
        config=None,
        preferred_auth="publickey",
    )


def helpline_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("helpline: ")]


# -- set-up --------------------------------------------------------------------------------------

#: Starts an agent confined to a fresh root: ``confined(name, consent=...) -> (root, agent)``.
Confined = Callable[..., tuple[Path, AgentProcess]]


@pytest.fixture
def confined(relay: RelayProcess, tmp_path: Path) -> Iterator[Confined]:
    """An agent whose only allowed root is a fresh directory; returns (root, agent)."""
    agents: list[AgentProcess] = []

    def start(
        name: str = "desk", consent: dict[str, str] | None = None
    ) -> tuple[Path, AgentProcess]:
        root = tmp_path / f"root-{name}"
        agent = enrol_confined(relay, tmp_path, name, root, consent=consent)
        start_headless(agent)
        agents.append(agent)
        return root, agent

    try:
        yield start
    finally:
        for agent in agents:
            agent.stop()


@pytest.fixture
def local(tmp_path: Path) -> Path:
    directory = tmp_path / "local"
    directory.mkdir()
    return directory


def spool_files(relay: RelayProcess) -> list[str]:
    spool = relay.data_dir / "spool"
    return sorted(os.listdir(spool)) if spool.exists() else []


async def gateway_sessions(admin: HelplineClient, username: str) -> list[dict[str, Any]]:
    return [
        s
        for s in await admin.sessions(limit=1000)
        if s["username"] == username and s["via"] == "ssh" and s["kind"] == "files"
    ]


async def transfers(admin: HelplineClient, path: str) -> list[dict[str, Any]]:
    return [
        e["details"]
        for e in await audit_entries(admin, action="file.transfer")
        if e["details"].get("path") == path
    ]


async def all_ended(admin: HelplineClient, username: str) -> list[dict[str, Any]] | None:
    sessions = await gateway_sessions(admin, username)
    if sessions and all(s["state"] in ("ended", "denied", "failed") for s in sessions):
        return sessions
    return None


# -- sftp ----------------------------------------------------------------------------------------


async def test_sftp_put_get_ls_mkdir_rename_rm_with_key_and_totp(
    relay: RelayProcess,
    admin_client: HelplineClient,
    ssh: SshClient,
    confined: Confined,
    local: Path,
) -> None:
    root, _ = confined("desk")
    await wait_online(admin_client, "desk")
    tina = await technician(relay, admin_client, ssh, "tina", totp=True)
    big = write_random(local / "big.bin", 5 * 1024 * 1024 + 12345, seed=1)
    write_random(local / "small.txt", 1000, seed=2)
    (root / "old").mkdir()

    result = sftp(
        ssh,
        tina,
        "desk",
        "put big.bin\n"
        "ls -l\n"
        "mkdir incoming\n"
        "rename big.bin incoming/big.bin\n"
        "ls incoming\n"
        "get incoming/big.bin copy.bin\n"
        "put small.txt incoming/small.txt\n"
        "rm incoming/small.txt\n"
        "rmdir old\n"
        "pwd\n",
        local,
        totp=True,
    )

    assert result.returncode == 0, result.stderr
    assert ssh.prompts() == ["One-time code: "], "the code was asked by keyboard-interactive"
    assert (local / "copy.bin").read_bytes() == big, "the download is byte-identical"
    assert (root / "incoming" / "big.bin").read_bytes() == big, "the upload is byte-identical"
    assert not (root / "big.bin").exists(), "renamed"
    assert not (root / "incoming" / "small.txt").exists(), "removed"
    assert not (root / "old").exists(), "rmdir"
    listing = result.stdout.split("sftp> ls incoming", 1)
    assert "big.bin" in listing[0], "ls -l shows the uploaded file"
    assert "big.bin" in listing[1].split("sftp> get", 1)[0]
    assert "Remote working directory: ." in result.stdout
    assert partials_under(root) == []
    assert spool_files(relay) == [], "every spool file is gone"

    sessions = await async_wait_for(
        lambda: all_ended(admin_client, "tina"), what="the sftp session ended"
    )
    assert len(sessions) == 1, "one files session for the whole sftp run"
    record = sessions[0]
    assert record["reason"] == "ssh gateway (sftp)"
    end = await session_end(admin_client, record["id"])
    assert end["details"]["reason"] == "technician"

    digest = sha256_of(local / "big.bin")
    pushed = await transfers(admin_client, "big.bin")
    assert [(t["direction"], t["outcome"], t["sha256"], t["size"]) for t in pushed] == [
        ("to device", "completed", digest, len(big))
    ]
    assert pushed[0]["relay_verified"] is True
    pulled = await transfers(admin_client, "incoming/big.bin")
    assert [(t["direction"], t["outcome"], t["sha256"], t["size"]) for t in pulled] == [
        ("from device", "completed", digest, len(big))
    ]
    changes = {
        (e["action"], e["details"]["path"])
        for e in await audit_entries(admin_client)
        if e["action"] in ("file.mkdir", "file.rename", "file.remove")
    }
    assert {
        ("file.mkdir", "incoming"),
        ("file.rename", "big.bin"),
        ("file.remove", "incoming/small.txt"),
        ("file.remove", "old"),
    } <= changes


async def test_sftp_modes_times_trees_empty_files_and_replacing_a_file(
    relay: RelayProcess,
    admin_client: HelplineClient,
    ssh: SshClient,
    confined: Confined,
    local: Path,
) -> None:
    root, _ = confined("desk")
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")
    data = write_random(local / "tool.sh", 70_000, seed=3, mode=0o750)
    os.utime(local / "tool.sh", (1_600_000_000, 1_600_000_000))
    write_random(root / "tool.sh", 10, seed=4)  # replaced by the upload
    (local / "empty").write_bytes(b"")
    tree = {"tree/a.bin": 3000, "tree/sub/b.bin": 300_000, "tree/sub/deeper/c.bin": 0}
    for index, (name, size) in enumerate(tree.items()):
        write_random(local / name, size, seed=20 + index)
    whole = write_random(local / "whole.bin", 1_000_000, seed=30)
    (root / "whole.bin").write_bytes(whole[:400_000])  # an upload that was cut
    (local / "fetched.bin").write_bytes(whole[:123_456])  # a download that was cut
    (root / "fetched.bin").write_bytes(whole)
    many = root / "many"
    many.mkdir()
    names = {f"entry-{number:04d}" for number in range(700)}  # pages of 256 at most
    for name in names:
        (many / name).touch()

    result = sftp(
        ssh,
        tom,
        "desk",
        "put -p tool.sh\n"
        "get -p tool.sh back.sh\n"
        "put empty\n"
        "get empty empty-back\n"
        "put -r tree\n"
        "get -r tree tree-back\n"
        "reput whole.bin\n"
        "reget fetched.bin\n"
        "ls -1 many\n",
        local,
    )

    assert result.returncode == 0, result.stderr
    uploaded = root / "tool.sh"
    assert uploaded.read_bytes() == data
    assert uploaded.stat().st_mode & 0o777 == 0o750, "put -p keeps the mode"
    assert int(uploaded.stat().st_mtime) == 1_600_000_000, "put -p keeps the mtime"
    assert (local / "back.sh").read_bytes() == data
    assert int((local / "back.sh").stat().st_mtime) == 1_600_000_000
    assert (root / "empty").read_bytes() == b""
    assert (local / "empty-back").read_bytes() == b""
    for name in tree:
        assert (root / name).read_bytes() == (local / name).read_bytes(), name
        back = local / "tree-back" / name.removeprefix("tree/")
        assert back.read_bytes() == (local / name).read_bytes(), name
    listed = result.stdout.split("sftp> ls -1 many", 1)[1].split()
    assert {name.rpartition("/")[2] for name in listed} == names, "every page of the listing"
    assert (root / "whole.bin").read_bytes() == whole, "reput continued the device's copy"
    assert (local / "fetched.bin").read_bytes() == whole, "reget continued the local copy"
    assert partials_under(root) == []
    assert spool_files(relay) == []


async def test_paths_outside_the_roots_and_links_out_are_refused_with_a_clear_error(
    relay: RelayProcess,
    admin_client: HelplineClient,
    ssh: SshClient,
    confined: Confined,
    local: Path,
    tmp_path: Path,
) -> None:
    root, _ = confined("desk")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("not for technicians\n")
    (root / "escape").symlink_to(outside)
    (root / "secret-link").symlink_to(secret)
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")
    write_random(local / "payload.bin", 100, seed=5)

    result = sftp(
        ssh,
        tom,
        "desk",
        f"-get {secret} stolen-1\n"
        "-get ../outside/secret.txt stolen-2\n"
        "-get escape/secret.txt stolen-3\n"
        "-get secret-link stolen-4\n"
        f"-put payload.bin {outside}/payload.bin\n"
        "-put payload.bin escape/payload.bin\n"
        "-mkdir ../made-outside\n"
        "ls\n",
        local,
    )

    assert result.returncode == 0, result.stderr
    assert not stolen(local), "nothing came from outside the root"
    assert sorted(os.listdir(outside)) == ["secret.txt"], "nothing went outside the root"
    assert not (tmp_path / "made-outside").exists()
    lines = helpline_lines(result.stderr)
    escapes = "helpline: path escapes the allowed roots"
    link = f"{escapes}: symbolic links are not followed"
    for expected in (
        f"{escapes}: {str(secret)!r}",
        f"{escapes}: '../outside/secret.txt'",
        f"{link}: 'escape/secret.txt'",
        f"{escapes}: {str(outside / 'payload.bin')!r}",
        f"{link}: 'escape/payload.bin'",
        f"{escapes}: '../made-outside'",
    ):
        assert lines.count(expected) == 1, (expected, lines)
    assert "secret-link: not a regular file" in result.stderr, "sftp's own check of the link"
    assert "Traceback" not in relay.log()
    assert spool_files(relay) == []

    refused = scp(ssh, tom, "desk", f"REMOTE:{secret}", "stolen-5", cwd=local)
    assert refused.returncode != 0
    assert "path escapes the allowed roots" in refused.stderr
    legacy = scp(ssh, tom, "desk", f"REMOTE:{secret}", "stolen-6", cwd=local, legacy=True)
    assert legacy.returncode != 0
    assert "path escapes the allowed roots" in legacy.stderr
    assert not stolen(local)


# -- scp -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-scp-O"])
async def test_scp_upload_and_download(
    relay: RelayProcess,
    admin_client: HelplineClient,
    ssh: SshClient,
    confined: Confined,
    local: Path,
    legacy: bool,
) -> None:
    root, _ = confined("desk")
    (root / "drop").mkdir()
    served = write_random(root / "report.bin", 3 * 1024 * 1024 + 7, seed=6)
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")
    sent = write_random(local / "upload.bin", 2 * 1024 * 1024 + 3, seed=7)

    up = scp(ssh, tom, "desk", "upload.bin", "REMOTE:drop/", cwd=local, legacy=legacy)
    assert up.returncode == 0, up.stderr
    assert (root / "drop" / "upload.bin").read_bytes() == sent

    renamed = scp(ssh, tom, "desk", "upload.bin", "REMOTE:drop/named.bin", cwd=local, legacy=legacy)
    assert renamed.returncode == 0, renamed.stderr
    assert (root / "drop" / "named.bin").read_bytes() == sent

    down = scp(ssh, tom, "desk", "REMOTE:report.bin", "fetched.bin", cwd=local, legacy=legacy)
    assert down.returncode == 0, down.stderr
    assert (local / "fetched.bin").read_bytes() == served

    write_random(local / "tree" / "one.bin", 5000, seed=8)
    write_random(local / "tree" / "sub" / "two.bin", 70_000, seed=9)
    tree_up = scp(ssh, tom, "desk", "-r", "tree", "REMOTE:drop/", cwd=local, legacy=legacy)
    assert tree_up.returncode == 0, tree_up.stderr
    tree_down = scp(ssh, tom, "desk", "-r", "REMOTE:drop/tree", "back", cwd=local, legacy=legacy)
    assert tree_down.returncode == 0, tree_down.stderr
    for name in ("one.bin", "sub/two.bin"):
        original = (local / "tree" / name).read_bytes()
        assert (root / "drop" / "tree" / name).read_bytes() == original, name
        assert (local / "back" / name).read_bytes() == original, name

    kept = write_random(local / "tool.sh", 4000, seed=12, mode=0o750)
    os.utime(local / "tool.sh", (1_600_000_000, 1_600_000_000))
    preserved = scp(ssh, tom, "desk", "-p", "tool.sh", "REMOTE:drop/", cwd=local, legacy=legacy)
    assert preserved.returncode == 0, preserved.stderr
    on_device = root / "drop" / "tool.sh"
    assert on_device.read_bytes() == kept
    assert (on_device.stat().st_mode & 0o777, int(on_device.stat().st_mtime)) == (
        0o750,
        1_600_000_000,
    ), "scp -p keeps mode and mtime"
    fetched = scp(
        ssh, tom, "desk", "-p", "REMOTE:drop/tool.sh", "tool-back.sh", cwd=local, legacy=legacy
    )
    assert fetched.returncode == 0, fetched.stderr
    assert int((local / "tool-back.sh").stat().st_mtime) == 1_600_000_000

    missing = scp(ssh, tom, "desk", "REMOTE:no-such.bin", "x.bin", cwd=local, legacy=legacy)
    assert missing.returncode != 0
    assert not (local / "x.bin").exists()

    assert partials_under(root) == []
    assert spool_files(relay) == []
    sessions = await async_wait_for(
        lambda: all_ended(admin_client, "tom"), what="the scp sessions ended"
    )
    assert len(sessions) == 8, "one files session per scp run"
    assert {s["reason"] for s in sessions} == {"ssh gateway (sftp)"}
    upload = await transfers(admin_client, "drop/upload.bin")
    assert [(t["direction"], t["outcome"]) for t in upload] == [("to device", "completed")]
    download = await transfers(admin_client, "report.bin")
    assert [(t["direction"], t["outcome"], t["sha256"]) for t in download] == [
        ("from device", "completed", sha256_of(root / "report.bin"))
    ]


# -- consent ---------------------------------------------------------------------------------------


async def test_consent_denied_fails_sftp_and_scp_with_the_reason(
    relay: RelayProcess,
    admin_client: HelplineClient,
    ssh: SshClient,
    confined: Confined,
    local: Path,
) -> None:
    root, _ = confined("desk", consent={"files": "prompt"})  # nobody at the device
    write_random(root / "file.bin", 100, seed=8)
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")
    reason = "nobody is at the device to approve the session"

    result = sftp(ssh, tom, "desk", "ls\nget file.bin\n", local)
    assert result.returncode != 0
    assert f"helpline: session denied: {reason}" in result.stderr
    assert f"permission denied: {reason}" in result.stderr, "the SFTP status says why"
    assert not (local / "file.bin").exists()

    for legacy in (False, True):
        copy = scp(ssh, tom, "desk", "REMOTE:file.bin", ".", cwd=local, legacy=legacy)
        assert copy.returncode != 0
        assert f"helpline: session denied: {reason}" in copy.stderr
        assert not (local / "file.bin").exists()

    sessions = await async_wait_for(
        lambda: all_ended(admin_client, "tom"), what="the denied sessions recorded"
    )
    assert [s["state"] for s in sessions] == ["denied"] * 3
    decisions = [
        e["details"]["granted"]
        for e in await audit_entries(admin_client, action="session.consent")
        if e["details"]["technician"] == "tom"
    ]
    assert decisions == [False] * 3
    assert await transfers(admin_client, "file.bin") == []


# -- the client going away -----------------------------------------------------------------------


async def test_a_client_that_vanishes_mid_transfer_leaves_no_spool_and_no_file(
    relay: RelayProcess,
    admin_client: HelplineClient,
    ssh: SshClient,
    confined: Confined,
) -> None:
    """An upload cut before its close is never pushed (no file appears under its name);
    a download cut mid-way is dropped; the spool is empty either way."""
    root, _ = confined("desk")
    write_random(root / "large.bin", 8 * 1024 * 1024, seed=9)
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")

    conn = await connect(ssh, tom, "desk")
    try:
        client = await conn.start_sftp_client()
        remote = await client.open("half.bin", "wb")
        await remote.write(random_bytes(1024 * 1024, seed=10))
        await async_wait_for(
            _spool_has_files(relay), seconds=WITHIN, what="the upload's spool file"
        )
    finally:
        conn.abort()
    await asyncio.wait_for(conn.wait_closed(), WITHIN)

    conn = await connect(ssh, tom, "desk")
    try:
        client = await conn.start_sftp_client()
        remote = await client.open("large.bin", "rb")
        assert len(await remote.read(65536, 0)) == 65536
    finally:
        conn.abort()
    await asyncio.wait_for(conn.wait_closed(), WITHIN)

    wait_for(lambda: spool_files(relay) == [], what="the spool emptied")
    sessions = await async_wait_for(
        lambda: all_ended(admin_client, "tom"), what="both sessions ended"
    )
    assert len(sessions) == 2
    for record in sessions:
        end = await session_end(admin_client, record["id"])
        assert end["details"]["reason"] == "technician lost"
    assert not (root / "half.bin").exists(), "an upload that was not closed is not pushed"
    assert partials_under(root) == []
    assert sorted(os.listdir(root)) == ["large.bin"]
    assert "Traceback" not in relay.log()


def _spool_has_files(relay: RelayProcess) -> Callable[[], Any]:
    async def check() -> bool:
        return bool(spool_files(relay))

    return check


async def test_an_admin_ending_the_session_closes_the_sftp_channel(
    relay: RelayProcess,
    admin_client: HelplineClient,
    ssh: SshClient,
    confined: Confined,
) -> None:
    root, _ = confined("desk")
    write_random(root / "file.bin", 1000, seed=11)
    await wait_online(admin_client, "desk")
    tom = await technician(relay, admin_client, ssh, "tom")

    conn = await connect(ssh, tom, "desk")
    try:
        client = await conn.start_sftp_client()
        assert (await client.stat("file.bin")).size == 1000
        [record] = await gateway_sessions(admin_client, "tom")
        assert record["state"] == "active"
        await admin_client.kill_session(record["id"])
        with pytest.raises((asyncssh.Error, OSError)):
            await asyncio.wait_for(client.stat("file.bin"), WITHIN)
    finally:
        conn.close()
    await asyncio.wait_for(conn.wait_closed(), WITHIN)

    end = await session_end(admin_client, record["id"])
    assert end["details"]["reason"] == "admin"
    assert spool_files(relay) == []
    assert "Traceback" not in relay.log()
