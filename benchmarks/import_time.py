"""How long `import agent` takes, against the floor set by its own dependencies.

Each figure is the median over fresh interpreter processes (interleaved):
`import agent`, `from agent import Agent` (the loop loads on first use), and
the baseline `import asyncio, pydantic` that any pydantic-typed async library
pays. Also checks that no heavy module (torch, transformers, jupyter, ...) is
loaded.

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

HEAVY = ("torch", "transformers", "jupyter_client", "ipykernel", "numpy", "httpx", "rich", "sqlite3")

PROBES = {
    "import agent": "import agent",
    # `Agent` loads on first use (PEP 562): this is what a program that runs an agent pays.
    "from agent import Agent": "from agent import Agent",
    "import agent, tools, memory, guards": "import agent, tools, memory, guards",
    "baseline: asyncio + pydantic": "import asyncio, pydantic; from pydantic import BaseModel",
    # Defining any model with a field loads pydantic.fields/types and annotated_types.
    "baseline + one model with a Field": (
        "import asyncio, pydantic; from pydantic import BaseModel, Field\n"
        "class M(BaseModel):\n    x: int = Field(0)"
    ),
    "python startup only": "pass",
}


def measure(code: str) -> tuple[float, list[str]]:
    program = (
        "import time, sys\n"
        "t = time.perf_counter()\n"
        f"{code}\n"
        "elapsed = time.perf_counter() - t\n"
        "import json\n"  # after the clock stops: json is one of the modules an import may load
        f"print(json.dumps([elapsed, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    # Bytecode caches must be writable, or every run would compile the modules edited since the last one.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True, env=env)
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
    for code in PROBES.values():  # warm the bytecode caches
        measure(code)
    for _ in range(args.runs):
        for name, code in PROBES.items():
            ms, loaded = measure(code)
            times[name].append(ms)
            heavy[name] = loaded
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}, {args.runs} runs each"
    )
    print(f"{'what':38} {'median ms':>10} {'min ms':>8}  heavy modules loaded")
    for name in PROBES:
        print(
            f"{name:38} {statistics.median(times[name]):10.1f} {min(times[name]):8.1f}  {', '.join(heavy[name]) or '-'}"
        )
    base = statistics.median(times["baseline: asyncio + pydantic"])
    for name in ("import agent", "from agent import Agent"):
        median = statistics.median(times[name])
        print(f"{name}: {median - base:.1f} ms over the baseline")
    median = statistics.median(times["import agent"])
    verdict = "PASS" if median < 150 and not heavy["import agent"] else "FAIL"
    print(f"[{verdict}] `import agent` under 150 ms with no heavy module: {median:.1f} ms")


if __name__ == "__main__":
    main()
