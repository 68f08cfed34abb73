"""Tool calls constrained by the tools' JSON schemas (llguidance).

When a request says the model must call a tool (`tool_choice="required"`),
`ToolCallProcessor` masks the logits so that the text is, in order:

1. a thinking block, if the model thinks (`<think>...</think>`, or the rest of
   a block the template opened); it is free text, and the thinking budget may
   close it;
2. optionally some free text, up to `preamble_chars` characters (0, the
   default, writes the tag at once; None leaves it unbounded);
3. `<tool_call>{"name": <one of the tools>, "arguments": <that tool's
   parameters>}</tool_call>`, up to `max_calls` times, newline separated;
4. the end of the turn.

The call JSON is `{"name": ..., "arguments": ...}` with the name fixed per
alternative (an `anyOf` over the tools), so a name and its arguments always
belong together; it is written the way the tool prompt shows it (`", "` and
`": "`, no other whitespace). Objects that do not say otherwise get
`"additionalProperties": false` (a stray key would fail validation anyway),
`$defs` are moved to the root with per-tool prefixes, and free strings may not
contain `</tool_call>` (a parser would end the call there).

Two nudges keep a small model on track inside the grammar: where the grammar
forces text next, only the longest token spelling its beginning is allowed
(after `"city":` the model may take ` "` but not ` ` then `"}`, a split BPE
never produces, which made SmolLM2 end strings at once); and in the last
`CLOSE_RESERVE` tokens before `max_new_tokens`, tokens that close the string,
object or turn are preferred, so a rambling string still ends as valid JSON.

Library: llguidance rather than xgrammar. Measured here with SmolLM2's 49,152
token vocabulary and a 5-tool grammar, stepping through a 48-53 token call on
this (shared, 2-core) machine:

| | llguidance 1.9.1 | xgrammar 0.2.9 |
| --- | --- | --- |
| tokenizer setup, once per model | 1.1-1.7 s | 0.5-0.8 s |
| compile one tool set | 4 ms + 9 ms matcher | 36-80 ms |
| first mask | 1 ms | 0.2-0.7 ms |
| mask per token, median | 24-34 µs | 6-9 µs |
| mask per token, worst | 4-5 ms (a lexer's first use) | 0.2 ms |
| installs | 7.6 MB, no dependencies | needs torch, transformers, triton (1 GB), tvm-ffi |

Both are far below a forward pass of even the 135M model on CPU (tens of ms),
and the "first mask takes seconds" case did not show for these grammars; the
deciding difference is the dependency weight. Grammars are compiled once per
tool set and tokenizer (`ToolGrammars`, an LRU cache) and copied per request;
`TransformersLLM` warms a tool set's grammar on a background thread the first
time a request offers it, so the llguidance tokenizer (the slow part) is built
before a required call needs it.

Nothing here imports torch, transformers or llguidance at import time.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from ..types import Effort
from .parse import CALL_CLOSE, CALL_OPEN
from .thinking import THINK_TAGS, prompt_opens_thinking

logger = logging.getLogger(__name__)

ThinkingMode = Literal["none", "optional", "open"]

#: Characters of free text allowed before the first `<tool_call>` (0: the tag comes at once).
DEFAULT_PREAMBLE_CHARS: int | None = 0
DEFAULT_MAX_CALLS = 1
#: In the last this-many tokens of a generation, tokens that close the call are preferred.
CLOSE_RESERVE = 16
_CLOSING_BYTES = frozenset(b'"}]')
_CALL_OPEN_BYTES = CALL_OPEN.encode()
_LONGEST_TOKEN = 48


class _TokenTable:
    """What `ToolCallProcessor` needs to know about the vocabulary's tokens (built once, ~30 ms)."""

    def __init__(self, ll_tokenizer: Any, end_ids: Sequence[int]) -> None:
        import numpy as np

        size = ll_tokenizer.vocab_size
        self.decode = ll_tokenizer.decode_bytes
        self.quote = np.zeros(size, dtype=np.bool_)  # `"`, `"}`, `"]}`...: close a string first
        self.bracket = np.zeros(size, dtype=np.bool_)  # `}`, `}}`, `]}`...: close an object or array
        self.ends = np.zeros(size, dtype=np.bool_)
        #: the token of each short byte string (for the canonical-split rule)
        self.by_bytes: dict[bytes, int] = {}
        letters = []
        for token in range(size):
            text = self.decode([token])
            if text and text not in self.by_bytes and not ll_tokenizer.is_special_token(token):
                self.by_bytes[text] = token
            if text and _CLOSING_BYTES.issuperset(text):
                (self.quote if text[:1] == b'"' else self.bracket)[token] = True
            elif len(text) == 1 and text.isalpha():
                letters.append(token)
        self.ends[[t for t in end_ids if t < size]] = True
        #: single letters: allowed only inside a string (or free text)
        self.letters = np.array(letters, dtype=np.int64)

    def drop_short_splits(self, allowed: Any, forced: bytes) -> None:
        """When the grammar forces `forced` next, of the allowed tokens that spell a
        beginning of it keep only the longest.

        BPE merges what it can, so a model never saw `":` + ` ` + `"` where ` "` is
        one token; taking the short piece leads it astray (` ` then `"}` ended a
        string at once). Tokens that go past the forced text stay allowed.
        """
        if len(forced) < 2:
            return
        pieces = [
            token
            for n in range(1, min(len(forced), _LONGEST_TOKEN) + 1)
            if (token := self.by_bytes.get(forced[:n])) is not None
            and token < len(allowed)
            and allowed[token]
        ]
        for token in pieces[:-1]:
            allowed[token] = False

    def narrow(self, allowed: Any) -> None:
        """Keep only the allowed tokens that close something, when there are any."""
        width = min(len(allowed), len(self.quote))
        view = allowed[:width]
        if (view & self.ends[:width]).any():
            choice = view & self.ends[:width]
        elif self.letters.size and view[self.letters[self.letters < width]].any():
            choice = view & self.quote[:width]
        else:
            choice = view & self.bracket[:width]
            if not choice.any():
                choice = view & self.quote[:width]
        if choice.any():
            allowed[:] = False
            allowed[:width] = choice


#: How call JSON is written: the layout the tool prompt shows (json.dumps defaults).
JSON_OPTIONS = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
    "lenient": True,
}


class ConstraintUnavailable(RuntimeError):
    """llguidance is not installed, or the tools' schemas cannot be compiled."""


def available() -> bool:
    try:
        import llguidance  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- schemas


def tool_function(tool: dict[str, Any]) -> dict[str, Any]:
    """The `{"name", "parameters", ...}` part of an OpenAI tool schema (or a bare one)."""
    return tool["function"] if isinstance(tool.get("function"), dict) else tool


def _strict(node: Any) -> Any:
    """Objects that list properties and say nothing about others get additionalProperties: false."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if out.get("type") == "object" and "additionalProperties" not in out and "properties" in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def _class_char(ch: str) -> str:
    return "\\" + ch if ch in "\\]^-[" else ch


def excluding_pattern(tag: str) -> str:
    """A regex for strings that do not contain `tag` (whose first character occurs only once)."""
    head, rest = tag[0], tag[1:]
    assert head not in rest, "the tag's first character must not recur in it"
    h = _class_char(head)
    # after one or more `head`s: a character that breaks the tag, or the next tag character
    breaking = f"[^{_class_char(rest[-1])}{h}]"
    for ch in reversed(rest[:-1]):
        breaking = f"[^{_class_char(ch)}{h}]|{re.escape(ch)}(?:{breaking})"
    partial = ""
    for ch in reversed(rest[:-1]):
        partial = f"(?:{re.escape(ch)}{partial})?"
    return f"^(?:[^{h}]|{re.escape(head)}+(?:{breaking}))*(?:{re.escape(head)}+{partial})?$"


_NO_CALL_CLOSE = excluding_pattern(CALL_CLOSE)


def _guard_strings(node: Any) -> Any:
    """Free strings may not contain `</tool_call>`: a parser would end the call there."""
    if isinstance(node, dict):
        out = {k: _guard_strings(v) for k, v in node.items()}
        types = out.get("type")
        is_string = types == "string" or (isinstance(types, list) and "string" in types and len(types) == 1)
        if is_string and not {"pattern", "format", "enum", "const"} & out.keys():
            out["pattern"] = _NO_CALL_CLOSE
        return out
    if isinstance(node, list):
        return [_guard_strings(v) for v in node]
    return node


def _rename_refs(node: Any, prefix: str, names: set[str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                for base in ("#/$defs/", "#/definitions/"):
                    if value.startswith(base) and value[len(base) :].split("/")[0] in names:
                        value = "#/$defs/" + prefix + value[len(base) :]
                        break
            out[key] = _rename_refs(value, prefix, names)
        return out
    if isinstance(node, list):
        return [_rename_refs(v, prefix, names) for v in node]
    return node


def tool_call_schema(tools: Sequence[dict[str, Any]], *, strict: bool = True) -> dict[str, Any]:
    """JSON schema of one call: `{"name": <tool>, "arguments": <its parameters>}` for any of the tools."""
    alternatives: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for index, tool in enumerate(tools):
        fn = tool_function(tool)
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ConstraintUnavailable(f"tool {index} has no name to constrain a call to")
        params = copy.deepcopy(fn.get("parameters") or {"type": "object", "properties": {}})
        local = {**params.pop("definitions", {}), **params.pop("$defs", {})}
        prefix = f"t{index}_"
        params = _rename_refs(params, prefix, set(local))
        for name, schema in local.items():
            defs[prefix + name] = _rename_refs(schema, prefix, set(local))
        params.pop("title", None)
        alternatives.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn["name"]}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    if not alternatives:
        raise ConstraintUnavailable("no tools to constrain the call to")
    schema: dict[str, Any] = {"x-guidance": dict(JSON_OPTIONS), "anyOf": alternatives}
    if defs:
        schema["$defs"] = defs
    return _guard_strings(_strict(schema)) if strict else schema


def _lark_regex_literal(text: str) -> str:
    """`text` as a regex to put between Lark's slashes."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "/":
            out.append("\\/")
        elif ch in ".^$*+?()[]{}|\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def tool_call_grammar(
    tools: Sequence[dict[str, Any]],
    *,
    thinking: ThinkingMode = "none",
    preamble_chars: int | None = DEFAULT_PREAMBLE_CHARS,
    max_calls: int = DEFAULT_MAX_CALLS,
    strict: bool = True,
) -> str:
    """The llguidance (Lark) grammar of a turn that must call one of `tools`."""
    schema = json.dumps(tool_call_schema(tools, strict=strict), ensure_ascii=False)
    open_re, close_re = _lark_regex_literal(THINK_TAGS.open), _lark_regex_literal(THINK_TAGS.close)
    call_open = json.dumps(CALL_OPEN)
    rules: list[str] = []
    head: list[str] = []
    if thinking == "open":
        head.append("thought NL*")
        rules.append(f"thought[lazy]: /(?s:.*){close_re}/")
    elif thinking == "optional":
        head.append("(think NL*)?")
        rules.append(f"think[lazy]: /{open_re}(?s:.*){close_re}/")
    tag_re = _lark_regex_literal(CALL_OPEN)
    if preamble_chars == 0:
        head.append(call_open)
    else:
        bound = "*" if preamble_chars is None else f"{{0,{int(preamble_chars)}}}"
        head.append("pre")
        rules.append(f"pre[lazy]: /(?s:.{bound}){tag_re}/")
    more = max(0, int(max_calls) - 1)
    repeat = f" (NL? {call_open} body){{0,{more}}}" if more else ""
    lines = [
        "%llguidance {}",
        f"start: {' '.join(head)} body{repeat}",
        f"body: NL? call NL? {json.dumps(CALL_CLOSE)}",
        *rules,
        "NL: /\\n/",
        f"call: %json {schema}",
    ]
    return "\n".join(lines) + "\n"


def grammar_options(template_text: str, prompt: str, effort: Effort = "medium") -> dict[str, Any]:
    """Grammar options for a prompt: where thinking may happen, and the defaults.

    The thinking block is "open" when the prompt ends inside one the template
    opened, "optional" when the template knows `<think>` blocks (or the
    `enable_thinking` switch) and the effort lets the model think, else "none".
    """
    if prompt_opens_thinking(prompt, THINK_TAGS):
        thinking: ThinkingMode = "open"
    elif effort != "low" and (THINK_TAGS.open in template_text or "enable_thinking" in template_text):
        thinking = "optional"
    else:
        thinking = "none"
    return {"thinking": thinking, "preamble_chars": DEFAULT_PREAMBLE_CHARS, "max_calls": DEFAULT_MAX_CALLS}


# --------------------------------------------------------------------------- compiled grammars


class ToolGrammars:
    """Compiled tool-call grammars for one tokenizer, cached per tool set and options.

    Building the llguidance tokenizer takes about a second, compiling a grammar
    a few milliseconds; each request gets a cheap copy of the compiled matcher.
    """

    def __init__(self, tokenizer: Any, end_ids: Iterable[int], *, cache_size: int = 32) -> None:
        self.tokenizer = tokenizer
        self.end_ids = sorted(set(end_ids))
        self.cache_size = cache_size
        self._ll_tokenizer: Any = None
        self._matchers: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.RLock()
        self._warming: set[str] = set()
        self._table: _TokenTable | None = None

    @property
    def ll_tokenizer(self) -> Any:
        with self._lock:
            if self._ll_tokenizer is None:
                try:
                    import llguidance.hf
                except ImportError as e:
                    raise ConstraintUnavailable(
                        "constrained tool calls need llguidance: pip install llguidance"
                    ) from e
                eos = self.end_ids or [self.tokenizer.eos_token_id]
                self._ll_tokenizer = llguidance.hf.from_tokenizer(
                    self.tokenizer, n_vocab=len(self.tokenizer), eos_token=eos
                )
            return self._ll_tokenizer

    @staticmethod
    def key(tools: Sequence[dict[str, Any]], **options: Any) -> str:
        return json.dumps([list(tools), options], sort_keys=True, default=str)

    def matcher(self, tools: Sequence[dict[str, Any]], **options: Any) -> Any:
        """A fresh `llguidance.LLMatcher` for a turn that must call one of `tools`."""
        key = self.key(tools, **options)
        with self._lock:
            template = self._matchers.get(key)
            if template is not None:
                self._matchers.move_to_end(key)
                return template.deep_copy()
        template = self._compile(tools, **options)
        with self._lock:
            self._matchers[key] = template
            while len(self._matchers) > self.cache_size:
                self._matchers.popitem(last=False)
            return template.deep_copy()

    def _compile(self, tools: Sequence[dict[str, Any]], **options: Any) -> Any:
        import llguidance

        tokenizer = self.ll_tokenizer
        errors = []
        for strict in (True, False):
            grammar = llguidance.LLMatcher.grammar_from_lark(
                tool_call_grammar(tools, strict=strict, **options)
            )
            matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
            if not matcher.is_error():
                matcher.compute_bitmask()  # the first mask is the slow one: pay it here
                matcher.reset()
                return matcher
            errors.append(matcher.get_error())
        raise ConstraintUnavailable(f"could not compile the tool-call grammar: {errors[0]}")

    def token_table(self) -> _TokenTable:
        with self._lock:
            if self._table is None:
                self._table = _TokenTable(self.ll_tokenizer, self.end_ids)
            return self._table

    def processor(
        self, tools: Sequence[dict[str, Any]], *, max_new_tokens: int | None = None, **options: Any
    ) -> ToolCallProcessor:
        """A logits processor for one request that must call one of `tools`."""
        return ToolCallProcessor(
            self.matcher(tools, **options),
            vocab_size=self.ll_tokenizer.vocab_size,
            max_new_tokens=max_new_tokens,
            table=self.token_table(),
        )

    def warm(self, tools: Sequence[dict[str, Any]], **options: Any) -> None:
        """Compile (and cache) the grammar for `tools` now, and the token table."""
        self.matcher(tools, **options)
        self.token_table()

    def warm_in_background(self, tools: Sequence[dict[str, Any]], **options: Any) -> threading.Thread | None:
        """`warm` on a daemon thread, once per tool set; None when cached or already warming."""
        key = self.key(tools, **options)
        with self._lock:
            if key in self._matchers or key in self._warming:
                return None
            self._warming.add(key)
        tools = list(tools)

        def run() -> None:
            try:
                self.warm(tools, **options)
            except Exception:  # a grammar that cannot compile fails again, loudly, when used
                pass
            finally:
                with self._lock:
                    self._warming.discard(key)

        thread = threading.Thread(target=run, name="tool-grammar-warm", daemon=True)
        thread.start()
        return thread


_grammars: weakref.WeakKeyDictionary[Any, ToolGrammars] = weakref.WeakKeyDictionary()
_grammars_lock = threading.Lock()


def tool_grammars(tokenizer: Any, end_ids: Iterable[int]) -> ToolGrammars:
    """The shared `ToolGrammars` of a tokenizer."""
    with _grammars_lock:
        grammars = _grammars.get(tokenizer)
        if grammars is None:
            grammars = _grammars[tokenizer] = ToolGrammars(tokenizer, end_ids)
        return grammars


# --------------------------------------------------------------------------- the processor


class ToolCallProcessor:
    """A transformers logits processor that holds each sequence to a tool-call grammar.

    It implements the `LogitsProcessor` call protocol and goes into
    `generate(logits_processor=...)`. Each batch row gets its own copy of the
    matcher. A row whose matcher fails (a token it cannot take, e.g. one forced
    by another processor) is left unconstrained from then on.
    """

    supports_continuous_batching = False

    def __init__(
        self,
        matcher: Any,
        vocab_size: int | None = None,
        *,
        max_new_tokens: int | None = None,
        table: _TokenTable | None = None,
        reserve: int = CLOSE_RESERVE,
    ) -> None:
        self.template = matcher
        #: the grammar's vocabulary; tokens of the model beyond it are never allowed
        self.vocab_size = vocab_size
        #: with a token table: where the grammar forces text, tokens that split it shorter
        #: than BPE would are dropped; and in the last `reserve` tokens before `max_new_tokens`,
        #: tokens that close strings, objects and the turn are preferred, so a call ends in time
        self.max_new_tokens = max_new_tokens
        self.table = table
        self.reserve = reserve
        self._prompt_length: int | None = None
        self.matchers: list[Any] = []
        self.failed: list[bool] = []
        self.in_call: list[bool] = []
        self._tails: list[bytes] = []
        self._seen: int | None = None
        self._bits: Any = None
        self._allowed: Any = None

    def _ensure_rows(self, n: int) -> None:
        while len(self.matchers) < n:
            self.matchers.append(self.template.deep_copy())
            self.failed.append(False)
            self.in_call.append(False)
            self._tails.append(b"")

    def accepted(self, row: int = 0) -> bool:
        """Whether the row's text so far is a complete, valid turn."""
        return row < len(self.matchers) and not self.failed[row] and self.matchers[row].is_accepting()

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np
        import torch

        batch, length = int(input_ids.shape[0]), int(input_ids.shape[1])
        self._ensure_rows(batch)
        if self._seen is None:  # the first call sees only the prompt
            self._seen = self._prompt_length = length
        elif length > self._seen:
            new = input_ids[:, self._seen :].tolist()
            self._seen = length
            for row, tokens in enumerate(new):
                matcher = self.matchers[row]
                if self.failed[row] or matcher.is_stopped():
                    continue
                for token in tokens:
                    if not matcher.consume_token(int(token)):
                        self.failed[row] = True
                        break
                    if self.table is not None and not self.in_call[row]:
                        tail = self._tails[row] + self.table.decode([int(token)])
                        self.in_call[row] = _CALL_OPEN_BYTES in tail
                        self._tails[row] = tail[-len(_CALL_OPEN_BYTES) :]
        vocab = int(scores.shape[-1])
        grammar_vocab = self.vocab_size or vocab
        words = (grammar_vocab + 31) // 32
        if self._bits is None or self._bits.shape != (words,):
            self._bits = np.zeros(words, dtype=np.int32)
            self._allowed = np.zeros(vocab, dtype=np.bool_)
        width = min(vocab, grammar_vocab)
        table = self.table
        closing = (
            table is not None
            and self.max_new_tokens is not None
            and self.max_new_tokens - (length - (self._prompt_length or length)) <= self.reserve
        )
        for row in range(batch):
            if self.failed[row]:
                continue
            self.matchers[row].unsafe_compute_mask_ptr(self._bits.ctypes.data, words * 4)
            bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")
            self._allowed[:width] = bits[:width].view(np.bool_)
            if table is not None and self.in_call[row]:
                table.drop_short_splits(self._allowed, self.matchers[row].compute_ff_bytes())
                if closing:
                    table.narrow(self._allowed)
            scores[row].masked_fill_(~torch.from_numpy(self._allowed).to(scores.device), float("-inf"))
        return scores


def tool_call_processor(
    tokenizer: Any,
    end_ids: Iterable[int],
    tools: Sequence[dict[str, Any]],
    *,
    thinking: ThinkingMode = "none",
    preamble_chars: int | None = DEFAULT_PREAMBLE_CHARS,
    max_calls: int = DEFAULT_MAX_CALLS,
    max_new_tokens: int | None = None,
) -> ToolCallProcessor:
    """A logits processor for one request that must call one of `tools` (grammars cached per tokenizer)."""
    grammars = tool_grammars(tokenizer, end_ids)
    return grammars.processor(
        tools,
        thinking=thinking,
        preamble_chars=preamble_chars,
        max_calls=max_calls,
        max_new_tokens=max_new_tokens,
    )
