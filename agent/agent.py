"""`Agent`: the object users configure, subclass and run."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import threading
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import sync
from .bus import Bus
from .errors import AgentError
from .events import Error, Event, ModelResponse, Plan, Reflection, RunStatus, ToolResult
from .llm.base import LLM
from .loop import FINAL_ANSWER, Approver, Run, bind_tools
from .runlog import DEFAULT_RUN_DIR, RunLog, find_run, new_run_id, read_events, trim_torn_tail
from .state import RunState
from .tool import Tool
from .types import EFFORTS, Effort, Usage, trusted

if TYPE_CHECKING:
    from memory.context import ContextBudget

    from .session import Session

Strategy = Literal["react", "plan-act-reflect"]
_log = logging.getLogger("agent")
_loop_lock = threading.Lock()  # an agent's first sync call picks its event loop under it
_warned_unapproved: set[tuple[str, ...]] = set()  # tools that need approval, in agents without an approver

DEFAULT_SYSTEM_PROMPT = (
    "You are a capable assistant that solves tasks step by step. Use the tools when they help; "
    "call one or more tools, read their results, and continue until you can answer. "
    "When you have the answer, reply with it directly (or call final_answer)."
)


class RunResult(BaseModel):
    """How a run ended, what it answered and what it cost."""

    model_config = ConfigDict(arbitrary_types_allowed=True, defer_build=True)

    run_id: str
    status: RunStatus
    answer: Any = None
    error: str | None = None
    # A session's turn (`Session.send_sync`) counts its own steps, tokens and events.
    steps: int = 0
    usage: Usage = Field(default_factory=Usage)
    events: list[Any] = Field(default_factory=list, repr=False)
    log_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"


class EventStream(Coroutine[Any, Any, Any]):
    """The events of one run, as `Agent.run` and `Agent.resume` give them.

    `async for event in stream` reads them as they happen (the run goes on only as
    they are read; leaving the loop and closing the stream ends the run);
    `await stream` runs to the end and returns the `RunResult`, and so does
    `asyncio.run(stream)`: the stream is a coroutine too. Awaiting a stream that was
    read part way (a loop left with `break`) or closed ends the run where the reader
    left it, as `aclose()` does, and gives the result as it ended: the call a reader
    stopped at does not run. A stream that is neither read nor awaited warns when it
    is dropped, as a coroutine never awaited does: nothing ran.
    """

    def __init__(
        self, events: AsyncGenerator[Event, None], result: Callable[[], RunResult], what: str
    ) -> None:
        self._events = events
        self._result = result
        self._what = what
        self._used = False
        self._read = False  # an event was asked for: awaiting then ends the run where the reader left it
        self._closed = False  # aclose() ran: the generator is done with (its flags may not say so)
        self._end: Generator[Any, None, RunResult] | None = None  # as a coroutine, once it began

    def __aiter__(self) -> EventStream:
        self._used = True
        return self

    async def __anext__(self) -> Event:
        self._used = self._read = True
        if self._closed:
            raise StopAsyncIteration
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """End the run now (it is recorded as cancelled) if it has not ended."""
        self._used = True
        if not self._closed:
            self._closed = True
            await self._events.aclose()

    def __await__(self) -> Generator[Any, None, RunResult]:
        self._used = True
        return self._to_the_end().__await__()  # a new one each time: awaited again, the result again

    # As a coroutine (asyncio.run, create_task): the same run to the end as `await`.
    def _driver(self) -> Generator[Any, None, RunResult]:
        if self._end is None:
            self._end = self.__await__()
        return self._end

    def send(self, value: Any) -> Any:
        return self._driver().send(value)

    def throw(self, *args: Any) -> Any:
        return self._driver().throw(*args)

    def close(self) -> None:
        if self._end is not None:
            self._end.close()

    async def _to_the_end(self) -> RunResult:
        if not self._closed and not self._read:
            try:
                async for _ in self._events:
                    pass
            finally:
                await self.aclose()
        else:  # read part way (or to its end: then there is nothing left to stop)
            await self.aclose()
        return self._result()

    def __del__(self) -> None:
        if not self._used:  # (raised from wherever the stream is dropped: no stack level points at the call)
            warnings.warn(
                f"Agent.{self._what}(...) was neither iterated nor awaited, so nothing ran: use "
                f"`async for event in agent.{self._what}(...)`, `await agent.{self._what}(...)`, "
                f"or agent.{self._what}_sync(...) from sync code",
                RuntimeWarning,
                stacklevel=1,
            )


def _split_memory(memory: Any) -> tuple[Any, Any, list[Tool]]:
    """(vector memory, episodic memory, memory tools) from what `Agent(memory=...)` got.

    An episodic memory (has `recall`) feeds lessons into each run and records
    each finished run; a vector memory (has `search`) becomes the
    `memory_search` and `memory_save` tools.
    """
    items = memory if isinstance(memory, (list, tuple)) else [memory] if memory is not None else []
    vector = episodic = None
    tools: list[Tool] = []
    for item in items:
        if hasattr(item, "recall") and hasattr(item, "arecord"):
            if episodic is not None:
                raise AgentError("memory= holds two episodic memories; an agent records its runs in one")
            episodic = item
        elif hasattr(item, "search") and hasattr(item, "add"):
            if vector is not None:
                raise AgentError(
                    "memory= holds two vector memories, and both would be the memory_search and memory_save "
                    "tools; pass the second as tools=memory_tools(second, prefix='notes') (notes_search, ...)"
                )
            vector = item
        else:
            raise AgentError(f"memory={item!r} is neither a VectorMemory nor an EpisodicMemory")
    if vector is not None:
        from memory.tools import memory_tools

        # The model's searches find notes, never past runs' records (those come as lessons, chosen
        # for the task), whichever memory wrote them into this store: the same object, another
        # opened on the same file, another agent's.
        tools.extend(memory_tools(vector, where={"kind": {"$ne": "episode"}}))
    return vector, episodic, tools


class Agent:
    """An agent: a model, tools, a strategy and budgets.

    Configure it with arguments, or subclass it and set the same names as
    class attributes; tools can also be `@tool`-decorated methods.

    `context_window` fits each prompt to the model's context window (see
    `memory.context`): None uses the model's own window when it tells it (a
    `TransformersLLM` does; scripted and HTTP models then get the whole
    history), an int is the window in tokens, and a `ContextBudget` sets
    every detail (each run gets a copy). The system prompt and the task are
    kept, recent steps stay whole, long tool results are cut with a pointer to
    the full text and older steps are summarised; state and log keep it all.

    ```python
    agent = Agent(model, tools=[add], strategy="plan-act-reflect")
    result = agent.run_sync("What is 2 + 3?")
    ```
    """

    name: ClassVar[str] = "agent"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    tools: Sequence[Any] = ()
    strategy: Strategy = "react"
    effort: Effort = "medium"
    thinking_budget: int | None = None
    max_steps: int = 20
    max_tokens: int | None = None
    max_seconds: float | None = None
    max_retries: int = 3
    loop_repeats: int = 3
    replan_every: int = 5
    reflect_before_answer: bool = False
    answer_schema: type[BaseModel] | None = None
    context_window: int | ContextBudget | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr, value in vars(cls).items():
            if isinstance(value, Tool) and attr in _AGENT_NAMES:
                raise TypeError(
                    f"the tool method {cls.__name__}.{attr} would replace Agent.{attr}; give the method another "
                    f"name and keep the tool's with @tool(name={attr!r})"
                )

    def __init__(
        self,
        model: LLM | None = None,
        *,
        tools: Sequence[Any] | None = None,
        system_prompt: str | None = None,
        strategy: Strategy | None = None,
        effort: Effort | None = None,
        thinking_budget: int | None = None,
        max_steps: int | None = None,
        max_tokens: int | None = None,
        max_seconds: float | None = None,
        answer_schema: type[BaseModel] | None = None,
        reflect_before_answer: bool | None = None,
        replan_every: int | None = None,
        loop_repeats: int | None = None,
        max_retries: int | None = None,
        guards: Sequence[Any] | None | Literal["default"] = "default",
        approver: Approver | None = None,
        run_dir: str | Path | None = DEFAULT_RUN_DIR,
        workspace: str | Path | None = None,
        tool_options: dict[str, Any] | None = None,
        memory: Any = None,
        context_window: int | ContextBudget | None = None,
    ) -> None:
        if model is None:
            from .llm import TransformersLLM

            model = TransformersLLM()
        if not callable(getattr(model, "stream", None)):
            raise AgentError(
                f"the model must be an agent.llm backend (TransformersLLM, OpenAICompatLLM, ScriptedLLM, ...), "
                f"not {type(model).__name__}: {model!r:.60}"
            )
        self.model = model
        overrides = {
            "system_prompt": system_prompt,
            "strategy": strategy,
            "effort": effort,
            "thinking_budget": thinking_budget,
            "max_steps": max_steps,
            "max_tokens": max_tokens,
            "max_seconds": max_seconds,
            "answer_schema": answer_schema,
            "reflect_before_answer": reflect_before_answer,
            "replan_every": replan_every,
            "loop_repeats": loop_repeats,
            "max_retries": max_retries,
            "context_window": context_window,
        }
        for key, value in overrides.items():
            if value is not None:
                setattr(self, key, value)
        if self.strategy not in ("react", "plan-act-reflect"):
            raise AgentError(f"unknown strategy {self.strategy!r}; use 'react' or 'plan-act-reflect'")
        if self.effort not in EFFORTS:
            raise AgentError(f"unknown effort {self.effort!r}; use one of {', '.join(EFFORTS)}")
        self._check_settings()
        if isinstance(self.context_window, int) and self.context_window < 256:
            raise AgentError(f"context_window={self.context_window} is too small; give at least 256 tokens")
        schema = self.answer_schema
        if schema is not None and not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise AgentError(f"answer_schema must be a pydantic model class, not {schema!r}")
        if isinstance(tools, (str, Tool)):
            raise AgentError(f"tools must be a list (tools=[{tools!r}]), not one {type(tools).__name__}")
        self.workspace = Path(workspace) if workspace is not None else None
        options = {"workspace": self.workspace, **(tool_options or {})}
        self.memory, self.episodic, memory_tools = _split_memory(memory)
        self.tool_list: list[Tool] = bind_tools(
            self, [*(tools if tools is not None else self.tools), *memory_tools], options
        )
        names = [t.name for t in self.tool_list]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise AgentError(f"two tools share the name {duplicates[0]!r}; tool names must be unique")
        if FINAL_ANSWER in names:
            raise AgentError(
                f"a tool is named {FINAL_ANSWER!r}, the name the runtime gives the answer; "
                "rename it (a typed answer is `answer_schema=`)"
            )
        if guards != "default" and guards is not None and not isinstance(guards, (list, tuple)):
            raise AgentError(
                f"guards must be a list of guards (guards=[...]) or None, not {type(guards).__name__}"
            )
        if approver is not None and not callable(approver):
            raise AgentError(f"approver must be a function of the approval request, not {approver!r:.60}")
        if guards == "default":
            # Every agent is guarded unless its author opts out with guards=None.
            from guards import default_pipeline

            guards = [default_pipeline()]  # it learns our tools below, as any pipeline given does
        self.guards: list[Any] = self._interceptors(list(guards or []))
        for guard in self.guards:  # a pipeline made without tools=: which of ours only read, stay local
            learn = getattr(guard, "learn_tools", None)
            if learn is not None:
                learn(self.tool_list)
        self.approver = approver
        # Said at the first run, not here: an approver may be set after the agent is made (as chat does).
        self._gated = tuple(t.name for t in self.tool_list if t.needs_approval)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._runs: list[Run] = []
        # cancel() calls so far: a run asked for before one, and not yet started, is cancelled.
        self._cancels = 0
        self._last: Run | None = None
        # The event loop of sync calls (see `agent.sync`): the first caller's
        # thread's, kept so tools that hold async resources (kernels, HTTP
        # clients) keep working from one run_sync to the next.
        self._loop: sync.LoopHandle | None = None

    def _interceptors(self, guards: list[Any]) -> list[Any]:
        """The guards as the bus takes them: a pipeline (anything with `bind`) or an
        interceptor function stays as it is; guards written to the `Guard` protocol (a
        `name` and an async `check`) run in a pipeline of their own, with none of the
        default rules, as `GuardPipeline(guards=[...])` would run them."""
        bare = [g for g in guards if not hasattr(g, "bind") and hasattr(g, "check")]
        for g in guards:
            if not (hasattr(g, "bind") or hasattr(g, "check") or callable(g)):
                raise AgentError(
                    f"guards holds {g!r:.60}, which is no guard: give a GuardPipeline, an object with an "
                    "async check(event, stage) (the guards.Guard protocol), or an async interceptor function"
                )
        if not bare:
            return guards
        from guards import GuardPipeline

        pipeline = GuardPipeline(guards=bare, rules=[], classifier=False, tools=self.tool_list)
        at = guards.index(bare[0])
        kept = [g for g in guards if not any(g is b for b in bare)]
        return [*kept[:at], pipeline, *kept[at:]]

    def _check_settings(self) -> None:
        """Numbers a typo would only break mid-run (`max_steps="5"`): refused when the agent is made."""
        rules = (  # name, smallest value, may be None
            ("max_steps", 1, False),
            ("max_retries", 0, False),
            ("replan_every", 0, False),  # 0: no periodic re-plan
            ("loop_repeats", 0, False),  # 0: no loop detection
            ("max_tokens", 1, True),
            ("thinking_budget", 0, True),
        )
        for name, least, optional in rules:
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise AgentError(f"{name} must be a whole number of at least {least}, not {value!r}")
        if self.loop_repeats == 1:
            raise AgentError(
                "loop_repeats=1 would call every turn a loop; use 2 or more, or 0 to turn loop detection off"
            )
        seconds = self.max_seconds
        if seconds is not None and (
            not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds < math.inf
        ):  # (nan fails the comparison too)
            raise AgentError(f"max_seconds must be a positive number of seconds, not {seconds!r}")
        window = self.context_window
        if (
            window is not None
            and not hasattr(window, "fit")
            and (not isinstance(window, int) or isinstance(window, bool))
        ):  # (a number too small is refused with the reason when the budget is made)
            raise AgentError(
                f"context_window must be a number of tokens (context_window=8192) or a ContextBudget, not {window!r}"
            )
        if not isinstance(self.reflect_before_answer, bool):
            raise AgentError(
                f"reflect_before_answer must be True or False, not {self.reflect_before_answer!r}"
            )

    # -- hooks -------------------------------------------------------------

    def render_system_prompt(self) -> str:
        """The system prompt of a new run. Override to add context (sync or async)."""
        return self.system_prompt

    def context_budget(self) -> ContextBudget | None:
        """How a run fits its prompts to the context window; None sends the whole history.

        Called once per run before its first model call (on a worker thread
        when it may load the model). When the agent has the `read_file` tool,
        tool results cut short are saved under `.agent/observations/` in the
        workspace, or in the current directory when the run is logged there,
        and the cut points the model at them; without it, the cut only says
        what was left out.
        """
        # From the package: `from memory.context import ...` looks for a `__path__` the module
        # lacks, and formats the AttributeError it then drops, on every run.
        from memory import context

        if isinstance(self.context_window, context.ContextBudget):
            return self.context_window.clone()
        budget = context.ContextBudget.for_model(self.model, window=self.context_window)
        if budget is not None:  # where cut tool results go: paths only for a budget that may cut
            root = self.workspace
            if root is None and self.run_dir is not None:
                root = Path.cwd()
            if root is not None and any(t.name == "read_file" for t in self.tool_list):
                budget.spill_dir, budget.read_root = root / context.OBSERVATIONS_DIR, root
        return budget

    # Each hook takes one typed object and returns it, changed or not; a hook
    # may be sync or async. They run inside the loop, so a subclass changes
    # one decision without copying the loop.

    def plan(self, plan: Plan) -> Plan | Awaitable[Plan]:
        """A plan the model wrote, before it is recorded and shown to the model."""
        return plan

    def act(self, response: ModelResponse) -> ModelResponse | Awaitable[ModelResponse]:
        """The model's turn before its tool calls are dispatched (e.g. drop or rewrite calls).

        When every call is dropped, the model is told so and the run goes on: the
        words around the calls are not taken as the answer.
        """
        return response

    def observe(self, result: ToolResult) -> ToolResult | Awaitable[ToolResult]:
        """A tool's result before guards and the model see it (e.g. summarise it)."""
        return result

    def reflect(self, reflection: Reflection) -> Reflection | Awaitable[Reflection]:
        """A reflection the model wrote, before it is recorded."""
        return reflection

    def should_stop(self, state: RunState) -> str | None | Awaitable[str | None]:
        """Checked before every step: return a reason to end the run ("stopped")."""
        return None

    def on_event(self, event: Event) -> None | Awaitable[None]:
        """Called for every event of every run, in order. Override to observe.

        It may be sync or async. It watches the run and does not steer it: an
        exception it raises is logged (logger `agent`) and the run goes on.
        """

    # -- running -------------------------------------------------------------

    def run(self, task: str) -> EventStream:
        """Run `task`: `async for event in agent.run(task)` yields each event as it
        happens (the run goes on as they are read); `await agent.run(task)` runs it to
        the end and returns the `RunResult`. From sync code, use `run_sync`."""
        check_text(task, "the task")
        run = self._new_run()
        return EventStream(self._iterate(run, task, cancels=self._cancels), lambda: self._result(run), "run")

    def arun(self, task: str) -> Coroutine[Any, Any, RunResult]:
        """Run `task` to the end and return the result (a coroutine to await)."""
        check_text(task, "the task")
        # The run is made now, not when the coroutine starts: cancel() in between reaches it.
        return self._complete(self._new_run(), task, self._cancels)

    def run_sync(self, task: str) -> RunResult:
        """Run `task` from synchronous code. Ctrl-C cancels the run cleanly."""
        return self._sync(self.arun(task))

    def resume(self, run_id: str | Path) -> EventStream:
        """Continue an interrupted run from its log: its new events, as `run` gives them."""
        run = self._resumed_run(run_id)
        return EventStream(
            self._iterate(run, None, cancels=self._cancels), lambda: self._result(run), "resume"
        )

    async def aresume(self, run_id: str | Path) -> RunResult:
        """Continue an interrupted run to its end."""
        return await self._complete(self._resumed_run(run_id), None)

    def resume_sync(self, run_id: str | Path) -> RunResult:
        """Continue an interrupted run; completed tool calls are not repeated."""
        return self._sync(self.aresume(run_id))

    def cancel(self) -> None:
        """Stop every run of this agent at its next safe point: those going on, and those
        asked for (`arun`, `run`) that have not started yet."""
        try:
            self._cancels += 1
        except AttributeError:
            self._check_initialized()
            raise
        for run in self._runs:
            run.cancel()

    async def aclose(self) -> None:
        """Release what the tools hold (kernels, clients)."""
        for t in self.tool_list:
            await t.aclose()
        aclose = getattr(self.model, "aclose", None)
        if aclose is not None:
            await aclose()

    def close(self) -> None:
        """`aclose` from synchronous code, on the event loop the agent's sync calls used."""
        try:
            handle, self._loop = self._loop, None
        except AttributeError:
            self._check_initialized()
            raise
        sync.run(self.aclose(), handle)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- internals -----------------------------------------------------------

    def _new_run(self) -> Run:
        run_id = new_run_id()
        try:
            if self._gated and self.approver is None:
                _say_unapproved(self._gated)
            return self._wire(Run(self, run_id=run_id, bus=Bus(run_id)))
        except AttributeError:
            self._check_initialized()
            raise

    def _check_initialized(self) -> None:
        """After an AttributeError: say so clearly when a subclass skipped `Agent.__init__`."""
        if "_runs" not in self.__dict__:
            name = type(self).__name__
            raise AgentError(
                f"{name}.__init__ must call super().__init__(...) (with the model and options) "
                f"before the agent can run"
            ) from None

    def session(self, run: str | Path | None = None) -> Session:
        """A conversation: each message continues one run, with one log.

        Pass a run id (or 'last', or a log path) to pick up a saved session.
        """
        from .session import Session

        return Session(self, self._resumed_run(run, allow_ended=True) if run is not None else None)

    def _resumed_run(self, run: str | Path, *, allow_ended: bool = False) -> Run:
        try:
            run_dir = self.run_dir
        except AttributeError:
            self._check_initialized()
            raise
        path = find_run(run, run_dir or DEFAULT_RUN_DIR)
        # Read (and so check) the log before cutting its torn tail: a file that
        # is not a run log must be refused untouched, never trimmed.
        events = read_events(path)
        if not events:
            raise AgentError(f"run log {path} is empty; nothing to resume")
        if events[0].type != "run_started":  # it failed before it began: there is no task to go on with
            why = f" ({events[0].message})" if isinstance(events[0], Error) else ""
            raise AgentError(f"run {events[0].run_id} never started{why}; nothing to resume: start a new run")
        trim_torn_tail(path)
        state = RunState(events[0].run_id)
        for event in events:
            state.apply(event)
        if state.status in ("completed", "halted") and not allow_ended:
            raise AgentError(f"run {state.run_id} already ended ({state.status}); start a new run instead")
        bus = Bus(state.run_id, first_seq=events[-1].seq)
        run = self._wire(Run(self, run_id=state.run_id, bus=bus, state=state), path)
        if run.log is not None:
            run.log.open()  # another writer of this log is refused now, not at the first event
        return run

    def _wire(self, run: Run, log_path: Path | None = None) -> Run:
        for guard in self.guards:
            # A guard object with `bind` gets the run's bus (to record its
            # verdicts) and the agent's approver (to settle "ask" verdicts).
            bind = getattr(guard, "bind", None)
            run.bus.intercept(bind(run.bus, approver=self.approver) if bind else guard)
        if self.run_dir is not None:
            run.log = RunLog(log_path or os.path.join(self.run_dir, f"{run.run_id}.jsonl"))
            run.bus.subscribe(run.log, is_async=False)
        else:
            run.log = None
        observer = self._observer()
        if observer is not None:
            run.bus.subscribe(observer)
        return run

    def _observer(self) -> Any:
        """`on_event` as a subscriber that logs what it raises; None when it is the base one."""
        on_event = self.on_event
        if getattr(on_event, "__func__", None) is Agent.on_event:
            return None
        name = type(self).__name__

        def report(event: Event) -> None:
            _log.exception("%s.on_event raised on a %s event; the run goes on", name, event.type)

        if inspect.iscoroutinefunction(on_event):

            async def observe_async(event: Event) -> None:
                try:
                    await on_event(event)
                except Exception:
                    report(event)

            return observe_async

        def observe(event: Event) -> None:
            try:
                on_event(event)
            except Exception:
                report(event)

        return observe

    async def _execute(
        self, run: Run, task: str | None, follow_up: str | None = None, cancels: int | None = None
    ) -> None:
        """Run it; `cancels` is the agent's count of cancel() calls when the run was asked
        for: one since then cancels it before its first step."""
        if run.log is not None and run.log.failed is not None:  # a session's log stopped in an earlier turn
            raise AgentError(f"{run.log.failed}; this session cannot go on unrecorded: start a new one")
        self._runs.append(run)
        self._last = run
        try:
            await run.execute(
                task, follow_up=follow_up, cancelled=cancels is not None and cancels != self._cancels
            )
        finally:
            self._runs.remove(run)
            if run.log is not None and not run.hold_log:
                run.log.close()

    async def _iterate(
        self, run: Run, task: str | None, follow_up: str | None = None, *, cancels: int | None = None
    ) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        ended = False  # run_finished is handed over: what follows (an episode's record) is the run's own

        def hand_over(event: Event) -> None:
            nonlocal ended
            queue.put_nowait(event)
            ended = ended or event.type == "run_finished"

        run.bus.subscribe(hand_over, is_async=False)
        # The run goes on past its safe points (before a model call, before a tool runs) once
        # the caller has asked for the event after the last one: a caller that stops reading
        # (breaks out of its loop) stops the run there, and no tool call it has seen runs,
        # however fast the model.
        run.reader = queue.join

        async def work() -> None:
            try:
                await self._execute(run, task, follow_up, cancels)
            finally:
                run.reader = None
                run.bus.unsubscribe(hand_over)
                queue.put_nowait(None)

        worker = asyncio.create_task(work())
        try:
            while (event := await queue.get()) is not None:
                yield event
                queue.task_done()
            await worker
        finally:
            if not worker.done():
                current = asyncio.current_task()
                interrupted = current is not None and current.cancelling() > 0  # Ctrl-C, not the consumer
                if ended and not interrupted:  # the caller left at the end: the run finishes its bookkeeping
                    await worker
                else:
                    if not interrupted:
                        run.stop_reason = "the caller stopped reading the run's events"
                    worker.cancel()
                    try:
                        await worker
                    except asyncio.CancelledError:
                        pass

    async def _complete(self, run: Run, task: str | None, cancels: int | None = None) -> RunResult:
        await self._execute(run, task, cancels=cancels)
        return self._result(run)

    def _result(self, run: Run, since: tuple[int, int, Usage] | None = None) -> RunResult:
        """The run's result; `since` (events, step and usage at a session turn's
        start) makes it the result of that turn alone."""
        state = run.state
        log = run.log
        events, steps, usage = state.events, state.step, state.usage
        if since is not None:
            first, step, used = since
            events, steps, usage = events[first:], steps - step, usage - used
        # Values of our own types: built without validating a list of every event.
        return trusted(
            RunResult,
            run_id=run.run_id,
            status=state.status,
            answer=state.answer,
            error=state.error,
            steps=steps,
            usage=usage,
            events=events,
            log_path=log.file if log is not None else None,
        )

    def _sync(self, coro: Any) -> RunResult:
        try:
            handle = self._loop
        except AttributeError:
            coro.close()
            self._check_initialized()
            raise
        if handle is None or handle.loop.is_closed():
            with _loop_lock:  # two threads making the first call: one loop for the agent
                handle = self._loop
                if handle is None or handle.loop.is_closed():
                    handle = self._loop = sync.thread_loop()
        try:
            return sync.run(coro, handle)
        except KeyboardInterrupt:
            if self._last is None:
                raise
            return self._result(self._last)


def _say_unapproved(gated: tuple[str, ...]) -> None:
    """Warn, once a process (a batch makes many agents), that calls to these tools will be refused."""
    if gated in _warned_unapproved:
        return
    _warned_unapproved.add(gated)
    one = len(gated) == 1
    _log.warning(
        "%s need%s approval and no one is set to give it (approver=; --yes or a terminal on the command "
        "line): every call to %s is refused",
        ", ".join(gated),
        "s" if one else "",
        "it" if one else "them",
    )


def check_text(text: Any, what: str) -> None:
    """Refuse a task or message that is not text a model can read: not a str, empty, or holding a
    lone surrogate (bytes that were not UTF-8, from a command line or a file read with
    `surrogateescape`), which no log or model could take."""
    if not isinstance(text, str):
        raise AgentError(f"{what} must be a str, not {type(text).__name__}")
    if not text.strip():
        raise AgentError(f"{what} is empty; say what the agent should do")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            bad = text[e.start]
            byte = f"byte 0x{ord(bad) - 0xDC00:02x}" if "\udc80" <= bad <= "\udcff" else f"U+{ord(bad):04X}"
            raise AgentError(
                f"{what} is not valid UTF-8 text ({byte} at character {e.start}); give it as UTF-8"
            ) from None


# What a tool method must not be called: it would replace the agent's own attribute.
_AGENT_NAMES = frozenset(name for name in dir(Agent) if not name.startswith("__"))
