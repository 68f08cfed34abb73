"""A conversation with an agent: every message continues one run.

The run log is the session file: `agent chat --resume` and
`Agent.session(run_id)` rebuild the conversation from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AgentError
from .events import Event
from .runlog import RunNotFound, find_run
from .types import Usage

if TYPE_CHECKING:
    from .agent import Agent, RunResult
    from .loop import Run


# How long a message waits for the stream of its task's last turn, left by a `break`, to close.
_CLOSING_GRACE = 2.0


class Session:
    """Send messages one after another; the agent keeps the whole history."""

    def __init__(self, agent: Agent, run: Run | None = None) -> None:
        self.agent = agent
        self._run = run
        self._hold = False
        self._busy = False  # a message is being answered
        self._owner: asyncio.Task[Any] | None = None  # the task that sent it
        self._waiting: list[asyncio.Future[None]] = []  # messages sent meanwhile, in order
        self._cancels = 0  # Session.cancel() calls so far: one after a message is sent cancels it

    @property
    def run_id(self) -> str | None:
        return self._run.run_id if self._run is not None else None

    @property
    def log_path(self) -> str | None:
        log = self._run.log if self._run is not None else None
        return str(log.path) if log is not None else None

    @property
    def history(self) -> list[Event]:
        return list(self._run.state.events) if self._run is not None else []

    def send(self, message: str) -> AsyncIterator[Event]:
        """Add a user message and run until the agent answers, yielding events. A message
        sent while another is being answered waits for that turn to end. `agent.cancel()`
        after this call (before or while the message is answered) cancels it."""
        from .agent import check_text

        check_text(message, "the message")
        return self._send(message, self._counts())  # counted now, as `arun` counts them

    async def _send(self, message: str, cancels: tuple[int, int]) -> AsyncIterator[Event]:
        async with (
            self._turn(),
            contextlib.aclosing(self._events(message, cancels)) as events,
        ):  # leaving it ends the turn
            async for event in events:
                yield event

    def asend(self, message: str) -> Coroutine[Any, Any, RunResult]:
        """`send` to the end; the result is this turn's: its outcome, steps, tokens and events.
        A coroutine: `agent.cancel()` after this call, before its turn starts, cancels it too."""
        from .agent import check_text

        check_text(message, "the message")
        return self._asend(message, self._counts())

    async def _asend(self, message: str, cancels: tuple[int, int]) -> RunResult:
        async with self._turn():
            async with contextlib.aclosing(self._events(message, cancels)) as events:
                async for _ in events:
                    pass
        run = self._run
        assert run is not None
        # Where this message's turn began, as the run noted it (the first message's began at
        # the start). A copy of the events even then: later turns must not change a result.
        return self.agent._result(run, run._turn_start or (0, 0, Usage()))

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """This task's turn to be answered: waited for, then passed on when it ends."""
        await self._take_turn()
        try:
            yield
        finally:
            self._end_turn()

    def _counts(self) -> tuple[int, int]:
        """The agent's and this session's cancel() calls so far (see `_events`)."""
        return self.agent._cancels, self._cancels

    def _events(self, message: str, counts: tuple[int, int]) -> AsyncIterator[Event]:
        # The run compares the agent's count with the one taken when the message was sent: a
        # Session.cancel() since then is told to it as a difference in that count too.
        cancels, session = counts
        if session != self._cancels:
            cancels -= 1
        if self._run is None:
            self._run = self.agent._new_run()
            self._run.hold_log = self._hold
            return self.agent._iterate(self._run, message, cancels=cancels)
        return self.agent._iterate(self._run, None, follow_up=message, cancels=cancels)

    async def _take_turn(self) -> None:
        """Wait until no message is being answered, then take the turn: messages sent at
        once (a double submit, `gather`) are answered one after the other, in the order sent."""
        me = asyncio.current_task()
        left = _CLOSING_GRACE
        while self._busy and me is not None and me is self._owner:
            # This task's last turn: its stream was left (a `break`) and is closing, which
            # takes a moment; or the message is sent from inside it and would wait for itself.
            if left <= 0:
                raise AgentError(
                    "this session is still answering a message sent from this same task: send the next "
                    "one after that turn has ended (after its `async for`), not from inside it"
                )
            await asyncio.sleep(0.005)
            left -= 0.005
        if self._busy or self._waiting:
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn  # `_end_turn` hands the turn over: `_busy` stays set for this task
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._end_turn()  # handed the turn, but leaving: the next in line has it
                elif turn in self._waiting:
                    self._waiting.remove(turn)
                raise
        self._busy, self._owner = True, me

    def _end_turn(self) -> None:
        """The turn goes to the first message waiting for it, or the session is free."""
        self._owner = None
        while self._waiting:
            turn = self._waiting.pop(0)
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False

    def send_sync(self, message: str) -> RunResult:
        return self.agent._sync(self.asend(message))

    def hold(self) -> Session:
        """Keep the session's log open, and locked, from message to message (until
        `close`), not only while a message runs: another process (a second `agent chat
        --resume`) cannot take the session up while this one may still go on."""
        self._hold = True
        if self._run is not None:
            self._run.hold_log = True
            log = self._run.log
            if log is not None and log.failed is None:  # a failed log is refused at the next message
                log.open()
        return self

    def close(self) -> None:
        """Let go of the session's log, so that another process may take the session up.
        A later message takes it again (and is refused if someone else has it then)."""
        log = self._run.log if self._run is not None else None
        if log is not None:
            log.close()

    def cancel(self) -> None:
        """Stop the current turn at its next safe point, and the messages sent before this
        call that wait for their turn; the session goes on with those sent after."""
        self._cancels += 1
        if self._run is not None:
            self._run.cancel()


# -- saved sessions (agent chat's /save) -----------------------------------------

# A name given with /save: kept as a file of that name next to the run directory.
SESSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CHAT_AGENT = "chat"  # the agent name `agent chat` runs under


def is_chat_session(events: list[Any]) -> bool:
    """Whether a run's events are an `agent chat` session: its agent says so (logs of this
    version on), or the run took more than one message (older ones)."""
    started = events[0] if events else None
    if started is not None and started.type == "run_started" and started.agent == CHAT_AGENT:
        return True
    return sum(e.type == "user_message" for e in events) > 1


def sessions_dir(run_dir: str | Path) -> Path:
    """Where `/save` keeps names: `sessions/` next to the run directory."""
    return Path(run_dir).parent / "sessions"


def save_session(name: str, run_id: str, run_dir: str | Path) -> Path:
    """Name a session: `sessions/NAME` holds the run id its log lives under."""
    if not SESSION_NAME.match(name):
        raise AgentError(f"bad session name {name!r}: use letters, digits, '.', '_' or '-'")
    path = sessions_dir(run_dir) / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n", encoding="utf-8")
    except OSError as e:
        raise AgentError(f"cannot save the session name in {path.parent}: {e.strerror or e}") from None
    return path


def saved_sessions(run_dir: str | Path) -> list[tuple[str, str]]:
    directory = sessions_dir(run_dir)
    found = []
    try:
        for path in sorted(directory.iterdir()) if directory.is_dir() else []:
            if path.is_file() and SESSION_NAME.match(path.name):
                found.append((path.name, path.read_text(encoding="utf-8", errors="replace").strip()))
    except OSError as e:
        raise AgentError(f"cannot read the saved sessions in {directory}: {e.strerror or e}") from None
    return found


def resolve_session(ref: str, run_dir: str | Path) -> str:
    """A saved name becomes its run id; anything else (id, prefix, 'last', path) passes through."""
    if SESSION_NAME.match(ref):
        path = sessions_dir(run_dir) / ref
        try:
            run_id = path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""
        except OSError:  # unreadable: the name is taken as a run id, which says it is not found
            run_id = ""
        if run_id:
            return run_id
    return ref


def find_session(ref: str, run_dir: str | Path) -> Path:
    """The log of a session by a /save name, a run id or prefix, 'last', or a path."""
    try:
        return find_run(resolve_session(ref, run_dir), run_dir)
    except RunNotFound:
        raise AgentError(
            f"no session {ref!r}: no name saved with /save, nor a run in {run_dir}/ "
            "(a run id, 'last', or a .jsonl path)"
        ) from None
