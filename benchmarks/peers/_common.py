"""Shared CLI and timing harness for the per-framework loop scripts.

Each peer script defines ``make_run(n) -> (run, verify)``: ``run()``
performs one complete agent run (N tool-calling turns plus one
final-answer turn) through the framework's own sync entry point and
returns its result; ``verify(result)`` asserts the tool really ran N times
with arguments 0..N-1 and the final answer arrived (and releases what the
run holds, if anything).  Building the agent
and its scripted model (in ``make_run``) and the verification are *not*
timed; only ``run()`` is.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=10, help="number of tool-calling turns")
    parser.add_argument("--reps", type=int, default=3, help="timed runs after the warm-up runs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (imports, caches)")
    return parser.parse_args()


def measure(
    framework: str,
    version: str,
    make_run: Callable[[int], tuple[Callable[[], object], Callable[[object], None]]],
    extra: dict | None = None,
) -> None:
    args = parse_args(f"{framework} loop overhead")
    n, reps = args.n, args.reps
    for _ in range(max(1, args.warmup)):  # warm-up: imports, caches, first-call costs
        run, verify = make_run(n)
        verify(run())
    times: list[float] = []
    cpu_times: list[float] = []
    for _ in range(reps):
        run, verify = make_run(n)
        gc.collect()
        c0 = time.process_time()
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        verify(result)
    # times_s: wall clock (the reported figure); cpu_s: CPU time of the whole
    # process, all threads -- less sensitive to other load on the machine.
    record = {"framework": framework, "version": version, "n": n, "times_s": times, "cpu_s": cpu_times}
    if extra:
        record.update(extra)
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class Counter:
    """Counts tool invocations and checks the arguments arrive in order."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def hit(self, i: int) -> str:
        self.calls.append(int(i))
        return "ok"

    def check(self, n: int) -> None:
        assert self.calls == list(range(n)), (
            f"tool ran {len(self.calls)} times (expected {n}); args head={self.calls[:5]}"
        )
