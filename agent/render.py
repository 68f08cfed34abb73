"""Render events for people (rich) or programs (JSON lines)."""

from __future__ import annotations

import errno
import json
import re
import sys
from typing import Any, TextIO, TypeVar

import rich.console
from pydantic import BaseModel
from rich.markdown import Markdown
from rich.panel import Panel
from rich.text import Text

from .events import Event

M = TypeVar("M", bound=BaseModel)


class Console(rich.console.Console):
    """rich's console, but a reader that leaves the pipe raises `BrokenPipeError`, which
    the CLI turns into the quiet exit 141 of a program SIGPIPE ended: rich's own
    handler exits 1 (SystemExit), past the CLI's handler and with no word of why."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more is written, not even at exit
        raise BrokenPipeError(errno.EPIPE, "the reader of the output left")


# What a terminal would act on instead of showing: C0 controls but tab and newline, DEL,
# C1 controls (0x9b starts a sequence on some terminals) and the bidi overrides that make
# text read in another order than it runs ("Trojan source").
_UNSHOWABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` safe to print to a terminal: each control character as its escape (`\\x1b`).

    A tool result, an answer or a call's arguments come from a model or a file, not from
    us: an escape sequence in them could retitle the window, clear the screen or hide
    part of a command the user is asked to approve. Shown, the user sees what is there.
    """
    if _UNSHOWABLE.search(text) is None:
        return text
    text = text.replace("\r\n", "\n")  # a Windows line end is no trick
    return _UNSHOWABLE.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text
    )


def _visible_value(value: Any) -> Any:
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {visible(str(k)): _visible_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_visible_value(v) for v in value]
    if isinstance(value, BaseModel):
        return for_terminal(value)
    return value


def for_terminal(event: M) -> M:
    """A copy of an event (or any model) whose text is `visible`; the event itself when it has
    nothing to hide. For display only: the log and the model keep the text as it was."""
    changes = {}
    for name, value in event.__dict__.items():
        shown = _visible_value(value)
        if shown != value:
            changes[name] = shown
    return event.model_copy(update=changes) if changes else event


class _ModelMarkdown(Markdown):
    """Markdown that shows what looks like HTML instead of dropping it: rich leaves out
    HTML tags, so `std::vector<int>` read `std::vector`, and a `<details>` block vanished."""

    def __init__(self, markup: str, **options: Any) -> None:
        super().__init__(markup, **options)
        self._show_html(self.parsed)

    @classmethod
    def _show_html(cls, tokens: Any) -> None:
        for token in tokens:
            if token.type == "html_inline" and token.content not in ("<kbd>", "</kbd>"):
                token.type = "text"  # the tag, as written
            elif token.type == "html_block":
                token.type, token.info = "code_block", ""  # the block, as written
            if token.children:
                cls._show_html(token.children)


def markdown(text: str) -> Markdown:
    """Model text as Markdown for a terminal. A link shows its address: an OSC 8 hyperlink
    hides it on terminals that do not support them, and from a copy of the text. Text that
    looks like HTML is shown as written."""
    return _ModelMarkdown(text, hyperlinks=False)


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 else "s")


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

    def __init__(
        self,
        *,
        verbose: bool = False,
        out: Console | None = None,
        err: Console | None = None,
        messages: bool = False,
    ) -> None:
        self.verbose = verbose
        self.messages = messages  # show what the user said (a replay; a live run's user just typed it)
        self.out = out or Console()
        self.err = err or Console(stderr=True)
        if not self.err.is_terminal:  # a log file or CI: one line per line, for grep, not wrapped at 80
            self.err.soft_wrap = True
        self._status: Any = None
        self._error_shown = False
        self._answered = False
        self._raw: Any = None  # the event being shown, as it was

    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:
            self._stop_spinner()
            # A file or a pipe gets the answer exactly; a terminal sees control characters as escapes.
            self._raw = event
            exact = event.type == "final_answer" and not self.out.is_terminal
            handler(event if exact else for_terminal(event))

    def close(self) -> None:
        self._stop_spinner()

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _on_run_started(self, e: Any) -> None:
        # In a replay a later start is a session's next message as often as a resume after a crash.
        what = "run" if not e.resumed else "continued" if self.messages else "resumed"
        self.err.print(Text(f"{what} {e.run_id} · {e.model} · {e.strategy} · effort {e.effort}", style="dim"))

    def _on_user_message(self, e: Any) -> None:
        if self.messages:
            self.err.print(Text.assemble(("› ", "bold"), (e.content, "bold")), soft_wrap=True)

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
        self.err.print(Panel(markdown(e.content), title=f"plan ({e.reason})", border_style="blue"))

    def _on_reflection(self, e: Any) -> None:
        self.err.print(Panel(markdown(e.content), title=f"reflection ({e.reason})", border_style="magenta"))

    def _on_tool_call(self, e: Any) -> None:
        self.err.print(
            Text.assemble(("→ ", "cyan"), (e.name, "bold cyan"), (" " + _short(e.arguments, 200), "cyan"))
        )

    def _on_tool_result(self, e: Any) -> None:
        if e.name == "final_answer" and not e.is_error:
            return
        style = "red" if e.is_error else "green"
        mark = "✗" if e.is_error else "←"
        self.err.print(
            Text.assemble(
                (f"{mark} {e.name} ", style), (_short(e.content), "dim" if not e.is_error else style)
            )
        )

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
            self.out.print(markdown(content))
        else:  # a file or a pipe gets the answer exactly: no markup, emoji codes or wrapping applied
            self.out.print(Text(content), soft_wrap=True)

    def _on_run_finished(self, e: Any) -> None:
        if e.status == "completed" and not self._answered and e.answer is not None:
            # A resumed run whose answer was recorded before the crash: this stream did not show it.
            answer = e.answer if self.out.is_terminal else self._raw.answer  # a pipe gets it exactly
            self._print_answer(answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False))
        style = "green" if e.status == "completed" else "red"
        tokens = e.usage.prompt_tokens + e.usage.completion_tokens
        line = f"{e.status} · {_count(e.steps, 'step')} · {_count(tokens, 'token')}"
        if e.error and e.status != "completed" and not self._error_shown:
            line += f" · {e.error}"
        self.err.print(Text(line, style=style), soft_wrap=True)
