"""Render events for people (rich) or programs (JSON lines)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.text import Text

from .events import Event


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more chars]"


class JsonLinesRenderer:
    """Every event, deltas included, as one JSON object per line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: Event) -> None:
        self.stream.write(event.model_dump_json() + "\n")
        self.stream.flush()


class ConsoleRenderer:
    """A readable account of a run: plan, tool calls, results, verdicts, answer.

    Progress goes to stderr and the final answer to stdout, so
    `agent run "..." > answer.md` captures just the answer.
    """

    def __init__(self, *, verbose: bool = False, out: Console | None = None, err: Console | None = None) -> None:
        self.verbose = verbose
        self.out = out or Console()
        self.err = err or Console(stderr=True)
        self._status: Any = None
        self._error_shown = False
        self._answered = False

    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:
            self._stop_spinner()
            handler(event)

    def close(self) -> None:
        self._stop_spinner()

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _on_run_started(self, e: Any) -> None:
        what = "resumed" if e.resumed else "run"
        self.err.print(
            Text(f"{what} {e.run_id} · {e.model} · {e.strategy} · effort {e.effort}", style="dim")
        )

    def _on_model_request(self, e: Any) -> None:
        if self.err.is_terminal:
            label = {"act": "thinking", "plan": "planning", "reflect": "reflecting"}[e.purpose]
            self._status = self.err.status(f"[dim]{label}… (step {e.step})[/]", spinner="dots")
            self._status.start()

    def _on_model_response(self, e: Any) -> None:
        if e.thinking and self.verbose:
            self.err.print(Text(_short(e.thinking, 2000), style="dim italic"))
        if e.tool_calls and e.content and self.verbose:
            self.err.print(Text(_short(e.content), style="dim"))

    def _on_plan(self, e: Any) -> None:
        self.err.print(Panel(Markdown(e.content), title=f"plan ({e.reason})", border_style="blue"))

    def _on_reflection(self, e: Any) -> None:
        self.err.print(Panel(Markdown(e.content), title=f"reflection ({e.reason})", border_style="magenta"))

    def _on_tool_call(self, e: Any) -> None:
        self.err.print(Text.assemble(("→ ", "cyan"), (e.name, "bold cyan"), (" " + _short(e.arguments, 200), "cyan")))

    def _on_tool_result(self, e: Any) -> None:
        if e.name == "final_answer" and not e.is_error:
            return
        style = "red" if e.is_error else "green"
        mark = "✗" if e.is_error else "←"
        self.err.print(Text.assemble((f"{mark} {e.name} ", style), (_short(e.content), "dim" if not e.is_error else style)))

    def _on_feedback(self, e: Any) -> None:
        self.err.print(Text(f"! {_short(e.content)}", style="yellow"))

    def _on_guard_verdict(self, e: Any) -> None:
        if e.action != "allow" or self.verbose:
            self.err.print(Text(f"guard {e.guard}: {e.action} {e.stage} — {e.rationale}", style="yellow"))

    def _on_approval_given(self, e: Any) -> None:
        self.err.print(Text(f"{'approved' if e.approved else 'refused'} by {e.by} {e.note}", style="yellow"))

    def _on_error(self, e: Any) -> None:
        self._error_shown = True
        self.err.print(Text(f"error: {e.message}", style="bold red"), soft_wrap=True)

    def _on_final_answer(self, e: Any) -> None:
        self._print_answer(e.content)

    def _print_answer(self, content: str) -> None:
        self._answered = True
        if self.out.is_terminal:
            self.out.print(Markdown(content))
        else:  # a file or a pipe gets the answer exactly: no markup, emoji codes or wrapping applied
            self.out.print(Text(content), soft_wrap=True)

    def _on_run_finished(self, e: Any) -> None:
        if e.status == "completed" and not self._answered and e.answer is not None:
            # A resumed run whose answer was recorded before the crash: this stream did not show it.
            self._print_answer(e.answer if isinstance(e.answer, str) else json.dumps(e.answer, ensure_ascii=False))
        style = "green" if e.status == "completed" else "red"
        tokens = e.usage.prompt_tokens + e.usage.completion_tokens
        line = f"{e.status} · {e.steps} steps · {tokens} tokens"
        if e.error and e.status != "completed" and not self._error_shown:
            line += f" · {e.error}"
        self.err.print(Text(line, style=style), soft_wrap=True)
