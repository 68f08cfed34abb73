"""Parse raw model text into content, thinking and tool calls.

This is the tolerant end of a chat format: it reads Hermes/Qwen style
`<tool_call>{json}</tool_call>` blocks and `<think>` blocks, extracts every
call in a turn, ignores calls written inside thinking, and repairs the small
JSON mistakes small models make. A call it cannot read comes back with a
`parse_error`, which the loop turns into a retry prompt for the model.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, Field

from ..types import ToolCallRequest

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"

_NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


class ParsedOutput(BaseModel):
    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)


def split_thinking(text: str) -> tuple[str, str]:
    """Return (thinking, rest). An unclosed `<think>` makes the tail thinking."""
    thinking_parts: list[str] = []
    rest_parts: list[str] = []
    pos = 0
    while True:
        start = text.find(THINK_OPEN, pos)
        if start < 0:
            rest_parts.append(text[pos:])
            break
        rest_parts.append(text[pos:start])
        end = text.find(THINK_CLOSE, start)
        if end < 0:
            thinking_parts.append(text[start + len(THINK_OPEN) :])
            break
        thinking_parts.append(text[start + len(THINK_OPEN) : end])
        pos = end + len(THINK_CLOSE)
    # Some templates open the think block in the prompt, so only a close appears.
    rest = "".join(rest_parts)
    if not thinking_parts and THINK_CLOSE in rest:
        head, _, rest = rest.partition(THINK_CLOSE)
        thinking_parts.append(head)
    return "\n".join(p.strip() for p in thinking_parts).strip(), rest


def loads_lenient(text: str) -> Any:
    """`json.loads` that forgives code fences, trailing commas, single quotes
    around a plain object, and a missing closing brace or two."""
    text = _FENCE.sub("", text.strip())
    try:
        return json.loads(text)
    except json.JSONDecodeError as first_error:
        repaired = _TRAILING_COMMA.sub(r"\1", text)
        opens = repaired.count("{") - repaired.count("}")
        if 0 < opens <= 3:
            repaired += "}" * opens
        for candidate in (repaired, repaired.replace("'", '"')):
            try:
                return json.loads(candidate)
            except json.JSONDecodeError:
                continue
        raise first_error


def call_from_json(text: str) -> ToolCallRequest:
    """Build a call from a `{"name": ..., "arguments": {...}}` object."""
    try:
        obj = loads_lenient(text)
    except json.JSONDecodeError as e:
        m = _NAME.search(text)
        return ToolCallRequest(
            name=m.group(1) if m else "",
            raw_arguments=text.strip(),
            parse_error=f"the tool call is not valid JSON ({e.msg} at character {e.pos})",
        )
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return ToolCallRequest(
            name="",
            raw_arguments=text.strip(),
            parse_error='a tool call must be a JSON object with a "name" string and an "arguments" object',
        )
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models double-encode the arguments
        try:
            args = loads_lenient(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            return ToolCallRequest(
                name=obj["name"], raw_arguments=args, parse_error=f"the arguments are not valid JSON ({e.msg})"
            )
    if not isinstance(args, dict):
        return ToolCallRequest(
            name=obj["name"],
            raw_arguments=json.dumps(args),
            parse_error='"arguments" must be a JSON object',
        )
    return ToolCallRequest(name=obj["name"], arguments=args)


def parse_hermes(text: str) -> ParsedOutput:
    """Parse `<think>` and `<tool_call>` blocks out of raw model text."""
    thinking, rest = split_thinking(text)
    calls: list[ToolCallRequest] = []
    content_parts: list[str] = []
    pos = 0
    while True:
        start = rest.find(CALL_OPEN, pos)
        if start < 0:
            content_parts.append(rest[pos:])
            break
        content_parts.append(rest[pos:start])
        end = rest.find(CALL_CLOSE, start)
        body_end = end if end >= 0 else len(rest)
        calls.append(call_from_json(rest[start + len(CALL_OPEN) : body_end]))
        if end < 0:
            break
        pos = end + len(CALL_CLOSE)
    return ParsedOutput(content="".join(content_parts).strip(), thinking=thinking, tool_calls=calls)


def parse_output(text: str) -> ParsedOutput:
    """The parser used for raw text when a backend has no format of its own."""
    return parse_hermes(text)
