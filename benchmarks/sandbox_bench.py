"""The python tool's sandbox: kernel acquisition, round trips and recovery.

For each isolation level available here (or the one given), measures:

- acquisition of a kernel from the warm pool against a cold start (p50);
- the round trip of `1+1` through `PythonTool.run` (p50/p99), next to a
  plain `python -c "print(1+1)"` subprocess and, when `.bench-venv` has
  smolagents, its in-process `LocalPythonExecutor` (run in that venv as a
  subprocess; it interprets the AST in the host process and isolates nothing);
  with `--against REV`, also through the sandbox and tool of that git
  revision, interleaved with the working tree's in blocks, with the ratio;
- recovery: the time from a cell's timeout until the next `1+1` has answered,
  for an interruptible loop and for a C loop that forces a restart, and from
  a kernel's death until the next answer.

    .venv/bin/python benchmarks/sandbox_bench.py            # every available level
    .venv/bin/python benchmarks/sandbox_bench.py --quick    # fewer samples
    .venv/bin/python benchmarks/sandbox_bench.py --isolation bubblewrap --json out.json
    .venv/bin/python benchmarks/sandbox_bench.py --against HEAD  # before/after a change
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.tool import ToolError  # noqa: E402
from tools import sandbox as sb  # noqa: E402
from tools.python_tool import PythonTool  # noqa: E402

BENCH_PY = REPO / ".bench-venv" / "bin" / "python"

SMOL_SCRIPT = """
import json, sys, time
from smolagents.local_python_executor import LocalPythonExecutor
import smolagents
ex = LocalPythonExecutor([])
ex.send_tools({})
n = int(sys.argv[1])
for _ in range(20):
    ex("1+1")
times = []
for _ in range(n):
    t = time.perf_counter()
    out = ex("1+1")
    times.append(time.perf_counter() - t)
assert out.output == 2
print(json.dumps({"version": smolagents.__version__, "times": times}))
"""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def ms(x: float) -> str:
    if x != x:  # nan
        return "-"
    return f"{x * 1000:.1f} ms" if x < 10 else f"{x:.1f} s"


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    versions = {}
    for module in ("jupyter_client", "ipykernel", "zmq"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:
            versions[module] = "?"
    bwrap = shutil.which("bwrap")
    bwrap_version = (
        subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip() if bwrap else "-"
    )
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "load avg": f"{load} (1, 5, 15 min) at the start",
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "user": "root" if os.geteuid() == 0 else "non-root",
        "pids cgroup": f"v{sb.cgroups().version}" if sb.cgroups().base else f"none ({sb.cgroups().why})",
        "bwrap": bwrap_version,
        **versions,
    }


async def call(tool: PythonTool, code: str) -> str:
    try:
        return await tool.run(tool.Args(code=code))
    except ToolError as e:
        return str(e)


def bench_acquire(level: str, warm_n: int, cold_n: int) -> dict[str, list[float]]:
    config = sb.SandboxConfig(isolation=level)
    warm_pool = sb.KernelPool(size=1)
    warm = []
    for _ in range(warm_n):
        warm_pool.warm(config, level)
        if not warm_pool.wait_warm(config, level, timeout=120):
            raise RuntimeError("the pool did not warm up")
        t = time.perf_counter()
        kernel = warm_pool.acquire(config, level, None)
        warm.append(time.perf_counter() - t)
        kernel.kill()
    warm_pool.shutdown()
    cold_pool = sb.KernelPool(size=0)
    cold = []
    for _ in range(cold_n):
        t = time.perf_counter()
        kernel = cold_pool.acquire(config, level, None)
        cold.append(time.perf_counter() - t)
        kernel.kill()
    cold_pool.shutdown()
    return {"warm": warm, "cold": cold}


def load_revision(rev: str) -> tuple[Any, type[PythonTool]]:
    """The sandbox module and PythonTool class of git revision `rev`, imported under another name."""
    root = Path(tempfile.mkdtemp(prefix="sandbox-bench-"))
    try:
        folder = root / "baseline_tools"
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        for name in ("sandbox.py", "python_tool.py"):
            shown = subprocess.run(
                ["git", "-C", str(REPO), "show", f"{rev}:tools/{name}"], capture_output=True, text=True
            )
            if shown.returncode != 0:
                raise SystemExit(f"--against {rev}: cannot read tools/{name}: {shown.stderr.strip()}")
            (folder / name).write_text(shown.stdout)
        sys.path.insert(0, str(root))
        try:
            module = importlib.import_module("baseline_tools.python_tool")
        finally:
            sys.path.remove(str(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return module.sb, module.PythonTool


async def bench_roundtrip(
    level: str, n: int, baseline: tuple[Any, type[PythonTool]] | None
) -> dict[str, list[float]]:
    """`1+1` round trips; with a baseline, both run in alternating blocks (order flipped each round)."""
    variants = {"tree": (sb, PythonTool)}
    if baseline is not None:
        variants["baseline"] = baseline
    tools = {}
    for name, (module, tool_class) in variants.items():
        pool = module.KernelPool(size=1)
        tool = tool_class(isolation=level, pool=pool)
        await call(tool, "1+1")  # first call: acquisition and the isolation header
        for _ in range(20):
            await call(tool, "1+1")
        tools[name] = (tool, pool)
    times: dict[str, list[float]] = {name: [] for name in tools}
    block = 10
    for round_ in range(-(-n // block)):
        order = list(tools) if round_ % 2 == 0 else list(tools)[::-1]
        for name in order:
            tool = tools[name][0]
            for _ in range(block):
                t = time.perf_counter()
                out = await call(tool, "1+1")
                times[name].append(time.perf_counter() - t)
                assert out.endswith("]: 2"), out
    for tool, pool in tools.values():
        await tool.aclose()
        pool.shutdown()
    return times


async def bench_recovery(level: str, reps: int) -> dict[str, list[float]]:
    timeout, grace = 1.0, 1.0
    pool = sb.KernelPool(size=1)
    tool = PythonTool(isolation=level, pool=pool, timeout=timeout, interrupt_grace=grace)
    await call(tool, "1+1")
    out: dict[str, list[float]] = {"interrupt": [], "restart": [], "death": []}
    cases = {
        "interrupt": ("while True:\n    pass", timeout, "interrupted"),
        "restart": ("sum(range(10**14))", timeout, "restarted"),
        "death": ("import os\nos._exit(1)", 0.0, "died"),
    }
    for _ in range(reps):
        for name, (code, wait, expect) in cases.items():
            pool.wait_warm(tool.config, level, timeout=120)
            t = time.perf_counter()
            text = await call(tool, code)
            assert expect in text, text
            answer = await call(tool, "1+1")
            assert answer.endswith(": 2"), answer
            out[name].append(time.perf_counter() - t - wait)
    await tool.aclose()
    pool.shutdown()
    return out


def bench_subprocess(n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", "print(1+1)"], capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        assert done.stdout.strip() == "2"
    return times


def bench_smolagents(n: int) -> tuple[str, list[float]] | str:
    if not BENCH_PY.exists():
        return "skipped: .bench-venv is missing"
    done = subprocess.run([str(BENCH_PY), "-c", SMOL_SCRIPT, str(n)], capture_output=True, text=True, cwd="/")
    if done.returncode != 0:
        return "skipped: " + (done.stderr.strip().splitlines() or ["smolagents is not importable"])[-1]
    data = json.loads(done.stdout)
    return data["version"], data["times"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--isolation", default="all", help="all (default), auto, bubblewrap, netns or none")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--against", metavar="REV", help="also time `1+1` with the tools/ of this git revision"
    )
    args = parser.parse_args()
    baseline = load_revision(args.against) if args.against else None
    if args.isolation == "all":
        levels = sb.available_isolation()
    elif args.isolation == "auto":
        levels = [sb.resolve_isolation("auto")]
    else:
        levels = [args.isolation]
    warm_n, cold_n, rt_n, rec_n, sub_n = (3, 2, 50, 1, 5) if args.quick else (8, 5, 300, 3, 20)

    info = machine()
    print("Python sandbox benchmark")
    for key, value in info.items():
        print(f"  {key:12} {value}")
    print(f"  levels       {', '.join(levels)} (unavailable: "
          + (", ".join(f"{lv}: {sb.isolation_status(lv)[1]}" for lv in sb.ISOLATION_LEVELS
                       if not sb.isolation_status(lv)[0]) or "none") + ")")  # fmt: skip
    print()

    results: dict[str, object] = {"machine": info, "levels": {}}
    rows: list[tuple[str, str, str, str]] = []
    for level in levels:
        acquire = bench_acquire(level, warm_n, cold_n)
        trips = asyncio.run(bench_roundtrip(level, rt_n, baseline))
        roundtrip = trips["tree"]
        recovery = asyncio.run(bench_recovery(level, rec_n))
        results["levels"][level] = {"acquire": acquire, "roundtrip": roundtrip, "recovery": recovery}  # type: ignore[index]
        rows += [
            (level, "kernel from the warm pool", ms(pct(acquire["warm"], 0.5)), f"n={len(acquire['warm'])}"),
            (level, "kernel, cold start", ms(pct(acquire["cold"], 0.5)), f"n={len(acquire['cold'])}"),
            (level, "`1+1` through the python tool", f"{ms(pct(roundtrip, 0.5))} / {ms(pct(roundtrip, 0.99))}",
             f"n={len(roundtrip)}"),
        ]  # fmt: skip
        if baseline is not None:
            old = trips["baseline"]
            results["levels"][level]["roundtrip_against"] = {"rev": args.against, "times": old}  # type: ignore[index]
            rows.append((level, f"`1+1` through the python tool of {args.against}",
                         f"{ms(pct(old, 0.5))} / {ms(pct(old, 0.99))}",
                         f"n={len(old)}, interleaved; p50 {pct(old, 0.5) / pct(roundtrip, 0.5):.2f}x the tree's"))  # fmt: skip
        rows += [
            (level, "recovery: interrupt after timeout", ms(pct(recovery["interrupt"], 0.5)),
             "until the next 1+1 answers"),
            (level, "recovery: restart after timeout", ms(pct(recovery["restart"], 0.5)),
             "C loop; includes the 1 s grace"),
            (level, "recovery: kernel death", ms(pct(recovery["death"], 0.5)), "os._exit(1) to the next answer"),
        ]  # fmt: skip
    sub = bench_subprocess(sub_n)
    results["subprocess"] = sub
    rows.append(("-", '`python -c "print(1+1)"` subprocess', f"{ms(pct(sub, 0.5))} / {ms(pct(sub, 0.99))}",
                 f"n={len(sub)}, fresh interpreter, no state"))  # fmt: skip
    smol = bench_smolagents(rt_n)
    if isinstance(smol, str):
        rows.append(("-", "smolagents LocalPythonExecutor `1+1`", "-", smol))
    else:
        version, times = smol
        results["smolagents"] = {"version": version, "times": times}
        rows.append(("-", f"smolagents {version} LocalPythonExecutor `1+1`",
                     f"{ms(pct(times, 0.5))} / {ms(pct(times, 0.99))}",
                     f"n={len(times)}, in-process AST interpreter, no isolation"))  # fmt: skip

    widths = [max(len(r[i]) for r in rows + [("level", "measure", "p50 (/ p99)", "notes")]) for i in range(4)]
    header = ("level", "measure", "p50 (/ p99)", "notes")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print("\nload average at the end: " + " / ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
