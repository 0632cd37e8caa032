"""File transfer: push and pull of one big file through the relay, against ``ssh -J``.

One file of ``BENCH_FILE_MB`` MiB (default 1024) of random bytes is made in a
temporary directory (``BENCH_TMPDIR``, default the system's; at least 4 GiB, or four
times the file, must be free there) and moved four ways, in the same run:

* Helpline push and pull: :class:`console.files.FilesClient` over a ``files`` session
  (consent ``allow``), console library (this process) -> ``helpline-relay serve`` ->
  ``helpline-agent run``, TLS on both legs; each transfer SHA-256 verified end to end,
  fsynced and renamed into place, as the product does;
* OpenSSH: ``ssh -J ... 'cat > DEST' < FILE`` and ``ssh -J ... 'cat FILE' > DEST``
  through the benchmark's own ``sshd`` (:mod:`.sshd`). The time of a bare
  ``ssh -J ... true`` (two handshakes) is taken off the ssh times, so the ratio compares
  the data paths, not ssh's start.

Every destination is deleted right after its transfer and ``sync`` runs before each
one, so no transfer pays another's write-back. Target: Helpline at least 1.5x the
throughput of ``ssh -J`` in each direction.

During the Helpline pull:

* the relay's RSS is sampled every 50 ms (psutil); growth = max during - just before,
  target under 32 MiB;
* a second console, in its own process (a technician's other terminal), types into a
  shell session on the same agent (``stty raw -echo; cat``), one byte every 10 ms, and
  times each echo: p99 target under 10 ms (a transfer never starves a shell). The same
  probe runs before the pull, on the idle system, for comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any, TypeVar

import psutil

from console.client import ConsoleSession, HelplineClient
from console.files import FilesClient, SessionEnded, TransferInterrupted, partial_path
from protocol.errors import HelplineError

from .idle_agents import BenchError, format_table, log
from .rig import DEVICE, HelplineRig, echo_round_trip, ms, open_echo, percentile
from .sshd import ReferenceSshd

_T = TypeVar("_T")

DEFAULT_FILE_MB = 1024
MIN_FREE_BYTES = 4 * 2**30
TARGET_RATIO = 1.5
TARGET_RSS_GROWTH = 32 * 2**20
TARGET_KEYSTROKE_P99 = 0.010
RSS_INTERVAL = 0.05
#: Seconds between the probe's keystrokes (a fast typist or key repeat: 100 a second).
PROBE_INTERVAL = 0.010
#: Keystrokes the probe times on the idle system before the pull.
PROBE_BASELINE = 300
#: A keystroke whose echo takes longer than this stops the benchmark.
PROBE_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1


@dataclass
class Transfer:
    name: str
    size: int  # bytes moved (all of the file unless cut)
    seconds: float
    error: str = ""  # why it was cut short, if it was
    machine_cpu: float = 0.0  # CPU seconds the whole machine spent meanwhile

    @property
    def mb_per_second(self) -> float:
        return self.size / self.seconds / 1e6


@dataclass
class PullWatch:
    rss_before: int = 0
    rss_max: int = 0
    rss_samples: int = 0
    keystrokes_idle: list[float] = field(default_factory=list)
    keystrokes_during: list[float] = field(default_factory=list)
    probe_error: str = ""
    cpu: dict[str, float] = field(default_factory=dict)


# -- the keystroke probe (a process of its own) ------------------------------------------------


def _probe_main(pipe: Pipe, url: str, ca_pem: str, token: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent cleans up on Ctrl-C
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        asyncio.run(_probe(pipe, url, ca_pem, token))
    except Exception as exc:
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))


async def _probe(pipe: Pipe, url: str, ca_pem: str, token: str) -> None:
    async with (
        HelplineClient(url, ca_pem, token=token) as client,
        client.connect() as console,
    ):
        channel = await open_echo(console)
        pipe.send(("ready", None))
        while True:
            command = await asyncio.to_thread(_receive, pipe)
            if command == "baseline":
                samples = [await _paced(channel) for _ in range(PROBE_BASELINE)]
                pipe.send(("ok", {"samples": samples, "error": ""}))
            elif command == "start":
                samples, error = [], ""
                while not pipe.poll():
                    try:
                        samples.append(await _paced(channel))
                    except (BenchError, HelplineError, TimeoutError) as exc:
                        error = f"{type(exc).__name__}: {exc}"  # the session went down
                        break
                await asyncio.to_thread(_receive, pipe)  # "stop"
                pipe.send(("ok", {"samples": samples, "error": error}))
            else:
                await channel.close()
                return


def _receive(pipe: Pipe) -> str:
    try:
        return str(pipe.recv())
    except EOFError:
        return "exit"


async def _paced(channel: Any) -> float:
    started = time.perf_counter()
    elapsed = await echo_round_trip(channel, within=PROBE_TIMEOUT)
    await asyncio.sleep(max(0.0, PROBE_INTERVAL - (time.perf_counter() - started)))
    return elapsed


class Probe:
    """The keystroke probe process, driven over a pipe."""

    def __init__(self, rig: HelplineRig) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(
            target=_probe_main, args=(child, rig.url, rig.ca_pem, rig.token), daemon=True
        )
        self.process.start()
        child.close()
        self.expect("ready", 60)

    def expect(self, status: str, seconds: float) -> Any:
        deadline = time.monotonic() + seconds
        while not self.pipe.poll(0.5):
            if not self.process.is_alive():
                raise BenchError("the keystroke probe died")
            if time.monotonic() > deadline:
                raise BenchError(f"the keystroke probe did not answer within {seconds:.0f} s")
        answer, value = self.pipe.recv()
        if answer != status:
            raise BenchError(f"keystroke probe: {value}")
        return value

    def baseline(self) -> list[float]:
        self.pipe.send("baseline")
        return list(self.expect("ok", 60 + PROBE_BASELINE * PROBE_TIMEOUT / 100)["samples"])

    def start(self) -> None:
        self.pipe.send("start")

    def stop(self) -> tuple[list[float], str]:
        """The keystrokes timed since :meth:`start`, and why the probe stopped early if so."""
        self.pipe.send("stop")
        answer = self.expect("ok", PROBE_TIMEOUT + 30)
        return list(answer["samples"]), str(answer["error"])

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.pipe.send("exit")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.pipe.close()


class RssSampler(threading.Thread):
    """The relay's RSS every 50 ms until stopped: the maximum seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.done = threading.Event()
        self.maximum = 0
        self.samples = 0

    def run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(psutil.Error):
                self.maximum = max(self.maximum, self.process.memory_info().rss)
                self.samples += 1
            self.done.wait(RSS_INTERVAL)

    def stop(self) -> None:
        self.done.set()
        self.join(5)
        with contextlib.suppress(psutil.Error):  # one last sample at the very end
            self.maximum = max(self.maximum, self.process.memory_info().rss)


# -- the transfers ------------------------------------------------------------------------------


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent (every core, user + system + interrupts)."""
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def run_bounded(coroutine: Coroutine[Any, Any, _T], seconds: float) -> _T:
    async def bounded() -> _T:
        return await asyncio.wait_for(coroutine, seconds)

    return asyncio.run(bounded())


async def helpline_push(rig: HelplineRig, local: Path, remote: Path, size: int) -> Transfer:
    async with rig.client() as client, client.connect() as console:
        files = FilesClient(await asyncio.wait_for(console.open_session(DEVICE, "files"), 30))
        start = time.perf_counter()
        try:
            result = await files.push(local, str(remote))
        except SessionEnded as error:
            return cut("Helpline push", error, time.perf_counter() - start, console)
        elapsed = time.perf_counter() - start
        await files.close()
    if result.size != size:
        raise BenchError(f"push moved {result.size} bytes, not {size}")
    return Transfer("Helpline push", size, elapsed)


async def helpline_pull(
    rig: HelplineRig, remote: Path, local: Path, size: int, on_start: Callable[[], None]
) -> Transfer:
    async with rig.client() as client, client.connect() as console:
        files = FilesClient(await asyncio.wait_for(console.open_session(DEVICE, "files"), 30))
        on_start()
        start = time.perf_counter()
        try:
            result = await files.pull(str(remote), local)
        except SessionEnded as error:
            return cut("Helpline pull", error, time.perf_counter() - start, console)
        elapsed = time.perf_counter() - start
        await files.close()
    if result.size != size:
        raise BenchError(f"pull moved {result.size} bytes, not {size}")
    return Transfer("Helpline pull", size, elapsed)


def cut(name: str, error: SessionEnded, seconds: float, console: ConsoleSession) -> Transfer:
    """A transfer the product broke off: what it moved until then, and why."""
    done = error.done if isinstance(error, TransferInterrupted) else 0
    why = str(error)
    if console.error is not None:  # the console's own connection failed
        why += f"; console: {type(console.error).__name__}: {console.error}"
    return Transfer(name, done, seconds, error=why)


def timed_ssh(
    sshd: ReferenceSshd, remote: str, timeout: float, **streams: Any
) -> tuple[float, float]:
    """Seconds ``ssh -J ... remote`` took, and the machine's CPU seconds meanwhile."""
    cpu = machine_cpu()
    start = time.perf_counter()
    result = sshd.run(remote, timeout=timeout, **streams)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise BenchError(f"ssh {remote!r} failed: {result.stderr.decode(errors='replace')}")
    return elapsed, machine_cpu() - cpu


def make_source(path: Path, size: int) -> None:
    block = 4 * 2**20
    with path.open("wb") as handle:
        left = size
        while left:
            handle.write(os.urandom(min(block, left)))
            left -= min(block, left)


def settle() -> None:
    """Dirty pages written out before a timed transfer, so none pays another's write-back."""
    os.sync()
    time.sleep(0.5)


def measure(rig: HelplineRig, sshd: ReferenceSshd, root: Path, size: int) -> dict[str, Any]:
    local = root / "local"
    device = root / "device"
    source = local / "source.bin"
    remote_source = device / "source.bin"
    log(f"writing {size / 2**20:.0f} MiB of random bytes")
    make_source(source, size)
    os.link(source, remote_source)  # the same bytes on the "device"
    limit = 120 + size / 2e6  # at least 2 MB/s
    transfers: dict[str, Transfer] = {}
    cpu: dict[str, dict[str, float]] = {}

    def helpline_cpu() -> dict[str, float]:
        assert rig.agent is not None and rig.agent.process is not None
        return {
            "relay": cpu_seconds(rig.relay_pid),
            "agent": cpu_seconds(rig.agent.process.pid),
            "console": cpu_seconds(os.getpid()),
        }

    def delta(before: dict[str, float]) -> dict[str, float]:
        after = helpline_cpu()
        return {name: after[name] - before[name] for name in before}

    # ssh's start (two key exchanges, two logins) is not part of its data path
    starts = [timed_ssh(sshd, "true", 60) for _ in range(5)]
    connect = statistics.median(seconds for seconds, _ in starts)
    connect_cpu = statistics.median(spent for _, spent in starts)

    def ssh_transfer(name: str, seconds: float, spent: float) -> Transfer:
        return Transfer(name, size, seconds - connect, machine_cpu=spent - connect_cpu)

    log("ssh -J push")
    settle()
    with source.open("rb") as stdin:
        seconds, spent = timed_ssh(sshd, f"cat > {device / 'ssh-pushed.bin'}", limit, stdin=stdin)
    check_size(device / "ssh-pushed.bin", size)
    transfers["ssh push"] = ssh_transfer("ssh push", seconds, spent)

    log("Helpline push")
    settle()
    before, machine = helpline_cpu(), machine_cpu()
    pushed = device / "pushed.bin"
    transfers["Helpline push"] = push = run_bounded(helpline_push(rig, source, pushed, size), limit)
    push.machine_cpu = machine_cpu() - machine
    cpu["Helpline push"] = delta(before)
    if push.error:
        log(f"the push was cut: {push.error}")
        discard(pushed)
        rig.wait_online()
    else:
        check_size(pushed, size)

    log("ssh -J pull")
    settle()
    with (local / "ssh-pulled.bin").open("wb") as stdout:
        seconds, spent = timed_ssh(sshd, f"cat {remote_source}", limit, stdout=stdout)
    check_size(local / "ssh-pulled.bin", size)
    transfers["ssh pull"] = ssh_transfer("ssh pull", seconds, spent)

    log("Helpline pull, with the relay's RSS sampled and a shell typed into")
    settle()
    watch = PullWatch()
    probe = Probe(rig)
    sampler = RssSampler(rig.relay_pid)
    pulled = local / "pulled.bin"
    try:
        watch.keystrokes_idle = probe.baseline()
        watch.rss_before = psutil.Process(rig.relay_pid).memory_info().rss
        before, machine = helpline_cpu(), machine_cpu()

        def on_start() -> None:
            sampler.start()
            probe.start()

        try:
            pull = run_bounded(helpline_pull(rig, remote_source, pulled, size, on_start), limit)
        finally:
            if sampler.is_alive():
                sampler.stop()
                watch.keystrokes_during, watch.probe_error = probe.stop()
        pull.machine_cpu = machine_cpu() - machine
        cpu["Helpline pull"] = delta(before)
        watch.rss_max, watch.rss_samples = sampler.maximum, sampler.samples
    finally:
        probe.close()
    transfers["Helpline pull"] = pull
    if pull.error:
        log(f"the pull was cut: {pull.error}")
        discard(pulled)
    else:
        check_size(pulled, size)
    return {"transfers": transfers, "connect": connect, "cpu": cpu, "watch": watch}


def discard(path: Path) -> None:
    """A cut transfer's leftovers: the file and the partial kept for resuming."""
    for leftover in (path, partial_path(path)):
        with contextlib.suppress(OSError):
            leftover.unlink()


def check_size(path: Path, size: int) -> None:
    try:
        got = path.stat().st_size
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # never left behind: the next transfer starts clean
    if got != size:
        raise BenchError(f"{path} holds {got} bytes, not {size}")


# -- the tables -----------------------------------------------------------------------------------


def report(size: int, results: dict[str, Any], where: str, load: tuple[float, float]) -> str:
    transfers: dict[str, Transfer] = results["transfers"]
    watch: PullWatch = results["watch"]
    cpu: dict[str, dict[str, float]] = results["cpu"]
    headers = [
        "direction", "size (MiB)", "Helpline (s)", "Helpline (MB/s)", "ssh -J (s)",
        "ssh -J (MB/s)", "ratio", f"target: ≥ {TARGET_RATIO}x ssh -J",
    ]  # fmt: skip
    rows = []
    cuts: list[str] = []
    for direction in ("pull", "push"):
        ours, theirs = transfers[f"Helpline {direction}"], transfers[f"ssh {direction}"]
        ratio = ours.mb_per_second / theirs.mb_per_second
        verdict = "PASS" if ratio >= TARGET_RATIO and not ours.error else "MISS"
        if ours.error:
            verdict += f" (cut at {ours.size / 2**20:.0f} MiB)"
            cuts.append(f"Helpline {direction} cut after {ours.seconds:.2f} s: {ours.error}")
        rows.append(
            [
                direction,
                f"{size / 2**20:.0f}",
                f"{ours.seconds:.2f}",
                f"{ours.mb_per_second:.1f}",
                f"{theirs.seconds:.2f}",
                f"{theirs.mb_per_second:.1f}",
                f"{ratio:.2f}x",
                verdict,
            ]
        )
    growth = watch.rss_max - watch.rss_before
    idle, during = watch.keystrokes_idle, watch.keystrokes_during
    watch_headers = ["during the Helpline pull", "value", "target"]
    watch_rows = [
        ["relay RSS before (MiB)", f"{watch.rss_before / 2**20:.1f}", ""],
        [
            f"relay RSS max during (MiB, {watch.rss_samples} samples)",
            f"{watch.rss_max / 2**20:.1f}",
            "",
        ],
        [
            "relay RSS growth (MiB)",
            f"{growth / 2**20:.1f}",
            f"< {TARGET_RSS_GROWTH // 2**20} MiB: "
            + ("PASS" if growth < TARGET_RSS_GROWTH else "MISS"),
        ],
        [
            f"keystrokes timed during the pull (1 per {PROBE_INTERVAL * 1000:.0f} ms)",
            f"{len(during)}",
            "",
        ],
        ["keystroke p50 (ms)", ms(percentile(during, 0.5)) if during else "-", ""],
        [
            "keystroke p99 (ms)",
            ms(percentile(during, 0.99)) if during else "-",
            f"< {TARGET_KEYSTROKE_P99 * 1000:.0f} ms: "
            + ("PASS" if during and percentile(during, 0.99) < TARGET_KEYSTROKE_P99 else "MISS"),
        ],
        ["keystroke max (ms)", ms(max(during)) if during else "-", ""],
        [
            f"same probe before the pull, idle: p50 / p99 (ms, n={len(idle)})",
            f"{ms(percentile(idle, 0.5))} / {ms(percentile(idle, 0.99))}",
            "",
        ],
    ]
    cpu_headers = [
        "transfer", "machine CPU (s)", "per GiB moved (s)", "relay CPU (s)", "agent CPU (s)",
        "console CPU (s)",
    ]  # fmt: skip
    cpu_rows = []
    for name in ("ssh pull", "Helpline pull", "ssh push", "Helpline push"):
        transfer = transfers[name]
        parts = cpu.get(name)
        cpu_rows.append(
            [
                name,
                f"{transfer.machine_cpu:.2f}",
                f"{transfer.machine_cpu * 2**30 / max(transfer.size, 1):.2f}",
                *(
                    (f"{parts[part]:.2f}" for part in ("relay", "agent", "console"))
                    if parts
                    else ("", "", "")
                ),
            ]
        )
    notes = [
        "MB/s = 10^6 bytes per second. Helpline: FilesClient.push/pull on an open files"
        " session (SHA-256 on both ends, fsync + rename); ssh -J: `cat` through the jump,"
        f" minus {results['connect'] * 1000:.0f} ms, the median time of `ssh -J ... true`.",
        "A cut transfer's MB/s is what it moved until the cut. RSS: MiB = 2^20 bytes."
        " Machine CPU: every core, every process (psutil.cpu_times), ssh's start taken off;"
        " the pull's includes the keystroke probe.",
        f"Files in {where}. Load average (1 min) at start and end: {load[0]:.1f} /"
        f" {load[1]:.1f}; 2 cores shared by every process of both paths.",
        *cuts,
    ]
    if watch.probe_error:
        notes.append(f"The keystroke probe stopped during the pull: {watch.probe_error}")
    return "\n".join(
        [
            format_table(headers, rows),
            "",
            format_table(watch_headers, watch_rows),
            "",
            format_table(cpu_headers, cpu_rows),
            "",
            *notes,
        ]
    )


def filesystem_of(path: Path) -> str:
    best = None
    for partition in psutil.disk_partitions(all=True):
        mount = Path(partition.mountpoint)
        inside = path == mount or mount in path.parents
        if inside and (best is None or len(str(mount)) > len(best.mountpoint)):
            best = partition
    return f"{best.device} ({best.fstype})" if best is not None else "?"


def main() -> int:
    size_mb = int(os.environ.get("BENCH_FILE_MB", DEFAULT_FILE_MB))
    if size_mb < 1:
        raise SystemExit("BENCH_FILE_MB must be positive")
    size = size_mb * 2**20
    base = Path(os.environ.get("BENCH_TMPDIR") or tempfile.gettempdir()).resolve()
    free = shutil.disk_usage(base).free
    needed = max(MIN_FREE_BYTES, 4 * size)
    if free < needed:
        raise BenchError(
            f"{base} has {free / 2**30:.1f} GiB free; the file benchmark needs"
            f" {needed / 2**30:.1f} GiB (set BENCH_TMPDIR to a roomier disk)"
        )
    print(f"File transfer: one file of {size_mb} MiB, pushed and pulled each way")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="helpline-bench-files-", dir=base) as temporary:
        root = Path(temporary)
        for name in ("local", "device"):
            (root / name).mkdir(mode=0o700)
        rig = HelplineRig(
            root / "helpline", consent=("shell", "files"), file_roots=[root / "device"]
        )
        sshd = ReferenceSshd(root / "ssh")
        try:
            log("starting the relay, the agent and the reference sshd")
            rig.start()
            sshd.start()
            results = measure(rig, sshd, root, size)
            rig.check_alive()
        except BenchError as error:
            raise BenchError(f"{error}\n{rig.logs()}") from None
        except (TimeoutError, OSError, subprocess.TimeoutExpired, HelplineError) as error:
            raise BenchError(f"{type(error).__name__}: {error}\n{rig.logs()}") from None
        finally:
            sshd.stop()
            rig.stop()
        where = f"{base} on {filesystem_of(base)}"
    print(report(size, results, where, (load_before, os.getloadavg()[0])), flush=True)
    return 0
