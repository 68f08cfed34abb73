"""The `agent` command: run a task, replay or resume a run, serve a model.

Errors a user can cause print one line and exit non-zero; set AGENT_DEBUG=1
to see the traceback of an internal error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import AgentError
from .runlog import DEFAULT_RUN_DIR

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a program its pipe's reader left
EXIT_TERMINATED = 143  # 128 + SIGTERM: stopped by `kill`, `timeout`, `docker stop` or systemd


def _number(kind: type, low: float, *, above: bool = False) -> Any:
    """An argparse type: a number of `kind` at least `low` (more than `low` when `above`)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
        if value < low or (above and value == low):
            raise argparse.ArgumentTypeError(
                f"must be {'more than' if above else 'at least'} {low:g}, not {text}"
            )
        return value

    return parse


POSITIVE, SECONDS = _number(int, 1), _number(float, 0, above=True)


def base_url(text: str) -> str:
    """An argparse type: an http(s) URL with a host and a valid port."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError when out of range
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL with a host, e.g. http://127.0.0.1:8000/v1"
        )
    if port == 0:
        raise argparse.ArgumentTypeError(f"{text!r} has port 0; give the port the server listens on")
    return text


def api_key(text: str) -> str:
    """An argparse type: a key that can go into an HTTP header (not echoed back when it cannot)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise argparse.ArgumentTypeError("the key holds a control character (a pasted line break?)")
    if not text.isascii():  # headers carry bytes: clients send UTF-8, servers may read Latin-1
        raise argparse.ArgumentTypeError(
            "the key holds a character that is not ASCII; no header carries it alike"
        )
    return text


def usable_key(text: str, where: str) -> str:
    """`api_key` for a key from elsewhere (an environment variable): a user error naming it."""
    try:
        return api_key(text)
    except argparse.ArgumentTypeError as e:
        raise AgentError(f"{where}: {e}") from None


def writable_dir(path: Path, flag: str, *, say_made: bool = False) -> Path:
    """`path` as a directory this process can write in, created if missing; else a user error naming `flag`.
    With `say_made`, a folder made here is noted (a mistyped --workspace is not silently new)."""
    made = say_made and not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = (
            "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror
        )
        raise AgentError(
            f"cannot create the directory {path} for {flag}: {reason or e}; choose another {flag}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise AgentError(f"cannot write in {path} ({flag}): permission denied; choose another {flag}")
    if made:
        _print_note(f"made the folder {path} ({flag}): it did not exist")
    return path


WORKSPACE_HELP = (
    "the folder the python tool runs in and the files tools read and write (default: the current directory)"
)


def budget_flags(group: argparse._ArgumentGroup, *, per_turn: bool) -> None:
    """--strategy, the step, token and time budgets and --run-dir, added to `group`: for a
    whole run (`agent run`, `resume`) or for each turn of a chat. Each call makes its own
    actions, unlike a parent parser's, which its children share."""
    group.add_argument("--strategy", choices=["react", "plan-act-reflect"], default=None)
    each = " per turn" if per_turn else ""
    group.add_argument("--max-steps", type=POSITIVE, default=None, help=f"step budget{each} (default 20)")
    group.add_argument(
        "--max-tokens",
        type=POSITIVE,
        default=None,
        help="token budget for each turn" if per_turn else "token budget for the whole run",
    )
    group.add_argument("--timeout", type=SECONDS, default=None, help=f"wall-clock budget{each} in seconds")
    logs = "session" if per_turn else "run"
    group.add_argument(
        "--run-dir", type=Path, default=DEFAULT_RUN_DIR, help=f"where {logs} logs go (default .agent/runs)"
    )


def run_flags(workspace: Path | None) -> argparse.ArgumentParser:
    """The run flags of `agent run` and `agent resume`, a parent parser each: their
    --workspace defaults differ, and argparse's parents share their actions (and so any
    default set on one)."""
    flags = argparse.ArgumentParser(add_help=False)
    r = flags.add_argument_group("run")
    budget_flags(r, per_turn=False)
    r.add_argument("--workspace", type=Path, default=workspace, help=WORKSPACE_HELP)
    r.add_argument("--json", action="store_true", help="print every event as a JSON line instead")
    r.add_argument("--verbose", "-v", action="store_true", help="show thinking and guard verdicts")
    r.add_argument("--yes", "-y", action="store_true", help="approve every tool call that asks for approval")
    r.add_argument(
        "--no-guards", action="store_true", help="run without the default guard pipeline (not advised)"
    )
    return flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent", description="Run agents on models you host yourself.", allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    model_flags = argparse.ArgumentParser(add_help=False)
    g = model_flags.add_argument_group("model")
    g.add_argument(
        "--model",
        "-m",
        help="a model directory, a cached Hugging Face id, a .gguf file, the model name on --base-url, "
        "or scripted:FILE (default: the embedded SmolLM2-135M-Instruct)",
    )
    g.add_argument(
        "--base-url",
        type=base_url,
        help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang, llama.cpp)",
    )
    g.add_argument("--api-key", type=api_key, help="API key for --base-url (default: $OPENAI_API_KEY)")
    g.add_argument(
        "--request-timeout",
        type=SECONDS,
        default=None,
        help="seconds to wait for a --base-url server's reply (default 120; a CPU server reading a long prompt may need more)",
    )
    g.add_argument("--effort", choices=["low", "medium", "high"], default=None, help="reasoning effort")
    g.add_argument(
        "--max-new-tokens",
        type=POSITIVE,
        default=None,
        help="the longest reply, in tokens (default: the model's: 512 for the embedded one)",
    )
    g.add_argument(
        "--context-window",
        type=int,
        default=None,
        help="fit every prompt to this many tokens (default: the model's own window, as --base-url reports it)",
    )

    p = sub.add_parser(
        "run", parents=[model_flags, run_flags(Path("."))], help="run one task and print the answer"
    )
    p.add_argument("task", help="what the agent should do; - reads it from stdin (a long or prepared task)")
    p.add_argument("--tools", default="", help="comma-separated built-in tools to enable")
    p.add_argument("--system", help="system prompt")

    p = sub.add_parser(  # --workspace: the run's own unless given
        "resume", parents=[model_flags, run_flags(None)], help="continue an interrupted run"
    )
    p.add_argument("run", help="run id, unique prefix, 'last', or a .jsonl path")
    p.add_argument(
        "--tools", default=None, help="comma-separated built-in tools to enable (default: the run's own)"
    )

    p = sub.add_parser("chat", parents=[model_flags], help="talk to an agent in the terminal")
    c = p.add_argument_group("chat")
    c.add_argument(
        "--resume",
        "-r",
        nargs="?",
        const="last",
        default=None,
        metavar="SESSION",
        help="continue a session: a run id, a name given with /save, or 'last' (the default)",
    )
    c.add_argument(
        "--tools", default=None, help="comma-separated built-in tools to enable (resumed: the session's own)"
    )
    c.add_argument("--approve-writes", action="store_true", help="ask before each write of the files tools")
    c.add_argument("--system", help="system prompt")
    budget_flags(c, per_turn=True)
    c.add_argument(
        "--workspace", type=Path, default=None, help=WORKSPACE_HELP + " (resumed: the session's own)"
    )
    c.add_argument("--verbose", "-v", action="store_true", help="show thinking in full (/thinking toggles)")
    c.add_argument("--yes", "-y", action="store_true", help="approve every tool call that asks for approval")

    p = sub.add_parser(
        "batch", parents=[model_flags], help="run a JSONL file of tasks, one result line per task"
    )
    p.add_argument(
        "tasks", type=Path, help="JSONL: one {id, prompt, tools?, effort?, max_steps?, expected?} per line"
    )
    # Kept as typed (a Path would drop a trailing "/", which says a folder was meant).
    p.add_argument("-o", "--output", required=True, help="results JSONL (one line per task)")
    p.add_argument(
        "--concurrency", "-c", type=POSITIVE, default=4, help="tasks run at once, sharing one model"
    )
    p.add_argument("--resume", action="store_true", help="skip ids that already have a result; redo the rest")
    p.add_argument("--overwrite", action="store_true", help="start over, replacing the results file")
    p.add_argument(
        "--retries",
        type=_number(int, 0),
        default=2,
        help="runs of a task again after an infrastructure error (backoff doubles); each run's model "
        "client first retries its own requests (its error says how often)",
    )
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", default=None, help="a Ray cluster to join (default: start a local one)")
    p.add_argument("--tools", default="", help="built-in tools for tasks that name none")
    p.add_argument("--strategy", choices=["react", "plan-act-reflect"], default=None)
    p.add_argument("--max-steps", type=POSITIVE, default=None)
    p.add_argument("--timeout", type=SECONDS, default=None, help="wall-clock budget per task, seconds")
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    p.add_argument("--workspace", type=Path, default=Path("."), help=WORKSPACE_HELP)
    p.add_argument(
        "--yes", "-y", action="store_true", help="approve tool calls that ask (nobody is there to ask)"
    )

    p = sub.add_parser("replay", help="show a past run from its log")
    p.add_argument("run", help="run id, unique prefix, 'last', or a .jsonl path")
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    p.add_argument("--json", action="store_true", help="print the events as JSON lines")
    p.add_argument("--verbose", "-v", action="store_true")

    p = sub.add_parser("runs", help="list recent runs")
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    p.add_argument("--limit", type=POSITIVE, default=20)

    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument(
        "--model",
        "-m",
        help="a model directory, a cached Hugging Face id, a .gguf file or scripted:FILE "
        "(default: the embedded SmolLM2-135M-Instruct)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0 picks a free one)")
    p.add_argument(
        "--api-key", type=api_key, help="require this Bearer token (default: $AGENT_SERVE_API_KEY, else none)"
    )
    p.add_argument("--effort", choices=["low", "medium", "high"], help="effort for requests that name none")
    p.add_argument(
        "--max-new-tokens", type=POSITIVE, default=None, help="the longest reply for requests that name none"
    )
    p.set_defaults(base_url=None)
    for command in sub.choices.values():  # `--no` must not stand for --no-guards
        command.allow_abbrev = False
    return parser


def make_model(args: argparse.Namespace) -> Any:
    """The LLM the flags ask for."""
    limit = getattr(args, "max_new_tokens", None)
    llm = new_model(
        args.model,
        base_url=args.base_url,
        api_key=args.api_key,
        max_new_tokens=limit,
        request_timeout=getattr(args, "request_timeout", None),
    )
    if limit is not None and not args.base_url:  # a loaded model knows its window (a server is asked later)
        check_reply_limit(llm, limit)
    return llm


def check_reply_limit(llm: Any, limit: int) -> None:
    """Refuse a --max-new-tokens that leaves a loaded model's window no room for a prompt
    (the run would fail at its first model call, with the context budget's ValueError)."""
    from memory.context import MIN_PROMPT_TOKENS, model_context_window

    window = model_context_window(llm)
    if window is not None and limit > window - MIN_PROMPT_TOKENS:
        raise AgentError(
            f"--max-new-tokens {limit} leaves no room for a prompt in the model's window of {window} "
            f"tokens; give at most {window - MIN_PROMPT_TOKENS}"
        )


def new_model(
    model: str | None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    max_new_tokens: int | None = None,
    request_timeout: float | None = None,
) -> Any:
    """An LLM: a server's (`base_url`), a script (`scripted:FILE`), or one loaded here."""
    if base_url:
        from .llm.openai_compat import OpenAICompatLLM

        timeout = {"timeout": request_timeout} if request_timeout is not None else {}
        return OpenAICompatLLM(
            model or "default", base_url=base_url, api_key=api_key, max_new_tokens=max_new_tokens, **timeout
        )
    if model and model.startswith("scripted:"):
        return scripted_model(model)
    from .llm.transformers import TransformersLLM

    # Load before the run starts, so a wrong path is a one-line usage error
    # rather than a failed run, and the first-start conversion shows its progress.
    limit = {"max_new_tokens": max_new_tokens} if max_new_tokens is not None else {}
    return TransformersLLM(model, **limit).load()


def tool_names(spec: str | None) -> list[str]:
    """Built-in tool names from a comma-separated flag; the agent makes them for its workspace."""
    return list(dict.fromkeys(n.strip() for n in (spec or "").split(",") if n.strip()))  # once each


def _approver(auto_yes: bool) -> Any:
    def approve(request: Any) -> bool:
        if auto_yes:
            return True
        if not sys.stdin.isatty():
            return False
        from rich.markup import escape
        from rich.prompt import Confirm

        from .render import for_terminal

        shown = for_terminal(request)  # escape sequences and markup in the arguments are shown, not acted on
        return Confirm.ask(
            f"Allow [bold]{escape(shown.name)}[/] with {escape(str(shown.arguments))}?",
            console=None,
            default=False,
        )

    return approve


def _agent_from(args: argparse.Namespace, **extra: Any) -> Any:
    from .agent import Agent

    return Agent(
        make_model(args),
        tools=tool_names(getattr(args, "tools", "")),
        workspace=writable_dir(args.workspace, "--workspace", say_made=True),
        strategy=args.strategy,
        effort=args.effort,
        max_steps=args.max_steps,
        max_tokens=args.max_tokens,
        max_seconds=args.timeout,
        run_dir=args.run_dir,
        approver=_approver(args.yes),
        guards=None if getattr(args, "no_guards", False) else "default",
        context_window=getattr(args, "context_window", None),
        **extra,
    )


def _warn_if_unguarded(args: argparse.Namespace) -> None:
    if getattr(args, "no_guards", False):  # on stderr: --json output on stdout stays events only
        from .render import Console

        Console(stderr=True).print(
            "[bold yellow]guards are off:[/] no step of this run is checked", highlight=False
        )


def _renderer(args: argparse.Namespace, *, messages: bool = False) -> Any:
    from .render import ConsoleRenderer, JsonLinesRenderer

    return JsonLinesRenderer() if args.json else ConsoleRenderer(verbose=args.verbose, messages=messages)


async def _drive(agent: Any, events: Any, renderer: Any) -> Any:
    last = None
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                renderer(event)
                last = event
    except asyncio.CancelledError:
        # Ctrl-C: the run records how it ended while the stream unwinds; show that too.
        run = agent._last
        if run is not None:
            shown = last.seq if last is not None else 0  # by number: the record keeps no deltas
            for event in run.state.events:
                if event.seq > shown:
                    renderer(event)
        raise
    finally:
        if hasattr(renderer, "close"):
            renderer.close()
    return last


def _exit_code(last: Any) -> int:
    if last is None or last.type != "run_finished":
        return EXIT_RUN_FAILED
    if last.status == "completed":
        return EXIT_OK
    return EXIT_INTERRUPTED if last.status == "cancelled" else EXIT_RUN_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    writable_dir(args.run_dir, "--run-dir")
    if args.task == "-":  # read before a model loads: a task that cannot be read fails at once
        args.task = _stdin_task()
    _warn_if_unguarded(args)
    extra = {"system_prompt": args.system} if args.system else {}
    agent = _agent_from(args, **extra)
    return _exit_code(asyncio.run(_drive(agent, agent.run(args.task), _renderer(args))))


def _stdin_task() -> str:
    """The task from stdin, for `agent run -`: any length (an argument is capped by the system)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise AgentError("`agent run -` reads the task from stdin; pipe it in (agent run - < task.txt)")
    data = sys.stdin.buffer.read()
    try:
        task = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError as e:
        raise AgentError(
            f"the task on stdin is not UTF-8 text (byte 0x{data[e.start]:02x} at {e.start})"
        ) from None
    if not task:
        raise AgentError("the task on stdin is empty")
    return task


def cmd_resume(args: argparse.Namespace) -> int:
    from .render import visible
    from .runlog import find_run, is_live, read_events
    from .session import is_chat_session, resolve_session
    from .state import RunState

    writable_dir(args.run_dir, "--run-dir")
    # The run, its settings and how it ended are read first: a wrong id or an ended run fails
    # before a model loads (the resume reads the log again, and checks it the same way).
    # Resolved once (`last` must name one run throughout); a name saved with /save works too.
    path = find_run(resolve_session(args.run, args.run_dir), args.run_dir)
    if is_live(path):
        raise AgentError(
            f"run {path.stem} is still going (another process is writing its log); "
            "resume it once that process has ended"
        )
    events = read_events(path)
    state = RunState(path.stem)
    for event in events:
        state.apply(event)
    if state.status in ("completed", "halted"):
        if is_chat_session(events):  # it goes on in chat
            raise AgentError(
                f"{path.stem} is a chat session; go on with it with: agent chat --resume {path.stem}"
            )
        raise AgentError(f"run {path.stem} already ended ({state.status}); start a new run instead")
    started = events[0] if events else None
    use_run_settings(args, started)
    _warn_if_unguarded(args)
    agent = _agent_from(args)
    was = started.model if started is not None and started.type == "run_started" else ""
    now = getattr(agent.model, "name", type(agent.model).__name__)
    if was and was != now:
        _print_note(
            f"the run was started with the model {visible(was)}; it goes on with {visible(now)} "
            "(--model and --base-url choose)"
        )
    code = _exit_code(asyncio.run(_drive(agent, agent.resume(path), _renderer(args))))
    if is_chat_session(events):  # its cut turn is finished: the conversation goes on in chat
        _print_note(f"{path.stem} is a chat session; go on with it with: agent chat --resume {path.stem}")
    return code


def scripted_model(spec: str) -> Any:
    """`scripted:FILE` as a ScriptedLLM; the file may be a pipe (`scripted:<(make-script)`)."""
    from .llm.scripted import ScriptedLLM

    path = Path(spec.removeprefix("scripted:"))
    if not path.exists():
        raise AgentError(f"scripted model file not found: {path}")
    if path.is_dir():
        raise AgentError(f"scripted model {path} is a folder; give the script's file")
    return ScriptedLLM.from_file(path)


def use_run_settings(args: argparse.Namespace, started: Any) -> None:
    """Flags left out of `agent resume` or `agent chat --resume` take the run's own values:
    its built-in tools, workspace, effort and strategy."""
    from .builtins import builtins_for

    ran = started if started is not None and started.type == "run_started" else None
    if args.tools is None:
        args.tools = ",".join(builtins_for(ran.tools if ran else []))
    if args.workspace is None:
        args.workspace = Path(ran.workspace) if ran and ran.workspace else Path(".")
    if ran is not None:
        if args.effort is None:
            args.effort = ran.effort
        if args.strategy is None:
            args.strategy = ran.strategy


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import run_chat

    writable_dir(args.run_dir, "--run-dir")
    return run_chat(args)


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_cli

    return run_cli(args)


def cmd_replay(args: argparse.Namespace) -> int:
    from .runlog import find_run, is_live, read_events
    from .session import is_chat_session, resolve_session

    path = find_run(resolve_session(args.run, args.run_dir), args.run_dir)  # or a name saved with /save
    events = read_events(path)
    if not events:
        raise AgentError(f"run log {path} is empty; nothing to replay")
    renderer = _renderer(args, messages=True)  # the task and each message of a session, as they were said
    for event in events:
        renderer(event)
    if events[-1].type != "run_finished" and not args.json:
        if is_live(path):
            _print_note("the run is still going; replay it again once it has ended")
        elif is_chat_session(events):
            _print_note(
                "the log ends before the session's last turn did (the process was stopped); "
                f"`agent chat --resume {events[0].run_id}` goes on with it"
            )
        else:
            _print_note(
                f"the log ends before the run did (the process was stopped); `agent resume {events[0].run_id}` "
                "continues it"
            )
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .render import Console
    from .runlog import is_live, read_events

    directory = Path(args.run_dir)
    logs = sorted(directory.glob("*.jsonl"), key=os.path.getmtime, reverse=True)[: args.limit]
    if not logs:
        raise AgentError(f"no runs in {directory}/")
    table = Table("run", "status", "steps", "task")
    for path in logs:
        try:
            events = read_events(path)
        except (AgentError, OSError, ValueError):  # one unreadable log does not hide the others
            table.add_row(path.stem, "unreadable", "", "")
            continue
        if not events:
            table.add_row(path.stem, "empty", "", "")
            continue
        first, last = events[0], events[-1]
        status = last.status if last.type == "run_finished" else "running" if is_live(path) else "interrupted"
        task = getattr(first, "task", "")
        table.add_row(path.stem, status, str(last.step), task[:60])
    Console().print(table)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run_cli

    return run_cli(args)


COMMANDS = {
    "run": cmd_run,
    "resume": cmd_resume,
    "chat": cmd_chat,
    "batch": cmd_batch,
    "replay": cmd_replay,
    "runs": cmd_runs,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser: its usage, not the top level's
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (commands.choices.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if os.environ.get("AGENT_DEBUG"):  # the tracebacks the runtime logs at debug level: a run's fault
        import logging

        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger("agent").setLevel(logging.DEBUG)
    with _sigterm_as_ctrl_c(leave=args.command == "chat") as terminated:
        try:
            code = _run_command(args)
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
            print("terminated" if terminated else "interrupted", file=sys.stderr)
        else:
            if terminated and code == EXIT_INTERRUPTED:
                print("terminated", file=sys.stderr)
    return EXIT_TERMINATED if terminated and code == EXIT_INTERRUPTED else code


@contextlib.contextmanager
def _sigterm_as_ctrl_c(*, leave: bool) -> Iterator[list[bool]]:
    """While a command runs, SIGTERM stops it as Ctrl-C does: runs record that they were
    cancelled, batches keep their results, and the exit status is 143. `leave`: a command
    where Ctrl-C only stops the current turn (chat) is left altogether. Yields a flag, set
    (made non-empty) when SIGTERM came. Only in the main thread, and only where SIGTERM
    has its default action (a host process that handles it decides)."""
    import signal
    import threading

    from . import sync

    came: list[bool] = []
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield came
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        came.append(True)
        sync.stop_reason = "stopped by SIGTERM (kill, timeout, docker stop)"
        # The run going on stops as at Ctrl-C: at its next safe point, also when Ctrl-C is
        # ignored (a job started with & from a script). Raised here instead, KeyboardInterrupt
        # could land in the middle of the event loop's own code.
        ctrl_c = sync.interrupt or signal.getsignal(signal.SIGINT)
        if callable(ctrl_c) and not leave:  # the sync runner's, asyncio's, or Python's own
            ctrl_c(signal.SIGINT, frame)
        else:  # chat, or nothing running that stops at Ctrl-C
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sync.stop_reason = None


def _run_command(args: argparse.Namespace) -> int:
    """The command's exit status; an error a user can cause is one line, not a traceback."""
    from .llm.base import LLMError

    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:
        # The reader went away (`agent run ... --json | head -1`): stop quietly, as a
        # program killed by SIGPIPE would, and keep Python's exit-time flush quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (AgentError, LLMError) as e:
        _print_error(str(e))
        return EXIT_USAGE if isinstance(e, AgentError) else EXIT_RUN_FAILED
    except Exception as e:
        if os.environ.get("AGENT_DEBUG"):
            raise
        _print_error(f"internal error: {type(e).__name__}: {e} (set AGENT_DEBUG=1 for the traceback)")
        return EXIT_RUN_FAILED


def _print_note(message: str) -> None:
    from rich.text import Text

    from .render import Console

    Console(stderr=True).print(Text(f"note: {message}", style="yellow"), soft_wrap=True)


def _print_error(message: str) -> None:
    from rich.text import Text

    from .render import Console, visible

    Console(stderr=True).print(Text(visible(f"error: {message}"), style="bold red"), soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
