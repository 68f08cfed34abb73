"""Where each kind of event keeps its text, and how to put redacted text back."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agent.loop import FINAL_ANSWER

# Events whose text lives in `content` alone.
_CONTENT_TYPES = ("user_message", "tool_result")
_HIT_TEXT_KEYS = ("text", "content", "document", "snippet")


def text_of(event: Any) -> str:
    """All the text of an event a content check should read."""
    kind = getattr(event, "type", "")
    if kind in _CONTENT_TYPES or kind == "final_answer":  # a typed answer's data is in its content, as JSON
        return event.content or ""
    if kind == "model_response":
        # The reply, its thinking and an answer given through the final_answer tool (which
        # never becomes a tool_call event); what it passes to other tools is the tool_call stage's.
        answers = [_call_text(c) for c in event.tool_calls if c.name == FINAL_ANSWER]
        return "\n".join(p for p in (event.content, event.thinking, *answers) if p)
    if kind == "memory_write":  # the text and what is stored with it (tags, labels; keys too)
        return "\n".join(p for p in (event.text, _flatten(event.metadata, keys=True)) if p)
    if kind == "memory_read":
        return "\n".join(_hit_text(h) for h in event.hits)
    if kind == "tool_call":
        return _flatten(event.arguments)
    return ""


def _hit_text(hit: Any) -> str:
    if isinstance(hit, dict):
        for key in _HIT_TEXT_KEYS:
            if isinstance(hit.get(key), str):
                return hit[key]
        return json.dumps(hit, default=str, ensure_ascii=False)
    return str(hit)


def _call_text(call: Any) -> str:
    """A call's arguments, or the text of those that could not be read."""
    return _flatten(call.arguments) if call.arguments is not None else call.raw_arguments or ""


def _flatten(value: Any, *, keys: bool = False) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        parts = [_flatten(v, keys=keys) for v in value.values()]
        return "\n".join([*(k for k in value if isinstance(k, str)), *parts] if keys else parts)
    if isinstance(value, (list, tuple)):
        return "\n".join(_flatten(v, keys=keys) for v in value)
    return ""


def _map_strings(value: Any, fn: Callable[[str], str], *, keys: bool = False) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {
            (fn(k) if keys and isinstance(k, str) else k): _map_strings(v, fn, keys=keys)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(_map_strings(v, fn, keys=keys) for v in value)
    return value


def _map_call(call: Any, fn: Callable[[str], str]) -> Any:
    if call.arguments is None:  # unreadable: its text is what the log and the next prompt keep
        return call.model_copy(update={"raw_arguments": fn(call.raw_arguments or "")})
    return call.model_copy(update={"arguments": _map_strings(call.arguments, fn)})


def map_text(event: Any, fn: Callable[[str], str]) -> Any:
    """Apply `fn` to the event's text; return the new content in the event's own shape.

    A string for content/text events, the arguments dict for a tool call,
    the hits list for a memory read (None for events without text).
    """
    kind = getattr(event, "type", "")
    if kind in _CONTENT_TYPES:
        return fn(event.content or "")
    if kind == "model_response":
        mapped = {
            "content": fn(event.content or ""),
            "thinking": fn(event.thinking) if event.thinking else event.thinking,
        }
        if any(c.name == FINAL_ANSWER for c in event.tool_calls):
            mapped["tool_calls"] = [
                _map_call(c, fn) if c.name == FINAL_ANSWER else c for c in event.tool_calls
            ]
        return mapped
    if kind == "final_answer":
        return {"content": fn(event.content or ""), "data": _map_strings(event.data, fn)}
    if kind == "memory_write":
        return {"text": fn(event.text or ""), "metadata": _map_strings(dict(event.metadata), fn, keys=True)}
    if kind == "memory_read":
        return _map_strings(list(event.hits), fn)
    if kind == "tool_call":
        return _map_strings(dict(event.arguments), fn)
    return None


def current_content(event: Any) -> Any:
    """The event's redactable content, in the shape `map_text` returns."""
    return map_text(event, lambda s: s)


def with_content(event: Any, content: Any) -> Any:
    """A copy of `event` whose text is `content` (the field depends on the event type)."""
    kind = getattr(event, "type", "")
    if kind in _CONTENT_TYPES:
        return event.model_copy(update={"content": content})
    if kind == "memory_write" and isinstance(content, str):  # the text alone, as a guard may give it
        return event.model_copy(update={"text": content})
    if kind in ("model_response", "final_answer", "memory_write"):
        return event.model_copy(update=content)
    if kind == "memory_read":
        return event.model_copy(update={"hits": content})
    if kind == "tool_call":
        return event.model_copy(update={"arguments": content})
    return event
