"""Typed events: everything that happens in a run is one of these.

The run log is a list of events, the terminal renders them, guards intercept
them, and a run is resumed by replaying them (see `agent.state`).
"""

from __future__ import annotations

import time as _time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .types import Effort, ToolCallRequest, Usage

RunStatus = Literal[
    "running",
    "completed",
    "max_steps",
    "max_tokens",
    "timeout",
    "cancelled",
    "halted",
    "stopped",
    "failed",
]


class EventBase(BaseModel):
    # Schemas build on first use, which keeps `import agent` fast.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    run_id: str = ""
    step: int = 0
    seq: int = 0
    time: float = Field(default_factory=_time.time)


class RunStarted(EventBase):
    type: Literal["run_started"] = "run_started"
    task: str
    agent: str = "agent"
    strategy: str = "react"
    model: str = ""
    effort: Effort = "medium"
    tools: list[str] = Field(default_factory=list)
    system_prompt: str = ""
    resumed: bool = False
    workspace: str | None = None  # the folder the tools work in (absolute), where the agent has one


class RunFinished(EventBase):
    type: Literal["run_finished"] = "run_finished"
    status: RunStatus
    answer: Any = None
    usage: Usage = Field(default_factory=Usage)
    steps: int = 0
    error: str | None = None


class UserMessage(EventBase):
    type: Literal["user_message"] = "user_message"
    content: str


class Plan(EventBase):
    type: Literal["plan"] = "plan"
    content: str
    reason: Literal["initial", "periodic", "stuck"] = "initial"


class ModelRequest(EventBase):
    """A call to the model is about to start.

    It records what the call is for, not the whole prompt: logging every
    prompt would make the log grow with the square of the run length.
    """

    type: Literal["model_request"] = "model_request"
    purpose: Literal["act", "plan", "reflect"] = "act"
    effort: Effort = "medium"
    messages: int = 0
    tools: list[str] = Field(default_factory=list)
    reason: str | None = None  # a plan or reflect call's reason (as `Plan.reason`, `Reflection.reason`)


class ModelDelta(EventBase):
    type: Literal["model_delta"] = "model_delta"
    content: str = ""
    thinking: str = ""


class ModelResponse(EventBase):
    type: Literal["model_response"] = "model_response"
    purpose: Literal["act", "plan", "reflect"] = "act"
    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    effort: Effort = "medium"
    finish_reason: str = "stop"
    model: str = ""


class ToolCall(EventBase):
    """A validated call that is about to run (guards see it first)."""

    type: Literal["tool_call"] = "tool_call"
    call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


ToolErrorKind = Literal[
    "unknown_tool",
    "invalid_json",
    "invalid_arguments",
    "exception",
    "timeout",
    "blocked",
    "refused",
    "interrupted",
]


class ToolResult(EventBase):
    """What the model will be shown for one call: an output or an error."""

    type: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str
    content: str
    is_error: bool = False
    error_kind: ToolErrorKind | None = None
    duration: float = 0.0


class Feedback(EventBase):
    """A note for the model that answers no tool call (retry prompts, warnings)."""

    type: Literal["feedback"] = "feedback"
    content: str
    reason: str = ""


class Reflection(EventBase):
    type: Literal["reflection"] = "reflection"
    content: str
    reason: Literal["error", "loop", "final", "stuck"] = "error"


class GuardVerdict(EventBase):
    type: Literal["guard_verdict"] = "guard_verdict"
    stage: str
    action: Literal["allow", "redact", "block", "ask", "halt"]
    target_type: str = ""
    guard: str = ""
    category: str = ""
    score: float | None = None
    rationale: str = ""
    latency: float = 0.0


class ApprovalRequested(EventBase):
    type: Literal["approval_requested"] = "approval_requested"
    call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""


class ApprovalGiven(EventBase):
    type: Literal["approval_given"] = "approval_given"
    call_id: str
    approved: bool
    by: str = "user"
    note: str = ""


class MemoryRead(EventBase):
    type: Literal["memory_read"] = "memory_read"
    memory: str = ""
    query: str
    hits: list[dict[str, Any]] = Field(default_factory=list)


class MemoryWrite(EventBase):
    type: Literal["memory_write"] = "memory_write"
    memory: str = ""
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class FinalAnswer(EventBase):
    type: Literal["final_answer"] = "final_answer"
    content: str
    data: Any = None


class Error(EventBase):
    type: Literal["error"] = "error"
    kind: str
    message: str
    fatal: bool = False
    retryable: bool | None = None  # whether running again may succeed (a server hiccup); None: unknown


Event = Annotated[
    RunStarted
    | RunFinished
    | UserMessage
    | Plan
    | ModelRequest
    | ModelDelta
    | ModelResponse
    | ToolCall
    | ToolResult
    | Feedback
    | Reflection
    | GuardVerdict
    | ApprovalRequested
    | ApprovalGiven
    | MemoryRead
    | MemoryWrite
    | FinalAnswer
    | Error,
    Field(discriminator="type"),
]

if TYPE_CHECKING:
    from pydantic import TypeAdapter

_adapter: TypeAdapter[Event] | None = None


def parse_event(data: str | bytes | dict[str, Any]) -> Event:
    """Decode one event from JSON text or a dict."""
    global _adapter
    if _adapter is None:
        from pydantic import TypeAdapter  # with its schema machinery: only once events are read

        _adapter = TypeAdapter(Event)
    if isinstance(data, dict):
        return _adapter.validate_python(data)
    return _adapter.validate_json(data)
