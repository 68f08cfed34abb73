"""The control loop of one run: ask the model, dispatch tools, observe, repeat.

A `Run` owns a bus and a `RunState`. Everything it does is an event on the
bus; the state is rebuilt from those events, so the live loop and a resumed
one follow the same path. Model mistakes (bad JSON, unknown tools, invalid
arguments, tool errors) become observations for the model; only
infrastructure faults and exhausted budgets end a run early.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from . import sync
from .bus import _ALLOW, Bus, Decision
from .events import (
    ApprovalGiven,
    ApprovalRequested,
    Error,
    Feedback,
    FinalAnswer,
    ModelDelta,
    ModelRequest,
    ModelResponse,
    Plan,
    Reflection,
    RunFinished,
    RunStarted,
    RunStatus,
    ToolCall,
    ToolErrorKind,
    ToolResult,
    UserMessage,
)
from .guard import approval_of
from .llm.base import LLMRequest
from .runlog import RunLog
from .state import RunState
from .tool import (
    OUTPUT_LIMIT,
    FunctionTool,
    Tool,
    ToolBlocked,
    ToolError,
    _context,
    check_tool,
    format_validation_error,
    model_text,
    render_output,
)
from .types import EFFORTS, Effort, Message, ToolCallRequest, Usage, new_call_id, trusted, updated

if TYPE_CHECKING:
    from .agent import Agent

_log = logging.getLogger("agent")

FINAL_ANSWER = "final_answer"
_CUT_OFF = "(reply cut off)"  # the retry budget's key for replies cut off at the output limit
CUT_OFF_PROMPT = (
    "Your reply was cut off at the output token limit before it ended, so it is not taken as the answer. "
    "Answer again, more briefly."
)
_EMPTY = "(empty reply)"  # the retry budget's key for replies with nothing in them
EMPTY_PROMPT = "Your reply was empty, so there is no answer yet. Answer the task, or call one of the tools."
_UNSET: Any = object()
_REFUSED = ("block", "halt")  # guard verdicts that stop an event from taking effect
Purpose = Literal["act", "plan", "reflect"]
Approver = Callable[[ApprovalRequested], "bool | Awaitable[bool]"]

PLAN_PROMPT = (
    "Before acting, write a short numbered plan (at most 6 steps) for the task. "
    "Name the tools you will use. Do not call any tool now."
)
REPLAN_PROMPT = (
    "Review the progress so far and write an updated short numbered plan for what remains. "
    "Do not call any tool now."
)
REFLECT_PROMPTS = {
    "error": "The last step failed. In two or three sentences: what went wrong, and what will you do differently?",
    "loop": "You are repeating the same actions without progress. In two or three sentences: why, and what "
    "different approach will you take?",
    "final": "Before you answer: check your answer against the task. If it is right, give the final answer "
    "again; if not, say what is missing and continue.",
    "stuck": "Progress has stalled. In two or three sentences: what is blocking you and what will you try next?",
}


class _Stop(Exception):
    """Ends the run with a status; raised from deep inside a step."""

    def __init__(self, status: RunStatus, error: str | None = None) -> None:
        super().__init__(error or status)
        self.status = status
        self.error = error


@dataclass
class _Prepared:
    call: ToolCallRequest
    tool: Tool
    args: BaseModel


CUT_SHORT = "the reply reached the output limit inside this call, so its arguments may be incomplete"


def _reuses_ids(calls: list[ToolCallRequest], state: RunState) -> bool:
    """Whether a call has the id of an earlier call of the run or of another call of its turn.

    Some servers number each reply's calls from call_0: a repeated id would pair a result
    with the wrong call, and a resumed run would take an interrupted call for a finished one.
    """
    results, started = state.results, state.started
    ids = [c.id for c in calls]
    return len(set(ids)) < len(ids) or any(i in results or i in started for i in ids)


def _renumbered(calls: list[ToolCallRequest], state: RunState) -> list[ToolCallRequest]:
    """The calls, those with an id already used given a new one (copies: the backend's stay)."""
    taken = set(state.results) | set(state.started)
    out = []
    for call in calls:
        if call.id in taken:
            call = updated(call, id=new_call_id())
        taken.add(call.id)
        out.append(call)
    return out


def _cut_short(calls: list[ToolCallRequest]) -> list[ToolCallRequest]:
    """The calls of a reply cut off at the output limit: the last one may have lost
    arguments (a parser that closes brackets, or a server's, would still read it), so it
    is not run; the model is asked to write it again."""
    last = calls[-1]
    if last.parse_error == CUT_SHORT:
        return calls
    # Unreadable JSON too: the limit cut it, and the model is told so (not that its JSON is bad).
    raw = last.raw_arguments or (json.dumps(last.arguments) if last.arguments is not None else "")
    cut = updated(
        last,
        arguments=None,
        raw_arguments=raw,
        parse_error=CUT_SHORT,
    )
    return [*calls[:-1], cut]


def _own_call(call: ToolCallRequest) -> ToolCallRequest:
    """A copy of a call and of its argument dict (the values in it are shared)."""
    arguments = call.arguments
    return updated(call, arguments=dict(arguments)) if arguments is not None else updated(call)


def _pending(value: Any) -> bool:
    """Whether a hook's return value must be awaited (hooks may be sync or async)."""
    # Hooks mostly hand back None or an event: settle those before
    # inspect.isawaitable, whose ABC check costs more than the hook.
    return value is not None and not hasattr(value, "__pydantic_fields__") and inspect.isawaitable(value)


async def _maybe_await(value: Any) -> Any:
    return await value if _pending(value) else value


def _hooked(value: Any, kind: type, hook: str, agent: Any) -> Any:
    """A hook's return value, checked: a hook that forgets to return its argument, or hands
    back one changed into what its type does not allow (`model_copy(update=...)` checks
    nothing), fails clearly. Validated again, so a call given as a dict becomes a call."""
    if not isinstance(value, kind):
        raise TypeError(
            f"{type(agent).__name__}.{hook}() must return the {kind.__name__} it was given (or a changed "
            f"one), not {type(value).__name__}"
        )
    try:
        return type(value).model_validate(dict(value.__dict__))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or kind.__name__}: {err['msg']}" for err in e.errors()[:3]
        )
        raise TypeError(
            f"{type(agent).__name__}.{hook}() returned a {kind.__name__} that is not valid: {problems}"
        ) from None


# Hooks that hand their argument back unchanged in the base class: the loop
# skips the call when an agent leaves them so.
_SKIPPABLE = ("should_stop", "act", "observe")
_base_hooks: tuple[Callable[..., Any], ...] = ()


def _hooks(agent: Agent) -> list[Callable[[Any], Any] | None]:
    """The agent's skippable hooks, in `_SKIPPABLE` order; None for each it leaves as the base class has it.

    A hook overridden in a subclass or set on the instance counts. Asked of
    the bound method, not of `vars(agent)`: that would build the instance's
    attribute dict, which costs more than the three lookups.
    """
    global _base_hooks
    if not _base_hooks:
        from .agent import Agent

        _base_hooks = tuple(getattr(Agent, n) for n in _SKIPPABLE)
    found: list[Callable[[Any], Any] | None] = []
    for name, base in zip(_SKIPPABLE, _base_hooks, strict=True):
        hook = getattr(agent, name)
        found.append(None if getattr(hook, "__func__", None) is base else hook)
    return found


def _raise_effort(effort: Effort) -> Effort:
    return EFFORTS[min(EFFORTS.index(effort) + 1, len(EFFORTS) - 1)]


def _signature(name: str, arguments: dict[str, Any] | None) -> str:
    return name + json.dumps(arguments, sort_keys=True, default=str)


_Call = tuple[str, dict[str, Any] | None]  # a call's (name, arguments)


def _same_turn(a: tuple[_Call, ...], b: tuple[_Call, ...]) -> bool:
    """The same calls with the same arguments, in the same order, as JSON (1 and true
    differ). Plain equality first, in C: it settles most pairs without encoding anything."""
    return a == b and all(_signature(*x) == _signature(*y) for x, y in zip(a, b, strict=True))


class _FinalAnswerTool(Tool):
    """The built-in way to end a run, typed by the agent's answer schema."""

    name = FINAL_ANSWER
    effects = frozenset()

    def __init__(self, schema: type[BaseModel] | None) -> None:
        self.schema_model = schema
        if schema is None:
            from pydantic import create_model

            self.Args = create_model("FinalAnswerArgs", answer=(str, ...))  # type: ignore[misc]
            self.description = "Give the final answer to the task and end the run."
        else:
            self.Args = schema  # type: ignore[misc]
            self.description = f"Give the final answer as a {schema.__name__} object and end the run."

    async def run(self, args: BaseModel) -> Any:
        # The loop ends the run on this call itself; run() only echoes the answer.
        return args if self.schema_model is not None else args.answer  # type: ignore[attr-defined]


_final_tools: dict[type[BaseModel] | None, _FinalAnswerTool] = {}


_FINAL_TOOLS_KEPT = 64  # schemas made on the fly (one per request) must not pile up


def _final_answer_tool(schema: type[BaseModel] | None) -> _FinalAnswerTool:
    # Shared per schema: building a tool's JSON schema costs milliseconds.
    made = _final_tools.get(schema)
    if made is None:
        if len(_final_tools) >= _FINAL_TOOLS_KEPT:
            del _final_tools[next(iter(_final_tools))]  # the oldest
        made = _final_tools[schema] = _FinalAnswerTool(schema)
    return made


class Run:
    """One execution of an agent on one task."""

    # What a run starts with, as class attributes: set on the instance when they change.
    # (Seventeen fewer stores a run, and an instance dict small enough to share its keys.)
    _constrain_next = False  # the next act call is a malformed call's last retry
    _errors_in_row = 0
    _effort_boost = False
    _final_reflected = False
    _cancel = False  # a plain flag: cancel() may come from another thread
    stop_reason: str | None = None  # why the run's task is cancelled, when not by the user
    _deadline: float | None = None
    _first_step = 0
    _first_tokens = 0  # tokens used before this call of execute(): budgets count from its start
    _finished = False
    _conversation = False  # a session's later message has come: see ContextBudget.fit
    log: RunLog | None = None
    hold_log = False  # a session keeps its log open (and locked) between messages
    # While a caller reads the run's events (`Agent.run`): waits until it has read them all.
    reader: Callable[[], Awaitable[Any]] | None = None
    _budget: Any = _UNSET  # the run's ContextBudget (or None), made on the first model call
    _output_limit: int | None = OUTPUT_LIMIT  # characters of a tool result; None once a budget is made
    _held_back: list[str] | None = None  # the calls an `act` hook dropped from the last reply
    # A later message of a session: where its user message is in the events, and the
    # session's events, steps and tokens before it (its episode and its result count
    # their own).
    _turn: int | None = None
    _turn_start: tuple[int, int, Usage] | None = None
    # What guards said to events tools emitted (see emit_for): the calls one was refused
    # in, and a halt, which ends the run once the turn's calls are done.
    _refused_in: frozenset[str] = frozenset()
    _halt: str | None = None

    def __init__(
        self,
        agent: Agent,
        *,
        run_id: str,
        bus: Bus,
        state: RunState | None = None,
    ) -> None:
        self.agent = agent
        self.llm = agent.model
        self.run_id = run_id
        self.bus = bus
        self.state = state or RunState(run_id)
        self.tools: dict[str, Tool] = {t.name: t for t in agent.tool_list}
        self.final_tool = _final_answer_tool(agent.answer_schema)
        offered = [*self.tools.values(), self.final_tool]
        self._schemas = [t.schema() for t in offered]
        self._tool_names = [t.name for t in offered]
        self._retries: dict[str, int] = {}
        # The calls of each recent turn: loops are turns that repeat, not calls
        # (three identical calls in one turn, "roll three dice", are no loop).
        self._recent: list[tuple[_Call, ...]] = []
        self._should_stop, self._act, self._observe = _hooks(agent)
        self._answers_written: dict[str, ToolCallRequest] = {}  # final_answer calls before a guard's rewrite
        bus.subscribe(self.state.apply, is_async=False)

    def emit_for(self, call_id: str) -> Callable[[Any], Awaitable[Decision]]:
        """How a tool (or the run's own recall, call id "") puts an event on the bus: as
        `bus.emit`, noting a refusal (its ToolBlocked is then the runtime's own text) and a
        halt (the run stops after this turn's calls)."""

        async def emit(event: Any) -> Decision:
            decision = await self.bus.emit(event)
            if decision is not _ALLOW and decision.action in _REFUSED:
                self._refused_in = self._refused_in | {call_id}
                if decision.action == "halt" and self._halt is None:
                    self._halt = decision.feedback or "halted by a guard"
            return decision

        return emit

    # -- public control -------------------------------------------------

    def cancel(self) -> None:
        """Stop at the next safe point (before a model call or a tool call)."""
        self._cancel = True

    async def execute(
        self, task: str | None, *, follow_up: str | None = None, cancelled: bool = False
    ) -> RunState:
        """Run the task, or continue the run's state when `task` is None.

        A `follow_up` message continues a run that may have ended (a chat turn):
        it is added as a new user message and the loop goes on from there.
        Budgets count from the start of this call.
        """
        agent = self.agent
        self._cancel = cancelled  # cancelled before it began: it stops at its first safe point
        self._finished = False  # this call's RunFinished is out: a later fault must not end the run again
        if follow_up is not None:  # a new message: nothing of the last one's turns carries over
            self._new_message()
            self._turn_start = (len(self.state.events), self.state.step, self.state.usage)
        self._first_step = self.state.step
        self._first_tokens = self.state.total_tokens
        self._deadline = time.monotonic() + agent.max_seconds if agent.max_seconds is not None else None
        try:
            try:
                if task is not None:
                    await self._start(task)
                else:
                    await self._restart(follow_up=follow_up is not None)
                if follow_up is not None:
                    decision = await self.bus.emit(UserMessage(content=follow_up, step=self.state.step))
                    if decision.action in _REFUSED:
                        raise _Stop("halted", decision.feedback or "the message was refused by a guard")
                    # The message as recorded (a guard may have redacted it): the last one.
                    events = self.state.events
                    self._turn = next(
                        i for i in range(len(events) - 1, -1, -1) if events[i].type == "user_message"
                    )
                while True:
                    await self._step()
            except _Stop as stop:
                await self._finish(stop.status, stop.error)
        except asyncio.CancelledError:
            # Ctrl-C or a cancelled task: record it, then let cancellation go on.
            if not self._finished:
                why = self.stop_reason or sync.stop_reason or "cancelled by the user"
                await self._finish("cancelled", why)
            raise
        except Exception as e:  # infrastructure fault: record it, and end the run once
            message = f"{type(e).__name__}: {e}"
            # The run records the message; the traceback (a hook's or a backend's bug) is for
            # whoever asks the logger for it (the CLI does with AGENT_DEBUG=1).
            _log.debug("run %s failed: %s", self.run_id, message, exc_info=True)
            try:
                retryable = getattr(e, "retryable", None)
                await self.bus.deliver(
                    Error(
                        kind=type(e).__name__,
                        message=message,
                        fatal=True,
                        retryable=retryable if isinstance(retryable, bool) else None,
                        step=self.state.step,
                    )
                )
                if not self._finished:
                    await self._finish("failed", message)
            except Exception:  # recording failed as well (a full disk): the state still says how it ended
                if not self._finished:
                    self.state.status, self.state.error = "failed", message
        return self.state

    def _new_message(self) -> None:
        self._conversation = True  # the first message is no longer the task: it may be folded
        self._retries.clear()
        self._recent.clear()
        self._errors_in_row = 0
        self._effort_boost = self._constrain_next = self._final_reflected = False

    # -- the steps ---------------------------------------------------------

    async def _start(self, task: str) -> None:
        agent = self.agent
        prompt = agent.render_system_prompt()
        if _pending(prompt):  # an async override
            prompt = await prompt
        # The two values from outside are checked here; the rest the agent checked when it was made.
        for what, value in (("the task", task), ("render_system_prompt()", prompt)):
            if not isinstance(value, str):
                raise TypeError(f"{what} must be a str, not {type(value).__name__}")
        started = trusted(
            RunStarted,
            task=task,
            agent=agent.name,
            strategy=agent.strategy,
            model=getattr(self.llm, "name", type(self.llm).__name__),
            effort=agent.effort,
            tools=self._tool_names,
            system_prompt=prompt,
            workspace=os.path.abspath(agent.workspace) if agent.workspace is not None else None,
        )
        bus = self.bus
        message = trusted(UserMessage, content=task)
        if not bus.judging:
            bus.emit_now(started, judge=False) or await bus.emit(started, judge=False)
            bus.emit_now(message) or await bus.emit(message)
        else:
            # The task is judged before run_started records it: a guard's redaction of a
            # secret in it reaches the log's run_started, the episode and the recall too.
            # What the judgement records (its verdicts) waits to follow run_started.
            decision = _ALLOW
            bus.hold()
            try:
                decision = await bus.judge(message)
            finally:
                held = bus.release()
                if decision.action == "rewrite":
                    message = decision.event  # type: ignore[assignment]
                    started = updated(started, task=message.content)
                await bus.deliver(started)
                for event in held:
                    await bus.deliver(event)
            if decision.action in _REFUSED:
                raise _Stop("halted", decision.feedback or "the task was refused by a guard")
            await bus.deliver(message)
        if agent.episodic is not None:
            await self._recall(message.content)
        if agent.strategy == "plan-act-reflect":
            await self._plan("initial")

    async def _recall(self, task: str) -> None:
        """Lessons from similar past runs, shown to the model before it plans."""
        from memory.episodic import format_lessons, recall_for_run

        try:
            lessons = await recall_for_run(self.agent.episodic, task, self.emit_for(""), step=0)
        except Exception as e:  # a damaged store: the run goes on without lessons, and the log says why
            await self.bus.deliver(
                Error(kind="memory", message=f"could not recall past episodes: {e}", step=0)
            )
            return
        if self._halt is not None:  # a guard halted the recall: the run does not begin
            raise _Stop("halted", self._halt)
        if lessons:
            await self.bus.emit(Feedback(content=format_lessons(lessons), reason="recall"), judge=False)

    async def _restart(self, *, follow_up: bool = False) -> None:
        """Continue a run from its state: settle what a crash or a budget left open.

        Calls left without results are settled. A final answer recorded just
        before a crash ends the run as completed, with that answer. A model
        reply that was not yet taken as the answer becomes it, unless a
        follow-up message continues the conversation from it.
        """
        state = self.state
        ended = state.status in ("completed", "halted")
        answered = state.status == "running" and self._answered_since_start()
        await self.bus.deliver(
            RunStarted(
                task=state.task,
                agent=self.agent.name,
                strategy=self.agent.strategy,
                model=getattr(self.llm, "name", type(self.llm).__name__),
                effort=self.agent.effort,
                tools=self._tool_names,
                resumed=True,
                step=state.step,
            )
        )
        if answered and not follow_up:
            schema = self.agent.answer_schema
            if schema is not None and isinstance(state.answer, dict):  # the log holds the typed answer's JSON
                try:
                    state.answer = schema.model_validate(state.answer)
                except ValidationError:  # a guard's redaction broke a constraint: the recorded dict, as live
                    pass
            raise _Stop("completed")
        state.answer = state.answer_text = None
        if ended:
            return
        if not follow_up:
            self._final_reflected = self._reflected_on_answer()
        response = state.last_response
        if response is None:
            if not follow_up and self.agent.strategy == "plan-act-reflect" and state.plan is None:
                await self._plan("initial")  # the crash came before the plan was made
            return
        pending = set(state.unfinished_calls())
        if response.tool_calls and pending:
            await self._handle_calls([c for c in response.tool_calls if c.id in pending], resumed=True)
        elif (
            not response.tool_calls
            and not follow_up
            and response.finish_reason != "cancelled"  # a reply cut mid-stream is no answer: ask again
            and not self._after_response(response)
        ):
            if (
                response.finish_reason == "tool_calls" and self._act is not None
            ):  # an act hook held the calls back
                await self._say_held_back([], response.step)
            else:
                await self._handle_text_answer(response)
            return
        if not follow_up:
            await self._redo_interrupted_note()

    def _reflected_on_answer(self) -> bool:
        """Whether the model reflected before answering since the last user message."""
        for event in reversed(self.state.events):
            if event.type == "reflection" and event.reason == "final":
                return True
            if event.type in ("user_message", "run_started") and not getattr(event, "resumed", False):
                return False
        return False

    async def _redo_interrupted_note(self) -> None:
        """A re-plan or reflection the crash cut short is made again, as the live run would have.

        A periodic re-plan needs nothing here (the next step makes it), nor a final
        reflection (the answer it checks is handled again above).
        """
        for event in reversed(self.state.events):
            if event.type in ("plan", "reflection"):
                return
            if event.type == "model_request":
                if event.purpose == "act":
                    return
                reason = event.reason
                if event.purpose == "plan" and reason == "stuck":
                    await self._plan("stuck")
                elif event.purpose == "reflect" and reason in ("error", "loop", "stuck"):
                    await self._reflect(reason)
                    if reason == "loop" and self.agent.strategy == "plan-act-reflect":
                        await self._plan("stuck")
                return

    def _answered_since_start(self) -> bool:
        """Whether a final answer was recorded since the run (or its last resume) started."""
        for event in reversed(self.state.events):
            if event.type == "final_answer":
                return True
            if event.type == "run_started":
                return False
        return False

    def _after_response(self, response: ModelResponse) -> bool:
        """Whether anything was recorded after the last model response."""
        events = self.state.events
        index = max(i for i, e in enumerate(events) if e is response)
        return any(isinstance(e, (Feedback, FinalAnswer, Reflection, Plan)) for e in events[index + 1 :])

    async def _step(self) -> None:
        agent = self.agent
        self._check_stop()
        if self._should_stop is not None:
            reason = self._should_stop(self.state)
            if _pending(reason):
                reason = await reason
            if reason:
                raise _Stop("stopped", str(reason))
        if self.state.step - self._first_step >= agent.max_steps:
            raise _Stop("max_steps", f"stopped after {agent.max_steps} steps without a final answer")
        step = self.state.step + 1
        if (
            agent.strategy == "plan-act-reflect"
            and agent.replan_every
            and step > 1
            and (step - 1) % agent.replan_every == 0
            and self.state.plan_step < step - 1  # not just after a plan (a loop's re-plan)
        ):
            await self._plan("periodic")
        effort = _raise_effort(agent.effort) if self._effort_boost else agent.effort
        self._effort_boost = False
        response = await self._call_model("act", step=step, effort=effort)
        if response is None:
            return
        if self._retries:  # the budgets for cut-off and empty replies count them in a row
            if _CUT_OFF in self._retries and response.finish_reason != "length":
                del self._retries[_CUT_OFF]
            if _EMPTY in self._retries and (response.tool_calls or response.content.strip()):
                del self._retries[_EMPTY]
        calls = response.tool_calls
        if calls:
            await self._handle_calls(calls)
        elif self._held_back:
            names, self._held_back = self._held_back, None
            await self._say_held_back(names, step)
        else:
            await self._handle_text_answer(response)

    async def _call_model(
        self,
        purpose: Purpose,
        *,
        step: int,
        effort: Effort,
        instruction: str | None = None,
        reason: str | None = None,
    ) -> ModelResponse | None:
        """One model call, streamed onto the bus. None when a guard blocked it."""
        self._check_stop()
        budgeted = self.agent.max_tokens is not None  # most runs have no token budget: no call to check it
        if budgeted:
            self._check_tokens()
        messages = self.state.messages
        if instruction is not None:
            messages = [*messages, Message(role="user", content=instruction)]
        acting = purpose == "act"
        required = acting and self._constrain_next
        if acting:
            self._constrain_next = False
        request = trusted(
            LLMRequest,
            messages=messages,
            tools=self._schemas if acting else [],
            tool_choice="required" if required else "auto" if acting else "none",
            effort=effort,
            thinking_budget=self.agent.thinking_budget,
            max_new_tokens=None,
            temperature=None,
            stop=[],
            purpose=purpose,
        )
        if self._budget is _UNSET:  # reading the tokenizer and window may load the model: off the loop then
            make = self.agent.context_budget
            self._budget = make() if getattr(self.llm, "loaded", True) else await asyncio.to_thread(make)
            # With a budget a tool result is kept whole (the budget cuts the prompt); without, it is capped.
            self._output_limit = None if self._budget is not None else OUTPUT_LIMIT
        if self._budget is not None:  # only the prompt is fitted; state and log keep everything
            request = self._budget.fit(request, keep_task=not self._conversation)
            messages = request.messages
        bus = self.bus
        started = trusted(
            ModelRequest,
            purpose=purpose,
            effort=effort,
            messages=len(messages),
            tools=self._tool_names if acting else [],
            reason=reason,
            step=step,
        )
        # emit_now(...) or await emit(...): a coroutine only when the bus needs one.
        bus.emit_now(started, judge=False) or await bus.emit(started, judge=False)
        if self.reader is not None:  # a safe point: the caller may have stopped reading
            await self.reader()
        stream = self._stream(request, step)
        deadline = self._deadline
        response = await stream if deadline is None else await self._with_deadline(stream, deadline)
        # Plain writes of our own typed values: pydantic's __setattr__ costs more.
        fields = response.__dict__
        fields["step"], fields["purpose"], fields["effort"] = step, purpose, effort
        if fields["finish_reason"] == "length" and fields["tool_calls"]:
            fields["tool_calls"] = _cut_short(fields["tool_calls"])
        if acting and self._act is not None:
            # The hook gets calls of its own: it may change them in place, and the backend's
            # (a ScriptedLLM's script) stay as they were.
            fields["tool_calls"] = [_own_call(c) for c in response.tool_calls]
            called = [c.name for c in response.tool_calls]  # now: a hook may empty the list in place
            response = self._act(response)
            if _pending(response):
                response = await response
            response = _hooked(response, ModelResponse, "act", self.agent)
            # Every call dropped: the words around them are no answer (see _step).
            self._held_back = called if called and not response.tool_calls else None
            fields = response.__dict__
        calls = fields["tool_calls"]
        if acting and calls:
            state = self.state
            if len(calls) == 1:  # most turns: checked here, without a call of _reuses_ids
                call_id = calls[0].id
                reused = call_id in state.results or call_id in state.started
            else:
                reused = _reuses_ids(calls, state)
            if reused:
                fields["tool_calls"] = _renumbered(calls, state)
        decision = bus.emit_now(response) or await bus.emit(response)
        if decision is _ALLOW:  # most events: no verdict to read (each read goes through pydantic's hook)
            pass
        elif decision.action == "rewrite":
            # An answer given through final_answer as the model wrote it: should the redacted
            # one no longer fit the answer schema, it is taken and judged again as the answer.
            self._answers_written = {c.id: c for c in response.tool_calls if c.name == FINAL_ANSWER}
            response = decision.event  # type: ignore[assignment]
        elif decision.action in _REFUSED and await self._refused(
            decision, step, "Your last reply was blocked."
        ):
            return None
        if response.finish_reason == "content_filter":  # a plan or reflection as much as an answer
            raise _Stop("failed", "the model server's content filter stopped the reply")
        # An answer the budget already paid for is taken (as text or a final_answer call);
        # calls of other tools are not run.
        if budgeted and (not acting or any(c.name != FINAL_ANSWER for c in response.tool_calls)):
            self._check_tokens()
        return response

    def _tokens_spent(self) -> bool:
        max_tokens = self.agent.max_tokens
        return max_tokens is not None and self.state.total_tokens - self._first_tokens >= max_tokens

    def _check_tokens(self) -> None:
        if self._tokens_spent():
            used = self.state.total_tokens - self._first_tokens
            raise _Stop("max_tokens", f"used {used} of {self.agent.max_tokens} tokens")

    async def _stream(self, request: LLMRequest, step: int) -> ModelResponse:
        response: ModelResponse | None = None
        bus = self.bus
        stream = self.llm.stream(request)
        deltas: list[ModelDelta] = []  # what was shown live, recorded should the reply be cut
        try:
            async for item in stream:
                if item.type == "model_delta":  # the tag, not isinstance: cheaper on pydantic classes
                    # A delta per token on a real model: no pydantic __setattr__, no coroutine unless needed.
                    item.__dict__["step"] = step
                    deltas.append(item)
                    bus.emit_now(item, judge=False) or await bus.emit(item, judge=False)
                    if self._cancel:  # cancel() during a long reply: stop it, and close its connection now
                        aclose = getattr(stream, "aclose", None)
                        if aclose is not None:
                            await aclose()
                        raise _Stop("cancelled", "cancelled")
                else:
                    response = item
        except (asyncio.CancelledError, _Stop):  # Ctrl-C, cancel() or the run's deadline mid-reply
            if deltas and response is None:
                await self._record_cut_reply(request, step, deltas)
            raise
        if response is None:
            raise RuntimeError(f"{self.llm.name}: the model stream ended without a response")
        return response

    async def _record_cut_reply(self, request: LLMRequest, step: int, deltas: list[ModelDelta]) -> None:
        """The part of a reply the user saw before it was cut, as a `model_response` with
        finish_reason "cancelled": the log and the conversation keep it (it is not an answer)."""
        cut = trusted(
            ModelResponse,
            purpose=request.purpose,
            content="".join(d.content for d in deltas),
            thinking="".join(d.thinking for d in deltas),
            effort=request.effort,
            finish_reason="cancelled",
            model=getattr(self.llm, "name", ""),
            step=step,
        )
        await self.bus.emit(cut)

    # -- answers -----------------------------------------------------------

    async def _say_held_back(self, names: list[str], step: int) -> None:
        if names:
            note = f"Your call to {', '.join(dict.fromkeys(names))} was not run: the agent held it back."
        else:
            note = "Your tool calls were not run: the agent held them back."
        note += " Go on another way, or answer."
        await self.bus.emit(Feedback(content=note, reason="held_back", step=step), judge=False)

    async def _ask_again(self, key: str, prompt: str, reason: str, what: str, step: int) -> None:
        """A reply that is no answer: ask again, until the budget for such replies in a row is spent."""
        used = self._retries.get(key, 0) + 1
        self._retries[key] = used
        if used > self.agent.max_retries:
            raise _Stop("failed", f"the model's reply was {what} {used} times")
        await self.bus.emit(Feedback(content=prompt, reason=reason, step=step), judge=False)

    async def _handle_text_answer(self, response: ModelResponse) -> None:
        step = self.state.step
        if response.finish_reason == "length":  # cut off: not an answer; ask for a shorter one
            await self._ask_again(_CUT_OFF, CUT_OFF_PROMPT, "cut_off", "cut off at its output limit", step)
            return
        if not response.content.strip():  # said nothing (or only thought): no answer to take
            await self._ask_again(_EMPTY, EMPTY_PROMPT, "empty", "empty", step)
            return
        if self.agent.answer_schema is not None:
            schema = json.dumps(self.final_tool.schema()["function"]["parameters"])
            await self._malformed(
                FINAL_ANSWER,
                f"Answer by calling the {FINAL_ANSWER} tool with arguments matching this schema: {schema}",
                None,
                "invalid_arguments",
                step,
            )
            return
        await self._final(response.content, None, step)

    async def _final(self, content: str, data: BaseModel | dict[str, Any] | None, step: int) -> None:
        agent = self.agent
        if (
            agent.reflect_before_answer
            and not self._final_reflected
            and self.state.step - self._first_step < agent.max_steps  # a step is left to answer after it
            and not self._tokens_spent()  # nor is there when the token budget is
        ):
            self._final_reflected = True
            await self._reflect("final")
            return
        recorded_data = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        answer = trusted(FinalAnswer, content=content, data=recorded_data, step=step)
        decision = self.bus.emit_now(answer) or await self.bus.emit(answer)
        if (
            decision is not _ALLOW
            and decision.action in _REFUSED
            and await self._refused(decision, step, "Your answer was blocked.")
        ):
            return
        if data is not None:  # the typed answer, from what was recorded (a guard may have redacted it)
            recorded = decision.event.data if decision.action == "rewrite" else None  # type: ignore[union-attr]
            if recorded is None:
                self.state.answer = data
            elif isinstance(data, dict):  # already the redacted dict its schema no longer holds
                self.state.answer = recorded
            else:
                try:
                    self.state.answer = type(data).model_validate(recorded)
                except ValidationError:  # a redaction broke a constraint: the recorded dict, then
                    self.state.answer = recorded
        raise _Stop("completed")

    # -- tools -------------------------------------------------------------

    async def _handle_calls(self, calls: list[ToolCallRequest], *, resumed: bool = False) -> None:
        step = self.state.step
        errors_before = self.state.tool_errors
        ready: list[_Prepared] = []
        final: tuple[ToolCallRequest, BaseModel] | None = None
        for call in calls:
            if resumed and call.id in self.state.started:
                await self._settle_interrupted(call, step)
                continue
            prepared = self._prepare(call)
            if type(prepared) is not _Prepared:  # a mistake to tell the model about
                await self._malformed(*prepared, step)
                continue
            if prepared.tool is self.final_tool:
                final = (call, prepared.args)
            else:
                ready.append(prepared)
        if len(ready) > 1 and all(p.tool.read_only for p in ready):
            await self._execute_together(ready, step)
        else:
            for p in ready:
                await self._execute(p, step)
                if self._halt is not None:  # a guard halted what the tool emitted: nothing more runs
                    break
        if self._halt is not None:
            raise _Stop("halted", self._halt)
        failed = self.state.tool_errors > errors_before
        self._errors_in_row = self._errors_in_row + 1 if failed else 0
        if self._errors_in_row >= 2:
            self._effort_boost = True
        if final is not None:
            call, args = final
            await self._tool_result(
                call.id, FINAL_ANSWER, "Final answer received.", step, error=None, judge=False
            )
            if isinstance(args, dict):  # a redacted answer its schema no longer holds
                await self._final(json.dumps(args, ensure_ascii=False), args, step)
            elif self.agent.answer_schema is not None:
                await self._final(args.model_dump_json(), args, step)
            else:
                await self._final(args.answer, None, step)  # type: ignore[attr-defined]
            return
        if len(ready) == 1:  # most turns: no list to build
            call = ready[0].call.__dict__
            self._recent.append(((call["name"], call["arguments"]),))
        elif ready:
            self._recent.append(tuple([(p.call.name, p.call.arguments) for p in ready]))
        pattern = self._loop_pattern()
        if pattern is not None:
            await self._break_loop(pattern, step)
            return
        if failed and self.agent.strategy == "plan-act-reflect":
            await self._reflect("error")

    async def _execute_together(self, ready: list[_Prepared], step: int) -> None:
        """Run read-only calls concurrently. When one ends the run (a guard
        halts it, a hook raises, the run is cancelled), the others are
        cancelled and waited for: nothing of this run goes on after it ends."""
        tasks = [asyncio.ensure_future(self._execute(p, step)) for p in ready]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _prepare(self, call: ToolCallRequest) -> _Prepared | tuple[str, str, str, ToolErrorKind]:
        """Check a call's name and arguments: the call ready to run, or what to
        tell the model (`_malformed`'s budget key, message, call id and kind).
        Not a coroutine: most calls are fine, and need no await."""
        fields = call.__dict__  # an attribute of a pydantic model costs several times a dict's item
        name = fields["name"]
        if fields["parse_error"] is not None:
            return name or "(unreadable)", self._parse_error_text(call), call.id, "invalid_json"
        if name == FINAL_ANSWER:
            tool: Tool | None = self.final_tool
        else:
            tool = self.tools.get(name)
            if tool is None:
                names = ", ".join(self._tool_names)
                message = f"Unknown tool '{name}'. Available tools: {names}."
                return "(unknown tool)", message, call.id, "unknown_tool"
        try:
            args = tool.validate(fields["arguments"] or {})
        except ValidationError as e:
            if not self._redacted_answer_fits(call, tool):
                return name, format_validation_error(name, e), call.id, "invalid_arguments"
            # The redacted answer, as recorded (no schema holds it now).
            args = dict(fields["arguments"] or {})
        if self._retries:
            self._retries.pop(name, None)
        return _Prepared(call, tool, args)

    def _redacted_answer_fits(self, call: ToolCallRequest, tool: Tool) -> bool:
        """Whether a final_answer call a guard redacted (so its schema no longer holds) was
        a valid answer as the model wrote it: then the redacted one is the answer."""
        written = self._answers_written.get(call.id) if tool is self.final_tool else None
        if written is None:
            return False
        try:
            tool.validate(written.arguments or {})
        except ValidationError:
            return False
        return True

    def _parse_error_text(self, call: ToolCallRequest) -> str:
        if call.parse_error == CUT_SHORT:
            return f"Your call to {call.name} was cut off at the output limit and was not run. Make it again, shorter."
        raw = (call.raw_arguments or "")[:300]
        text = f"Could not read your tool call: {call.parse_error}.\nYou wrote: {raw}\n"
        if call.name in self.tools or call.name == FINAL_ANSWER:  # the call was read, its arguments were not
            return text + f"Call {call.name} again with its arguments as one valid JSON object."
        return text + (
            'Write the call as <tool_call>{"name": "<tool>", "arguments": {...}}</tool_call> with valid JSON.'
        )

    async def _malformed(
        self,
        budget_key: str,
        message: str,
        call_id: str | None,
        kind: ToolErrorKind,
        step: int,
    ) -> None:
        """A model mistake: count it against the tool's retry budget and say so."""
        used = self._retries.get(budget_key, 0) + 1
        self._retries[budget_key] = used
        tool = self.tools.get(budget_key)
        budget = tool.max_retries if tool else self.agent.max_retries
        if used == budget:  # the next try is the last: backends constrain a required call to the schemas
            self._constrain_next = True
        if call_id is not None:
            await self._tool_result(call_id, budget_key, message, step, error=kind, judge=False)
        else:
            await self.bus.emit(Feedback(content=message, reason=kind, step=step), judge=False)
        if used > budget:
            # The message's first line, and its first listed error where the first line only
            # announces them ("Invalid arguments for tool 'x':").
            lines = message.splitlines()
            why = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
            raise _Stop("failed", f"gave up after {used} malformed calls to {budget_key}: {why}")

    async def _execute(self, p: _Prepared, step: int) -> None:
        self._check_stop()
        call, tool = p.call, p.tool
        call_id, name = call.id, call.name
        args = p.args
        # model_dump(mode="json", by_alias=True): under the names the schema shows the model (an
        # aliased field's alias), which the guards look for ("url") and a rewrite validates by.
        arguments = args.__pydantic_serializer__.to_python(args, mode="json", by_alias=True)
        event = trusted(ToolCall, call_id=call_id, name=name, arguments=arguments, step=step)
        decision = self.bus.emit_now(event) or await self.bus.emit(event)
        if self.reader is not None:  # a safe point: a caller that stopped at this call stops it
            await self.reader()
        if decision is not _ALLOW:
            if decision.action == "halt":
                raise _Stop("halted", decision.feedback or "halted by a guard")
            if decision.action == "block":
                await self._tool_result(
                    call_id, name, f"Blocked: {decision.feedback}", step, error="blocked", judge=False
                )
                return
            if decision.action == "rewrite":
                rewritten = decision.event
                if rewritten.name != name or rewritten.call_id != call_id:  # type: ignore[union-attr]
                    # The call that was judged is the one that would run: a guard changes its
                    # arguments, never which tool it calls.
                    text = (
                        f"Blocked: a guard rewrote this call to {rewritten.name!r} "  # type: ignore[union-attr]
                        "(a guard may change a call's arguments, not its tool or id)"
                    )
                    await self._tool_result(call_id, name, text, step, error="blocked", judge=False)
                    return
                arguments = rewritten.arguments  # type: ignore[union-attr]
                try:
                    p.args = tool.validate(arguments)
                except ValidationError as e:
                    # A redaction the argument's type does not allow: the call cannot run.
                    why = "; ".join(line[2:] for line in format_validation_error(name, e).splitlines()[1:-1])
                    text = f"Blocked: a guard changed the arguments (a redacted secret?) and they are no longer valid: {why}"
                    await self._tool_result(call_id, name, text, step, error="blocked", judge=False)
                    return
        if tool.needs_approval:
            refusal = await self._refusal(call_id, name, arguments, step)
            if refusal is not None:
                await self._tool_result(call_id, name, refusal, step, error="refused", judge=False)
                return
        started = time.monotonic()
        timeout = tool.timeout
        if self._deadline is not None:
            left = max(0.0, self._deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        if self._cancel:
            # cancel() since the call was announced (by whoever watched its tool_call event, or
            # an approver): the tool does not start, and the log says so (a resume need not guess).
            text = "Not run: the run was cancelled before this call started."
            await self._tool_result(call_id, name, text, step, error="interrupted", judge=False)
            raise _Stop("cancelled", "cancelled")
        token = _context.set((self, step, call_id))
        timer: asyncio.Timeout | None = None
        try:
            if tool.runs_inline:  # a sync tool declared quick and free of I/O: no timer to arm and cancel
                value = await tool.run(p.args)
            else:
                async with asyncio.timeout(timeout) as timer:
                    value = await tool.run(p.args)
            # Inside the try: a value that cannot be rendered is the tool's error, not the run's.
            # A run with a context budget keeps the whole result: the budget cuts the prompt, and
            # points the model at the full text. Without one, the result itself is capped.
            content = render_output(value, limit=self._output_limit)
        except TimeoutError as e:
            if timer is None or not timer.expired():  # raised by the tool itself
                text = f"Tool '{name}' raised TimeoutError: {e}"
                await self._tool_result(call_id, name, text, step, error="exception", started=started)
                return
            self._check_stop()
            text = f"Tool '{name}' timed out after {timeout:.1f} s."
            await self._tool_result(call_id, name, text, step, error="timeout", started=started)
            return
        except ToolError as e:
            refused = isinstance(e, ToolBlocked) and call_id in self._refused_in
            kind: ToolErrorKind = "blocked" if isinstance(e, ToolBlocked) else "exception"
            # A ToolBlocked after a guard refused the tool's event carries the guard's words;
            # any other is the tool's own text, judged as its output is.
            text = f"Error: {e}"
            await self._tool_result(call_id, name, text, step, error=kind, started=started, judge=not refused)
            return
        except Exception as e:  # the tool's own bug: the model sees it, the run goes on
            text = f"Tool '{name}' raised {type(e).__name__}: {e}"
            await self._tool_result(call_id, name, text, step, error="exception", started=started)
            return
        except SystemExit as e:  # sys.exit() in a tool (argparse on bad arguments): not the program's end
            text = f"Tool '{name}' tried to exit the program (SystemExit: {e.code}); it did not finish."
            await self._tool_result(call_id, name, text, step, error="exception", started=started)
            return
        except KeyboardInterrupt:  # raised by the tool itself, not by a signal: the run stops, recorded
            raise _Stop("cancelled", f"the tool '{name}' raised KeyboardInterrupt") from None
        finally:
            _context.reset(token)
        await self._tool_result(call_id, name, content, step, error=None, started=started)

    async def _refusal(self, call_id: str, name: str, arguments: dict[str, Any], step: int) -> str | None:
        """Ask the approver about a call: None when it is approved, else what the model is told."""
        request = ApprovalRequested(call_id=call_id, name=name, arguments=arguments, step=step)
        await self.bus.deliver(request)
        approver = self.agent.approver
        after = " Do not retry it; try another way, or say what could not be done."
        if approver is None:
            approved, by, note = False, "policy", "no approver is configured"
            refusal = (
                f"{name} needs a person's approval and this agent has no approver, so it was not run.{after}"
            )
        else:
            try:
                answer = approver(request)
                approved, note = approval_of(await answer if inspect.isawaitable(answer) else answer)
                by = "approver"
                refusal = f"The user refused to run {name}.{after}"
            except Exception as e:  # an approver that fails has not approved: the call is refused
                approved, by, note = False, "policy", f"the approver failed: {type(e).__name__}: {e}"
                refusal = f"{name} was not run: asking for approval failed.{after}"
        await self.bus.deliver(ApprovalGiven(call_id=call_id, approved=approved, by=by, note=note, step=step))
        return None if approved else refusal

    async def _tool_result(
        self,
        call_id: str,
        name: str,
        content: str,
        step: int,
        *,
        error: ToolErrorKind | None,
        started: float | None = None,
        judge: bool = True,
    ) -> None:
        """Record a call's result. `judge=False` for a text the runtime wrote itself (a call
        blocked, refused or malformed): nothing of a tool's in it for the guards to judge. A
        tool's own words (its output, its error, a ToolBlocked it raised) are judged."""
        if error is not None:  # an exception's text, as capped and cleaned as any result
            content = model_text(content, self._output_limit)
        result = trusted(
            ToolResult,
            call_id=call_id,
            name=name,
            content=content,
            is_error=error is not None,
            error_kind=error,
            duration=time.monotonic() - started if started is not None else 0.0,
            step=step,
        )
        if self._observe is not None:
            result = self._observe(result)
            if _pending(result):
                result = await result
            result = _hooked(result, ToolResult, "observe", self.agent)
        decision = self.bus.emit_now(result, judge=judge) or await self.bus.emit(result, judge=judge)
        if decision is _ALLOW:
            return
        if decision.action == "halt":
            raise _Stop("halted", decision.feedback or "halted by a guard")
        if decision.action == "block":
            blocked = result.model_copy(
                update={"content": f"Blocked: {decision.feedback}", "is_error": True, "error_kind": "blocked"}
            )
            await self.bus.deliver(blocked)

    async def _settle_interrupted(self, call: ToolCallRequest, step: int) -> None:
        """A call that began before a crash: re-run it only if that is safe."""
        tool = self.tools.get(call.name)
        if tool is not None and tool.safe_to_rerun:
            await self._execute(_Prepared(call, tool, tool.validate(call.arguments or {})), step)
            return
        await self._tool_result(
            call.id,
            call.name,
            f"The run was interrupted while '{call.name}' was running. It was not run again because it is not "
            "safe to repeat; check whether it took effect before calling it again.",
            step,
            error="interrupted",
            judge=False,
        )

    # -- plan, reflect, loops ---------------------------------------------

    async def _plan(self, reason: Literal["initial", "periodic", "stuck"]) -> None:
        prompt = PLAN_PROMPT if reason == "initial" else REPLAN_PROMPT
        response = await self._call_model(
            "plan", step=self.state.step, effort="high", instruction=prompt, reason=reason
        )
        if response is not None:
            content = response.content.strip() or response.thinking.strip() or "(no plan)"
            plan = await _maybe_await(
                self.agent.plan(Plan(content=content, reason=reason, step=self.state.step))
            )
            await self._emit_note(_hooked(plan, Plan, "plan", self.agent))

    async def _reflect(self, reason: Literal["error", "loop", "final", "stuck"]) -> None:
        response = await self._call_model(
            "reflect", step=self.state.step, effort="high", instruction=REFLECT_PROMPTS[reason], reason=reason
        )
        if response is not None:
            content = response.content.strip() or response.thinking.strip() or "(no reflection)"
            reflection = Reflection(content=content, reason=reason, step=self.state.step)
            await self._emit_note(
                _hooked(await _maybe_await(self.agent.reflect(reflection)), Reflection, "reflect", self.agent)
            )

    async def _emit_note(self, note: Plan | Reflection) -> None:
        """A plan or reflection, as a guard decides."""
        await self._refused(await self.bus.emit(note), note.step, f"Your {note.type} was blocked.")

    async def _refused(self, decision: Decision, step: int, blocked: str) -> bool:
        """Act on a guard refusing the model's event: halted ends the run; blocked
        tells the model why (True), and the event does not take effect."""
        if decision.action == "halt":
            raise _Stop("halted", decision.feedback or "halted by a guard")
        if decision.action == "block":
            await self.bus.emit(
                Feedback(content=decision.feedback or blocked, reason="blocked", step=step), judge=False
            )
            return True
        return False

    def _loop_pattern(self) -> Literal["repeated", "oscillating"] | None:
        """The same turn repeated, or two turns alternating, in the recent turns."""
        recent = self._recent
        n = self.agent.loop_repeats
        if not n:  # loop detection is off
            return None
        # Plain `==` first, in C: most turns differ from the last ones, and then no
        # _same_turn call (nor JSON) is needed.
        count = len(recent)
        if count >= n:
            last = recent[-1]
            for turn in recent[-n:-1]:  # a loop, not all(<genexpr>): this runs every step
                if not (last == turn and _same_turn(last, turn)):
                    break
            else:
                return "repeated"
        if count >= 4:
            a, b, c, d = recent[-1], recent[-2], recent[-3], recent[-4]
            if a == c and b == d and _same_turn(a, c) and _same_turn(b, d) and not _same_turn(a, b):
                return "oscillating"
        return None

    async def _break_loop(self, pattern: Literal["repeated", "oscillating"], step: int) -> None:
        """Tell the model (or make it reflect and replan) to break the pattern."""
        self._recent.clear()
        self._effort_boost = True
        if self.agent.strategy == "plan-act-reflect":
            await self._reflect("loop")
            await self._plan("stuck")
        else:
            what = "the same call repeatedly" if pattern == "repeated" else "two calls in alternation"
            await self.bus.emit(
                Feedback(
                    content=f"You are making {what} without progress. Try a different approach, "
                    "or give the final answer if you have it.",
                    reason="loop",
                    step=step,
                ),
                judge=False,
            )

    # -- budgets and the end -----------------------------------------------

    def _check_stop(self) -> None:
        if self._cancel:
            raise _Stop("cancelled", "cancelled")
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise _Stop("timeout", f"ran out of time ({self.agent.max_seconds} s)")

    async def _with_deadline(self, coro: Awaitable[ModelResponse], deadline: float) -> ModelResponse:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await coro
        except TimeoutError:
            raise _Stop("timeout", f"ran out of time ({self.agent.max_seconds} s)") from None

    async def _finish(self, status: RunStatus, error: str | None) -> None:
        await self._finish_event(status, error)
        episodic = self.agent.episodic
        if episodic is not None and status != "cancelled":
            from memory.episodic import record_run

            events, turn = self.state.events, 0
            if self._turn is not None:  # a later message of a session: its own episode, asked as it
                message = events[self._turn]
                turn = message.seq
                events = [updated(events[0], task=message.content), *events[self._turn :]]
                if self._turn_start is not None and events[-1].type == "run_finished":
                    _, step, usage = self._turn_start
                    finished = events[-1]
                    events[-1] = updated(finished, steps=finished.steps - step, usage=finished.usage - usage)
            try:
                await record_run(episodic, events, turn=turn)
            except Exception as e:  # the run's outcome stands even if memory fails
                await self.bus.deliver(Error(kind="memory", message=f"could not record the episode: {e}"))

    async def _finish_event(self, status: RunStatus, error: str | None) -> None:
        self._finished = True
        state = self.state
        answer = state.answer
        if isinstance(answer, BaseModel):
            answer = answer.model_dump(mode="json")
        finished = trusted(
            RunFinished,
            status=status,
            answer=answer,
            usage=state.usage,
            steps=state.step,
            error=None if status == "completed" else error,
            step=state.step,
        )
        self.bus.emit_now(finished, judge=False) or await self.bus.emit(finished, judge=False)


def bind_tools(owner: object, tools: list[Any], options: dict[str, Any] | None = None) -> list[Tool]:
    """Tools given as objects, classes or built-in names, and @tool methods of the owner.

    `options` (workspace, allow_network, ...) go to the built-in tool factories.
    """
    found: list[Tool] = []
    names = [t for t in tools if isinstance(t, str)]
    if names:
        from .builtins import builtin_tools

        tools = [t for t in tools if not isinstance(t, str)] + builtin_tools(names, **(options or {}))
    for t in tools:
        if isinstance(t, type) and issubclass(t, Tool):
            t = t()
        if not isinstance(t, Tool):
            raise TypeError(f"not a tool: {t!r} (use @tool on a function, or subclass Tool)")
        found.append(t)
    seen: dict[str, type] = {}  # attribute -> the class whose definition of it counts
    for klass in type(owner).__mro__:
        for attr, value in vars(klass).items():
            if attr in seen:  # overridden further down: the subclass's definition counts
                if isinstance(value, FunctionTool) and not isinstance(
                    vars(seen[attr]).get(attr), FunctionTool
                ):
                    raise TypeError(
                        f"{seen[attr].__name__}.{attr} overrides the tool {value.name!r} of {klass.__name__} "
                        "without @tool; decorate the override with @tool as well"
                    )
                continue
            seen[attr] = klass
            if isinstance(value, FunctionTool):
                found.append(getattr(owner, attr))
    for t in found:
        check_tool(t)
        t.schema()  # cached on the tool: built here, the first run does not wait for it
    return found
