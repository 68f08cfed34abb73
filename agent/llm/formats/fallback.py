"""The last rung: a JSON tool call with no format around it.

Reads `{"name": ..., "arguments": {...}}` objects in a code fence, or written
inline in the text, with the repairs of `loads_lenient` (trailing commas,
single quotes, missing closing braces). A fenced block that is clearly meant
as a call but cannot be read becomes a call with a `parse_error`; inline text
that does not decode stays text.
"""

from __future__ import annotations

import json
import re

from ...types import ToolCallRequest
from .base import ChatFormat
from .jsonfix import ARGS_KEY, NAME_KEY, call_from_obj, calls_from_json_text, loads_lenient, value_end

_FENCE_BLOCK = re.compile(r"```[ \t]*([\w-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_INLINE_START = re.compile(r"""\{\s*["']name["']\s*:""")
_TOP_OPEN = re.compile(r"\{|\[(?=\s*\{)")
_CODE_LANGS = frozenset({"", "json", "json5", "tool_call", "tool_code", "javascript", "js"})


def _is_call(obj: object, *, inline: bool = False) -> bool:
    """Whether a JSON value has a call's shape. Written `inline` in running text it must also
    have arguments a call could take (an object, or one encoded as a string): prose that
    shows data with a "name" and an "arguments" list is text, not a call to mend."""
    if isinstance(obj, list):
        return bool(obj) and all(_is_call(item, inline=inline) for item in obj)
    if not (isinstance(obj, dict) and isinstance(obj.get("name"), str)):
        return False
    key = "arguments" if "arguments" in obj else "parameters" if "parameters" in obj else None
    return key is not None and (not inline or isinstance(obj[key], (dict, str)))


class JsonFallbackFormat(ChatFormat):
    name = "json"

    def detect_text(self, text: str) -> bool:
        return bool(NAME_KEY.search(text) and ARGS_KEY.search(text))

    def parse_calls(self, text: str) -> tuple[str, list[ToolCallRequest]]:
        if not ("name" in text and ("arguments" in text or "parameters" in text)):
            return text.strip(), []
        calls: list[ToolCallRequest] = []
        kept: list[str] = []
        pos = 0
        for m in _FENCE_BLOCK.finditer(text):
            body = m.group(2)
            if m.group(1).lower() not in _CODE_LANGS or not (NAME_KEY.search(body) and ARGS_KEY.search(body)):
                continue
            try:
                obj = loads_lenient(body)
            except json.JSONDecodeError:
                if not body.lstrip().startswith(("{", "[")):
                    continue
                found = calls_from_json_text(body)  # several objects, or a broken call
            else:
                if not _is_call(obj):
                    continue
                found = [call_from_obj(o, json.dumps(o)) for o in (obj if isinstance(obj, list) else [obj])]
            kept.append(text[pos : m.start()])
            pos = m.end()
            calls.extend(found)
        kept.append(text[pos:])
        if calls:
            return "".join(kept).strip(), calls
        return self._inline(text)

    @staticmethod
    def _inline(text: str) -> tuple[str, list[ToolCallRequest]]:
        """Call objects written in running text, at the top level only: a call
        shape nested inside some other JSON value is that value's data."""
        calls: list[ToolCallRequest] = []
        kept: list[str] = []
        pos = 0
        opening = _TOP_OPEN.search(text)
        while opening is not None:
            start = opening.start()
            end = value_end(text, start)  # skip the whole value: nothing nested in it is looked at
            opening = _TOP_OPEN.search(text, end)
            raw = text[start:end]
            if not _INLINE_START.match(raw.lstrip("[ \t\r\n")):
                continue
            try:
                obj = loads_lenient(raw)
            except json.JSONDecodeError:
                continue
            if not _is_call(obj, inline=True):
                continue
            kept.append(text[pos:start])
            calls.extend(call_from_obj(o, json.dumps(o)) for o in (obj if isinstance(obj, list) else [obj]))
            pos = end
        kept.append(text[pos:])
        return "".join(kept).strip(), calls
