"""An agent with its own guard policy: python cells need approval, SQL that
drops tables is blocked, a `secrets/` folder is off limits, only two sites may
be opened, and secrets in tool results are redacted before the model sees them.

    python examples/custom_guard.py "Clean up the database tables" --workspace work/

The policy is data (examples/guard_policy.toml), merged over the default.
Every verdict is an event in the run log (`agent replay last -v` shows them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent import Agent

POLICY = Path(__file__).with_name("guard_policy.toml")


def make_agent(model: Any = None, *, workspace: str = ".", approver: Any = None, **kwargs: Any) -> Agent:
    from guards import GuardPipeline, terminal_approver

    pipeline = GuardPipeline.from_policy(POLICY)
    return Agent(
        model,
        tools=["python", "files", "web"],
        workspace=workspace,
        guards=[pipeline],
        approver=approver or terminal_approver(),
        **kwargs,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--workspace", default=".")
    args = parser.parse_args(argv)
    with make_agent(workspace=args.workspace) as agent:
        result = agent.run_sync(args.task)
    print(result.answer if result.ok else f"{result.status}: {result.error}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
