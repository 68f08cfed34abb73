"""A file-refactoring agent: reads and edits files in a workspace, and asks
before every write.

    python examples/file_refactor.py path/to/project "Rename the function fetch to load_page"

With no model flags it uses the embedded default model; pass a model path or
an OpenAI-compatible server for real work (see README). Each write or edit
shows its arguments and waits for y/n in the terminal.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console
from rich.prompt import Confirm

from agent import Agent
from agent.events import ApprovalRequested


class RefactorAgent(Agent):
    name = "refactor"
    system_prompt = (
        "You refactor code in the workspace. First list and read the files involved, then change them "
        "with edit_file (one unique snippet at a time) or write_file. Keep behaviour the same. "
        "When done, summarise what you changed, file by file."
    )
    tools = ("files",)
    strategy = "plan-act-reflect"
    max_steps = 30


def ask_in_terminal(request: ApprovalRequested) -> bool:
    """Show the write the model wants to make and let the user decide."""
    console = Console(stderr=True)
    console.print(f"[bold]{request.name}[/] {request.arguments.get('path', '')}")
    for key in ("old", "new", "content"):
        if key in request.arguments:
            console.print(f"[dim]{key}:[/]\n{request.arguments[key][:800]}")
    return Confirm.ask("Apply this change?", default=False, console=console)


def make_agent(workspace: str, model: Any = None, approver: Any = ask_in_terminal, **kwargs: Any) -> RefactorAgent:
    return RefactorAgent(
        model,
        workspace=workspace,
        tool_options={"needs_approval_for_writes": True},
        approver=approver,
        **kwargs,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("task")
    parser.add_argument("--model", default=None, help="model directory, .gguf file or hub id (default: embedded)")
    args = parser.parse_args(argv)
    model = None
    if args.model:
        from agent.llm import TransformersLLM

        model = TransformersLLM(args.model)
    with make_agent(args.workspace, model) as agent:
        result = agent.run_sync(args.task)
    print(result.answer if result.ok else f"{result.status}: {result.error}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
