"""A pytest plugin for testing agents the way this project tests its own.

Installed with the package (entry point `pytest11`), it provides fixtures:

- `scripted_llm(turns)` builds a `ScriptedLLM` (raw text turns go through the
  real parser; an extra model call fails loudly);
- `agent_workspace` is a fresh, empty workspace directory;
- `agent_run_dir` is a private run-log directory;
- `expect_events(events, patterns)` checks that events appear in order.

```python
def test_adds(scripted_llm, agent_run_dir, expect_events):
    llm = scripted_llm([call("add", a=2, b=3), "5"])
    result = MyAgent(llm, run_dir=agent_run_dir).run_sync("2+3?")
    expect_events(result.events, [("tool_call", {"name": "add"}), ("final_answer", {"content": "5"})])
```
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from .llm.scripted import ScriptedLLM, ScriptItem

Pattern = str | tuple[str, dict[str, Any]] | dict[str, Any]


def call(name: str, /, **arguments: Any) -> str:
    """Raw model text for one tool call, as a Hermes-style model writes it."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def _split(pattern: Pattern) -> tuple[str | None, dict[str, Any]]:
    if isinstance(pattern, str):
        return pattern, {}
    if isinstance(pattern, tuple):
        return pattern[0], pattern[1]
    fields = dict(pattern)
    return fields.pop("type", None), fields


def _matches(event: Any, kind: str | None, fields: dict[str, Any]) -> bool:
    if kind is not None and event.type != kind:
        return False
    for key, expected in fields.items():
        actual = getattr(event, key, None)
        if callable(expected) and not isinstance(expected, type):
            if not expected(actual):
                return False
        elif actual != expected:
            return False
    return True


def match_events(events: Sequence[Any], patterns: Sequence[Pattern]) -> None:
    """Assert that events matching `patterns` occur in this order (others may come between).

    A pattern is an event type (`"tool_call"`), a type with fields
    (`("tool_result", {"is_error": True})`), or a dict with an optional
    `type`. A field's expected value may be a predicate.
    """
    position = 0
    for index, pattern in enumerate(patterns):
        kind, fields = _split(pattern)
        start = position
        while position < len(events) and not _matches(events[position], kind, fields):
            position += 1
        if position == len(events):
            seen = ", ".join(e.type for e in events if e.type != "model_delta")
            message = f"pattern {index} {pattern!r} not found in order; events were: {seen}"
            near = [e for e in events[start:] if kind is None or e.type == kind][:5]
            if near and fields:  # the near misses: what the fields held where the pattern was looked for
                message += f"\n{kind or 'events'} after the last match had:" + "".join(
                    "\n  " + ", ".join(f"{name}={getattr(e, name, '<none>')!r}" for name in fields) for e in near
                )
            raise AssertionError(message)
        position += 1


@pytest.fixture
def scripted_llm() -> Callable[..., ScriptedLLM]:
    def make(turns: Sequence[ScriptItem], **kwargs: Any) -> ScriptedLLM:
        return ScriptedLLM(turns, **kwargs)

    return make


@pytest.fixture
def agent_workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def agent_run_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def expect_events() -> Callable[[Sequence[Any], Sequence[Pattern]], None]:
    return match_events
