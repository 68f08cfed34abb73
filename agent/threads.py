"""Daemon worker threads for blocking calls (sync tools).

asyncio's default executor is joined when `asyncio.run` ends, so a sync tool
stuck in a long call would hold up Ctrl-C until it returned. These workers are
daemon threads: a cancelled run returns at once and the process can exit.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

_MAX_WORKERS = 32
_jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.AbstractEventLoop, asyncio.Future[Any]]] = (
    queue.SimpleQueue()
)
_lock = threading.Lock()
_workers = 0
_idle = 0
_backlog = 0  # jobs queued while every worker was busy at the cap


def _worker() -> None:
    global _idle, _backlog
    while True:
        fn, loop, future = _jobs.get()
        try:
            result = fn()
        except BaseException as e:  # handed to the awaiting coroutine
            result, error = None, e
        else:
            error = None
        # An idle worker holds nothing of its last job: the call (and through it the tool
        # and its agent), the loop and the result would otherwise stay alive until the next.
        # The call goes first, before the loop is woken: the run may end before this thread
        # runs again (waking the loop lets go of the GIL).
        fn = None  # type: ignore[assignment]
        try:
            loop.call_soon_threadsafe(_settle, future, result, error)
        except RuntimeError:  # the loop closed while the call ran (a cancelled run): nobody waits
            pass
        loop = future = result = error = None  # type: ignore[assignment]
        with _lock:
            if _backlog:
                _backlog -= 1  # stay busy: a queued job is waiting for this worker
            else:
                _idle += 1


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


async def run_blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `fn(*args, **kwargs)` on a daemon worker and await its result."""
    global _workers, _idle, _backlog
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    with _lock:
        # Reserve an idle worker, or start one, so concurrent calls never queue
        # behind each other below the cap.
        if _idle > 0:
            _idle -= 1
        elif _workers < _MAX_WORKERS:
            _workers += 1
            threading.Thread(target=_worker, name=f"agent-tool-{_workers}", daemon=True).start()
        else:
            _backlog += 1
    context = contextvars.copy_context()  # so tool_context() works in sync tools
    _jobs.put((lambda: context.run(fn, *args, **kwargs), loop, future))
    return await future
