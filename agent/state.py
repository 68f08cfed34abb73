"""The state of a run, rebuilt from its events.

`RunState.apply` is the only place that turns events into conversation
history. The live loop applies each event as it is delivered, and resume
applies the events of a log: both arrive at the same state.
"""

from __future__ import annotations

from typing import Any

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
from .types import Message, Usage


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
        self.usage = Usage()
        self.status: RunStatus = "running"
        self.answer: Any = None
        self.answer_text: str | None = None
        self.error: str | None = None
        self.plan: str | None = None
        self.started: dict[str, ToolCall] = {}  # call id -> call that began to run
        self.results: dict[str, ToolResult] = {}
        self.tool_errors = 0
        self.last_response: ModelResponse | None = None
        self.events: list[Event] = []

    def apply(self, event: Event) -> None:
        self.events.append(event)
        self.step = max(self.step, event.step)
        if isinstance(event, RunStarted):
            if not event.resumed:
                self.task = event.task
                self.system_prompt = event.system_prompt
                if event.system_prompt:
                    self.messages.append(Message(role="system", content=event.system_prompt))
            self.status = "running"
        elif isinstance(event, UserMessage):
            self.messages.append(Message(role="user", content=event.content))
        elif isinstance(event, ModelResponse):
            self.usage = self.usage + event.usage
            if event.purpose == "act":
                self.last_response = event
                self.messages.append(
                    Message(
                        role="assistant",
                        content=event.content,
                        thinking=event.thinking or None,
                        tool_calls=event.tool_calls,
                    )
                )
        elif isinstance(event, ToolCall):
            self.started[event.call_id] = event
        elif isinstance(event, ToolResult):
            self.results[event.call_id] = event
            self.tool_errors += event.is_error
            self.messages.append(
                Message(role="tool", content=event.content, tool_call_id=event.call_id, name=event.name)
            )
        elif isinstance(event, Feedback):
            self.messages.append(Message(role="user", content=event.content))
        elif isinstance(event, Plan):
            self.plan = event.content
            self.messages.append(Message(role="user", content=plan_note(event.content)))
        elif isinstance(event, Reflection):
            self.messages.append(Message(role="user", content=reflection_note(event.content)))
        elif isinstance(event, FinalAnswer):
            self.answer_text = event.content
            self.answer = event.data if event.data is not None else event.content
        elif isinstance(event, RunFinished):
            self.status = event.status
            self.error = event.error

    def unfinished_calls(self) -> list[str]:
        """Ids of calls in the last model turn that have no result yet."""
        if self.last_response is None:
            return []
        return [c.id for c in self.last_response.tool_calls if c.id not in self.results]
