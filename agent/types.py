"""Plain data types shared by events, LLM backends and tools.

This module imports nothing else of the project, so every package may use it.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Effort = Literal["low", "medium", "high"]
EFFORTS: tuple[Effort, ...] = ("low", "medium", "high")


_CALL_PREFIX = secrets.token_hex(4)
_call_numbers = itertools.count(1)


def new_call_id() -> str:
    """Unique within a process and unlikely to clash across processes; cheap."""
    return f"call_{_CALL_PREFIX}{next(_call_numbers):x}"


class Usage(BaseModel):
    """Token counts of one model call, or of a whole run when summed."""

    model_config = ConfigDict(defer_build=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    thinking_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            thinking_tokens=self.thinking_tokens + other.thinking_tokens,
        )


class ToolCallRequest(BaseModel):
    """A tool call as the model wrote it.

    `arguments` is the decoded JSON object, or None when the text could not be
    decoded; then `parse_error` says why and `raw_arguments` keeps the text so
    the model can be shown its mistake.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str = Field(default_factory=new_call_id)
    name: str
    arguments: dict[str, Any] | None = None
    raw_arguments: str | None = None
    parse_error: str | None = None


class Message(BaseModel):
    """One chat message in the OpenAI shape that every backend understands."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
