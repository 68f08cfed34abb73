"""The LLM protocol: a request goes in, deltas stream out, a response ends it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import AgentError
from ..events import ModelDelta, ModelResponse
from ..types import Effort, Message


class LLMError(Exception):
    """The backend could not produce a response (network, server, loading)."""

    retryable = True  # whether asking again later may succeed (a batch retries a run that failed so)


class ContextLengthError(LLMError):
    """The prompt (with the reply asked for) does not fit the model's context window."""

    retryable = False


class ModelNotFoundError(LLMError, AgentError):
    """The model the user named cannot be found or loaded as given: fix the name or path."""

    retryable = False


class InvalidRequestError(LLMError, ValueError):
    """The request itself cannot be served (a reply limit under 1, a temperature that is
    no number): asking again fails the same way."""

    retryable = False


def check_request(request: LLMRequest) -> None:
    """Refuse a request's limit or temperature that no model could use, with
    `InvalidRequestError` (not retryable). The in-process backend checks before it loads a
    model; a server checks a request on its side."""
    limit, temperature = request.max_new_tokens, request.temperature
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidRequestError(f"max_new_tokens must be a whole number of at least 1, not {limit!r}")
    if temperature is not None and not (
        isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and 0 <= temperature < 1e9
    ):
        raise InvalidRequestError(f"temperature must be a number of 0 or more, not {temperature!r}")


class LLMRequest(BaseModel):
    """Everything a backend needs for one call."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    messages: list[Message]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: Literal["auto", "required", "none"] = "auto"
    effort: Effort = "medium"
    thinking_budget: int | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    stop: list[str] = Field(default_factory=list)
    purpose: Literal["act", "plan", "reflect"] = "act"

    @property
    def may_call(self) -> bool:
        """Whether the reply may call tools: some are offered, and tool_choice is not "none".
        Otherwise a call-like text in it is the text the model wrote."""
        return bool(self.tools) and self.tool_choice != "none"


@runtime_checkable
class LLM(Protocol):
    """A language model backend.

    `stream` yields `ModelDelta`s as text arrives and ends with exactly one
    `ModelResponse` holding the whole content, thinking, tool calls and usage.
    """

    name: str

    def stream(self, request: LLMRequest) -> AsyncIterator[ModelDelta | ModelResponse]: ...


async def complete(llm: LLM, request: LLMRequest) -> ModelResponse:
    """Run one request to the end and return only the response."""
    response: ModelResponse | None = None
    async for item in llm.stream(request):
        if isinstance(item, ModelResponse):
            response = item
    if response is None:
        raise LLMError(f"{llm.name}: the stream ended without a response")
    return response


def joined_turns(messages: list[Message]) -> list[Message]:
    """`messages` with user messages that follow one another joined into one, a blank line
    between. Chat templates that need user and assistant turns to alternate (Mistral's,
    Gemma's) refuse two in a row, which a plan note after the task, a message after an
    interrupted or failed turn, or a summary after the task make."""
    if not any(a.role == b.role == "user" for a, b in zip(messages, messages[1:], strict=False)):
        return messages
    out: list[Message] = []
    for message in messages:
        last = out[-1] if out else None
        if last is not None and last.role == message.role == "user" and last.name == message.name:
            out[-1] = Message(role="user", content=f"{last.content}\n\n{message.content}", name=last.name)
        else:
            out.append(message)
    return out
