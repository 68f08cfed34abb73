"""Output formats: how model families write thinking and tool calls.

`parse_output(text, family=None)` reads raw generated text (decoded with its
special tokens) through a ladder of formats:

1. the tokenizer's own response schema, when a `ResponseSchemaFormat` is given;
2. harmony (gpt-oss): `<|channel|>analysis<|message|>...`, calls `to=functions.NAME`;
3. Hermes / Qwen: `<tool_call>{...}</tool_call>`;
4. Llama 3: a JSON call as the whole message, optionally after `<|python_tag|>`,
   or a list of Python-style calls (Llama 3.2 / 4: `[f(a=1), g(b=2)]`);
5. Mistral: `[TOOL_CALLS] [{...}]` or `[TOOL_CALLS]name[ARGS]{...}`;
6. DeepSeek V3 / R1 / V3.1: `<｜tool▁calls▁begin｜>...`;
7. a bare or fenced JSON call, leniently repaired.

Thinking (`<think>`, `[THINK]`, harmony's analysis channel) is taken out
first, so calls written while thinking are never read. A format is chosen by
its markers; `family` (a name or a `ChatFormat`) is tried first. A call that
cannot be read comes back with `parse_error` set; parsing never raises.
"""

from __future__ import annotations

from typing import Any

from ...types import trusted
from .base import (
    THINK_CLOSE,
    THINK_OPEN,
    ChatFormat,
    ParsedOutput,
    output,
    split_all_thinking,
    split_thinking,
)
from .base import strip_end_tokens as strip_end_tokens
from .deepseek import DeepSeekFormat
from .fallback import JsonFallbackFormat
from .harmony import HarmonyFormat, HarmonyReader
from .hermes import CALL_CLOSE, CALL_OPEN, HermesFormat, single_call
from .jsonfix import call_from_json, calls_from_json_text, loads_lenient, repair_json
from .llama import Llama3Format
from .mistral import MistralFormat
from .schema import ResponseSchemaFormat, response_schema

HARMONY = HarmonyFormat()
HERMES = HermesFormat()
LLAMA3 = Llama3Format()
MISTRAL = MistralFormat()
DEEPSEEK = DeepSeekFormat()
JSON_FALLBACK = JsonFallbackFormat()

#: The ladder after harmony, in order; harmony is tried on the raw text first.
LADDER: tuple[ChatFormat, ...] = (HERMES, LLAMA3, MISTRAL, DEEPSEEK)

FORMATS: dict[str, ChatFormat] = {
    f.name: f for f in (HARMONY, HERMES, LLAMA3, MISTRAL, DEEPSEEK, JSON_FALLBACK)
}
ALIASES = {
    "gpt-oss": "harmony",
    "gpt_oss": "harmony",
    "qwen": "hermes",
    "llama": "llama3",
    "llama-3": "llama3",
    "llama3_json": "llama3",
    "deepseek-v3": "deepseek",
    "deepseek-r1": "deepseek",
}

__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "DEEPSEEK",
    "FORMATS",
    "HARMONY",
    "HERMES",
    "JSON_FALLBACK",
    "LADDER",
    "LLAMA3",
    "MISTRAL",
    "THINK_CLOSE",
    "THINK_OPEN",
    "ChatFormat",
    "HarmonyFormat",
    "HarmonyReader",
    "HermesFormat",
    "JsonFallbackFormat",
    "Llama3Format",
    "MistralFormat",
    "ParsedOutput",
    "ResponseSchemaFormat",
    "call_from_json",
    "calls_from_json_text",
    "detect_format",
    "format_for_tokenizer",
    "get_format",
    "loads_lenient",
    "parse_ladder",
    "parse_output",
    "plain_text",
    "repair_json",
    "split_thinking",
    "stream_splitter",
]


def get_format(family: str | ChatFormat | None) -> ChatFormat | None:
    """A format by name ("harmony", "hermes", "llama3", "mistral", "json") or as given."""
    if family is None or isinstance(family, ChatFormat):
        return family
    key = family.strip().lower()
    found = FORMATS.get(ALIASES.get(key, key))
    if found is None:
        raise ValueError(f"unknown output format {family!r}; known: {', '.join(sorted(FORMATS))}")
    return found


def detect_format(source: Any) -> ChatFormat | None:
    """The format whose markers `source` (raw output text or a tokenizer) carries, or None."""
    if isinstance(source, str):
        if HARMONY.detect_text(source):
            return HARMONY
        rest = split_all_thinking(source)[1]
        return next((f for f in (*LADDER, JSON_FALLBACK) if f.detect_text(rest)), None)
    return format_for_tokenizer(source)


def format_for_tokenizer(tokenizer: Any) -> ChatFormat | None:
    """The format a model writes, judged from its tokenizer: its own response
    schema when it has one, else the family its chat template mentions
    (`<|channel|>` for harmony, `[TOOL_CALLS]`, `<|python_tag|>`, `<tool_call>`).
    None means auto-detection from the text."""
    family = next((f for f in (HARMONY, MISTRAL, LLAMA3, HERMES) if f.detect_tokenizer(tokenizer)), None)
    if response_schema(tokenizer) is not None:
        return ResponseSchemaFormat(tokenizer, fallback=family)
    return family


def parse_output(text: str, family: str | ChatFormat | None = None) -> ParsedOutput:
    """Parse raw model text into content, thinking and tool calls (never raises
    on any text; an unreadable call has `parse_error` set)."""
    fmt = get_format(family)
    if fmt is None or fmt is HERMES:
        # Most turns are one clean Hermes call or plain text: read those
        # straight away (a fifth of the ladder's cost or less).
        parsed = single_call(text) or plain_text(text)
        if parsed is not None:
            return parsed
    return parse_ladder(text, fmt)


def parse_text_only(text: str, family: str | ChatFormat | None = None) -> ParsedOutput:
    """`parse_output` for a reply that may not call tools (none were offered, or
    tool_choice was "none"): thinking is split off, anything that looks like a
    call stays in the content as the text the model wrote."""
    fmt = get_format(family)
    if isinstance(fmt, ResponseSchemaFormat):
        fmt = fmt.fallback
    if fmt is HARMONY or (fmt is None and HARMONY.opens(text)):
        # Its channels say what is thinking; a call there has no text of its own to keep.
        parsed = parse_output(text, HARMONY)
        return parsed.model_copy(update={"tool_calls": []}) if parsed.tool_calls else parsed
    thinking, rest = split_all_thinking(text)
    return trusted(
        ParsedOutput,
        content=strip_end_tokens(rest).strip(),
        thinking=thinking.strip(),
        tool_calls=[],
        format="text",
    )


def plain_text(text: str) -> ParsedOutput | None:
    """Text that no format can read a call or thinking from, or None.

    Every format's markers hold "<" or "[", and a bare JSON call needs an
    "arguments" or "parameters" key: without those the ladder ends in plain
    text (the tests hold the two side by side).
    """
    if "<" in text or "[" in text or "arguments" in text or "parameters" in text:
        return None
    return trusted(ParsedOutput, content=text.strip(), thinking="", tool_calls=[], format="text")


def parse_ladder(text: str, fmt: ChatFormat | None) -> ParsedOutput:
    """`parse_output` without the single-call shortcut."""
    if isinstance(fmt, ResponseSchemaFormat):
        try:
            parsed = fmt.parse(text)
        except Exception:  # a third-party parser: any failure sends the text down the ladder
            parsed = None
        fmt = fmt.fallback
        if parsed is not None and (parsed.tool_calls or detect_format(text) in (None, JSON_FALLBACK)):
            return parsed
    if HARMONY.detect_text(text):
        return HARMONY.parse(text)
    thinking, rest = split_all_thinking(text)
    rest = strip_end_tokens(rest)
    ladder = LADDER if fmt is None or fmt in (HARMONY, JSON_FALLBACK) else (fmt, *LADDER)
    chosen: ChatFormat = next((f for f in ladder if f.detect_text(rest)), JSON_FALLBACK)
    content, calls = chosen.parse_calls(rest)
    name = chosen.name if chosen is not JSON_FALLBACK or calls else "text"
    return output(content, thinking, calls, name)


def stream_splitter(
    family: str | ChatFormat | None = None,
    *,
    in_thinking: bool = False,
    calls: bool = True,
    hold_json: bool = True,
) -> Any:
    """A splitter with `feed(text) -> [ModelDelta]` and `finish()` for streaming
    text of this format (harmony has its own; every other format shares the tag one).
    With `calls=False` (no tools offered) call markup streams as the text it is; with
    `hold_json=False` a reply that may be a bare JSON call streams as it comes. With no
    family, a reply that opens with harmony markup is split as harmony."""
    from .stream import AutoStreamSplitter, HarmonyStreamSplitter, TagStreamSplitter

    fmt = get_format(family)
    if isinstance(fmt, ResponseSchemaFormat):
        fmt = fmt.fallback
    if fmt is HARMONY:
        return HarmonyStreamSplitter(in_thinking=in_thinking)
    options: dict[str, Any] = {"in_thinking": in_thinking, "hold_json": hold_json}
    if not calls:
        options.update(hidden_tags=(), hold_json=False)
    return TagStreamSplitter(**options) if fmt is not None or in_thinking else AutoStreamSplitter(**options)
