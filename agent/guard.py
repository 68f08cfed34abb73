"""What a guard is: a check of one step of a run, returning a `Verdict`.

Every event a guard may judge belongs to a `Stage`. A guard answers with a
`Verdict`; `guards.GuardPipeline` turns verdicts into bus `Decision`s.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from .events import Event

Stage = Literal[
    "user_input",
    "model_output",
    "tool_call",
    "tool_result",
    "memory_write",
    "memory_read",
    "final_answer",
]
STAGES: tuple[Stage, ...] = (
    "user_input",
    "model_output",
    "tool_call",
    "tool_result",
    "memory_write",
    "memory_read",
    "final_answer",
)
Action = Literal["allow", "redact", "block", "ask", "halt"]

_STAGE_OF_TYPE: dict[str, Stage] = {
    "user_message": "user_input",
    "model_response": "model_output",
    "tool_call": "tool_call",
    "tool_result": "tool_result",
    "memory_write": "memory_write",
    "memory_read": "memory_read",
    "final_answer": "final_answer",
}


def approval_of(answer: Any) -> tuple[bool, str]:
    """An approver's answer: whether it approves, and a note when it was not a bool.

    Only `True` approves. A refusal written as text ("no", "deny") is truthy, and a
    call that needs a person's yes must not run on one.
    """
    if answer is True:
        return True, ""
    if answer is False or answer is None:
        return False, ""
    return False, f"the approver answered {answer!r:.60} ({type(answer).__name__}), not True or False: refused"


def stage_of(event: Event | Any) -> Stage | None:
    """The stage an event belongs to, or None for events no guard judges."""
    return _STAGE_OF_TYPE.get(getattr(event, "type", ""))


class Verdict(BaseModel):
    """One guard's judgement of one event.

    `content` is the replacement for "redact": text for most events, the
    arguments dict for a tool call, the hits list for a memory read, and for
    a model response, a final answer or a memory write a dict of the fields
    that hold text (see `guards._text.map_text`; a memory write also takes
    its new text alone). A call's arguments are the tool_call stage's to
    judge, a tool may be meant to receive a credential; an answer given
    through the final_answer call is the model response's.
    `feedback` is what the model is told when the step is blocked.
    """

    model_config = ConfigDict(defer_build=True)

    action: Action = "allow"
    content: Any = None
    feedback: str = ""
    category: str = ""
    score: float | None = None
    rationale: str = ""
    guard: str = ""
    latency: float = 0.0


@runtime_checkable
class Guard(Protocol):
    """Anything with a name and an async `check`, which returns a `Verdict` (None is taken
    as allow)."""

    name: str

    async def check(self, event: Event, stage: Stage) -> Verdict | None: ...
