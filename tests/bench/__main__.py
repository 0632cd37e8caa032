"""``python -m tests.bench`` (``make bench``): run every benchmark and print its tables.

Benchmarks start real processes on loopback and take minutes; they are not
pytest tests and ``make test`` never runs them. Environment knobs:
``BENCH_AGENTS`` (default 2000; 10000 for the full run), ``BENCH_WORKERS``
(generator processes, default 2), ``BENCH_KEYSTROKES`` (2000), ``BENCH_SESSIONS``
(200), ``BENCH_FILE_MB`` (1024) and ``BENCH_TMPDIR`` (where the big file goes).
``python -m tests.bench NAME...`` runs only the benchmarks named (``idle``,
``shell``, ``files``, ``web``, ``screen``, ``updates``). See ``tests/bench/README.md``.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable

from . import file_transfer, idle_agents, screen, shell_latency, update_push, web_shell

BENCHMARKS: list[tuple[str, str, Callable[[], int]]] = [
    ("idle", "idle agents", idle_agents.main),
    ("shell", "shell sessions", shell_latency.main),
    ("files", "file transfer", file_transfer.main),
    ("web", "web console shell", web_shell.main),
    ("screen", "screen sessions", screen.main),
    ("updates", "update push", update_push.main),
]


def main() -> int:
    wanted = set(sys.argv[1:])
    names = [key for key, _, _ in BENCHMARKS]
    unknown = wanted - set(names)
    if unknown:
        print(f"unknown benchmark {sorted(unknown)}; choose from {', '.join(names)}")
        return 2
    status = 0
    for key, name, run in BENCHMARKS:
        if wanted and key not in wanted:
            continue
        print(f"== {name} ==", flush=True)
        start = time.monotonic()
        try:
            status = run() or status
        except idle_agents.BenchError as error:
            print(f"FAILED: {error}", file=sys.stderr, flush=True)
            print(f"FAILED: {str(error).splitlines()[0]}", flush=True)
            status = 1
        except KeyboardInterrupt:
            print("interrupted; relay and generators stopped", file=sys.stderr, flush=True)
            return 130
        except Exception as error:  # a bug here or there: report it, run the next one
            traceback.print_exc()
            print(f"FAILED: {type(error).__name__}: {error}", flush=True)
            status = 1
        print(f"({name}: {time.monotonic() - start:.0f} s)\n", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
