"""This project: ``Agent`` driven by ``ScriptedLLM``.

The script is a list of ``ModelResponse`` objects, each with one structured
tool call, as every peer's scripted model hands its framework structured
calls (smolagents ``ChatMessage.tool_calls``, LangGraph ``AIMessage``,
Pydantic AI ``ToolCallPart``, ...).  ``--script text`` scripts raw model
text instead, so that every turn also goes through the Hermes
``<tool_call>`` parser, as a local model's output does: the parser's cost
on top of the loop's, which no peer's row includes.  The no-op tool is
declared ``@tool(blocking=False)`` (quick, no I/O), so it runs on the
event loop as smolagents runs its tools; by default a sync tool runs on a
worker thread.  Three variants:

* ``--variant log`` (default): the default run log -- ``run_dir`` is a
  fresh temporary directory and every event is written to JSONL and
  flushed as it happens.
* ``--variant nolog``: ``run_dir=None``, no run log.
* ``--variant thread``: as ``log``, with a plain ``@tool`` -- the tool runs
  on a worker thread (the default for sync tools, and what this row
  measured before ``blocking=False`` existed).

``guards=None`` (no interceptors; also the default) is passed explicitly
so the figure is the bare loop overhead.  Only ``agent.run_sync`` is
timed; ``agent.close()`` (which ends the agent's event loop) runs after
the timer stops.  Run with the project's own virtualenv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# The orchestrator points LOOP_OVERHEAD_SRC at a snapshot of the project's
# packages so edits made while a benchmark runs do not leak into it.
SRC = os.environ.get("LOOP_OVERHEAD_SRC") or REPO
sys.path.insert(0, HERE)
sys.path.insert(0, SRC)

_parser = argparse.ArgumentParser(add_help=False)
_parser.add_argument("--variant", choices=["log", "nolog", "thread"], default="log")
_parser.add_argument("--script", choices=["responses", "text"], default="responses")
_known, sys.argv[1:] = _parser.parse_known_args()
_VARIANT, _SCRIPT = _known.variant, _known.script

from _common import Counter, measure  # noqa: E402

import agent as agent_pkg  # noqa: E402
from agent import Agent, tool  # noqa: E402
from agent.events import ModelResponse  # noqa: E402
from agent.llm import ScriptedLLM  # noqa: E402
from agent.types import ToolCallRequest  # noqa: E402

assert os.path.dirname(os.path.abspath(agent_pkg.__file__)) == os.path.join(os.path.abspath(SRC), "agent"), (
    f"imported agent from {agent_pkg.__file__}, expected it under {SRC}"
)

_TMP_ROOT = tempfile.mkdtemp(prefix="loop-overhead-")


def script(n: int) -> list:
    if _SCRIPT == "text":
        turns: list = [f'<tool_call>{{"name": "noop", "arguments": {{"i": {i}}}}}</tool_call>' for i in range(n)]
        return [*turns, "done"]
    turns = [
        ModelResponse(
            tool_calls=[ToolCallRequest(id=f"call_{i}", name="noop", arguments={"i": i})],
            finish_reason="tool_calls",
        )
        for i in range(n)
    ]
    return [*turns, ModelResponse(content="done")]


def make_run(n: int):
    counter = Counter()

    @tool(blocking=_VARIANT == "thread")
    def noop(i: int) -> str:
        """Do nothing."""
        return counter.hit(i)

    llm = ScriptedLLM(script(n))
    run_dir = tempfile.mkdtemp(dir=_TMP_ROOT) if _VARIANT != "nolog" else None
    kwargs = {"guards": None}
    bench_agent = Agent(llm, tools=[noop], max_steps=n + 5, run_dir=run_dir, **kwargs)

    def run():
        return bench_agent.run_sync("task")

    def verify(result):
        assert result.status == "completed" and result.answer == "done", (
            result.status,
            result.answer,
            result.error,
        )
        counter.check(n)
        assert len(llm.requests) == n + 1, len(llm.requests)
        if run_dir is not None:
            assert result.log_path and os.path.getsize(result.log_path) > 0, result.log_path
        close = getattr(bench_agent, "close", None)  # ends the agent's event loop; not timed
        if close is not None:
            close()

    return run, verify


def _version() -> str:
    if os.environ.get("LOOP_OVERHEAD_VERSION"):
        return os.environ["LOOP_OVERHEAD_VERSION"]
    version = getattr(agent_pkg, "__version__", "?")
    try:
        sha = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        # GIT_OPTIONAL_LOCKS=0 keeps `git status` read-only (no index refresh).
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--", "agent", "tools", "memory", "guards"],
            capture_output=True,
            text=True,
            timeout=5,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        ).stdout.strip()
        if sha:
            version += f"+{sha}" + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return version


if __name__ == "__main__":
    try:
        name = {"log": "ours", "nolog": "ours (no log)", "thread": "ours (tool on a thread)"}[_VARIANT]
        if _SCRIPT == "text":
            name += " (raw text)"
        measure(name, _version(), make_run, {"variant": _VARIANT, "script": _SCRIPT})
    finally:
        shutil.rmtree(_TMP_ROOT, ignore_errors=True)
