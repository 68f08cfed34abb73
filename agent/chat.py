"""`agent chat`: talk to an agent in the terminal.

Answers stream as markdown, tool calls show as panels, tools that need
approval ask (yes / no / always for this tool), and slash commands change
the session. Every session is a run log, so `agent chat --resume` picks one
up again; `/save NAME` gives it a name.

Keys: Enter sends, Ctrl-C interrupts the running turn (at the prompt it
clears the line), Ctrl-D leaves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import termios
except ImportError:  # pragma: no cover - Windows
    termios = None  # type: ignore[assignment]

from rich.console import ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.segment import Segment
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from .errors import AgentError
from .events import ApprovalRequested, Event
from .render import Console, for_terminal, markdown, visible
from .runlog import DEFAULT_RUN_DIR, first_event
from .session import CHAT_AGENT, find_session, resolve_session, save_session, saved_sessions
from .types import EFFORTS

HELP = [
    ("/effort low|medium|high", "reasoning effort for the following turns"),
    ("/thinking on|off", "show the model's thinking in full, or as one dim line"),
    ("/tools", "the tools this agent has, and what they do to the world"),
    ("/memory", "the agent's memory, if one is configured"),
    ("/model", "the model in use"),
    ("/reset", "start a new session (the current one stays saved)"),
    ("/save NAME", "name this session, to load or resume it later"),
    ("/load [NAME]", "switch to a saved session (a name, a run id or 'last'); no name lists them"),
    ("/help", "this list"),
    ("/exit", "leave (or Ctrl-D)"),
]
COMMANDS = [usage.split()[0] for usage, _ in HELP] + ["/quit"]


class _NoteHandler(logging.Handler):
    """Log records of the runtime as dim notes in the chat (warnings and worse)."""

    def __init__(self, view: Any) -> None:
        super().__init__(logging.WARNING)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.view.note(visible(f"⚠ {record.getMessage()}"), "yellow")
        except Exception:  # a note must never break the turn
            self.handleError(record)




# -- rendering ---------------------------------------------------------------


def _trim(text: str, *, lines: int = 12, chars: int = 1200) -> str:
    text = text.rstrip()
    more = ""
    rows = text.splitlines()
    if len(rows) > lines:
        more = f"… {len(rows) - lines} more lines"
        text = "\n".join(rows[:lines])
    if len(text) > chars:
        more = f"… {len(text) - chars} more chars"
        text = text[:chars]
    return text + ("\n" + more if more else "")


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _arguments(arguments: dict[str, Any]) -> RenderableType:
    if not arguments:
        return Text("(no arguments)", style="dim")
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, value in arguments.items():
        table.add_row(Text(str(key)), Text(_trim(_value(value), lines=8, chars=400)))
    return table


def _words(text: str) -> int:
    return len(text.split())


class _Tail:
    """The last `height` lines of a renderable (a streaming answer shows its end)."""

    def __init__(self, renderable: RenderableType, height: int) -> None:
        self.renderable = renderable
        self.height = max(1, height)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.renderable, options, pad=False)
        if len(lines) > self.height:
            skipped = len(lines) - self.height + 1
            yield Segment(f"… {skipped} lines above", console.get_style("dim"))
            yield Segment.line()
            lines = lines[-(self.height - 1) :] if self.height > 1 else []
        for line in lines:
            yield from line
            yield Segment.line()


class ChatView:
    """Turns a turn's events into terminal output.

    What is still changing (the streamed answer, running tools, the status
    line) lives in a transient `Live` region; what is settled is printed
    above it and stays in the scrollback.
    """

    def __init__(self, console: Console, status: Callable[[], str], *, show_thinking: bool = False) -> None:
        self.console = console
        self.status = status
        self.show_thinking = show_thinking
        self.live_enabled = console.is_terminal
        self.tokens = 0
        self._live: Live | None = None
        self._active = False
        self._label = "thinking"
        self._thinking = ""
        self._content = ""
        self._pending: dict[str, Any] = {}
        self._calls: dict[str, Any] = {}
        self._approvals: dict[str, asyncio.Event] = {}
        self._error_shown = False
        self._spinner = Spinner("dots", style="cyan")

    # -- the live region ---------------------------------------------------

    def begin(self) -> None:
        self._active = True
        self._label = "thinking"  # not what the last turn was doing when Ctrl-C stopped it
        self._error_shown = False
        self._reset_segment()
        self._calls.clear()
        self._start_live()

    def end(self, *, interrupted: bool = False) -> None:
        self._active = False
        self._stop_live()
        if interrupted:
            self._settle_interrupted()
        self._reset_segment()
        self._pending.clear()

    def _settle_interrupted(self) -> None:
        """Ctrl-C leaves what the turn had on screen: the words so far and the calls that
        were running. (Not a turn a guard ended: a reply it refused is not shown again.)"""
        self._print_thinking(self._thinking)
        if self._content.strip():
            self.console.print(markdown(self._content))
        for call in self._pending.values():
            self.console.print(
                Panel(
                    _arguments(call.arguments),
                    title=f"⚙ {call.name} · stopped",
                    border_style="yellow",
                    title_align="left",
                )
            )

    def pause(self) -> None:
        """Hand the terminal to a prompt."""
        self._stop_live()

    def resume(self) -> None:
        if self._active:
            self._start_live()

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._frame(), refresh=True)

    def _start_live(self) -> None:
        if self.live_enabled and self._live is None:
            self._live = Live(
                self._frame(), console=self.console, auto_refresh=False, transient=True, redirect_stderr=False
            )
            self._live.start()

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _frame(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self._thinking:
            if self.show_thinking:
                parts.append(Text(self._thinking.strip(), style="dim italic"))
            else:
                width = max(20, self.console.width - 14)
                tail = " ".join(self._thinking.split())[-width:]
                parts.append(self._one_line(f"▸ thinking… {tail}", "dim italic"))
        if self._content:
            parts.append(markdown(self._content))
        for call in self._pending.values():
            parts.append(
                Panel(
                    _arguments(call.arguments),
                    title=f"⚙ {call.name} · running",
                    border_style="cyan",
                    title_align="left",
                )
            )
        height = max(3, self.console.size.height - 2)
        label = Text.assemble((f"{self._label}… ", "cyan"), (self.status(), "dim"))
        self._spinner.update(text=label)
        return Group(_Tail(Group(*parts), height - 1), self._spinner)

    def _reset_segment(self) -> None:
        self._thinking = self._content = ""

    # -- settled output ----------------------------------------------------

    def print(self, *renderables: RenderableType) -> None:
        self.console.print(*renderables)
        self.refresh()

    def note(self, text: str, style: str = "dim") -> None:
        self.print(Text(text, style=style))

    def _print_thinking(self, thinking: str) -> None:
        thinking = thinking.strip()
        if not thinking:
            return
        if self.show_thinking:
            self.print(Text(thinking, style="dim italic"))
        else:
            flat = " ".join(thinking.split())
            self.print(self._one_line(f"▸ thought ({_words(thinking)} words): {flat}", "dim italic"))

    def _one_line(self, text: str, style: str) -> Text:
        line = Text(text, style=style)
        line.truncate(self.console.width, overflow="ellipsis")
        return line

    # -- events --------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:
            # Piped, the answer is written exactly; on a terminal control characters show as escapes.
            exact = event.type == "final_answer" and not self.console.is_terminal
            handler(event if exact else for_terminal(event))

    async def approval_shown(self, call_id: str, timeout: float = 0.5) -> None:
        """Wait until the events before an approval request are on screen."""
        flag = self._approvals.setdefault(call_id, asyncio.Event())
        try:
            await asyncio.wait_for(flag.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._approvals.pop(call_id, None)

    def _on_model_request(self, e: Any) -> None:
        self._reset_segment()
        self._label = {"act": "thinking", "plan": "planning", "reflect": "reflecting"}.get(
            e.purpose, "thinking"
        )

    def _on_model_delta(self, e: Any) -> None:
        if e.thinking:
            self._thinking += e.thinking
        if e.content:
            self._content += e.content
            self._label = "writing"

    def _on_model_response(self, e: Any) -> None:
        self.tokens += e.usage.total_tokens
        thinking, content = e.thinking or self._thinking, e.content
        if e.purpose != "act":
            self._print_thinking(thinking)
            self._reset_segment()
        elif e.tool_calls:
            self._print_thinking(thinking)
            if content.strip():
                self.print(markdown(content))
            self._reset_segment()
            self._label = "running tools"
        else:
            # The answer: it stays live until its FinalAnswer settles it.
            self._thinking, self._content = thinking, content
        self.refresh()

    def _on_final_answer(self, e: Any) -> None:
        self._print_thinking(self._thinking)
        self._reset_segment()
        if not e.content.strip():
            self.print(Text("(empty answer)", style="dim"))
        elif self.console.is_terminal:
            self.print(markdown(e.content))
        else:  # piped: the answer as written
            self.print(Text(e.content.strip()))

    def _on_tool_call(self, e: Any) -> None:
        self._calls[e.call_id] = e
        if e.name != "final_answer":
            self._pending[e.call_id] = e
            self._label = f"running {e.name}"
            self.refresh()

    def _on_tool_result(self, e: Any) -> None:
        call = self._pending.pop(e.call_id, None) or self._calls.get(e.call_id)
        if e.name == "final_answer" and not e.is_error:
            return
        body: list[RenderableType] = []
        if call is not None:
            body.append(_arguments(call.arguments))
        style = "red" if e.is_error else "green"
        body.append(Text(_trim(e.content) or "(no output)", style=style if e.is_error else ""))
        kind = f" · {e.error_kind}" if e.is_error and e.error_kind else ""
        title = f"⚙ {e.name}{kind}"
        subtitle = f"{e.duration:.1f}s" if e.duration >= 0.05 else None
        self.print(
            Panel(
                Group(*body),
                title=title,
                subtitle=subtitle,
                border_style=style,
                title_align="left",
                subtitle_align="right",
            )
        )
        self._label = "thinking"

    def _on_guard_verdict(self, e: Any) -> None:
        if e.action == "allow":
            return
        style = "red" if e.action in ("block", "halt") else "yellow"
        who = f" {e.guard}" if e.guard else ""
        why = f" — {e.rationale}" if e.rationale else ""
        self.note(
            f"⛨ guard{who}: {e.action} ({e.stage}{', ' + e.category if e.category else ''}){why}", style
        )

    def _on_approval_requested(self, e: Any) -> None:
        self._approvals.setdefault(e.call_id, asyncio.Event()).set()

    def _on_approval_given(self, e: Any) -> None:
        if e.by == "policy":
            self.note(
                f"{'approved' if e.approved else 'refused'} by policy{': ' + e.note if e.note else ''}",
                "yellow",
            )

    def _on_feedback(self, e: Any) -> None:
        self.note(f"! {_trim(e.content, lines=3, chars=300)}", "yellow")

    def _on_plan(self, e: Any) -> None:
        self.print(
            Panel(markdown(e.content), title=f"plan ({e.reason})", border_style="blue", title_align="left")
        )

    def _on_reflection(self, e: Any) -> None:
        self.print(
            Panel(
                markdown(e.content),
                title=f"reflection ({e.reason})",
                border_style="magenta",
                title_align="left",
            )
        )

    def _on_memory_read(self, e: Any) -> None:
        self.note(f"memory: {len(e.hits)} hits for {e.query!r}")

    def _on_memory_write(self, e: Any) -> None:
        self.note(f"memory: saved {_trim(e.text, lines=1, chars=80)!r}")

    def _on_error(self, e: Any) -> None:
        self._error_shown = True
        self.note(f"error: {_trim(e.message, lines=3, chars=400)}", "bold red")

    def _on_run_finished(self, e: Any) -> None:
        if e.status not in ("completed", "cancelled"):
            why = f": {e.error}" if e.error and not self._error_shown else ""
            self.note(f"turn ended ({e.status}){why}", "red")


class _EchoOff:
    """The terminal's echo off while a turn runs: text typed ahead would be written over
    the live region (and `^C` with it). The typed text stays in the terminal's buffer,
    and the next prompt, which reads keys as they come, shows it and takes it."""

    def __init__(self, stream: Any) -> None:
        self._saved: list[Any] | None = None
        if termios is None:  # pragma: no cover - Windows
            return
        try:
            self._fd = stream.fileno()
            saved = termios.tcgetattr(self._fd)
            quiet = list(saved)
            quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)  # lflags; ISIG stays: Ctrl-C still interrupts
            termios.tcsetattr(self._fd, termios.TCSANOW, quiet)
            self._saved = saved
        except (OSError, ValueError, AttributeError, termios.error):  # not a terminal
            self._saved = None

    def restore(self) -> None:
        if self._saved is not None and termios is not None:
            try:
                termios.tcsetattr(self._fd, termios.TCSANOW, self._saved)
            except (OSError, termios.error):
                pass
            self._saved = None


# -- the chat ----------------------------------------------------------------


class Chat:
    """The interactive loop: read a line, run a command or a turn, repeat."""

    def __init__(
        self,
        agent: Any,
        *,
        resume: str | None = None,
        auto_yes: bool = False,
        show_thinking: bool = False,
        console: Console | None = None,
        base_url: str | None = None,
    ) -> None:
        self.agent = agent
        agent.approver = self._approve
        self.run_dir = Path(agent.run_dir if agent.run_dir is not None else DEFAULT_RUN_DIR)
        self.console = console or Console(highlight=False)
        if not self.console.is_terminal:  # piped: lines as written, not cut at 80 columns
            self.console.soft_wrap = True
        self.auto_yes = auto_yes
        self.base_url = base_url
        self.always: set[str] = set()
        self.view = ChatView(self.console, self._status, show_thinking=show_thinking)
        self.session = (
            agent.session(find_session(resume, self.run_dir)) if resume else agent.session()
        ).hold()
        self.view.tokens = self._session_tokens()
        self._turn: asyncio.Task[None] | None = None
        self._interrupted = False
        self._prompt: Any = None
        self._ask_prompt: Any = None
        self._interactive = sys.stdin.isatty() and self.console.is_terminal

    # -- status --------------------------------------------------------------

    @property
    def model_name(self) -> str:
        model = self.agent.model
        return str(getattr(model, "name", type(model).__name__))

    def _status(self) -> str:
        run = self.session.run_id or "new session"
        return f"{self.model_name} · effort {self.agent.effort} · {self.view.tokens:,} tokens · {run}"

    def _session_tokens(self) -> int:
        return sum(e.usage.total_tokens for e in self.session.history if e.type == "model_response")

    def _print_status(self) -> None:
        self.console.print(Text(self._status(), style="dim"))

    # -- input ---------------------------------------------------------------

    def _make_prompts(self) -> None:
        if not self._interactive:
            return
        try:
            from prompt_toolkit import PromptSession
            from prompt_toolkit.completion import WordCompleter
            from prompt_toolkit.history import FileHistory, InMemoryHistory
        except ImportError:  # line editing is optional; plain input still works
            self._interactive = False
            return
        history: Any = InMemoryHistory()
        path = self.run_dir.parent / "chat_history"
        try:
            # FileHistory opens the file only when it reads or writes it, at every prompt, and
            # a failure there is prompt_toolkit's traceback: the file is tried here first.
            self.run_dir.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab"):
                pass
            history = FileHistory(str(path))
        except OSError as e:
            self.console.print(Text(f"note: no input history ({path}: {e.strerror or e})", style="dim"))
        completer = WordCompleter(COMMANDS + ["low", "medium", "high", "on", "off"], sentence=True)
        self._prompt = PromptSession(history=history, completer=completer, complete_while_typing=False)
        self._ask_prompt = PromptSession()

    async def _read(self, message: str, *, ask: bool = False) -> str:
        """One line; KeyboardInterrupt for Ctrl-C, EOFError for Ctrl-D."""
        if self._interactive:
            from prompt_toolkit.formatted_text import FormattedText

            session = self._ask_prompt if ask else self._prompt
            style = "ansiyellow bold" if ask else "ansicyan bold"
            return await session.prompt_async(FormattedText([(style, message)]), handle_sigint=False)
        self.console.file.write(message)
        self.console.file.flush()
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            self.console.file.write("\n")
            raise EOFError
        line = line.rstrip("\n")
        if not sys.stdin.isatty():  # piped input: echo it, so the output reads as a transcript
            self.console.file.write(line + "\n")
        return line

    # -- the loop ------------------------------------------------------------

    async def run(self) -> int:
        self._make_prompts()
        self._welcome()
        # Ctrl-C: while a turn runs the terminal is in cooked mode and sends
        # SIGINT, which stops the turn; at a prompt it is a key the prompt
        # handles (it clears the line), so a stray signal then does nothing.
        loop = asyncio.get_running_loop()
        # Warnings of the runtime (a model server retried, ...) print as notes above the
        # live region, not through logging's stderr fallback across the spinner.
        notes = _NoteHandler(self.view)
        loggers = [logging.getLogger(name) for name in ("agent", "guards", "tools", "memory")]
        for logger in loggers:  # a handler here also keeps logging's stderr fallback quiet
            logger.addHandler(notes)
        handler = False
        if threading.current_thread() is threading.main_thread():
            try:
                loop.add_signal_handler(signal.SIGINT, self._interrupt)
                handler = True
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        try:
            while True:
                try:
                    line = await self._read("› ")
                except KeyboardInterrupt:
                    continue  # Ctrl-C at the prompt clears the line
                except EOFError:
                    break
                line = line.strip()
                if not line:
                    continue
                if line.startswith("/") and not line.startswith("//"):
                    if not self._command(line):
                        break
                    continue
                if line.startswith("//"):  # a message that starts with a slash
                    line = line[1:]
                await self._run_turn(line)
        finally:
            if handler:
                loop.remove_signal_handler(signal.SIGINT)
            self._goodbye()
            self.session.close()
            await self.agent.aclose()
            for logger in loggers:
                logger.removeHandler(notes)
        return 0

    def _welcome(self) -> None:
        tools = ", ".join(t.name for t in self.agent.tool_list) or "none"
        self.console.print(
            Text.assemble(
                ("agent chat", "bold"),
                (f" · {self.model_name} · effort {self.agent.effort} · tools: {tools}", "dim"),
            )
        )
        if self.session.run_id:
            self._recap()
        self.console.print(
            Text("Enter sends · /help lists commands · Ctrl-C interrupts a turn · Ctrl-D leaves", style="dim")
        )

    def _recap(self) -> None:
        history = self.session.history
        asked = [i for i, e in enumerate(history) if e.type == "user_message"]
        self.console.print(
            Text(
                f"resumed session {self.session.run_id} · {len(asked)} earlier message{'' if len(asked) == 1 else 's'}",
                style="dim",
            )
        )
        if not asked:
            return
        last = asked[-1]
        self.console.print(
            Text.assemble(("  you: ", "cyan"), visible(_trim(history[last].content, lines=2, chars=200)))
        )
        # The answer to that message, not an earlier one: a turn cut short has none.
        answer = next((e for e in history[last:] if e.type == "final_answer"), None)
        if answer is not None:
            self.console.print(
                Text.assemble(("  agent: ", "green"), visible(_trim(answer.content, lines=3, chars=300)))
            )
        else:
            ended = next((e for e in reversed(history[last:]) if e.type == "run_finished"), None)
            how = f"the turn ended {ended.status}" if ended is not None else "the turn was cut short"
            self.console.print(Text(f"  agent: (no answer: {how})", style="dim"))

    def _goodbye(self) -> None:
        if self.session.run_id:
            self.console.print(
                Text(
                    f"session {self.session.run_id} saved · resume with: agent chat --resume "
                    f"{self.session.run_id}",
                    style="dim",
                )
            )

    async def _run_turn(self, message: str) -> None:
        self._interrupted = False
        self._turn = asyncio.create_task(self._consume(message))
        self.view.begin()
        ticker = asyncio.create_task(self._tick())
        echo = _EchoOff(sys.stdin) if self._interactive else None
        try:
            await asyncio.wait([self._turn])
        finally:
            if echo is not None:  # what was typed ahead waits in the terminal for the next prompt
                echo.restore()
            ticker.cancel()
            self.view.end(interrupted=self._interrupted or self._turn.cancelled())
        turn, self._turn = self._turn, None
        if turn.cancelled() or self._interrupted:
            self.console.print(
                Text("⏹ interrupted · the turn was cancelled; the session goes on", style="yellow")
            )
        elif turn.exception() is not None:
            error = turn.exception()
            if os.environ.get("AGENT_DEBUG"):
                raise error  # type: ignore[misc]
            self.console.print(Text(visible(f"error: {type(error).__name__}: {error}"), style="bold red"))
        self._print_status()
        self.console.print()

    async def _consume(self, message: str) -> None:
        async for event in self.session.send(message):
            self.view(event)

    async def _tick(self) -> None:
        while True:
            self.view.refresh()
            await asyncio.sleep(1 / 12)

    def _interrupt(self) -> None:
        """Ctrl-C during a turn: stop the turn, keep the session."""
        if self._turn is not None and not self._turn.done():
            self._interrupted = True
            self.session.cancel()
            self._turn.cancel()

    async def _approve(self, request: ApprovalRequested) -> bool:
        request = for_terminal(request)  # what is asked is shown as it is, escape sequences and all
        name = request.name
        if self.auto_yes or name in self.always:
            why = "--yes" if self.auto_yes else "always, this session"
            self.view.note(f"✓ {name} approved ({why})", "green")
            return True
        if not sys.stdin.isatty():  # piped: the next line is the next message, not an answer
            self.view.note(f"✗ {name} refused: approvals need a terminal (or --yes)", "red")
            return False
        await self.view.approval_shown(request.call_id)
        self.view.pause()
        try:
            body: list[RenderableType] = [_arguments(request.arguments)]
            if request.reason:
                body.append(Text(f"why: {request.reason}", style="yellow"))
            self.console.print(
                Panel(Group(*body), title=f"approve {name}?", border_style="yellow", title_align="left")
            )
            while True:
                try:
                    answer = await self._read(f"Allow {name}? [y]es / [n]o / [a]lways for {name}: ", ask=True)
                except KeyboardInterrupt:
                    self._interrupt()
                    return False
                except EOFError:
                    answer = "n"
                choice = answer.strip().lower()
                if choice in ("y", "yes"):
                    self.console.print(Text(f"✓ {name} approved", style="green"))
                    return True
                if choice in ("a", "always"):
                    self.always.add(name)
                    self.console.print(
                        Text(f"✓ {name} approved, and always from now on in this session", style="green")
                    )
                    return True
                if choice in ("n", "no", ""):
                    self.console.print(Text(f"✗ {name} refused", style="red"))
                    return False
                self.console.print(Text("answer y, n or a", style="yellow"))
        finally:
            self.view.resume()

    # -- slash commands ------------------------------------------------------

    def _command(self, line: str) -> bool:
        """Run a slash command; False means leave."""
        name, _, rest = line.partition(" ")
        arg = rest.strip()
        name = name.lower()
        if name in ("/exit", "/quit"):
            return False
        handler = {
            "/help": self._cmd_help,
            "/effort": self._cmd_effort,
            "/thinking": self._cmd_thinking,
            "/tools": self._cmd_tools,
            "/memory": self._cmd_memory,
            "/model": self._cmd_model,
            "/reset": self._cmd_reset,
            "/save": self._cmd_save,
            "/load": self._cmd_load,
        }.get(name)
        if handler is None:
            self._error(f"unknown command {name}; /help lists the commands")
            return True
        try:
            handler(arg)
        except AgentError as e:
            self._error(str(e))
        except OSError as e:  # a file a command touches: the command fails, the session goes on
            self._error(f"{name}: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        return True

    def _error(self, message: str) -> None:
        self.console.print(Text(visible(f"error: {message}"), style="bold red"))

    def _say(self, message: str) -> None:
        self.console.print(Text(message))

    def _cmd_help(self, arg: str) -> None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for usage, what in HELP:
            table.add_row(usage, what)
        self.console.print(table)
        self.console.print(
            Text(
                "Start a message with // to send one that begins with a slash. Ctrl-C interrupts "
                "a running turn (at the prompt it clears the line); Ctrl-D leaves.",
                style="dim",
            )
        )

    def _cmd_effort(self, arg: str) -> None:
        if not arg:
            self._say(f"effort: {self.agent.effort}")
            return
        arg = arg.lower()
        if arg not in EFFORTS:
            raise AgentError(f"unknown effort {arg!r}; use {', '.join(EFFORTS)}")
        self.agent.effort = arg
        self._say(f"effort: {arg} (from the next turn)")

    def _cmd_thinking(self, arg: str) -> None:
        if arg not in ("", "on", "off"):
            raise AgentError("use /thinking on or /thinking off")
        show = (not self.view.show_thinking) if not arg else arg == "on"
        self.view.show_thinking = show
        self._say(
            "thinking: shown in full" if show else "thinking: one dim line per step (/thinking on shows it)"
        )

    def _cmd_tools(self, arg: str) -> None:
        tools = self.agent.tool_list
        if not tools:
            self._say("no tools (start with --tools, e.g. --tools files,python,web)")
            return
        table = Table("tool", "effects", "approval", "description", box=None, header_style="bold")
        for t in tools:
            if self.auto_yes and t.needs_approval:
                approval = "auto (--yes)"
            elif t.name in self.always:
                approval = "always"
            else:
                approval = "asks" if t.needs_approval else "-"
            effects = ", ".join(sorted(t.effects)) or "none"
            description = (t.description or "").strip().splitlines()
            table.add_row(Text(t.name), effects, approval, Text(description[0] if description else ""))
        self.console.print(table)

    def _cmd_memory(self, arg: str) -> None:
        memory = getattr(self.agent, "memory", None)
        if memory is None:
            self._say("no memory is configured for this agent")
            return
        self._say(f"memory: {type(memory).__name__}")
        count = getattr(memory, "count", None)
        try:
            if callable(count):
                self._say(f"  {count()} entries")
            elif hasattr(memory, "__len__"):
                self._say(f"  {len(memory)} entries")
        except Exception as e:  # a memory backend that cannot answer now
            self._say(f"  (could not count entries: {type(e).__name__}: {e})")
        self._say(f"  {_trim(repr(memory), lines=3, chars=300)}")

    def _cmd_model(self, arg: str) -> None:
        where = f" at {self.base_url}" if self.base_url else ""
        self._say(f"model: {self.model_name}{where} · effort {self.agent.effort}")
        if arg and arg != self.model_name:
            self._say(f"switching models needs a restart: /exit, then agent chat --model {arg}")

    def _cmd_reset(self, arg: str) -> None:
        old = self.session.run_id
        self.session.close()
        self.session = self.agent.session().hold()
        self.view.tokens = 0
        self.always.clear()
        kept = f" (the previous one is saved as {old})" if old else ""
        self._say(f"new session{kept}")

    def _cmd_save(self, arg: str) -> None:
        if not arg:
            raise AgentError("use /save NAME")
        run_id = self.session.run_id
        if run_id is None:
            raise AgentError("nothing to save yet: send a message first")
        before = resolve_session(arg, self.run_dir)  # the run id the name held, or the name itself
        path = save_session(arg, run_id, self.run_dir)
        replaced = f"; it named {before} before" if before not in (arg, run_id) else ""
        self._say(f"saved as {arg!r} ({path} → {run_id}{replaced}); resume with: agent chat --resume {arg}")

    def _about(self, run_id: str) -> str:
        """When a saved session began and what it was asked first, for the /load list."""
        path = self.run_dir / f"{run_id}.jsonl"  # a saved name holds the whole run id: no folder listing
        if not path.is_file():
            return " (its log is gone)"
        started = first_event(path)
        if started is None or started.type != "run_started":
            return ""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(started.time))
        return visible(f" · {when} · {_trim(started.task, lines=1, chars=60)!r}")

    def _cmd_load(self, arg: str) -> None:
        if not arg:
            saved = saved_sessions(self.run_dir)
            if not saved:
                self._say("no saved sessions (use /save NAME)")
            for name, run_id in saved:
                self._say(f"{name} → {run_id}{self._about(run_id)}")
            return
        path = find_session(arg, self.run_dir)
        if path.stem == self.session.run_id:  # this very session: nothing to switch
            self._recap()
            return
        session = self.agent.session(path).hold()  # the current one keeps its lock until this one has its own
        self.session.close()
        self.session = session
        self.view.tokens = self._session_tokens()
        self.always.clear()
        self._recap()


# -- the command -------------------------------------------------------------


def build_agent(args: Any) -> Any:
    """The agent `agent chat` talks to, from the same flags as `agent run`."""
    from .agent import Agent
    from .cli import make_model, tool_names, writable_dir

    class ChatAgent(Agent):
        name = CHAT_AGENT  # the log's run_started says a chat session (see is_chat_session)

    tools = tool_names(args.tools)
    options = {"needs_approval_for_writes": True} if args.approve_writes else {}
    extra = {"system_prompt": args.system} if args.system else {}
    return ChatAgent(
        make_model(args),
        tools=tools,
        tool_options=options,
        strategy=args.strategy,
        effort=args.effort,
        max_steps=args.max_steps,
        max_tokens=args.max_tokens,
        max_seconds=args.timeout,
        run_dir=args.run_dir,
        workspace=writable_dir(args.workspace, "--workspace", say_made=True),
        context_window=getattr(args, "context_window", None),
        **extra,
    )


def run_chat(args: Any) -> int:
    """`agent chat`: build the agent, open or resume the session, talk."""
    from .cli import use_run_settings

    started = None
    if args.resume is not None:  # the session's own tools and workspace, unless given
        path = find_session(args.resume, args.run_dir)
        args.resume = str(path)  # found once: `last` names this session from here on
        started = first_event(path)
    use_run_settings(args, started)
    agent = build_agent(args)
    chat = Chat(
        agent, resume=args.resume, auto_yes=args.yes, show_thinking=args.verbose, base_url=args.base_url
    )
    return asyncio.run(chat.run())
