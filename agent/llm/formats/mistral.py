"""Mistral: `[TOOL_CALLS]`.

    [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]      (v3: a JSON list)
    [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}                             (v11 and later)
    [TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}

Thinking is `[THINK]...[/THINK]` (Magistral), taken out before this runs.
"""

from __future__ import annotations

from ...types import ToolCallRequest
from .base import ChatFormat
from .jsonfix import call_error, call_from_text, call_sequence, skip_space, value_end

TOOL_CALLS, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"


def _named_call(head: str, args_text: str) -> tuple[ToolCallRequest, str]:
    """One `NAME[ARGS]{...}` call and the text after its arguments."""
    name = head.split(CALL_ID, 1)[0].strip()
    start = skip_space(args_text, 0)
    if start < len(args_text) and args_text[start] in "{[":
        end = value_end(args_text, start)
    else:
        end = len(args_text)
    raw, after = args_text[start:end], args_text[end:]
    if not name:
        return call_error("", raw, f"the call has no tool name before {ARGS}"), after
    return call_from_text(name, raw), after


class MistralFormat(ChatFormat):
    name = "mistral"
    template_markers = (TOOL_CALLS,)

    def detect_text(self, text: str) -> bool:
        return TOOL_CALLS in text

    def parse_calls(self, text: str) -> tuple[str, list[ToolCallRequest]]:
        pieces = text.split(TOOL_CALLS)
        content = [pieces[0]]
        calls: list[ToolCallRequest] = []
        for piece in pieces[1:]:
            if ARGS in piece:
                while ARGS in piece:  # several calls after one [TOOL_CALLS]
                    head, _, tail = piece.partition(ARGS)
                    call, piece = _named_call(head, tail)
                    calls.append(call)
                content.append(piece)
                continue
            found, after = call_sequence(piece)
            if found:
                calls.extend(found)
                content.append(after)
            elif piece.strip() == "[]":
                content.append(after)
            elif piece.strip():
                calls.append(call_error("", piece.strip(), f"could not read the calls after {TOOL_CALLS}"))
            else:
                calls.append(call_error("", "", f"nothing follows {TOOL_CALLS}: the call was cut off"))
        return "\n".join(p.strip() for p in content if p.strip()), calls
