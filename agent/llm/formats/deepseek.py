"""DeepSeek V3 / R1 / V3.1: calls between its own special tokens.

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather
    ```json
    {"city": "Paris"}
    ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>                          (V3, R1)
    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜>...  (V3.1)

The bars are U+FF5C and the word joints U+2581, as the tokenizer writes them.
Thinking is `<think>...</think>`, taken out before this runs.
"""

from __future__ import annotations

from ...types import ToolCallRequest
from .base import ChatFormat
from .jsonfix import call_error, call_from_text, unfence

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"


def _call(block: str) -> ToolCallRequest:
    """One call: `function<sep>NAME` and fenced JSON (V3), or `NAME<sep>JSON` (V3.1)."""
    head, sep, rest = block.partition(SEP)
    if not sep:
        return call_error("", block.strip(), f"the call has no {SEP}")
    if head.strip() == "function":  # V3: the name is the first line after the separator
        name, _, raw = rest.partition("\n")
    else:
        name, raw = head, rest
    name, raw = name.strip(), unfence(raw.strip())
    if not name:
        return call_error("", raw, "the call has no tool name")
    return call_from_text(name, raw)


class DeepSeekFormat(ChatFormat):
    name = "deepseek"
    template_markers = (CALLS_BEGIN,)

    def detect_text(self, text: str) -> bool:
        return CALLS_BEGIN in text or CALL_BEGIN in text

    def parse_calls(self, text: str) -> tuple[str, list[ToolCallRequest]]:
        start = min(i for i in (text.find(CALLS_BEGIN), text.find(CALL_BEGIN)) if i >= 0)
        content, body = text[:start], text[start:]
        end = body.find(CALLS_END)
        after = body[end + len(CALLS_END) :] if end >= 0 else ""
        body = body[:end] if end >= 0 else body
        calls: list[ToolCallRequest] = []
        for piece in body.split(CALL_BEGIN)[1:]:
            calls.append(_call(piece.partition(CALL_END)[0]))  # an unclosed last call is read as it is
        if not calls:
            calls = [call_error("", body.strip(), f"no call after {CALLS_BEGIN}")]
        return (content + after).strip(), calls
