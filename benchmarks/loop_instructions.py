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
are made in both). The collector is off during the runs, as it is during a
timed run of `loop_overhead.py`, and `PYTHONHASHSEED=0` fixes the hash
order; two counts of the same tree agree within about 0.3%.

    .venv/bin/python benchmarks/loop_instructions.py HEAD~3 HEAD      # revisions
    .venv/bin/python benchmarks/loop_instructions.py . --n 50         # the working tree

Instructions leave out what the CPU caches cost (a run right after
`gc.collect()` is cold); compare wall time as well before keeping a change.
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
gc.collect()
gc.disable()
for agent in agents[:runs]:
    assert agent.run_sync("task").answer == "done"
os._exit(0)  # no teardown: freeing the runs would count as theirs
"""


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


def instructions(src: Path, n: int, runs: int, scratch: Path) -> int:
    out = scratch / f"cachegrind.{os.getpid()}.{runs}"
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "LOOP_SRC": str(src),
        "LOOP_N": str(n),
        "LOOP_RUNS": str(runs),
        "LOOP_AGENTS": str(AGENTS),
    }
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"]
    done = subprocess.run(
        [*command, str(PYTHON), "-c", WORKLOAD], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"the workload failed under valgrind:\n{done.stderr[-2000:]}")
    for line in out.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    sys.exit(f"no summary line in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trees", nargs="+", help="folders with agent/ ... or git revisions")
    parser.add_argument("--n", type=int, default=10, help="tool calls a run (default 10)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt install valgrind)")
    scratch = Path(tempfile.mkdtemp(prefix="loop-instructions-"))
    try:
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
