"""The event bus: one ordered stream of events with interceptors in front.

Interceptors (the guards) see an event before it takes effect and return a
`Decision`: let it through, rewrite it, block it (the emitter turns the
feedback into something the model sees) or halt the run. Subscribers (state,
run log, renderers) then receive the event, in emit order, each numbered.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .events import Event


class Decision(BaseModel):
    """What an interceptor says about one event."""

    model_config = ConfigDict(arbitrary_types_allowed=True, defer_build=True)

    action: Literal["allow", "rewrite", "block", "halt"] = "allow"
    event: object | None = None  # the replacement, for "rewrite"
    feedback: str = ""  # what the model is told, for "block" and "halt"

    @classmethod
    def allow(cls) -> Decision:
        return _ALLOW

    @classmethod
    def rewrite(cls, event: Event) -> Decision:
        return cls(action="rewrite", event=event)

    @classmethod
    def block(cls, feedback: str) -> Decision:
        return cls(action="block", feedback=feedback)

    @classmethod
    def halt(cls, feedback: str) -> Decision:
        return cls(action="halt", feedback=feedback)


# Built without validation so that importing the bus builds no pydantic schema.
_ALLOW = Decision.model_construct()

Subscriber = Callable[[Event], None | Awaitable[None]]
Interceptor = Callable[[Event], Awaitable[Decision | None]]


class Bus:
    """Delivers events in order; lets interceptors judge them first."""

    _held: list[Event] | None = None  # while holding (see hold): what was delivered meanwhile

    def __init__(self, run_id: str = "", *, first_seq: int = 0) -> None:
        self.run_id = run_id
        self._seq = first_seq
        self._subscribers: list[tuple[Subscriber, bool]] = []
        self._sync_only = True  # no subscriber is a coroutine function
        self._interceptors: list[Interceptor] = []
        self._lock: asyncio.Lock | None = None  # made by the first delivery that needs it: most runs never do
        self._busy = False  # a delivery to async subscribers holds the lock

    @property
    def seq(self) -> int:
        """Sequence number of the last delivered event."""
        return self._seq

    def subscribe(self, fn: Subscriber, *, is_async: bool | None = None) -> None:
        """Deliver every event to `fn` from now on; `is_async` says whether it is a
        coroutine function (found out when not given)."""
        if is_async is None:
            is_async = inspect.iscoroutinefunction(fn)
        self._subscribers.append((fn, is_async))
        self._sync_only = self._sync_only and not is_async

    def unsubscribe(self, fn: Subscriber) -> None:
        self._subscribers = [(f, a) for f, a in self._subscribers if f is not fn]
        self._sync_only = not any(a for _, a in self._subscribers)

    def intercept(self, fn: Interceptor) -> None:
        self._interceptors.append(fn)

    @property
    def judging(self) -> bool:
        """Whether any interceptor judges the events emitted."""
        return bool(self._interceptors)

    async def emit(self, event: Event, *, judge: bool = True) -> Decision:
        """Judge `event`, then deliver it (or its rewrite) unless blocked.

        A blocked or halted event is not delivered: the interceptor records its
        own verdict, and the emitter records the consequence.
        """
        decision = _ALLOW
        if judge and self._interceptors:
            decision = await self.judge(event)
            if decision.action in ("block", "halt"):
                return decision
            if decision.action == "rewrite":
                event = decision.event  # type: ignore[assignment]
        await self.deliver(event)
        return decision

    async def judge(self, event: Event) -> Decision:
        """What the interceptors make of `event`, without delivering it: allow, a refusal,
        or a rewrite (its `event` the rewritten one). What they record (their verdicts)
        is delivered as they go."""
        decision = _ALLOW
        if self._interceptors:
            for interceptor in self._interceptors:
                verdict = await interceptor(event)
                if verdict is None:
                    continue
                if not isinstance(verdict, Decision):  # a guard.Verdict, "block", ...: not taken as allow
                    name = getattr(interceptor, "__qualname__", type(interceptor).__name__)
                    raise TypeError(
                        f"the interceptor {name} returned {type(verdict).__name__} for a {event.type} event; "
                        "an interceptor returns a Decision (Decision.block(...), ...) or None "
                        "(a guard written to return a Verdict goes in guards=[...] as it is)"
                    )
                if verdict.action == "allow":
                    continue
                if verdict.action == "rewrite":
                    event = verdict.event  # type: ignore[assignment]
                    decision = verdict
                    continue
                return verdict
        return decision

    def hold(self) -> None:
        """Keep what is delivered from now on until `release`: the events a judgement
        records, which must follow an event not yet delivered (a run's run_started)."""
        self._held = []
        self._busy = True  # emit_now defers to deliver, which holds

    def release(self) -> list[Event]:
        """Stop holding; the events held, in order, for the caller to deliver."""
        held, self._held = self._held or [], None
        self._busy = False
        return held

    def emit_now(self, event: Event, *, judge: bool = True) -> Decision | None:
        """`emit` without a coroutine when nothing in it would wait: no
        interceptor to judge the event (or `judge=False`), only sync
        subscribers, no delivery under way. Returns None, having done nothing,
        when the caller must `await emit(event, judge=judge)` instead.

        The loop emits four events a step; on a bare bus this saves their
        coroutines, a good part of what a step costs.
        """
        if not self._sync_only or self._busy or (judge and self._interceptors):
            return None
        # Every subscriber is sync, so nothing here awaits and no other delivery can
        # cut in: the lock would only cost time.
        self._number(event)
        for fn, _ in self._subscribers:
            fn(event)
        return _ALLOW

    async def deliver(self, event: Event) -> None:
        """Number `event` and hand it to every subscriber, in order."""
        if self.emit_now(event, judge=False) is not None:  # nothing to wait for
            return
        if self._held is not None:
            self._held.append(event)
            return
        lock = self._lock
        if lock is None:
            lock = self._lock = asyncio.Lock()
        async with lock:
            self._busy = True
            try:
                self._number(event)
                for fn, is_async in self._subscribers:
                    if is_async:
                        await fn(event)  # type: ignore[misc]
                    else:
                        fn(event)
            finally:
                self._busy = False

    def _number(self, event: Event) -> None:
        self._seq += 1
        # Plain attribute writes: these fields are ints and strings we set
        # ourselves, and pydantic's __setattr__ cost more than the rest of
        # the delivery.
        fields = event.__dict__
        fields["seq"] = self._seq
        if not fields["run_id"]:
            fields["run_id"] = self.run_id
