"""Approvers for "ask" verdicts: a person at a terminal says yes or no.

An approver is `fn(ApprovalRequested) -> bool` (or an awaitable of it); pass
one as `Agent(approver=...)` or `GuardPipeline(approver=...)`. Without one,
the policy's `approval.batch` decides.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any

from agent.events import ApprovalRequested

YES = {"y", "yes", "a", "approve", "allow", "ok"}


def describe_request(request: ApprovalRequested) -> str:
    args = json.dumps(request.arguments, ensure_ascii=False, default=str)
    if len(args) > 400:
        args = args[:400] + " ..."
    what = f"{request.name}({args})" if request.arguments else request.name
    return f"{what}\n  why: {request.reason}" if request.reason else what


def terminal_approver(
    stdin: IO[str] | None = None, stdout: IO[str] | None = None, *, default: bool = False
) -> Callable[[ApprovalRequested], bool]:
    """Ask on a text stream (a terminal, a pty, or an io.StringIO in tests).

    An empty answer, or the end of the input, gives `default`.
    """

    def approve(request: ApprovalRequested) -> bool:
        out = stdout or sys.stdout
        inp = stdin or sys.stdin
        out.write(f"\nThe agent wants to run: {describe_request(request)}\nAllow? [{'Y/n' if default else 'y/N'}] ")
        out.flush()
        line = inp.readline()
        answer = line.strip().lower()
        return default if not answer else answer in YES

    return approve


def rich_approver(console: Any = None, *, default: bool = False, stream: IO[str] | None = None) -> Callable[[ApprovalRequested], bool]:
    """Ask with `rich.prompt.Confirm` (reads the terminal's stdin unless `stream` is given)."""

    def approve(request: ApprovalRequested) -> bool:
        from rich.console import Console
        from rich.markup import escape
        from rich.prompt import Confirm

        con = console or Console()
        con.print(f"[bold yellow]Approval needed[/]: {escape(describe_request(request))}")
        return bool(Confirm.ask("Allow?", console=con, default=default, stream=stream))

    return approve


def batch_approver(approve: bool) -> Callable[[ApprovalRequested], bool]:
    """Always the same answer (for unattended runs)."""
    return lambda request: approve
