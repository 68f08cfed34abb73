"""The tokenizer's own response parser, when it ships one.

Recent transformers read a declarative `tokenizer.response_template`
(transformers >= 5.13: `tokenizer.parse_response(text, prefix=...)`); the
releases before had `tokenizer.response_schema` and `parse_response(text)`.
Either returns an assistant message dict with `content`, `reasoning_content`
(or `thinking`) and `tool_calls` in the OpenAI shape. This format calls it
and converts the result; when the tokenizer has no schema it is not used, and
when parsing fails (it raises on a call it cannot decode) the ladder goes on.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from ...types import ToolCallRequest
from .base import ChatFormat, ParsedOutput
from .jsonfix import call_error, call_from_parts

_THINKING_KEYS = ("reasoning_content", "thinking", "reasoning")


def response_schema(tokenizer: Any) -> Any:
    """The tokenizer's response template or schema, or None."""
    if not callable(getattr(tokenizer, "parse_response", None)):
        return None
    for attr in ("response_template", "response_schema"):
        schema = getattr(tokenizer, attr, None)
        if schema:
            return schema
    return None


def _text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    return str(value)


def _call(item: Any) -> ToolCallRequest:
    fn = item.get("function", item) if isinstance(item, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
        return call_error("", json.dumps(item, default=str), "the tool call has no name")
    args = fn.get("arguments", fn.get("parameters", {}))
    call = call_from_parts(fn["name"].strip(), args, args if isinstance(args, str) else "")
    if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
        call.id = item["id"]
    return call


def message_to_output(message: dict[str, Any]) -> ParsedOutput:
    """A parsed assistant message dict as a `ParsedOutput`."""
    thinking = next((message[k] for k in _THINKING_KEYS if message.get(k)), "")
    calls = [_call(item) for item in message.get("tool_calls") or []]
    return ParsedOutput(
        content=_text_of(message.get("content")).strip(),
        thinking=_text_of(thinking).strip(),
        tool_calls=calls,
        format="schema",
    )


class ResponseSchemaFormat(ChatFormat):
    """Parses with `tokenizer.parse_response`; `fallback` is the family the
    ladder should prefer when the schema gives up."""

    name = "schema"

    def __init__(self, tokenizer: Any, *, fallback: ChatFormat | None = None, prefix: str = "") -> None:
        self.tokenizer = tokenizer
        self.fallback = fallback
        self.prefix = prefix
        try:
            params = inspect.signature(tokenizer.parse_response).parameters
        except (TypeError, ValueError):
            params = {}
        self._takes_prefix = "prefix" in params

    def detect(self, source: Any) -> bool:
        if isinstance(source, str):
            return False
        return response_schema(source) is not None

    def parse(self, text: str) -> ParsedOutput:
        """Raises whatever the tokenizer's parser raises; the ladder catches it."""
        if self._takes_prefix:
            message = self.tokenizer.parse_response(text, prefix=self.prefix)
        else:
            message = self.tokenizer.parse_response(text)
        if not isinstance(message, dict):
            raise TypeError(f"parse_response returned {type(message).__name__}, not a message dict")
        return message_to_output(message)
