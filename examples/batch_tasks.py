"""Run a JSONL file of tasks from a script, the way `agent batch` does.

    python examples/batch_tasks.py examples/tasks.jsonl results.jsonl

Tasks run four at a time and share one loaded model; each result line is
written as its task ends, so rerunning with the same output resumes.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from agent import Agent
from agent.batch import BatchRunner, BatchTask, read_tasks, summarize


def run(tasks_path: str, output: str, model: Any = None, concurrency: int = 4) -> dict[str, Any]:
    if model is None:
        from agent.llm import TransformersLLM

        model = TransformersLLM().load()

    def make_agent(task: BatchTask) -> Agent:
        # One model object shared by every task; a fresh agent (and run) per task.
        return Agent(model, effort=task.effort or "low", max_steps=task.max_steps or 4)

    runner = BatchRunner(make_agent, output, concurrency=concurrency, resume=Path(output).exists())
    results = asyncio.run(runner.run(read_tasks(tasks_path)))
    for r in results:
        print(f"{r.id:14} {r.status:10} correct={r.correct} {str(r.answer)[:60]!r}")
    return summarize(results)


if __name__ == "__main__":
    summary = run(sys.argv[1], sys.argv[2])
    print(f"{summary['correct']}/{summary['graded']} correct, statuses {summary['statuses']}")
    sys.exit(0 if summary["all_ok"] else 1)
