"""Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

Also reads the XML body Qwen3-Coder and Qwen 3.5 put inside the same tags:
`<tool_call><function=NAME><parameter=KEY>VALUE</parameter></function></tool_call>`.
"""

from __future__ import annotations

import json
import re

from ...types import ToolCallRequest, trusted
from .base import CALL_CLOSE, CALL_OPEN, ChatFormat, ParsedOutput, _scan_json, json_end
from .jsonfix import call_error, calls_from_json_text, loads_lenient

# Phi-4-mini writes the same JSON (often a list of calls) between its own tokens.
PHI_CALL_OPEN, PHI_CALL_CLOSE = "<|tool_call|>", "<|/tool_call|>"

_XML_FUNCTION = re.compile(r"\s*<function=([^>\n]*)>(.*?)(?:</function>\s*)?\Z", re.DOTALL)
_XML_PARAM = re.compile(r"<parameter=([^>\n]+)>(.*?)(?:</parameter>|(?=<parameter=)|\Z)", re.DOTALL)


def _xml_call(body: str) -> ToolCallRequest | None:
    m = _XML_FUNCTION.match(body)
    if m is None:
        return None
    name = m.group(1).strip()
    if not name:
        return call_error("", body.strip(), "the <function=...> tag has no tool name")
    args: dict[str, object] = {}
    for key, value in _XML_PARAM.findall(m.group(2)):
        value = value.strip("\n")
        if value.lstrip()[:1] in ("{", "["):  # objects and arrays are written as JSON
            try:
                args[key.strip()] = loads_lenient(value)
                continue
            except json.JSONDecodeError:
                pass
        args[key.strip()] = value
    return ToolCallRequest(name=name, arguments=args)


def hermes_calls(body: str) -> list[ToolCallRequest]:
    """The calls in the body of one `<tool_call>` block."""
    if not body.strip():
        return [call_error("", "", "the <tool_call> block is empty")]
    if "<function=" in body:
        call = _xml_call(body)
        if call is not None:
            return [call]
    return calls_from_json_text(body)


def single_call(text: str) -> ParsedOutput | None:
    """The usual turn, one `<tool_call>` block of well-formed JSON and nothing
    else, read without the ladder; None sends any other text down the ladder.

    The result is the one the ladder gives (tests hold the two side by side).
    Every marker of the other formats, thinking tags, end tokens, a second
    block and an XML body all contain "<", so a body without "<" (nor a
    `[THINK]` tag, nor a code fence) can only be this one call.
    """
    s = text.strip()
    if not (s.startswith(CALL_OPEN) and s.endswith(CALL_CLOSE)):
        return None
    body = s[len(CALL_OPEN) : -len(CALL_CLOSE)].strip()
    if "<" in body or "```" in body or "THINK]" in body:
        return None
    try:  # the C scanner itself: json.loads wraps it in three Python calls and two regex matches
        obj, end = _scan_json(body, 0)
    except (StopIteration, ValueError, RecursionError):  # the ladder repairs what it can and words the error
        return None
    if end != len(body):
        return None
    if type(obj) is not dict:
        return None
    name, args = obj.get("name"), obj.get("arguments")
    if type(name) is not str or type(args) is not dict or not name.strip():
        return None
    call = trusted(ToolCallRequest, name=name.strip(), arguments=args)
    return trusted(ParsedOutput, content="", thinking="", tool_calls=[call], format="hermes")


class HermesFormat(ChatFormat):
    name = "hermes"
    template_markers = (CALL_OPEN,)

    def detect_text(self, text: str) -> bool:
        return CALL_OPEN in text or PHI_CALL_OPEN in text

    def parse_calls(self, text: str) -> tuple[str, list[ToolCallRequest]]:
        if PHI_CALL_OPEN in text:
            text = text.replace(PHI_CALL_OPEN, CALL_OPEN).replace(PHI_CALL_CLOSE, CALL_CLOSE)
        calls: list[ToolCallRequest] = []
        content_parts: list[str] = []
        pos = 0
        while True:
            start = text.find(CALL_OPEN, pos)
            if start < 0:
                content_parts.append(text[pos:])
                break
            content_parts.append(text[pos:start])
            # The close after the call's JSON: a `</tool_call>` inside an argument is text.
            body = json_end(text, start + len(CALL_OPEN))
            end = text.find(CALL_CLOSE, body if body >= 0 else start)
            body_end = end if end >= 0 else len(text)
            calls.extend(hermes_calls(text[start + len(CALL_OPEN) : body_end]))
            if end < 0:
                break
            pos = end + len(CALL_CLOSE)
        return "".join(content_parts).strip(), calls
