"""Small helpers shared by the tests."""

import json


def call(name: str, **arguments) -> str:
    """Raw model text for one Hermes-style tool call."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def types(events) -> list[str]:
    return [e.type for e in events if e.type != "model_delta"]
