"""A conversation with an agent: every message continues one run.

The run log is the session file: `agent chat --resume` and
`Agent.session(run_id)` rebuild the conversation from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .events import Event
from .types import Usage

if TYPE_CHECKING:
    from .agent import Agent, RunResult
    from .loop import Run


class Session:
    """Send messages one after another; the agent keeps the whole history."""

    def __init__(self, agent: Agent, run: Run | None = None) -> None:
        self.agent = agent
        self._run = run
        self._hold = False

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

    async def send(self, message: str) -> AsyncIterator[Event]:
        """Add a user message and run until the agent answers, yielding events."""
        from .agent import check_text

        check_text(message, "the message")
        if self._run is None:
            self._run = self.agent._new_run()
            self._run.hold_log = self._hold
            events = self.agent._iterate(self._run, message)
        else:
            events = self.agent._iterate(self._run, None, follow_up=message)
        async with contextlib.aclosing(events):  # leaving the stream ends the turn at once
            async for event in events:
                yield event

    async def asend(self, message: str) -> RunResult:
        """`send` to the end; the result is this turn's: its outcome, steps, tokens and events."""
        run = self._run
        # A copy of the events even for the first turn: later turns must not change a result.
        since = (
            (len(run.state.events), run.state.step, run.state.usage) if run is not None else (0, 0, Usage())
        )
        async for _ in self.send(message):
            pass
        assert self._run is not None
        return self.agent._result(self._run, since)

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
        """Stop the current turn at its next safe point; the session goes on."""
        if self._run is not None:
            self._run.cancel()
