"""``python -m tests.bench`` (``make bench``): run every benchmark and print its tables.

Benchmarks start real processes on loopback and take minutes; they are not
pytest tests and ``make test`` never runs them. Environment knobs:
``BENCH_AGENTS`` (default 2000; 10000 for the full run) and ``BENCH_WORKERS``
(generator processes, default 2). See ``tests/bench/README.md``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from . import idle_agents

BENCHMARKS: list[tuple[str, Callable[[], int]]] = [
    ("idle agents", idle_agents.main),
]


def main() -> int:
    status = 0
    for name, run in BENCHMARKS:
        print(f"== {name} ==", flush=True)
        start = time.monotonic()
        try:
            status = run() or status
        except idle_agents.BenchError as error:
            print(f"FAILED: {error}", file=sys.stderr, flush=True)
            status = 1
        except KeyboardInterrupt:
            print("interrupted; relay and generators stopped", file=sys.stderr, flush=True)
            return 130
        print(f"({name}: {time.monotonic() - start:.0f} s)\n", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
