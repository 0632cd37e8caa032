"""Shell sessions: keystroke round trip against OpenSSH, and session setup under load.

1. **Keystroke round trip.** One byte written to a remote ``cat`` on a raw-mode
   terminal (``stty raw -echo; cat`` on a pty, so each byte comes back once) and its
   echo read back, sequentially, ``BENCH_KEYSTROKES`` times (default 2,000) on each
   path, in the same run:

   * Helpline: the console library (this process) -> ``helpline-relay serve`` ->
     ``helpline-agent run``, TLS on both legs, consent policy ``allow``;
   * OpenSSH: ``ssh -tt -J USER@127.0.0.1:PORT -p PORT USER@127.0.0.2`` on a local
     pseudo-terminal, through the benchmark's own ``sshd`` twice (:mod:`.sshd`).

   The two paths take turns in blocks (Helpline, then ssh, ten times) so a change in
   the machine's load touches both alike; a short warm-up of each is not counted.
   Target: Helpline's p50 no worse than OpenSSH's.

2. **Session setup.** Request to first byte of shell output: ``open_session`` of a pty
   shell running ``printf x`` (consent ``allow``) until the ``x`` is read, one session
   after the other (50 ms apart), ``BENCH_SESSIONS`` times (default 200). Measured with only the
   target agent connected, then again with ``BENCH_AGENTS`` idle agents (default 2,000)
   connected to the same relay by the idle-agents benchmark's load generator.
   Target: p50 under 50 ms with the idle agents.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import HelplineError

from . import floor
from .idle_agents import (
    DEFAULT_AGENTS,
    BenchError,
    WorkerPool,
    format_table,
    log,
)
from .rig import DEVICE, HelplineRig, echo_round_trip, ms, open_echo, percentile
from .sshd import ReferenceSshd, SshEcho

DEFAULT_KEYSTROKES = 2000
DEFAULT_SESSIONS = 200
#: Keystrokes per path not counted at the start (connections, caches, branch predictors).
WARMUP_KEYSTROKES = 100
WARMUP_SESSIONS = 5
#: The paths take turns this many times.
BLOCKS = 10
SETUP_COMMAND = "printf x"
#: Pause between one session's end and the next request. Each session costs the agent
#: about five control messages (consent, accept, exit status, close...), and the relay
#: drops an agent that sends more than 200 a second (burst 400): back to back, sessions
#: of ~10 ms would get the agent disconnected after a second or two.
SESSION_GAP = 0.05
#: How long the admin's console (told about every device) is watched after connecting.
CONSOLE_WATCH_SECONDS = 2.0
TARGET_SETUP_SECONDS = 0.050


@dataclass
class Setup:
    idle_agents: int
    total: list[float]  # request -> first byte of output
    granted: list[float]  # request -> the channel is open (consent given, shell started)


def env_int(name: str, default: int) -> int:
    value = int(os.environ.get(name, default))
    if value < 1:
        raise SystemExit(f"{name} must be positive")
    return value


# -- keystrokes -----------------------------------------------------------------------------


async def measure_keystrokes(
    rig: HelplineRig, sshd: ReferenceSshd, count: int
) -> tuple[list[float], list[float]]:
    """``count`` round trips through Helpline and through ``ssh -J``, in alternating blocks."""
    helpline: list[float] = []
    openssh: list[float] = []
    ssh = await asyncio.to_thread(SshEcho, sshd)
    try:
        async with rig.client() as client, client.connect() as console:
            channel = await open_echo(console)
            for _ in range(WARMUP_KEYSTROKES):
                await echo_round_trip(channel)
                ssh.round_trip()
            sizes = [count // BLOCKS + (1 if i < count % BLOCKS else 0) for i in range(BLOCKS)]
            for size in sizes:
                for _ in range(size):
                    helpline.append(await echo_round_trip(channel))
                for _ in range(size):
                    openssh.append(ssh.round_trip())  # blocks the loop: nothing else runs
            await channel.close()
    finally:
        ssh.close()
    return helpline, openssh


# -- session setup ----------------------------------------------------------------------------


async def measure_setup(rig: HelplineRig, count: int, idle_agents: int) -> Setup:
    result = Setup(idle_agents, [], [])
    async with rig.client() as client, client.connect() as console:
        for index in range(WARMUP_SESSIONS + count):
            start = time.perf_counter()
            channel = await asyncio.wait_for(
                console.open_session(
                    DEVICE, "shell", params={"command": SETUP_COMMAND, "pty": "1"}
                ),
                30,
            )
            granted = time.perf_counter()
            first = await asyncio.wait_for(channel.read(), 30)
            done = time.perf_counter()
            if not first.startswith(b"x"):
                raise BenchError(f"the session's first output was {first!r}, not b'x'")
            async with asyncio.timeout(30):  # to the end, so sessions do not overlap
                while await channel.read():
                    pass
                await channel.wait_closed()
            if index >= WARMUP_SESSIONS:
                result.total.append(done - start)
                result.granted.append(granted - start)
            await asyncio.sleep(SESSION_GAP)
    return result


async def console_seeing_everything(rig: HelplineRig, devices: int) -> str:
    """Whether a console told about every device (the admin's) connects and stays up."""
    try:
        async with rig.client(admin=True) as client, client.connect() as console:
            for _ in range(int(CONSOLE_WATCH_SECONDS / 0.05)):
                if console.ws.closed:
                    break
                await asyncio.sleep(0.05)
            if console.error is not None:
                raise console.error
            if console.ws.closed:
                return f"FAILED with {devices} devices: closed (code {console.ws.close_code})"
    except HelplineError as error:
        return f"FAILED with {devices} devices: {type(error).__name__}: {error}"
    return f"stayed connected {CONSOLE_WATCH_SECONDS:.0f} s with {devices} devices"


def connect_idle_agents(rig: HelplineRig, agents: int, workers: int, directory: Path) -> WorkerPool:
    """``agents`` idle agents enrolled and connected by the idle-agents generator."""
    relay = rig.relay
    assert relay is not None
    token = relay.create_token(agents)
    names = [f"bench-{index:06d}" for index in range(agents)]
    shares = []
    for index in range(workers):
        folder = directory / f"worker-{index}"
        folder.mkdir(mode=0o700)
        shares.append(
            {"url": relay.url, "port": relay.port, "ca_pem": rig.ca_pem, "token": token,
             "names": names[index::workers], "directory": folder}
        )  # fmt: skip
    pool = WorkerPool(workers, rig.open_files, shares)
    try:
        log(f"enrolling {agents} idle agents")
        pool.call("enroll", timeout=120 + agents * 0.1)
        log(f"connecting {agents} idle agents")
        connect_timeout = 120 + agents * 0.05
        pool.call("connect", connect_timeout, timeout=connect_timeout + 30)
        round_timeout = 60 + agents * 0.01
        # Once every HeartbeatAck is back the relay has handled every Hello and Inventory.
        pool.call("heartbeat", 1, round_timeout, timeout=round_timeout + 30)
    except BaseException:
        pool.stop()
        raise
    return pool


# -- the tables ------------------------------------------------------------------------------------


def report(
    helpline: list[float],
    openssh: list[float],
    floors: dict[str, list[float]],
    setups: list[Setup],
    everything: str,
    load: tuple[float, float],
) -> str:
    target_p50 = percentile(openssh, 0.5)
    headers = [
        "path", "keystrokes", "p50 (ms)", "p99 (ms)", "mean (ms)", "max (ms)",
        "target: p50 ≤ OpenSSH's",
    ]  # fmt: skip
    rows = []
    for name, samples in (
        ("Helpline: console lib -> relay -> agent (TLS, TLS)", helpline),
        ("OpenSSH: ssh -J via sshd -> sshd (loopback)", openssh),
        ("floor: ONE Python hop, bare asyncio TCP echo", floors["tcp"]),
        ("floor: ONE Python hop, aiohttp WSS echo (TLS 1.3)", floors["wss"]),
    ):
        verdict = ""
        if samples is helpline:
            verdict = "PASS" if percentile(helpline, 0.5) <= target_p50 else "MISS"
        rows.append(
            [
                name,
                f"{len(samples)}",
                ms(percentile(samples, 0.5)),
                ms(percentile(samples, 0.99)),
                ms(statistics.fmean(samples)),
                ms(max(samples)),
                verdict,
            ]
        )
    setup_headers = [
        "idle agents", "sessions", "p50 (ms)", "p99 (ms)", "request->granted p50 (ms)",
        "granted->first byte p50 (ms)", "target: p50 < 50 ms",
    ]  # fmt: skip
    setup_rows = []
    for setup in setups:
        after = [t - g for t, g in zip(setup.total, setup.granted, strict=True)]
        p50 = percentile(setup.total, 0.5)
        setup_rows.append(
            [
                f"{setup.idle_agents}",
                f"{len(setup.total)}",
                ms(percentile(setup.total, 0.5)),
                ms(percentile(setup.total, 0.99)),
                ms(percentile(setup.granted, 0.5)),
                ms(percentile(after, 0.5)),
                ("PASS" if p50 < TARGET_SETUP_SECONDS else "MISS") if setup is setups[-1] else "",
            ]
        )
    notes = [
        "Keystroke: one byte to `stty raw -echo; cat` on a remote pty and its echo back,"
        f" sequential; the paths alternate in {BLOCKS} blocks after {WARMUP_KEYSTROKES}"
        " uncounted round trips each. Percentiles: nearest rank.",
        "Floor rows (tests/bench/floor.py): this process to one echo server in a child"
        " process, nothing of Helpline's in the path. A Helpline keystroke crosses two such"
        " WSS hops each way (console-relay, relay-agent) plus the pty.",
        f"Session setup: open_session(shell, pty, `{SETUP_COMMAND}`, consent allow) until the"
        f" first byte is read, sessions one after another {SESSION_GAP * 1000:.0f} ms apart,"
        f" {WARMUP_SESSIONS} uncounted first;"
        " by a technician granted only the target's group (told about one device).",
        f"The admin's console (told about every device at connect): {everything}.",
        "Load average (1 min) at start and end: {:.1f} / {:.1f}; 2 cores shared by the"
        " console, relay, agent (and ssh, sshd) processes.".format(*load),
    ]
    return "\n".join(
        [
            format_table(headers, rows),
            "",
            format_table(setup_headers, setup_rows),
            "",
            *notes,
        ]
    )


def main() -> int:
    keystrokes = env_int("BENCH_KEYSTROKES", DEFAULT_KEYSTROKES)
    sessions = env_int("BENCH_SESSIONS", DEFAULT_SESSIONS)
    agents = env_int("BENCH_AGENTS", DEFAULT_AGENTS)
    workers = min(env_int("BENCH_WORKERS", 2), agents)
    print(
        f"Shell sessions: {keystrokes} keystrokes per path, {sessions} session setups,"
        f" {agents} idle agents"
    )
    load_before = os.getloadavg()[0]
    pool: WorkerPool | None = None
    with tempfile.TemporaryDirectory(prefix="helpline-bench-shell-") as temporary:
        root = Path(temporary)
        rig = HelplineRig(root / "helpline", open_files=max(65536, agents + 4096))
        sshd = ReferenceSshd(root / "ssh")
        try:
            log("starting the relay, the agent and the reference sshd")
            rig.start()
            sshd.start()
            log(f"keystroke round trips: {keystrokes} through Helpline, {keystrokes} through ssh")
            helpline, openssh = asyncio.run(measure_keystrokes(rig, sshd, keystrokes))
            rig.check_alive()
            log(f"the floor: {keystrokes} round trips through one bare Python hop of each kind")
            floors = floor.measure(keystrokes)
            log(f"session setup: {sessions} sessions, no idle agents")
            setups = [asyncio.run(measure_setup(rig, sessions, 0))]
            pool = connect_idle_agents(rig, agents, workers, root)
            rig.check_alive()
            log(f"session setup: {sessions} sessions, {agents} idle agents")
            setups.append(asyncio.run(measure_setup(rig, sessions, agents)))
            rig.check_alive()
            log("an admin's console, told about every device")
            everything = asyncio.run(console_seeing_everything(rig, agents + 1))
        except BenchError as error:
            raise BenchError(f"{error}\n{rig.logs()}") from None
        except (TimeoutError, OSError, HelplineError) as error:
            raise BenchError(f"{type(error).__name__}: {error}\n{rig.logs()}") from None
        finally:
            if pool is not None:
                pool.stop()
            sshd.stop()
            rig.stop()
    load = (load_before, os.getloadavg()[0])
    print(report(helpline, openssh, floors, setups, everything, load), flush=True)
    return 0
