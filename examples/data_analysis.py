"""A data-analysis agent: works in a Python sandbox, keeps its files in a
workspace and saves its plots there.

    python examples/data_analysis.py work/ "Make a CSV of the squares of 1..10, then plot it"

The kernel runs in the strongest isolation this machine offers (see README);
images the code displays are saved under `outputs/` in the workspace.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent import Agent


class DataAnalyst(Agent):
    name = "data-analyst"
    system_prompt = (
        "You analyse data with Python. Use the python tool to compute (pandas-free code is fine), "
        "write results to files in the workspace, read files back with read_file to check them, and "
        "plot with matplotlib (call plt.show() so the figure is saved). Answer with the numbers and the "
        "names of the files you made."
    )
    tools = ("python", "files")
    strategy = "react"
    max_steps = 12


def make_agent(workspace: str, model: Any = None, **kwargs: Any) -> DataAnalyst:
    return DataAnalyst(model, workspace=workspace, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("task")
    args = parser.parse_args(argv)
    with make_agent(args.workspace) as agent:
        result = agent.run_sync(args.task)
    print(result.answer if result.ok else f"{result.status}: {result.error}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
