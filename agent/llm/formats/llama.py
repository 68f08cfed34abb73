"""Llama 3.x: JSON tool calls as the whole message.

    {"name": "get_weather", "parameters": {"city": "Paris"}}
    <|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}
    {"name": "a", "parameters": {}}; {"name": "b", "parameters": {}}
    [get_weather(city="Paris"), get_time(zone="CET")]        (Llama 3.2 and 4)

After `<|python_tag|>` the built-in tools' Python style is read too:
`brave_search.call(query="...")` is a call to `brave_search`.
"""

from __future__ import annotations

import ast
import re

from ...pysyntax import parse
from ...types import ToolCallRequest
from .base import ChatFormat
from .jsonfix import ARGS_KEY, call_error, call_sequence

PYTHON_TAG = "<|python_tag|>"
# Llama 3.2 and 4 write calls as a Python list of calls, the whole message: [f(a=1), g(b="x")].
_PYTHONIC_LIST = re.compile(r"\s*\[\s*[A-Za-z_][\w.]*\(.*\)\s*\]\s*", re.S)
# The whole message is a JSON call: an object whose first key is "name" (after an
# optional "type": "function"), or a list of such objects.
_JSON_CALL_START = re.compile(
    r"""\s*\[?\s*\{\s*(?:["']type["']\s*:\s*["']function["']\s*,\s*)?["'](?:name|function)["']\s*:"""
)


def _python_calls(text: str) -> list[ToolCallRequest] | None:
    """Calls written as Python: `f(a=1)`, `tool.call(a=1)`, several on lines or in a list."""
    try:
        return _read_python_calls(text)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):  # deeply nested input
        return None


def _read_python_calls(text: str) -> list[ToolCallRequest] | None:
    tree = parse(text.strip(), mode="exec")
    nodes: list[ast.expr] = []
    for stmt in tree.body:
        if not isinstance(stmt, ast.Expr):
            return None
        value = stmt.value
        nodes.extend(value.elts if isinstance(value, ast.List | ast.Tuple) else [value])
    calls: list[ToolCallRequest] = []
    for node in nodes:
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "call":
            func = func.value
        try:
            name = ast.unparse(func)
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        except (ValueError, TypeError, SyntaxError, RecursionError):
            calls.append(
                call_error(ast.unparse(func), ast.unparse(node), "the arguments must be literal values")
            )
            continue
        if node.args:
            calls.append(call_error(name, ast.unparse(node), "arguments must be passed by keyword"))
            continue
        calls.append(ToolCallRequest(name=name, arguments=args))
    return calls or None


class Llama3Format(ChatFormat):
    name = "llama3"
    template_markers = (PYTHON_TAG,)

    def detect_text(self, text: str) -> bool:
        if PYTHON_TAG in text:
            return True
        if _PYTHONIC_LIST.fullmatch(text) and _python_calls(text):
            return True
        return bool(_JSON_CALL_START.match(text) and ARGS_KEY.search(text))

    def parse_calls(self, text: str) -> tuple[str, list[ToolCallRequest]]:
        before, tag, body = text.partition(PYTHON_TAG)
        if not tag:
            if _PYTHONIC_LIST.fullmatch(text):
                python = _python_calls(text)
                if python is not None:
                    return "", python
            calls, after = call_sequence(text)
            return after.strip(), calls
        calls, after = call_sequence(body)
        if not calls:
            python = _python_calls(body)
            if python is not None:
                return before.strip(), python
            if not body.strip():
                calls = [call_error("", "", f"nothing follows {PYTHON_TAG}: the call was cut off")]
            else:
                calls = [call_error("", body.strip(), f"could not read the call after {PYTHON_TAG}")]
            after = ""
        content = (before.strip() + "\n" + after.strip()).strip()
        return content, calls
