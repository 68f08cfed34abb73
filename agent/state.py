"""The state of a run, rebuilt from its events.

`RunState.apply` is the only place that turns events into conversation
history. The live loop applies each event as it is delivered, and resume
applies the events of a log: both arrive at the same state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from .events import (
    Event,
    Feedback,
    FinalAnswer,
    ModelResponse,
    Plan,
    Reflection,
    RunFinished,
    RunStarted,
    RunStatus,
    ToolCall,
    ToolResult,
    UserMessage,
)
from .types import Message, Usage, trusted


def plan_note(content: str) -> str:
    return f"Plan:\n{content}\n\nCarry out the plan step by step."


def reflection_note(content: str) -> str:
    return f"Reflection on progress so far:\n{content}"


class RunState:
    """Conversation history, counters and outcome of one run."""

    def __init__(self, run_id: str = "") -> None:
        self.run_id = run_id
        self.task = ""
        self.system_prompt = ""
        self.messages: list[Message] = []
        self.step = 0
        # Token counts as plain ints: summing Usage models cost a model a step.
        self._prompt_tokens = self._completion_tokens = self._thinking_tokens = 0
        self.status: RunStatus = "running"
        self.answer: Any = None
        self.answer_text: str | None = None
        self.error: str | None = None
        self.plan: str | None = None
        self.plan_step = -1  # the step the last plan was made at
        self.started: dict[str, ToolCall] = {}  # call id -> call that began to run
        self.results: dict[str, ToolResult] = {}
        self.tool_errors = 0
        self.last_response: ModelResponse | None = None
        self.events: list[Event] = []

    def apply(self, event: Event) -> None:
        # Read through __dict__: an attribute of a pydantic model goes through its
        # __getattr__ hook, and this runs for every event.
        fields = event.__dict__
        kind = fields["type"]
        if kind == "model_delta":
            # The live stream, for whoever watches the run: the record (this list, the log,
            # RunResult.events) keeps the whole reply, which the guards judged; a delta is
            # neither judged nor redacted (a secret may straddle two of them).
            return
        self.events.append(event)
        step = fields["step"]
        if step > self.step:
            self.step = step
        # Dispatch on the `type` tag: an isinstance chain over pydantic classes
        # (ABC checks) cost more than the rest of applying an event.
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, event, fields)

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens so far, without building a `Usage`."""
        return self._prompt_tokens + self._completion_tokens

    @property
    def usage(self) -> Usage:
        """Token counts of the run so far."""
        return trusted(
            Usage,
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._completion_tokens,
            thinking_tokens=self._thinking_tokens,
        )

    def _run_started(self, event: RunStarted, fields: dict[str, Any]) -> None:
        if not fields["resumed"]:
            self.task = fields["task"]
            prompt = self.system_prompt = fields["system_prompt"]
            if prompt:
                self.messages.append(_message("system", prompt))
        self.status = "running"

    def _user_message(self, event: UserMessage | Feedback, fields: dict[str, Any]) -> None:
        self.messages.append(_message("user", fields["content"]))

    # The handlers read the event's fields from its dict (`fields`): an attribute of a
    # pydantic model costs several times a dict's item.
    def _model_response(self, event: ModelResponse, fields: dict[str, Any]) -> None:
        usage = fields["usage"].__dict__
        self._prompt_tokens += usage["prompt_tokens"]
        self._completion_tokens += usage["completion_tokens"]
        self._thinking_tokens += usage["thinking_tokens"]
        if fields["purpose"] == "act":
            self.last_response = event
            self.messages.append(
                trusted(
                    Message,
                    role="assistant",
                    content=fields["content"],
                    thinking=fields["thinking"] or None,
                    tool_calls=list(fields["tool_calls"]),
                )
            )

    def _tool_call(self, event: ToolCall, fields: dict[str, Any]) -> None:
        self.started[fields["call_id"]] = event

    def _tool_result(self, event: ToolResult, fields: dict[str, Any]) -> None:
        call_id = fields["call_id"]
        self.results[call_id] = event
        self.tool_errors += fields["is_error"]
        self.messages.append(
            trusted(
                Message, role="tool", content=fields["content"], tool_call_id=call_id, name=fields["name"]
            )
        )

    def _plan(self, event: Plan, fields: dict[str, Any]) -> None:
        self.plan = event.content
        self.plan_step = event.step
        self.messages.append(_message("user", plan_note(event.content)))

    def _reflection(self, event: Reflection, fields: dict[str, Any]) -> None:
        self.messages.append(_message("user", reflection_note(event.content)))

    def _final_answer(self, event: FinalAnswer, fields: dict[str, Any]) -> None:
        content, data = fields["content"], fields["data"]
        self.answer_text = content
        self.answer = data if data is not None else content

    def _run_finished(self, event: RunFinished, fields: dict[str, Any]) -> None:
        self.status = fields["status"]
        self.error = fields["error"]

    def unfinished_calls(self) -> list[str]:
        """Ids of calls in the last model turn that have no result yet."""
        if self.last_response is None:
            return []
        return [c.id for c in self.last_response.tool_calls if c.id not in self.results]


def _message(role: Literal["system", "user"], content: str) -> Message:
    return trusted(Message, role=role, content=content)


_HANDLERS: dict[str, Callable[[RunState, Any, dict[str, Any]], None]] = {
    "run_started": RunState._run_started,
    "user_message": RunState._user_message,
    "feedback": RunState._user_message,
    "model_response": RunState._model_response,
    "tool_call": RunState._tool_call,
    "tool_result": RunState._tool_result,
    "plan": RunState._plan,
    "reflection": RunState._reflection,
    "final_answer": RunState._final_answer,
    "run_finished": RunState._run_finished,
}
