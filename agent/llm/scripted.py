"""A model that replays a script: for tests, examples and benchmarks."""

from __future__ import annotations

import asyncio
import json
import time as _time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import AgentError
from ..events import ModelDelta, ModelResponse
from ..types import ToolCallRequest, Usage, trusted, updated
from .base import LLMError, LLMRequest
from .parse import parse_output, parse_text_only

ScriptItem = str | ModelResponse | dict[str, Any] | Callable[[LLMRequest], str | ModelResponse]


class ScriptExhausted(LLMError):
    """The agent asked the scripted model for more turns than it was given."""

    retryable = False


class ScriptedLLM:
    """Replays a list of turns, one per call, and fails loudly past the end.

    Each item is raw model text (parsed like a real model's output, so
    `<think>` and `<tool_call>` blocks work), a `ModelResponse`, a dict of
    `ModelResponse` fields, or a function of the request returning either.
    A dict may also hold `"delay"`: seconds to wait before that turn streams
    (it overrides the `delay` argument for that turn only).
    Every request is kept in `requests` so tests can look at the prompts.

    ```python
    llm = ScriptedLLM([
        '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>',
        "The sum is 5.",
    ])
    ```
    """

    def __init__(
        self,
        script: Sequence[ScriptItem],
        *,
        name: str = "scripted",
        chunk_size: int = 16,
        delay: float = 0.0,
    ) -> None:
        if isinstance(script, (str, bytes)):
            raise TypeError("ScriptedLLM takes a list of turns: ScriptedLLM([text]) for a single reply")
        self.script = list(script)
        self.name = name
        self.chunk_size = chunk_size
        self.delay = delay
        # Each request with the length of its history: the caller only ever
        # appends to a history, so the prompt as it was is a prefix of it,
        # copied out when `requests` is read rather than on every call.
        self._seen: list[tuple[LLMRequest, int]] = []
        self._requests: list[LLMRequest] = []

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> ScriptedLLM:
        """Load a script: a JSON list, or JSON lines of strings or response dicts.

        A file that is not one raises `AgentError` naming the file and line.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise AgentError(f"scripted model file {path} is not UTF-8 text") from None
        except OSError as e:
            raise AgentError(f"cannot read scripted model file {path}: {e.strerror or e}") from None
        if text.lstrip().startswith("["):
            entries = [(None, text)]
        else:  # split on "\n" only: JSON may hold U+2028 and other line breaks unescaped
            entries = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
        items: list[Any] = []
        for number, entry in entries:
            where = f"{path}:{number}" if number is not None else str(path)
            try:
                value = json.loads(entry)
            except json.JSONDecodeError as e:
                raise AgentError(f"{where}: not valid JSON (column {e.colno}: {e.msg})") from None
            for item in value if number is None and isinstance(value, list) else [value]:
                if not isinstance(item, (str, dict)):
                    raise AgentError(
                        f"{where}: each turn is model text (a JSON string) or a response object, "
                        f"not {type(item).__name__}"
                    )
                items.append(item)
        return cls(items, name=f"scripted:{Path(path).name}", **kwargs)

    @property
    def requests(self) -> list[LLMRequest]:
        """Every request so far, each with the messages the model was given then."""
        made = self._requests
        for request, count in self._seen[len(made) :]:
            made.append(updated(request, messages=request.messages[:count]))
        return made

    @property
    def remaining(self) -> int:
        return len(self.script) - len(self._seen)

    async def stream(self, request: LLMRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        seen, script = self._seen, self.script
        index = len(seen)
        seen.append((request, len(request.messages)))
        if index >= len(script):
            last = request.messages[-1].content[:200] if request.messages else ""
            raise ScriptExhausted(
                f"ScriptedLLM: call {index + 1} but the script has {len(script)} turns "
                f"(last message: {last!r})"
            )
        item = script[index]
        delay = self.delay
        if type(item) is ModelResponse:  # most scripts: no text to parse, nothing to call
            response = _copy_response(item)
        else:
            if callable(item):
                item = item(request)
            if isinstance(item, dict) and "delay" in item:
                item = dict(item)
                delay = float(item.pop("delay") or 0.0)
            response = self._to_response(item, calls=request.may_call)
        if delay:
            await asyncio.sleep(delay)
        fields = response.__dict__
        if fields["thinking"] or fields["content"]:
            size = self.chunk_size
            for field in ("thinking", "content"):
                text = fields[field]
                for i in range(0, len(text), size):
                    yield trusted(ModelDelta, **{field: text[i : i + size]})
        # Stamped as it is handed over, after its deltas, as a real backend's
        # reply is: a scripted one was written before the run began. The
        # response is this call's own copy.
        fields["time"] = _time.time()
        yield response

    def _to_response(self, item: Any, *, calls: bool = True) -> ModelResponse:
        if isinstance(item, str):
            # As a real model's text: no call is read from it when no tools were offered.
            parsed = parse_output(item) if calls else parse_text_only(item)
            # The parser's values are typed already: no validation needed.
            return trusted(
                ModelResponse,
                content=parsed.content,
                thinking=parsed.thinking,
                tool_calls=parsed.tool_calls,
                usage=trusted(Usage, completion_tokens=max(1, len(item) // 4)),
                finish_reason="tool_calls" if parsed.tool_calls else "stop",
                model=self.name,
            )
        if isinstance(item, ModelResponse):
            return _copy_response(item)
        if isinstance(item, dict):
            data = dict(item)
            data["tool_calls"] = [
                c if isinstance(c, ToolCallRequest) else ToolCallRequest(**c)
                for c in data.get("tool_calls", [])
            ]
            data.setdefault("model", self.name)
            return ModelResponse(**data)
        raise TypeError(f"ScriptedLLM: cannot use a script item of type {type(item).__name__}")


def _copy_response(item: ModelResponse) -> ModelResponse:
    """A copy, so that the loop (which numbers the response) does not change the script:
    the response and its list of calls. The calls themselves are the script's: nothing in a
    run changes a call in place (guards and the loop replace one; an `act` hook is handed
    copies), and copying each was a fifth of a scripted step's instructions."""
    return updated(item, tool_calls=list(item.tool_calls))
