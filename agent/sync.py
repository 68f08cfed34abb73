"""Sync entry points: run a coroutine to its end on an event loop kept open.

`Agent.run_sync` and friends run on one event loop per thread, shared by
every agent that thread runs, instead of a new loop per agent. Async
resources an agent's tools or model hold (kernels, HTTP clients) then keep
working from one call to the next, and a model object shared by two agents
works for both. An agent keeps the loop it first ran on, even when it is
called from another thread later. A loop closes when nothing uses it any
more: its thread has ended and no agent holds it, or the interpreter exits.

Ctrl-C behaves as under `asyncio.run`: the first cancels the running
coroutine, which may clean up (a run records "cancelled"), and the call then
raises KeyboardInterrupt; a second one raises at once.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import AgentError

try:  # the C module: `signal`'s wrappers turn handlers into enums (about 10 µs a run, against 0.5)
    import _signal as _sig
except ImportError:  # pragma: no cover - other interpreters
    import signal as _sig  # type: ignore[no-redef]

T = TypeVar("T")

# Why runs are being stopped when it is not Ctrl-C: a host that turns another signal into one
# (`agent`'s CLI on SIGTERM) says so here, and the runs it cancels record it.
stop_reason: str | None = None
# The stop of the run going on in the main thread (as Ctrl-C stops it), for a host's own
# signal handler (the CLI's SIGTERM), also when Ctrl-C itself is ignored (a job started with &).
interrupt: Callable[[int, Any], None] | None = None


class LoopHandle:
    """An event loop, closed when the last holder lets go of it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.busy = threading.Lock()  # held by the sync call running the loop: one at a time
        _handles.add(self)

    def close(self) -> None:
        loop = self.loop
        if loop.is_closed() or loop.is_running():
            return
        try:
            # Cleaning up runs the loop, which cannot happen inside another
            # running loop (the last holder may be let go of in async code):
            # then the loop is only closed.
            if asyncio._get_running_loop() is None:
                _cancel_pending(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit parts of asyncio may be gone
            pass


_handles: weakref.WeakSet[LoopHandle] = weakref.WeakSet()
_local = threading.local()


def thread_loop() -> LoopHandle:
    """This thread's loop for sync entry points, made on first use."""
    handle: LoopHandle | None = getattr(_local, "handle", None)
    if handle is None or handle.loop.is_closed():
        handle = _local.handle = LoopHandle()
    return handle


def run(coro: Coroutine[Any, Any, T], handle: LoopHandle | None = None) -> T:
    """Run `coro` to its end on `handle`'s loop (this thread's by default)."""
    if asyncio._get_running_loop() is not None:
        coro.close()
        raise AgentError(
            "the sync methods (run_sync, resume_sync, close, ...) cannot run inside an event loop; "
            "await their async forms instead (`await agent.arun(task)`)"
        )
    handle = handle or thread_loop()
    # Taken, not waited for: two threads that find the loop free at the same moment must
    # not both start it.
    if not handle.busy.acquire(blocking=False):
        coro.close()
        raise AgentError(
            "this agent's event loop (that of the thread it first ran in) is running a sync call "
            "of this agent or of another that first ran in the same thread: a sync call cannot "
            "start until that one returns. Give each thread its own agent, made and first run in "
            "that thread, or run them together with asyncio.gather(agent.arun(...), ...)"
        )
    try:
        return _run(coro, handle.loop)
    finally:
        handle.busy.release()


def _run(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> T:
    # Named: an unnamed task formats "Task-<n>" for itself, a cold path each sync call pays.
    task = loop.create_task(coro, name="agent-sync-call")
    interrupts = 0

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1 and not task.done():
            task.cancel()
            loop.call_soon_threadsafe(_wake)  # select() may be waiting with a long timeout
            return
        raise KeyboardInterrupt()

    global interrupt
    handler = None
    main = threading.current_thread() is threading.main_thread()
    if main:
        try:
            if _sig.getsignal(_sig.SIGINT) is _sig.default_int_handler:
                _sig.signal(_sig.SIGINT, on_sigint)
                handler = on_sigint
        except ValueError:  # an embedded interpreter without signal handling
            handler = None
        outer, interrupt = interrupt, on_sigint
    try:
        # run_until_complete's turn after the task ends matters: it runs what the run's
        # last step scheduled (a tool's background task, a transport's close) and takes
        # the task's exception (else asyncio reports it as never retrieved).
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if interrupts and task.uncancel() == 0:
            raise KeyboardInterrupt() from None
        raise
    finally:
        if main:
            interrupt = outer
        if handler is not None and _sig.getsignal(_sig.SIGINT) is handler:
            _sig.signal(_sig.SIGINT, _sig.default_int_handler)
        if not task.done():  # a second Ctrl-C left it running: let it clean up, then go on
            task.cancel()
            try:
                loop.run_until_complete(task)
            except BaseException:
                pass


def _wake() -> None:
    pass


def _cancel_pending(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


@atexit.register
def _close_all() -> None:
    for handle in list(_handles):
        try:
            handle.close()
        except Exception:
            pass
