"""``helpline files`` end to end: the real CLI, relay and agent on loopback.

Push and pull of files and trees (byte-identical, mode and mtime kept), listings,
mkdir/rm/mv, the quiet summary off a terminal, the audit entry of each transfer and
change, and the bad input of issue 4: escapes by ``..`` and by symbolic links,
unreadable files and unwritable destinations (the agent runs unprivileged, so the
kernel really refuses), consent denied, a local destination that cannot exist, a peer
sending beyond its window; and the relay's optional copies of transferred files.

Every agent here may touch only a fresh directory (``[files] roots``), never a home.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from console.client import HelplineClient
from console.files import FilesClient
from protocol import Limits
from protocol.errors import ErrorCode
from protocol.files import FileOp, FileRequest
from protocol.frames import FrameKind, encode_frame

from .conftest import BIN, AgentProcess, RelayProcess, init_relay, totp_now
from .files_helpers import (
    UNPRIVILEGED,
    Console,
    closed_with,
    enrol_confined,
    flush,
    open_files_session,
    partials_under,
    process_uid,
    random_bytes,
    sha256_of,
    snapshot,
    start_headless,
    summary_line,
    take_one_window,
    unprivileged_dir,
    write_random,
)
from .helpers import raw_console_link
from .session_helpers import helpline_env, on_pty

DEVICE = "files-desk"


@dataclass
class Stage:
    relay: RelayProcess
    agent: AgentProcess
    console: Console
    #: The agent's only allowed root.
    root: Path
    #: A directory beside the root, outside it: escapes would land here.
    outside: Path
    #: Local files of the technician.
    local: Path


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    """One relay (keeping copies of transferred files) and one confined agent for the
    module; each test works in a directory of its own under the root."""
    directory = tmp_path_factory.mktemp("files")
    relay = init_relay(directory)
    toml = relay.data_dir / "relay.toml"
    text = toml.read_text()
    assert "keep_files = false" in text
    toml.write_text(text.replace("keep_files = false", "keep_files = true"))
    relay.start()
    agent = enrol_confined(relay, directory, DEVICE, directory / "root")
    start_headless(agent)
    try:
        console = Console.login(relay, directory / "cli", totp_now(relay.admin["totp_secret"]))
        console.wait_online(DEVICE)
        outside = directory / "outside"
        outside.mkdir()
        local = directory / "local"
        local.mkdir()
        yield Stage(relay, agent, console, directory / "root", outside, local)
    finally:
        agent.stop()
        relay.stop()


@pytest.fixture
def work(stage: Stage, request: pytest.FixtureRequest) -> Iterator[tuple[Path, Path, str]]:
    """(device dir, local dir, device path of that dir) fresh for one test."""
    name = request.node.name.replace("[", "-").replace("]", "")[:80]
    remote = stage.root / name
    remote.mkdir()
    local = stage.local / name
    local.mkdir()
    yield remote, local, name
    # Whatever the test did, the device never lost its connection to the relay.
    log = stage.agent.log()
    assert log.count("connected to relay as") == 1, log[-3000:]
    assert "relay closed the connection" not in log, log[-3000:]


# -- push and pull --------------------------------------------------------------------------


def test_push_and_pull_a_file_byte_identical_with_mode_mtime_and_audit(
    stage: Stage, work: tuple[Path, Path, str]
) -> None:
    remote, local, name = work
    source = local / "report.bin"
    data = write_random(source, 3 * 1024 * 1024 + 17, seed=1, mode=0o640)
    os.utime(source, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    digest = hashlib.sha256(data).hexdigest()

    pushed = stage.console.ok("push", DEVICE, source, f"{name}/report.bin")
    assert summary_line(pushed) == (
        f"pushed {source} -> {name}/report.bin  {len(data)} bytes  sha256 {digest}"
    )
    on_device = remote / "report.bin"
    assert on_device.read_bytes() == data
    info = on_device.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert info.st_mtime_ns == 1_600_000_000_123_456_789
    assert partials_under(remote) == []

    back = local / "back.bin"
    pulled = stage.console.ok("pull", DEVICE, f"{name}/report.bin", back)
    assert summary_line(pulled) == (
        f"pulled {name}/report.bin -> {back}  {len(data)} bytes  sha256 {digest}"
    )
    assert back.read_bytes() == data
    assert stat.S_IMODE(back.stat().st_mode) == 0o640
    assert back.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert partials_under(local) == []

    # Into an existing directory, as cp does: the name is kept.
    into = local / "into"
    into.mkdir()
    stage.console.ok("pull", DEVICE, f"{name}/report.bin", into)
    assert (into / "report.bin").read_bytes() == data

    entries = stage.console.transfers(f"{name}/report.bin")
    assert [e["details"]["direction"] for e in entries] == [
        "to device",
        "from device",
        "from device",
    ]
    sessions = set()
    for entry in entries:
        details = entry["details"]
        assert entry["target"] == DEVICE
        assert details["size"] == len(data)
        assert details["sha256"] == digest
        assert details["outcome"] == "completed"
        assert details["relay_verified"] is True
        assert details["resumed_from"] == 0
        sessions.add(details["session"])
    assert len(sessions) == 3  # one files session per command


def test_quiet_on_a_non_terminal_even_for_a_large_file(
    stage: Stage, work: tuple[Path, Path, str]
) -> None:
    remote, local, name = work
    source = local / "big.bin"
    data = write_random(source, 20 * 1024 * 1024, seed=2)
    result = stage.console.ok("push", DEVICE, source, f"{name}/")
    # Pushed into the existing directory under its own name; one line, no progress drawing.
    line = summary_line(result)
    assert line.startswith(f"pushed {source} -> {name}/big.bin  {len(data)} bytes"), line
    assert (remote / "big.bin").read_bytes() == data


def test_progress_bar_on_a_terminal(stage: Stage, work: tuple[Path, Path, str]) -> None:
    remote, local, name = work
    source = local / "shown.bin"
    data = write_random(source, 12 * 1024 * 1024, seed=3)
    argv: list[str | Path] = [
        BIN / "helpline",
        "files",
        "push",
        DEVICE,
        source,
        f"{name}/shown.bin",
    ]
    with on_pty(argv, env=helpline_env(stage.console.config), capture_stdout=True) as terminal:
        out, _ = terminal.process.communicate(timeout=60)
        assert terminal.wait() == 0, terminal.output
    drawn = terminal.output.decode(errors="replace")
    # stderr is the terminal: the bar (name, percentage, rate, ETA) drawn over itself...
    assert "\r\x1b[K" in drawn and "shown.bin" in drawn, drawn
    assert "100%" in drawn and "MB/s" in drawn and "ETA" in drawn, drawn
    assert drawn.rstrip().endswith("\x1b[K"), drawn  # ...and cleared at the end
    # stdout is not: the summary alone.
    assert out.decode().startswith(f"pushed {source} -> {name}/shown.bin  {len(data)} bytes")
    assert (remote / "shown.bin").read_bytes() == data


# -- trees ----------------------------------------------------------------------------------


def test_trees_push_and_pull_recursively_links_skipped_not_followed(
    stage: Stage, work: tuple[Path, Path, str]
) -> None:
    remote, local, name = work
    tree = local / "tree"
    files = {
        "a.txt": (b"alpha\n", 0o644),
        "sub/b.bin": (random_bytes(300_000, seed=4), 0o600),
        "sub/deeper/c.sh": (b"#!/bin/sh\necho c\n", 0o755),
        "sub/deeper/deepest/d": (b"", 0o644),
    }
    for relative, (content, mode) in files.items():
        path = tree / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    (tree / "empty-dir").mkdir()
    # Links inside the tree lead outside it: to a file and to a directory. Never followed.
    secret = stage.outside / f"{name}-secret.txt"
    secret.write_bytes(b"outside the tree\n")
    secret_dir = stage.outside / f"{name}-secrets"
    secret_dir.mkdir()
    (secret_dir / "inner.txt").write_bytes(b"also outside\n")
    (tree / "sub" / "link-to-file").symlink_to(secret)
    (tree / "link-to-dir").symlink_to(secret_dir)

    pushed = stage.console.ok("push", "-r", DEVICE, tree, f"{name}/tree")
    warnings = [line for line in pushed.stderr.splitlines() if "warning" in line]
    assert sorted(warnings) == sorted(
        f"helpline: warning: skipped {tree / link}: not a regular file or directory, not followed"
        for link in ("link-to-dir", "sub/link-to-file")
    ), pushed.stderr
    lines = pushed.stdout.splitlines()
    assert lines[-1] == f"pushed 4 files, {sum(len(c) for c, _ in files.values())} bytes" + (
        f" into {name}/tree"
    ), pushed.stdout
    assert len(lines) == 5  # one per file, then the total

    on_device = remote / "tree"
    assert sorted(str(p.relative_to(on_device)) for p in on_device.rglob("*")) == sorted(
        [
            *("a.txt", "empty-dir", "sub", "sub/b.bin", "sub/deeper", "sub/deeper/c.sh"),
            *("sub/deeper/deepest", "sub/deeper/deepest/d"),
        ]
    )
    for relative, (content, mode) in files.items():
        assert (on_device / relative).read_bytes() == content, relative
        assert stat.S_IMODE((on_device / relative).stat().st_mode) == mode, relative
        assert (on_device / relative).stat().st_mtime_ns == (tree / relative).stat().st_mtime_ns
    assert not any(p.is_symlink() for p in on_device.rglob("*"))
    assert not (on_device / "link-to-dir").exists()
    assert secret.read_bytes() == b"outside the tree\n"

    # A link on the device is skipped the same way by a recursive pull.
    (on_device / "sub" / "device-link").symlink_to(secret)
    back = local / "back"
    pulled = stage.console.ok("pull", "-r", DEVICE, f"{name}/tree", back)
    assert "skipped" in pulled.stderr and "device-link" in pulled.stderr, pulled.stderr
    assert "symbolic link, not followed" in pulled.stderr
    assert pulled.stdout.splitlines()[-1].startswith("pulled 4 files, ")
    for relative, (content, mode) in files.items():
        assert (back / relative).read_bytes() == content, relative
        assert stat.S_IMODE((back / relative).stat().st_mode) == mode, relative
    assert (back / "empty-dir").is_dir()
    assert not (back / "sub" / "device-link").exists()
    assert not (back / "sub" / "device-link").is_symlink()
    assert partials_under(back) == [] and partials_under(on_device) == []

    for relative, (content, _) in files.items():
        entries = stage.console.transfers(f"{name}/tree/{relative}")
        assert [e["details"]["direction"] for e in entries] == ["to device", "from device"]
        for entry in entries:
            assert entry["details"]["sha256"] == hashlib.sha256(content).hexdigest()
            assert entry["details"]["size"] == len(content)
            assert entry["details"]["outcome"] == "completed"
            assert entry["details"]["relay_verified"] is True


def test_push_of_a_symlink_itself_is_skipped(stage: Stage, work: tuple[Path, Path, str]) -> None:
    remote, local, name = work
    secret = stage.outside / f"{name}.txt"
    secret.write_bytes(b"secret")
    (local / "tree-link").symlink_to(local / "real")
    (local / "real").mkdir()
    (local / "real" / "x").write_bytes(b"x")
    result = stage.console.ok("push", "-r", DEVICE, local / "tree-link", f"{name}/t")
    assert "skipped" in result.stderr and "not followed" in result.stderr, result.stderr
    assert snapshot(remote) == {}


# -- listings and changes -------------------------------------------------------------------


def test_ls_table_and_json(stage: Stage, work: tuple[Path, Path, str]) -> None:
    remote, _, name = work
    (remote / "notes.txt").write_bytes(b"12345")
    (remote / "notes.txt").chmod(0o640)
    os.utime(remote / "notes.txt", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    (remote / "docs").mkdir()
    (remote / "docs").chmod(0o750)
    (remote / "shortcut").symlink_to(stage.outside)

    listing = json.loads(stage.console.ok("ls", DEVICE, name, "--json").stdout)
    by_name = {e["name"]: e for e in listing}
    assert sorted(by_name) == ["docs", "notes.txt", "shortcut"]
    assert by_name["notes.txt"] == {
        "name": "notes.txt",
        "kind": "file",
        "size": 5,
        "mode": 0o640,
        "mtime_ns": 1_700_000_000_000_000_000,
    }
    assert (by_name["docs"]["kind"], by_name["docs"]["mode"]) == ("dir", 0o750)
    assert by_name["shortcut"]["kind"] == "link"

    table = stage.console.ok("ls", DEVICE, name).stdout.splitlines()
    assert table[0].split() == ["MODE", "SIZE", "MODIFIED", "NAME"]
    rows = {line.split()[-1]: line.split() for line in table[1:] if line.strip()}
    assert set(rows) == {"docs/", "notes.txt", "shortcut@"}
    assert rows["notes.txt"][:2] == ["-rw-r-----", "5"]
    assert rows["docs/"][0] == "drwxr-x---"
    assert rows["shortcut@"][0].startswith("l")

    # A file is listed as itself.
    single = json.loads(stage.console.ok("ls", DEVICE, f"{name}/notes.txt", "--json").stdout)
    assert [(e["name"], e["size"]) for e in single] == [("notes.txt", 5)]
    # The root itself (relative "" or "."), and nothing of the link's target shows.
    top = json.loads(stage.console.ok("ls", DEVICE, ".", "--json").stdout)
    assert name in {e["name"] for e in top}


def test_mkdir_rm_mv_and_their_audit(stage: Stage, work: tuple[Path, Path, str]) -> None:
    remote, _, name = work
    console = stage.console
    assert console.ok("mkdir", DEVICE, f"{name}/new").stdout == f"created {name}/new\n"
    assert (remote / "new").is_dir()
    console.ok("mkdir", "-p", DEVICE, f"{name}/a/b/c")
    assert (remote / "a" / "b" / "c").is_dir()
    error = console.refused("mkdir", DEVICE, f"{name}/new")
    assert "already exists" in error, error

    (remote / "new" / "f.txt").write_bytes(b"content")
    assert console.ok("mv", DEVICE, f"{name}/new/f.txt", f"{name}/a/g.txt").stdout == (
        f"renamed {name}/new/f.txt to {name}/a/g.txt\n"
    )
    assert not (remote / "new" / "f.txt").exists()
    assert (remote / "a" / "g.txt").read_bytes() == b"content"
    (remote / "taken").write_bytes(b"keep me")
    error = console.refused("mv", DEVICE, f"{name}/a/g.txt", f"{name}/taken")
    assert "already exists" in error, error
    assert (remote / "taken").read_bytes() == b"keep me"
    assert (remote / "a" / "g.txt").read_bytes() == b"content"

    error = console.refused("rm", DEVICE, f"{name}/a")
    assert "directory not empty" in error, error
    assert (remote / "a" / "g.txt").exists()
    assert console.ok("rm", DEVICE, f"{name}/taken").stdout == f"removed {name}/taken\n"
    assert not (remote / "taken").exists()
    console.ok("rm", "-r", DEVICE, f"{name}/a")
    assert not (remote / "a").exists()
    assert sorted(p.name for p in remote.iterdir()) == ["new"]
    error = console.refused("rm", DEVICE, f"{name}/gone")
    assert "no such file or directory" in error, error

    def outcomes(action: str) -> list[tuple[str, str]]:
        return [
            (e["details"]["path"], e["details"]["outcome"])
            for e in console.audit(action)
            if e["details"]["path"].startswith(f"{name}/")
        ]

    assert outcomes("file.mkdir") == [
        (f"{name}/new", "done"),
        (f"{name}/a/b/c", "done"),
        (f"{name}/new", "failed"),
    ]
    renames = [e for e in console.audit("file.rename") if e["details"]["path"].startswith(name)]
    assert [(e["details"]["new_path"], e["details"]["outcome"]) for e in renames] == [
        (f"{name}/a/g.txt", "done"),
        (f"{name}/taken", "failed"),
    ]
    assert outcomes("file.remove") == [
        (f"{name}/a", "failed"),
        (f"{name}/taken", "done"),
        (f"{name}/a", "done"),
        (f"{name}/gone", "failed"),
    ]
    for action in ("file.mkdir", "file.rename", "file.remove"):
        for entry in console.audit(action):
            assert entry["target"] == DEVICE and entry["details"]["session"]
            assert entry["actor"] == stage.relay.admin["username"]


# -- bad input: escapes --------------------------------------------------------------------

ESCAPE = "path escapes the allowed roots"


def test_escape_by_dotdot_and_by_symlink_is_refused_and_touches_nothing(
    stage: Stage, work: tuple[Path, Path, str]
) -> None:
    remote, local, name = work
    console = stage.console
    secret = stage.outside / f"{name}.secret"
    secret.write_bytes(b"do not leak\n")
    (stage.outside / f"{name}.dir").mkdir()
    (stage.outside / f"{name}.dir" / "hidden").write_bytes(b"")
    (remote / "to-outside").symlink_to(stage.outside)  # a directory link leading out
    (remote / "secret-link").symlink_to(secret)  # a file link leading out
    (remote / "ok.txt").write_bytes(b"inside\n")
    mine = local / "mine.txt"
    mine.write_bytes(b"technician's file\n")
    outside_before = snapshot(stage.outside)
    remote_before = snapshot(remote)
    dotdot = f"{name}/../../outside/{secret.name}"  # the root's parent holds "outside"
    absolute = str(secret)

    # pull: nothing is read, nothing is written locally
    pulls = (dotdot, absolute, f"{name}/to-outside/{secret.name}", f"{name}/secret-link")
    # push: nothing lands outside (nor a partial), the link's target is unchanged
    pushes = (f"{name}/../../outside/new.txt", f"{name}/to-outside/new.txt", f"{name}/secret-link")
    # ls: neither the parent nor a directory reached through the link is listed
    listings = ("..", f"{name}/to-outside/{name}.dir")
    # and changes, through the link or by ..
    changes = (
        ("rm", DEVICE, f"{name}/to-outside/{secret.name}"),
        ("mv", DEVICE, f"{name}/../../outside/{secret.name}", f"{name}/got"),
    )
    commands: list[tuple[str | Path, ...]] = [
        *(("pull", DEVICE, path, local / "got") for path in pulls),
        *(("push", DEVICE, mine, path) for path in pushes),
        *(("ls", DEVICE, path, "--json") for path in listings),
        *changes,
    ]
    for command, error in zip(commands, console.refused_all(*commands), strict=True):
        assert ESCAPE in error, (command, error)
        assert "do not leak" not in error and "hidden" not in error, (command, error)
    assert sorted(p.name for p in local.iterdir()) == ["mine.txt"]  # no pull wrote anything
    # The link itself is shown as a link, as ``ls -l`` would, not followed.
    for path in (f"{name}/to-outside", f"{name}/to-outside/"):
        listing = json.loads(console.ok("ls", DEVICE, path, "--json").stdout)
        assert [(e["name"], e["kind"]) for e in listing] == [("to-outside", "link")], path

    assert snapshot(stage.outside) == outside_before
    assert snapshot(remote) == remote_before
    assert mine.read_bytes() == b"technician's file\n"
    # The pulls that were refused are audited as failed transfers, with the reason.
    for path in pulls:
        [entry] = [e for e in console.transfers(path) if e["details"]["direction"] == "from device"]
        assert entry["details"]["outcome"] == "failed"
        assert ESCAPE in entry["details"]["error"]
    # The device still serves what is inside the root.
    stage.console.ok("pull", DEVICE, f"{name}/ok.txt", local / "ok.txt")
    assert (local / "ok.txt").read_bytes() == b"inside\n"


def test_pull_into_a_missing_local_directory_is_a_clear_local_error(
    stage: Stage, work: tuple[Path, Path, str]
) -> None:
    remote, local, name = work
    data = write_random(remote / "file.bin", 100_000, seed=5)
    target = local / "no" / "such" / "dir" / "file.bin"
    error = stage.console.refused("pull", DEVICE, f"{name}/file.bin", target)
    assert error == f"helpline: {local / 'no' / 'such' / 'dir'}: No such file or directory"
    assert list(local.iterdir()) == []  # nothing created on the way
    assert (remote / "file.bin").read_bytes() == data
    assert partials_under(remote) == []


# -- bad input: permissions -----------------------------------------------------------------


@pytest.fixture(scope="module")
def unprivileged(stage: Stage) -> Iterator[tuple[AgentProcess, Path]]:
    """A second agent whose process runs as an unprivileged user (when the tests run as
    root, which ignores permission bits), confined to a directory that user owns."""
    as_root = os.geteuid() == 0
    user = UNPRIVILEGED if as_root else None
    with contextlib.ExitStack() as stack:
        if user is not None:
            directory = stack.enter_context(unprivileged_dir(user))
        else:
            directory = stage.local.parent / "unprivileged"
            directory.mkdir()
        root = directory / "root"
        agent = enrol_confined(stage.relay, directory, "locked-desk", root)
        if user is not None:
            os.chown(root, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        start_headless(agent, user=user)
        stack.callback(agent.stop)
        assert agent.process is not None
        if as_root:  # the point of it: the kernel applies permission bits to this agent
            assert process_uid(agent.process) == pwd.getpwnam(UNPRIVILEGED).pw_uid
        stage.console.wait_online("locked-desk")
        yield agent, root


def owned_like(path: Path, root: Path) -> None:
    info = root.stat()
    os.chown(path, info.st_uid, info.st_gid, follow_symlinks=False)


def test_unreadable_file_and_unwritable_destination_are_refused_cleanly(
    stage: Stage, unprivileged: tuple[AgentProcess, Path], work: tuple[Path, Path, str]
) -> None:
    agent, root = unprivileged
    _, local, _ = work
    console = stage.console
    device = "locked-desk"
    readable = root / "readable.bin"
    data = write_random(readable, 200_000, seed=7)
    unreadable = root / "unreadable.bin"
    secret = write_random(unreadable, 200_000, seed=8, mode=0o000)
    locked_dir = root / "locked"
    locked_dir.mkdir()
    (locked_dir / "old.txt").write_bytes(b"old\n")
    for path in (readable, unreadable, locked_dir, locked_dir / "old.txt"):
        owned_like(path, root)
    locked_dir.chmod(0o555)  # r-x: listed and read, never written
    closed_dir = root / "closed"
    closed_dir.mkdir(mode=0o000)
    owned_like(closed_dir, root)
    closed_dir.chmod(0o000)
    before = snapshot(root)
    mine = local / "new.bin"
    pushed_data = write_random(mine, 300_000, seed=9)

    # pull of an unreadable file; push into a read-only directory, and over a file in it;
    # listing a directory it may not read
    commands = (
        ("pull", device, "unreadable.bin", local / "unreadable.bin"),
        ("push", device, mine, "locked/new.bin"),
        ("push", device, mine, "locked/old.txt"),
        ("ls", device, "closed"),
        ("pull", device, "closed/anything", local / "anything"),
    )
    for command, error in zip(commands, console.refused_all(*commands), strict=True):
        assert "permission denied" in error, (command, error)
        assert str(root) not in error, error  # the agent's real paths stay private

    # nothing written on either side, no partial anywhere, the files as they were
    assert snapshot(root) == before
    assert partials_under(root) == []
    assert sorted(p.name for p in local.iterdir()) == ["new.bin"]
    assert mine.read_bytes() == pushed_data
    assert stat.S_IMODE(unreadable.stat().st_mode) == 0o000
    assert unreadable.read_bytes() == secret  # (we are root)
    [failed] = [e for e in console.transfers("unreadable.bin") if e["target"] == device]
    assert (failed["details"]["outcome"], failed["details"]["direction"]) == (
        "failed",
        "from device",
    )
    assert "permission denied" in failed["details"]["error"]

    # The same agent still serves what it may read and write.
    console.ok("pull", device, "readable.bin", local / "readable.bin")
    assert (local / "readable.bin").read_bytes() == data
    console.ok("push", device, mine, "pushed.bin")
    assert (root / "pushed.bin").read_bytes() == pushed_data
    log = agent.log()
    assert log.count("connected to relay as") == 1 and "Traceback" not in log, log[-3000:]


# -- bad input: consent ---------------------------------------------------------------------


def test_consent_denied_when_nobody_can_be_asked(
    stage: Stage, work: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """Policy "prompt" on a machine with no display and no terminal: denied, nothing done."""
    _, local, _ = work
    root = tmp_path / "prompt-root"
    agent = enrol_confined(stage.relay, tmp_path, "prompt-desk", root, consent={"files": "prompt"})
    start_headless(agent)
    try:
        stage.console.wait_online("prompt-desk")
        existing = write_random(root / "there.bin", 50_000, seed=11)
        mine = local / "mine.bin"
        write_random(mine, 50_000, seed=12)
        before = snapshot(root)
        commands = (
            ("push", "prompt-desk", mine, "pushed.bin"),
            ("pull", "prompt-desk", "there.bin", local / "there.bin"),
            ("ls", "prompt-desk", "."),
            ("rm", "prompt-desk", "there.bin"),
        )
        for command, error in zip(commands, stage.console.refused_all(*commands), strict=True):
            assert error == "helpline: nobody is at the device to approve the session", command
        assert snapshot(root) == before
        assert (root / "there.bin").read_bytes() == existing
        assert sorted(p.name for p in local.iterdir()) == ["mine.bin"]
        consents = [
            e for e in stage.console.audit("session.consent") if e["target"] == "prompt-desk"
        ]
        assert len(consents) == len(commands)
        assert all(e["details"]["granted"] is False for e in consents), consents
        assert not [e for e in stage.console.audit("file.transfer") if e["target"] == "prompt-desk"]
        assert "connected to relay as prompt-desk" in agent.log()
        assert agent.log().count("connected to relay as") == 1
    finally:
        agent.stop()


# -- bad input: a peer that ignores its window ----------------------------------------------


async def test_data_beyond_the_window_closes_that_connection_only(
    stage: Stage, work: tuple[Path, Path, str]
) -> None:
    remote, local, name = work
    big = write_random(remote / "big.bin", 8 * 1024 * 1024, seed=13)
    token = stage.console.token
    async with (
        HelplineClient(stage.relay.url, stage.relay.ca_pem, token) as client,
        client.connect() as other_console,
    ):
        other = FilesClient(await other_console.open_session(DEVICE, "files", reason="witness"))
        assert [e.name for e in await other.list(name)] == ["big.bin"]

        async with raw_console_link(stage.relay, token) as link:
            channel = (await open_files_session(link, DEVICE)).channel
            pull = FileRequest(id=1, op=FileOp.PULL, path=f"{name}/big.bin")
            link.conn.send_channel_message(channel, pull)
            await flush(link)
            # Take one window of the file and never acknowledge it: the relay holds the
            # device's next window, and the device's one files worker waits for credit, so
            # nothing it is sent on this channel is acknowledged any more.
            await take_one_window(link, channel)
            # The relay may pass on at most one device window of ours, and grant that back;
            # beyond that plus what it granted us already is more than it ever allowed.
            allowed = link.conn.send_credit(channel) + Limits().channel_window
            chunk = bytes(64 * 1024)
            sent = 0
            with contextlib.suppress(ConnectionError):
                while sent <= allowed and not link.ws.closed:
                    await link.ws.send_bytes(encode_frame(FrameKind.DATA, channel, chunk))
                    sent += len(chunk)
            code, goodbyes = await closed_with(link)
        assert code == ErrorCode.FLOW_CONTROL, (code, goodbyes)
        assert [g.code for g in goodbyes] == [ErrorCode.FLOW_CONTROL], goodbyes
        assert "beyond the granted window" in goodbyes[0].message, goodbyes

        # The other console's files session on the same device carries on...
        pushed = local / "after.bin"
        data = write_random(pushed, 1_500_000, seed=14)
        result = await other.push(pushed, f"{name}/after.bin")
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert (remote / "after.bin").read_bytes() == data
        await other.pull(f"{name}/big.bin", local / "big.bin")
        assert (local / "big.bin").read_bytes() == big
        await other.close()
    # ...new sessions open as before, and the device never lost its connection.
    listing = json.loads(stage.console.ok("ls", DEVICE, name, "--json").stdout)
    assert sorted(e["name"] for e in listing) == ["after.bin", "big.bin"]
    assert partials_under(remote) == []


# -- copies with the session's recordings ---------------------------------------------------


def test_keep_files_copies_each_transfer_beside_the_recordings(
    stage: Stage, work: tuple[Path, Path, str]
) -> None:
    remote, local, name = work
    source = local / "kept.bin"
    data = write_random(source, 2 * 1024 * 1024 + 3, seed=15)
    stage.console.ok("push", DEVICE, source, f"{name}/kept.bin")
    stage.console.ok("pull", DEVICE, f"{name}/kept.bin", local / "back.bin")
    assert (remote / "kept.bin").read_bytes() == data

    recordings = stage.relay.data_dir / "recordings"
    entries = stage.console.transfers(f"{name}/kept.bin")
    assert [e["details"]["direction"] for e in entries] == ["to device", "from device"]
    for entry in entries:
        details = entry["details"]
        copy = recordings / details["session"] / details["copy"]
        assert copy.name.endswith("-kept.bin"), copy
        assert copy.read_bytes() == data
        assert sha256_of(copy) == details["sha256"] == hashlib.sha256(data).hexdigest()
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert list(copy.parent.iterdir()) == [copy]  # one file per session here
