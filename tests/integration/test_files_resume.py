"""Transfers cut at random points, then resumed: ``helpline files push|pull`` killed
(SIGKILL) mid-transfer again and again, the agent killed mid-pull and restarted, the relay
killed mid-push and restarted. Every result is byte-identical, a destination never holds a
partial file under its real name, and the last run says where it resumed from.

Cut points are drawn from a seeded random generator (``HELPLINE_CUT_SEED`` overrides the
seed) so that a failure can be replayed; each is "once the partial file has grown past N
bytes", polled (bounded), never a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocol import Limits
from protocol.files import FileOp, FileRequest

from .conftest import BIN, AgentProcess, RelayProcess, init_relay, totp_now, wait_for
from .files_helpers import (
    Console,
    enrol_confined,
    flock_free,
    flush,
    open_files_session,
    partial_of,
    partials_under,
    start_headless,
    summary_line,
    take_one_window,
    write_random,
)
from .helpers import raw_console_link

DEVICE = "resume-desk"
SIZE = 32 * 1024 * 1024
CUTS = 6
SEED = int(os.environ.get("HELPLINE_CUT_SEED", "4004"))
#: Cuts land short of the last few windows: a sender is at most about two windows (the
#: relay's, the receiver's) ahead of the receiver's disk, so a sender killed then has not
#: sent the whole file, and each cut leaves something to resume.
MARGIN = 4 * Limits().channel_window
#: Bound on any one wait (seconds); never an assertion on time.
WITHIN = 30.0


@dataclass
class Stage:
    relay: RelayProcess
    agent: AgentProcess
    console: Console
    root: Path
    local: Path


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    """One relay (default settings: no copies kept) and one confined agent; tests that
    kill either start it again and wait for the device to be back."""
    directory = tmp_path_factory.mktemp("resume")
    relay = init_relay(directory)
    relay.start()
    agent = enrol_confined(relay, directory, DEVICE, directory / "root")
    start_headless(agent)
    try:
        console = Console.login(relay, directory / "cli", totp_now(relay.admin["totp_secret"]))
        console.wait_online(DEVICE)
        local = directory / "local"
        local.mkdir()
        yield Stage(relay, agent, console, directory / "root", local)
    finally:
        agent.stop()
        relay.stop()


@pytest.fixture
def fresh(stage: Stage, request: pytest.FixtureRequest) -> tuple[Path, Path, str]:
    """(device dir, local dir, device path of that dir), the device online (started again
    if a test before this one killed the relay or the agent and failed before restarting)."""
    if stage.relay.process is None or stage.relay.process.poll() is not None:
        stage.relay.start()
    if stage.agent.process is None or stage.agent.process.poll() is not None:
        start_headless(stage.agent)
    name = request.node.name[:80]
    (stage.root / name).mkdir()
    (stage.local / name).mkdir()
    stage.console.wait_online(DEVICE)
    return stage.root / name, stage.local / name, name


def spawn(stage: Stage, *args: str | Path) -> subprocess.Popen[str]:
    env = {**os.environ, "HELPLINE_CONFIG": str(stage.console.config)}
    return subprocess.Popen(
        [BIN / "helpline", "files", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def grow_past(partial: Path, threshold: int, process: subprocess.Popen[str]) -> bool:
    """Poll until ``partial`` holds more than ``threshold`` bytes (True) or ``process``
    ended first (False). Bounded."""
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        if size_of(partial) > threshold:
            return True
        if process.poll() is not None:
            return size_of(partial) > threshold
        time.sleep(0.001)
    raise AssertionError(f"{partial} never grew past {threshold} bytes")


def kill(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGKILL)
    out, err = process.communicate(timeout=WITHIN)
    return out, err


def resumed_from(line: str) -> int:
    found = re.search(r"  resumed from (\d+)$", line)
    assert found, f"no 'resumed from N' in {line!r}"
    return int(found.group(1))


def assert_prefix(partial: Path, data: bytes) -> int:
    """The partial file holds the start of ``data`` (all of it, when the cut came after
    the last byte but before the check and rename) and nothing else; its size."""
    held = partial.read_bytes()
    assert 0 < len(held) <= len(data), len(held)
    assert held == data[: len(held)], "the partial file is not a prefix of the file"
    return len(held)


@dataclass
class Cuts:
    """What repeated cuts did: the partial's size after each, and the final summary."""

    sizes: list[int]
    final: str


def cut_repeatedly(
    stage: Stage,
    command: tuple[str | Path, ...],
    data: bytes,
    partial: Path,
    rng: random.Random,
    *,
    settled: Callable[[], bool] = lambda: True,
    untouched: Callable[[], None],
) -> Cuts:
    """Run ``command`` and SIGKILL it once ``partial`` passes a random point of the first
    half of what is left (short of the last ``MARGIN`` bytes), ``CUTS`` times, or fewer if
    that runs out; then let it finish. After each cut: ``untouched()`` (the real name holds
    nothing partial) and the partial is a prefix of ``data``."""
    sizes: list[int] = []
    for cut in range(CUTS):
        have = size_of(partial)
        room = len(data) - MARGIN - have
        if room <= 0:
            break
        threshold = have + 1 + rng.randrange(max(1, room // 2))
        process = spawn(stage, *command)
        passed = grow_past(partial, threshold, process)
        out, err = kill(process)
        assert passed, f"cut {cut}: finished before reaching {threshold}: {out} {err}"
        wait_for(settled, seconds=WITHIN, what="the device to let go of the partial file")
        untouched()
        sizes.append(assert_prefix(partial, data))
        assert stat_mode(partial) == 0o600
    assert len(sizes) >= CUTS - 2, sizes
    result = stage.console.ok(*command)
    return Cuts(sizes, summary_line(result))


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def completed_entry(
    stage: Stage, path: str, direction: str, *, earlier: tuple[str, ...] = ("interrupted",)
) -> dict[str, object]:
    """The last ``file.transfer`` entry of ``path``: completed; those before it, cut."""
    entries = [e for e in stage.console.transfers(path) if e["details"]["direction"] == direction]
    shown = "\n".join(repr({k: v for k, v in e["details"].items() if k != "path"}) for e in entries)
    assert entries and entries[-1]["details"]["outcome"] == "completed", shown
    assert all(e["details"]["outcome"] in earlier for e in entries[:-1]), shown
    return entries[-1]


# -- the CLI killed, again and again ---------------------------------------------------------


def test_push_killed_at_random_points_resumes_to_an_identical_file(
    stage: Stage, fresh: tuple[Path, Path, str]
) -> None:
    remote, local, name = fresh
    rng = random.Random(SEED)
    source = local / "big.bin"
    data = write_random(source, SIZE, seed=rng.randrange(2**32), mode=0o640)
    target = remote / "big.bin"
    partial = partial_of(target)

    def untouched() -> None:
        assert not target.exists() and not target.is_symlink(), "a partial under the real name"
        assert sorted(p.name for p in remote.iterdir()) == [partial.name]

    cuts = cut_repeatedly(
        stage,
        ("push", DEVICE, source, f"{name}/big.bin"),
        data,
        partial,
        rng,
        settled=lambda: flock_free(partial),
        untouched=untouched,
    )
    assert cuts.sizes == sorted(cuts.sizes), cuts.sizes  # each run added to the last
    digest = hashlib.sha256(data).hexdigest()
    assert cuts.final == (
        f"pushed {source} -> {name}/big.bin  {SIZE} bytes  sha256 {digest}"
        f"  resumed from {cuts.sizes[-1]}"
    ), (SEED, cuts)
    assert target.read_bytes() == data
    assert stat_mode(target) == 0o640
    assert target.stat().st_mtime_ns == source.stat().st_mtime_ns
    assert partials_under(remote) == []

    entry = completed_entry(stage, f"{name}/big.bin", "to device")
    details = entry["details"]
    assert isinstance(details, dict)
    assert (details["size"], details["sha256"]) == (SIZE, digest)
    assert details["resumed_from"] == cuts.sizes[-1]
    assert "copy" not in details  # the relay keeps no copies unless told to
    assert not (stage.relay.data_dir / "recordings" / str(details["session"])).exists()


def test_pull_killed_at_random_points_resumes_to_an_identical_file(
    stage: Stage, fresh: tuple[Path, Path, str]
) -> None:
    remote, local, name = fresh
    rng = random.Random(SEED + 1)
    data = write_random(remote / "big.bin", SIZE, seed=rng.randrange(2**32), mode=0o600)
    target = local / "big.bin"
    partial = partial_of(target)

    def untouched() -> None:
        assert not target.exists() and not target.is_symlink(), "a partial under the real name"
        assert sorted(p.name for p in local.iterdir()) == [partial.name]

    cuts = cut_repeatedly(
        stage,
        ("pull", DEVICE, f"{name}/big.bin", target),
        data,
        partial,
        rng,
        untouched=untouched,
    )
    assert cuts.sizes == sorted(cuts.sizes), cuts.sizes
    digest = hashlib.sha256(data).hexdigest()
    assert cuts.final == (
        f"pulled {name}/big.bin -> {target}  {SIZE} bytes  sha256 {digest}"
        f"  resumed from {cuts.sizes[-1]}"
    ), (SEED, cuts)
    assert target.read_bytes() == data
    assert stat_mode(target) == 0o600
    assert partials_under(local) == []
    # A cut that came after the device sent its last byte is audited "completed" (see
    # test_a_pull_cut_before_the_technician_has_it_is_not_audited_as_completed).
    entry = completed_entry(
        stage, f"{name}/big.bin", "from device", earlier=("interrupted", "completed")
    )
    details = entry["details"]
    assert isinstance(details, dict)
    assert (details["size"], details["sha256"], details["resumed_from"]) == (
        SIZE,
        digest,
        cuts.sizes[-1],
    )


# -- the other side cut ---------------------------------------------------------------------


def test_agent_killed_mid_pull_then_restarted_the_pull_resumes(
    stage: Stage, fresh: tuple[Path, Path, str]
) -> None:
    remote, local, name = fresh
    rng = random.Random(SEED + 2)
    data = write_random(remote / "big.bin", SIZE, seed=rng.randrange(2**32))
    # The destination holds an older version: it must stay whole until the new one is.
    target = local / "big.bin"
    old = b"the previous version\n"
    target.write_bytes(old)
    partial = partial_of(target)

    process = spawn(stage, "pull", DEVICE, f"{name}/big.bin", target)
    assert grow_past(partial, rng.randrange(SIZE // 8, SIZE // 2), process)
    assert stage.agent.process is not None
    stage.agent.process.send_signal(signal.SIGKILL)
    stage.agent.process.wait(WITHIN)
    out, err = process.communicate(timeout=WITHIN)
    assert process.returncode == 1, (out, err)
    cut = rf"helpline: the pull of {SIZE} bytes was cut at \d+ \(the device disconnected\);"
    assert re.search(cut + " run it again to resume", err), err
    assert target.read_bytes() == old
    have = assert_prefix(partial, data)

    start_headless(stage.agent)
    stage.console.wait_online(DEVICE)
    line = summary_line(stage.console.ok("pull", DEVICE, f"{name}/big.bin", target))
    assert resumed_from(line) == have
    assert target.read_bytes() == data
    assert partials_under(local) == []


def test_relay_killed_mid_push_then_restarted_the_push_resumes(
    stage: Stage, fresh: tuple[Path, Path, str]
) -> None:
    remote, local, name = fresh
    rng = random.Random(SEED + 3)
    source = local / "big.bin"
    data = write_random(source, SIZE, seed=rng.randrange(2**32))
    target = remote / "big.bin"
    partial = partial_of(target)

    process = spawn(stage, "push", DEVICE, source, f"{name}/big.bin")
    assert grow_past(partial, rng.randrange(SIZE // 8, SIZE // 2), process)
    assert stage.relay.process is not None
    stage.relay.process.send_signal(signal.SIGKILL)
    stage.relay.process.wait(WITHIN)
    out, err = process.communicate(timeout=WITHIN)
    assert process.returncode == 1, (out, err)
    lost = r"\(the connection to the relay was lost\); run it again to resume"
    assert re.search(rf"helpline: the push of {SIZE} bytes was cut at \d+ {lost}", err), err
    assert not target.exists()

    stage.relay.start()
    stage.console.wait_online(DEVICE)
    wait_for(lambda: flock_free(partial), seconds=WITHIN, what="the agent to let go")
    have = assert_prefix(partial, data)
    line = summary_line(stage.console.ok("push", DEVICE, source, f"{name}/big.bin"))
    assert resumed_from(line) == have
    assert target.read_bytes() == data
    assert partials_under(remote) == []


# -- what the audit says of a cut pull -------------------------------------------------------


async def test_a_pull_cut_before_the_technician_has_it_is_not_audited_as_completed(
    stage: Stage, fresh: tuple[Path, Path, str]
) -> None:
    remote, _, name = fresh
    window = Limits().channel_window
    write_random(remote / "cut.bin", window + window // 2, seed=SEED + 4)
    async with raw_console_link(stage.relay, stage.console.token) as link:
        opened = await open_files_session(link, DEVICE)
        pull = FileRequest(id=1, op=FileOp.PULL, path=f"{name}/cut.bin")
        link.conn.send_channel_message(opened.channel, pull)
        await flush(link)
        # We take one window and stop: the relay holds the rest of the file, and the
        # device, its window given back, has sent it all and its FileDone.
        received = await take_one_window(link, opened.channel)
        await asyncio.to_thread(
            wait_for,
            lambda: f"sent '{name}/cut.bin'" in stage.agent.log(),
            seconds=WITHIN,
            what="the device to have sent the whole file",
        )
    # The technician left with `received` bytes of the file, never its end.
    session = opened.params["session"]

    def ended() -> bool:
        return any(e["details"]["session"] == session for e in stage.console.audit("session.end"))

    await asyncio.to_thread(wait_for, ended, seconds=WITHIN, what="the session's end")
    [entry] = [
        e for e in stage.console.transfers(f"{name}/cut.bin") if e["details"]["session"] == session
    ]
    assert received < window + window // 2
    assert entry["details"]["outcome"] == "interrupted", entry["details"]
