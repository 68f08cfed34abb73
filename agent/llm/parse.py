"""Parse raw model text into content, thinking and tool calls.

The tolerant end of a chat format. `parse_output(text, family=None)` reads a
turn through a ladder of formats (see `agent.llm.formats`): the tokenizer's
own response schema, harmony (gpt-oss), Hermes/Qwen `<tool_call>` blocks,
Llama 3 JSON calls, Mistral `[TOOL_CALLS]`, then a leniently repaired bare
JSON call. It extracts every call in a turn, ignores calls written inside
thinking, and repairs the small JSON mistakes small models make. A call it
cannot read comes back with a `parse_error`, which the loop turns into a
retry prompt for the model.
"""

from __future__ import annotations

from .formats import (
    CALL_CLOSE,
    CALL_OPEN,
    HERMES,
    THINK_CLOSE,
    THINK_OPEN,
    ChatFormat,
    ParsedOutput,
    call_from_json,
    calls_from_json_text,
    detect_format,
    format_for_tokenizer,
    get_format,
    loads_lenient,
    parse_output,
    parse_text_only,
    split_thinking,
    stream_splitter,
)

__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "THINK_CLOSE",
    "THINK_OPEN",
    "ChatFormat",
    "ParsedOutput",
    "call_from_json",
    "calls_from_json_text",
    "detect_format",
    "format_for_tokenizer",
    "get_format",
    "has_markup",
    "loads_lenient",
    "parse_hermes",
    "parse_output",
    "parse_text_only",
    "split_thinking",
    "stream_splitter",
]

#: Substrings that show raw text still holds thinking or tool-call markup.
MARKUP = (
    CALL_OPEN,
    THINK_OPEN,
    THINK_CLOSE,
    "<|channel|>",
    "<|message|>",
    "[TOOL_CALLS]",
    "[THINK]",
    "[/THINK]",
    "<|python_tag|>",
    "<｜tool▁calls▁begin｜>",  # DeepSeek
    "<|tool_call|>",  # Phi-4
    "<｜tool▁call▁begin｜>",
)


def has_markup(text: str) -> bool:
    """Whether raw text carries thinking or tool calls worth parsing: a marker
    of some format, or a bare JSON call (what a server without a tool parser
    hands back as content)."""
    return any(marker in text for marker in MARKUP) or detect_format(text) is not None


def parse_hermes(text: str) -> ParsedOutput:
    """Parse `<think>` and `<tool_call>` blocks out of raw model text."""
    return HERMES.parse(text)
