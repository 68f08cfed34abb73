"""How long `import agent` takes, against the floor set by its own dependencies.

Each figure is the median over fresh interpreter processes (interleaved):
`import agent`, and the baseline `import asyncio, pydantic` that any
pydantic-typed async library pays. Also checks that no heavy module (torch,
transformers, jupyter) is loaded by `import agent`.

    .venv/bin/python benchmarks/import_time.py --runs 15
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

HEAVY = ("torch", "transformers", "jupyter_client", "ipykernel", "numpy", "httpx", "rich")

PROBES = {
    "import agent": "import agent",
    "import agent, tools, memory, guards": "import agent, tools, memory, guards",
    "baseline: asyncio + pydantic": "import asyncio, pydantic; from pydantic import BaseModel",
    "python startup only": "pass",
}


def measure(code: str) -> tuple[float, list[str]]:
    program = (
        "import time, sys, json\n"
        "t = time.perf_counter()\n"
        f"{code}\n"
        "elapsed = time.perf_counter() - t\n"
        f"print(json.dumps([elapsed, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    elapsed, heavy = json.loads(out.stdout)
    return elapsed * 1000, heavy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)
    times: dict[str, list[float]] = {name: [] for name in PROBES}
    heavy: dict[str, list[str]] = {}
    for name, code in PROBES.items():  # warm the bytecode caches
        measure(code)
    for _ in range(args.runs):
        for name, code in PROBES.items():
            ms, loaded = measure(code)
            times[name].append(ms)
            heavy[name] = loaded
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, {args.runs} runs each")
    print(f"{'what':38} {'median ms':>10} {'min ms':>8}  heavy modules loaded")
    for name in PROBES:
        print(f"{name:38} {statistics.median(times[name]):10.1f} {min(times[name]):8.1f}  {', '.join(heavy[name]) or '-'}")
    own = statistics.median(times["import agent"]) - statistics.median(times["baseline: asyncio + pydantic"])
    print(f"agent's own share (median agent - baseline): {own:.1f} ms; target for `import agent`: 150 ms")


if __name__ == "__main__":
    main()
