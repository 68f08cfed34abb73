"""What every output format shares: the parsed result, thinking blocks, and
the `ChatFormat` base class."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ...types import ToolCallRequest

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
#: Thinking markers: `<think>` (Qwen, DeepSeek, SmolLM3...) and `[THINK]` (Magistral).
THINK_TAGS: tuple[tuple[str, str], ...] = ((THINK_OPEN, THINK_CLOSE), ("[THINK]", "[/THINK]"))
#: End-of-turn tokens a decoded generation may still end with.
END_TOKENS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "</s>",
    "<｜end▁of▁sentence｜>",  # DeepSeek
    "<|end|>",  # Phi
)


class ParsedOutput(BaseModel):
    model_config = ConfigDict(defer_build=True)

    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    #: The format that read the text: "harmony", "hermes", "llama3", "mistral",
    #: "json" (a bare or fenced JSON call), "schema" (the tokenizer's own parser), or "text".
    format: str = ""


def output(content: str, thinking: str, calls: list[ToolCallRequest], format: str) -> ParsedOutput:
    return ParsedOutput(content=content, thinking=thinking, tool_calls=calls, format=format)


CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"  # Hermes' (hermes.py); here for the thinking split
_scan_json = json.JSONDecoder().scan_once


def json_end(text: str, pos: int) -> int:
    """Where the JSON object starting at `pos` (after white space) ends, or -1: the
    end of a call's arguments, inside which a tag is text the model wrote."""
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    if pos >= len(text) or text[pos] != "{":
        return -1
    try:
        return _scan_json(text, pos)[1]
    except (StopIteration, ValueError, RecursionError):  # RecursionError: thousands of brackets
        return -1


def _call_spans(text: str) -> list[tuple[int, int]]:
    """Where the JSON of each `<tool_call>` that reads whole lies, from the start: a
    `<tool_call>` inside one of them is text, not a call."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while (start := text.find(CALL_OPEN, pos)) >= 0:
        end = json_end(text, start + len(CALL_OPEN))
        if end < 0:
            pos = start + len(CALL_OPEN)
            continue
        spans.append((start, end))
        pos = end
    return spans


def _in_call(spans: list[tuple[int, int]], at: int) -> int:
    """Where the call JSON holding `at` ends, or -1. A `<think>` in code a call writes is not thinking."""
    return next((end for start, end in spans if start < at < end), -1)


def split_thinking(text: str, open_tag: str = THINK_OPEN, close_tag: str = THINK_CLOSE) -> tuple[str, str]:
    """Return (thinking, rest). An unclosed open tag makes the tail thinking."""
    if open_tag not in text and close_tag not in text:
        return "", text
    thinking_parts: list[str] = []
    rest_parts: list[str] = []
    spans = _call_spans(text) if CALL_OPEN in text else []
    pos = 0
    while True:
        start = text.find(open_tag, pos)
        while start >= 0 and spans and (inside := _in_call(spans, start)) >= 0:
            start = text.find(open_tag, inside)
        if start < 0:
            rest_parts.append(text[pos:])
            break
        rest_parts.append(text[pos:start])
        end = text.find(close_tag, start)
        if end < 0:
            thinking_parts.append(without_cut_close(text[start + len(open_tag) :], close_tag))
            break
        thinking_parts.append(text[start + len(open_tag) : end])
        pos = end + len(close_tag)
    # Some templates open the think block in the prompt, so only a close appears.
    rest = "".join(rest_parts)
    if not thinking_parts and close_tag in rest and _in_call(_call_spans(rest), rest.find(close_tag)) < 0:
        head, _, rest = rest.partition(close_tag)
        thinking_parts.append(head)
    return "\n".join(p.strip() for p in thinking_parts).strip(), rest


def without_cut_close(thinking: str, close_tag: str) -> str:
    """An unclosed block's text without the start of its close tag at the very end: a reply
    cut while the close was being written (a thinking budget closes the block with a few
    tokens, and the reply's token limit may fall among them) leaves `</thi`, which is no
    thinking. Two characters at least: a lone `<` may be the model's own."""
    for size in range(len(close_tag) - 1, 1, -1):
        if thinking.endswith(close_tag[:size]):
            return thinking[:-size]
    return thinking


def split_all_thinking(text: str) -> tuple[str, str]:
    """`split_thinking` for every known pair of thinking markers."""
    found: list[str] = []
    for open_tag, close_tag in THINK_TAGS:
        thinking, text = split_thinking(text, open_tag, close_tag)
        if thinking:
            found.append(thinking)
    return "\n".join(found), text


def strip_end_tokens(text: str) -> str:
    """Drop end-of-turn tokens (and whitespace) from the end of the text."""
    end = cut = len(text)
    while True:
        while end and text[end - 1].isspace():
            end -= 1
        token = next((t for t in END_TOKENS if text.endswith(t, 0, end)), None)
        if token is None:
            return text[:cut]
        end = cut = end - len(token)


def template_text(tokenizer: Any) -> str:
    """A tokenizer's chat template as one string ("" when it has none)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return ""
    if isinstance(template, dict):
        return "\n".join(map(str, template.values()))
    return str(template)


class ChatFormat:
    """How one model family writes thinking and tool calls in raw text.

    `detect` says whether a text (or a tokenizer) belongs to the family;
    `parse` reads a whole turn. Formats that share the `<think>` convention
    only implement `detect_text` and `parse_calls` on the text with the
    thinking taken out, so a call written inside thinking is never read.
    """

    name: ClassVar[str] = "text"
    #: Substrings of a chat template that mark the family.
    template_markers: ClassVar[tuple[str, ...]] = ()

    def detect(self, source: Any) -> bool:
        """Whether `source`, a raw output text or a tokenizer, is in this format."""
        if isinstance(source, str):
            return self.detect_text(split_all_thinking(source)[1])
        return self.detect_tokenizer(source)

    def detect_tokenizer(self, tokenizer: Any) -> bool:
        template = template_text(tokenizer)
        return any(marker in template for marker in self.template_markers)

    def detect_text(self, text: str) -> bool:
        """Whether text outside thinking carries this format's call markers."""
        return False

    def parse_calls(self, text: str) -> tuple[str, list[ToolCallRequest]]:
        """(content, calls) from text outside thinking."""
        return text.strip(), []

    def parse(self, text: str) -> ParsedOutput:
        thinking, rest = split_all_thinking(text)
        content, calls = self.parse_calls(strip_end_tokens(rest))
        return output(content, thinking, calls, self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
