"""Instructions a scripted run costs, counted by valgrind: a before/after figure that
the machine's speed cannot move.

Wall-clock figures on a shared machine drift by a fifth within minutes
(`loop_overhead.py` pairs its rounds for that reason); an instruction count
does not. Each tree (a folder holding `agent/`, `tools/`, `memory/`,
`guards/`, or a git revision) runs the `loop_overhead.py` workload -- a
`ScriptedLLM` calling a no-op `@tool(blocking=False)` N times, then
answering, with the run log on and no guards -- under
`valgrind --tool=cachegrind`, once with 10 runs and once with 40. The
difference divided by 30 is one run's instructions, without the
interpreter's start, the imports or the agents' construction (all 40 agents
are made in both). The collector is off during the runs (a timed run of
`loop_overhead.py` allocates too little to start it), and `PYTHONHASHSEED=0` fixes the hash
order; two counts of the same tree agree within about 0.3%.

    .venv/bin/python benchmarks/loop_instructions.py HEAD~3 HEAD      # revisions
    .venv/bin/python benchmarks/loop_instructions.py . --n 50         # the working tree

Instructions leave out what the CPU caches cost, and a timed run of
`loop_overhead.py` starts cold: `gc.collect()` walks the whole heap just
before it. `--cold` counts that as well, under callgrind's cache model:
`gc.collect()` before each of 20 runs (as the timed runs have it) and only
the runs themselves counted (callgrind collects inside `functools.reduce`,
which the workload runs each agent through), with a 2 MiB last-level cache
(`--ll-kib`) standing for a core's L2. It prints instructions, first-level
instruction misses and last-level misses a run (and how many of those were
code); a last-level miss costs tens
of nanoseconds, so on a ~600 us run a thousand of them are a few percent.

    .venv/bin/python benchmarks/loop_instructions.py HEAD~3 HEAD --cold

Compare wall time as well before keeping a change.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYTHON = REPO / ".venv" / "bin" / "python"
PACKAGES = ("agent", "tools", "memory", "guards")
AGENTS = 40  # made in both passes, so that only the runs differ

WORKLOAD = """
import gc, os, sys, tempfile
sys.path.insert(0, os.environ["LOOP_SRC"])
from agent import Agent, tool
from agent.events import ModelResponse
from agent.llm import ScriptedLLM
from agent.types import ToolCallRequest

n, runs = int(os.environ["LOOP_N"]), int(os.environ["LOOP_RUNS"])


@tool(blocking=False)
def noop(i: int) -> str:
    \"\"\"Do nothing.\"\"\"
    return "ok"


def script():
    calls = [
        ModelResponse(tool_calls=[ToolCallRequest(id=f"call_{i}", name="noop", arguments={"i": i})])
        for i in range(n)
    ]
    return [*calls, ModelResponse(content="done")]


root = tempfile.mkdtemp()
agents = [
    Agent(ScriptedLLM(script()), tools=[noop], max_steps=n + 5, run_dir=tempfile.mkdtemp(dir=root), guards=None)
    for _ in range(int(os.environ["LOOP_AGENTS"]))
]
if os.environ.get("LOOP_COLD"):  # callgrind counts inside functools.reduce only: the runs
    import functools

    agents[0].run_sync("task")  # imports and first-use caches, not counted
    for agent in agents[1 : runs + 1]:
        gc.collect()  # as before each timed run of loop_overhead.py: the caches are cold
        result = functools.reduce(lambda _, a: a.run_sync("task"), [agent], None)
        assert result.answer == "done"
    os._exit(0)
gc.collect()
gc.disable()
for agent in agents[:runs]:
    assert agent.run_sync("task").answer == "done"
os._exit(0)  # no teardown: freeing the runs would count as theirs
"""
COLD_RUNS = 20


def source(tree: str, scratch: Path) -> Path:
    """A folder with the packages: `tree` itself, or a git revision's copy of them."""
    path = Path(tree)
    if path.is_dir() and (path / "agent").is_dir():
        return path.resolve()
    target = scratch / tree.replace("/", "_")
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", tree, *PACKAGES], capture_output=True, check=False
    )
    if archive.returncode != 0:
        sys.exit(
            f"{tree!r} is neither a folder with agent/ nor a git revision: {archive.stderr.decode().strip()}"
        )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def _valgrind(tool: list[str], src: Path, n: int, runs: int, agents: int, **extra: str) -> None:
    """The workload under valgrind with `tool`'s options; exits with its error when it fails."""
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "LOOP_SRC": str(src),
        "LOOP_N": str(n),
        "LOOP_RUNS": str(runs),
        "LOOP_AGENTS": str(agents),
        **extra,
    }
    done = subprocess.run(
        ["valgrind", *tool, str(PYTHON), "-c", WORKLOAD], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"the workload failed under valgrind:\n{done.stderr[-2000:]}")


def instructions(src: Path, n: int, runs: int, scratch: Path) -> int:
    out = scratch / f"cachegrind.{os.getpid()}.{runs}"
    _valgrind(["--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"], src, n, runs, AGENTS)
    for line in out.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    sys.exit(f"no summary line in {out}")


def cold_counts(src: Path, n: int, scratch: Path, ll_kib: int) -> dict[str, float]:
    """Per run, after gc.collect(): instructions, I1 misses and last-level misses (callgrind)."""
    out = scratch / f"callgrind.{os.getpid()}.cold"
    tool = [
        "--tool=callgrind",
        "--cache-sim=yes",
        "--I1=65536,16,64",
        "--D1=49152,12,64",
        f"--LL={ll_kib * 1024},16,64",
        "--collect-atstart=no",
        "--toggle-collect=functools_reduce",
        f"--callgrind-out-file={out}",
    ]
    _valgrind(tool, src, n, COLD_RUNS, COLD_RUNS + 1, LOOP_COLD="1")
    events: list[str] = []
    for line in out.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("summary:", "totals:")) and events:
            counts = dict(zip(events, (int(v) for v in line.split()[1:]), strict=False))
            last_level = sum(counts.get(k, 0) for k in ("ILmr", "DLmr", "DLmw"))
            return {
                "Ir": counts["Ir"] / COLD_RUNS,
                "I1mr": counts.get("I1mr", 0) / COLD_RUNS,
                "LL": last_level / COLD_RUNS,
                "LLi": counts.get("ILmr", 0) / COLD_RUNS,
            }
    sys.exit(f"no totals in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trees", nargs="+", help="folders with agent/ ... or git revisions")
    parser.add_argument("--n", type=int, default=10, help="tool calls a run (default 10)")
    parser.add_argument(
        "--cold", action="store_true", help="runs after gc.collect(), with cache misses (callgrind)"
    )
    parser.add_argument("--ll-kib", type=int, default=2048, help="--cold: last-level cache size (KiB)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt install valgrind)")
    scratch = Path(tempfile.mkdtemp(prefix="loop-instructions-"))
    try:
        if args.cold:
            print(
                f"a run after gc.collect(), N = {args.n}, run log on (callgrind, {COLD_RUNS} runs, "
                f"{args.ll_kib} KiB last level): per run"
            )
            print(f"  {'instructions':>13}  {'I1 misses':>10}  {'LL misses':>10}  {'(of code)':>10}  tree")
            for tree in args.trees:
                c = cold_counts(source(tree, scratch), args.n, scratch, args.ll_kib)
                print(
                    f"  {c['Ir'] / 1e3:12,.1f}k  {c['I1mr']:10,.0f}  {c['LL']:10,.0f}  {c['LLi']:10,.0f}  {tree}",
                    flush=True,
                )
            return
        base = None
        print(
            f"instructions per run, N = {args.n}, run log on (valgrind cachegrind; {AGENTS - 10}-run difference)"
        )
        for tree in args.trees:
            src = source(tree, scratch)
            per_run = (
                instructions(src, args.n, AGENTS, scratch) - instructions(src, args.n, 10, scratch)
            ) / (AGENTS - 10)
            base = base or per_run
            print(f"  {per_run / 1e3:9,.1f}k  {per_run / base:6.3f}  {tree}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
