"""Fitting a run's history into the model's context window, token-exact where possible.

`ContextBudget.fit(request)` returns the request with a prompt that fits
`window - reserve` tokens (the reserve is left for the reply):

- the system prompt and the task (the first user message) are always kept;
- the most recent steps are kept whole: a step is an assistant turn with its
  tool results and any notes after them, and a step is never split, so a
  tool call and its result always travel together;
- a tool result longer than `max_observation_tokens` is shown as its head and
  tail with a pointer to the full text, saved as a file that the `read_file`
  tool can open (with the line range that was left out);
- older steps are replaced by one summary message, a line per call (tool,
  arguments, first line of the outcome), written by rules, or by a
  `summarize` hook of your own.

The full history stays in the run's state and log; only the prompt changes.

Counting is exact with `TemplateCounter`, which renders the prompt with the
backend's own chat template (the tool schemas included) and tokenises it with
the model's tokenizer, as `TransformersLLM` does before generating. Each
message is counted once (cached by identity) and the final prompt is counted
again in one exact render, shrinking further if it is still over. Backends
without a tokenizer get `ApproxCounter`, a documented over-estimate, and a
margin of 5% of the window on top of the reserve.

Older steps are folded into the summary in blocks: when the prompt would
overflow, enough steps are folded to bring it down to `refill` of the budget,
and then the next steps are only appended. So the front of the prompt stays
the same for several steps, which keeps a KV prefix cache useful.

```python
budget = ContextBudget.for_model(llm)                 # the model's own window
request = budget.fit(request)
budget.last.tokens, budget.last.folded                # prompt tokens, steps summarised
```
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.llm.base import LLMRequest
from agent.types import Message

#: Where truncated observations are saved, relative to the workspace the file tools read.
# The least a budget leaves for the prompt once the reply's reserve is held back.
MIN_PROMPT_TOKENS = 128
OBSERVATIONS_DIR = Path(".agent") / "observations"
#: Tokens reserved for the reply when the backend does not say how long replies may be.
DEFAULT_RESERVE = 1024
#: Share of the window held back on top of the reserve when counts are approximate.
APPROX_MARGIN = 0.05
#: Characters per token of the limit in the prefix that judges a long text: ordinary text has
#: fewer per token (English, code, JSON and logs: 2-4), so that prefix alone is over the limit.
_PROBE_CHARS_PER_TOKEN = 4
SUMMARY_HEADER = "[Earlier steps, summarised to fit the context window.]"

Summarizer = Callable[[Sequence[Message], int], str]


class ContextOverflowError(ValueError):
    """The parts that must be kept do not fit the context budget."""

    retryable = False  # the same run fails the same way: a batch does not try it again


class TokenCounter(Protocol):
    """Counts the tokens of a whole prompt, of one message in it, and of plain text."""

    #: True when `count_prompt` is the number of tokens the model will receive.
    exact: bool

    def count_prompt(self, request: LLMRequest) -> int: ...

    def count_message(self, message: Message) -> int: ...

    def count_text(self, text: str) -> int: ...


# --------------------------------------------------------------------------- counters


class TemplateCounter:
    """Exact counts: the chat template renders the prompt, the tokenizer counts it.

    `render` turns an `LLMRequest` into prompt text (e.g. `TransformersLLM.render_prompt`
    or `TemplateChatFormat(tokenizer).render`); `tokenizer` is the model's own.
    A message's own cost is the difference the message makes to a small
    rendered prompt, so the tokens the template adds around it (role markers,
    tool-call and tool-response wrappers) are included.
    """

    exact = True

    def __init__(self, render: Callable[[LLMRequest], str], tokenizer: Any) -> None:
        self.render = render
        self.tokenizer = tokenizer
        self._anchor_tokens: int | None = None

    def count_text(self, text: str) -> int:
        # The template already wrote the special tokens, so none are added (as generation does).
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def count_prompt(self, request: LLMRequest) -> int:
        return self.count_text(self.render(request))

    def count_message(self, message: Message) -> int:
        anchor = Message(role="system", content=".")
        try:
            if self._anchor_tokens is None:
                self._anchor_tokens = self.count_prompt(self._probe([anchor]))
            return max(1, self.count_prompt(self._probe([anchor, message])) - self._anchor_tokens)
        except Exception:  # a template that refuses a lone message (strict role order): estimate
            calls = (
                json.dumps([[c.name, c.arguments] for c in message.tool_calls]) if message.tool_calls else ""
            )
            return self.count_text(message.content) + self.count_text(calls) + 8

    @staticmethod
    def _probe(messages: list[Message]) -> LLMRequest:
        return LLMRequest.model_construct(
            messages=messages,
            tools=[],
            tool_choice="none",
            effort="medium",
            thinking_budget=None,
            max_new_tokens=None,
            temperature=None,
            stop=[],
            purpose="act",
        )


class ApproxCounter:
    """Approximate counts for backends that do not expose their tokenizer.

    Every digit, punctuation mark, newline and non-ASCII character counts as
    a token, a space before a digit too; a run of ASCII letters counts a token
    per four letters of each word in it (`getUserName`: three words), but
    letters that are no word (the case changing every few letters, or four
    consonants in a row: base64, random ids, long compounds) count one per
    1.2 to 1.3 letters. Each message adds `per_message` tokens for its role
    markers, and the tool schemas count as their JSON. Measured against
    SmolLM2's tokenizer (a small vocabulary, so more tokens than most) this
    over-counts English and code by 1.3x, JSON by 1.4-1.6x, logs by 1.1x,
    random letters by 1.1-1.2x, German by 1.2x and camelCase identifiers by
    1.8x, and counts base64 and hex at 0.97-0.98 of their tokens; text in
    non-Latin scripts can take more tokens than counted. `ContextBudget` holds
    back 5% of the window when the counter is not exact for these.
    """

    exact = False

    def __init__(self, per_message: int = 8) -> None:
        self.per_message = per_message

    def count_text(self, text: str) -> int:
        tokens, hard, camel = _approx_tokens()
        count = 0
        for piece in tokens.findall(text):
            size = len(piece)
            if size <= 4 or not piece[0].isascii() or not piece[0].isalpha():
                count += 1
                continue
            # A run of letters: a word takes about a token per four letters, but text that is
            # no word (base64, random ids, long compounds) takes one per one or two letters.
            upper = sum(1 for c in piece if c.isupper())
            if 0 < upper < size and upper * 4 > size:  # case that changes every few letters
                count += (size * 5 + 5) // 6
                continue
            for part in camel.findall(piece):  # getUserName: get, User, Name
                count += (len(part) * 3 + 3) // 4 if hard.search(part) else (len(part) + 3) // 4
        return count

    def count_message(self, message: Message) -> int:
        tokens = self.per_message + self.count_text(message.content)
        if message.thinking:
            tokens += self.count_text(message.thinking)
        for call in message.tool_calls:
            tokens += self.count_text(call.name + json.dumps(call.arguments or {}, ensure_ascii=False)) + 4
        return tokens

    def count_prompt(self, request: LLMRequest) -> int:
        tokens = self.per_message + sum(self.count_message(m) for m in request.messages)
        if request.tools and request.tool_choice != "none":
            tokens += self.count_text(json.dumps(request.tools, ensure_ascii=False)) + self.per_message
        return tokens


@functools.cache
def _approx_tokens() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """The pieces counted (each one token, but runs of letters), four consonants in a row
    (which words seldom have and random letters often do), and the words of a camelCase run."""
    return (
        re.compile(r"[^\x00-\x7f]|\d|\s(?=\d)|[^\w\s]|_|[A-Za-z]+|\n"),
        re.compile(r"[b-df-hj-np-tv-xzB-DF-HJ-NP-TV-XZ]{4}"),
        re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])"),
    )


def template_counter(llm: Any) -> TemplateCounter | None:
    """An exact counter for a backend with `render_prompt` and a `tokenizer` (loads it if needed)."""
    render = getattr(llm, "render_prompt", None)
    if render is None or not hasattr(llm, "tokenizer"):
        return None
    if llm.tokenizer is None and callable(getattr(llm, "load", None)):
        llm.load()
    return TemplateCounter(render, llm.tokenizer) if llm.tokenizer is not None else None


def model_context_window(llm: Any) -> int | None:
    """The backend's context window in tokens, when it can tell.

    A `context_window` attribute wins; then what a backend that asks its
    server learns there (`learn_context_window()`, e.g. `OpenAICompatLLM`,
    which may block on the network once); then the model config's position
    limit (`max_position_embeddings` and its aliases); then the tokenizer's
    `model_max_length` when it is a real limit rather than a placeholder.
    """
    declared = getattr(llm, "context_window", None)
    if isinstance(declared, int) and declared > 0:
        return declared
    learn = getattr(llm, "learn_context_window", None)
    if callable(learn):
        return learn()
    config = getattr(getattr(llm, "model", None), "config", None)
    if config is not None:
        if callable(getattr(config, "get_text_config", None)):
            config = config.get_text_config()
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(getattr(llm, "tokenizer", None), "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10_000_000:
        return limit
    return None


# --------------------------------------------------------------------------- summaries


def _first_line(text: str, limit: int = 120) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "(empty)"
    line = lines[0] if len(lines[0]) <= limit else lines[0][: limit - 3] + "..."
    return line + (f" [+{len(lines) - 1} lines]" if len(lines) > 1 else "")


def _call_text(name: str, arguments: dict[str, Any] | None, limit: int = 160) -> str:
    parts = [
        f"{key}={json.dumps(value, ensure_ascii=False, default=str)}"
        for key, value in (arguments or {}).items()
    ]
    text = f"{name}({', '.join(parts)})"
    return text if len(text) <= limit else text[: limit - 4] + "...)"


def summarize_step(messages: Sequence[Message], number: int) -> str:
    """The summary lines of one step, by rules: what was said, each call and its outcome.

    `number` is the step's position among the model's turns (0 for notes
    that came before the first turn).
    """
    label = f"step {number}" if number else "before step 1"
    results = {m.tool_call_id: m for m in messages if m.role == "tool"}
    lines: list[str] = []
    for m in messages:
        if m.role == "assistant":
            if m.content.strip():
                lines.append(f"{label}: said: {_first_line(m.content)}")
            for call in m.tool_calls:
                result = results.get(call.id)
                outcome = _first_line(result.content) if result is not None else "(no result)"
                lines.append(f"{label}: {_call_text(call.name, call.arguments)} -> {outcome}")
        elif m.role in ("user", "system"):
            lines.append(f"{label}: note: {_first_line(m.content)}")
    return "\n".join(lines) or f"{label}: (nothing)"


# --------------------------------------------------------------------------- the budget


@dataclass
class FitReport:
    """What the last `fit` did."""

    tokens: int  # prompt tokens of the fitted request (exact when `exact`)
    exact: bool
    limit: int  # the most the prompt may take: window - reserve (- margin)
    messages: int  # messages sent
    folded: int  # earlier steps replaced by the summary
    truncated: int  # tool results shown as head and tail
    seconds: float  # time the fitting took


@dataclass
class _Step:
    messages: list[Message]
    number: int


class ContextBudget:
    """Fits each prompt of a run into `window` tokens, `reserve` of them kept for the reply.

    `counter` counts tokens (`TemplateCounter` for exact counts; the default
    `ApproxCounter` estimates). Tool results over `max_observation_tokens`
    (default a sixth of the budget) are cut to head and tail; with
    `spill_dir` set, the full text is saved there and the pointer names the
    file relative to `read_root` (the workspace the `read_file` tool reads).
    The summary of older steps is held to `max_summary_tokens` (default an
    eighth) by leaving out its oldest lines in blocks. At least `keep_recent`
    steps stay whole unless even they do not fit. `summarize(messages,
    number)` writes one step's summary lines (default `summarize_step`).

    A budget remembers how far it has folded the history it sees, to keep the
    front of the prompt stable; it starts over when given a different
    history. Use one per run (`clone()` copies the settings).
    """

    def __init__(
        self,
        window: int,
        *,
        counter: TokenCounter | None = None,
        reserve: int = DEFAULT_RESERVE,
        max_observation_tokens: int | None = None,
        max_summary_tokens: int | None = None,
        keep_recent: int = 2,
        refill: float = 0.6,
        spill_dir: str | Path | None = None,
        read_root: str | Path | None = None,
        summarize: Summarizer | None = None,
    ) -> None:
        self.window = int(window)
        self.reserve = int(reserve)
        self.counter: TokenCounter = counter if counter is not None else ApproxCounter()
        self.margin = 0 if self.counter.exact else math.ceil(self.window * APPROX_MARGIN)
        self.limit = self.window - self.reserve - self.margin
        if self.limit < MIN_PROMPT_TOKENS:
            raise ValueError(
                f"a context window of {self.window} tokens leaves {self.limit} for the prompt after "
                f"{self._held_back()}; raise the window or lower the reserve"
            )
        if not 0.1 <= refill <= 1.0:
            raise ValueError(
                f"refill={refill} must be between 0.1 and 1 (the share of the budget after folding)"
            )
        self.max_observation_tokens = max_observation_tokens or max(64, self.limit // 6)
        self.max_summary_tokens = max_summary_tokens or max(64, self.limit // 8)
        self.keep_recent = max(1, keep_recent)
        self.refill = refill
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.read_root = Path(read_root) if read_root is not None else None
        self.summarize: Summarizer = summarize or summarize_step
        self.last: FitReport | None = None
        self._reset()

    @classmethod
    def for_model(cls, llm: Any, *, window: int | None = None, **options: Any) -> ContextBudget | None:
        """A budget for `llm`, or None when no window is given and the model does not say its own.

        Counts are exact when the backend has `render_prompt` and a
        `tokenizer` (`TransformersLLM`, loaded here if it is not yet), and
        approximate otherwise. The reserve defaults to the backend's
        `max_new_tokens`, else to 1,024 tokens or a quarter of the window.
        """
        counter = template_counter(llm)
        window = window or model_context_window(llm)
        if window is None:
            return None
        if "reserve" not in options:
            reply = getattr(llm, "max_new_tokens", None)
            options["reserve"] = (
                reply if isinstance(reply, int) and reply > 0 else min(DEFAULT_RESERVE, window // 4)
            )
        return cls(window, counter=counter or ApproxCounter(), **options)

    def _held_back(self) -> str:
        margin = f" and {self.margin} as a margin for approximate counts" if self.margin else ""
        return f"{self.reserve} reserved for the reply{margin}"

    def clone(self) -> ContextBudget:
        """The same settings, none of the state."""
        copy = object.__new__(ContextBudget)
        copy.__dict__.update(self.__dict__)
        copy.last = None
        copy._reset()
        return copy

    def _reset(self) -> None:
        self._folded = 0  # leading steps shown only in the summary
        self._dropped = 0  # leading steps left out of the summary too
        self._folded_messages: list[Message] = []  # what was folded, to tell a new history apart
        self._tokens: dict[int, tuple[Message, int]] = {}
        self._shown: dict[tuple[int, int], tuple[Message, Message]] = {}
        self._prefixes: dict[tuple[int, int], tuple[Message, int, int]] = {}
        self._lines: dict[int, tuple[Message, str, int]] = {}
        self._summary: tuple[int, int, Message] | None = None
        self._base: dict[tuple[Any, ...], tuple[Any, int]] = {}

    # -- fitting ------------------------------------------------------------

    def fit(self, request: LLMRequest, *, keep_task: bool = True) -> LLMRequest:
        """`request` with its messages fitted to the budget (the same object when all fit).

        The first user message (the task) is kept whole; with `keep_task=False` (a
        conversation's later turns, where it is only the first message) it is folded as
        any step when it must be: one oversized message does not stop every later turn.

        Raises `ContextOverflowError` when the system prompt, the task and the
        tool schemas alone, or the latest step cut to the bone, do not fit.
        """
        started = time.perf_counter()
        messages = request.messages
        pinned_count = _pinned_count(messages)
        pinned = messages[:pinned_count]
        base = self._base_tokens(request, pinned)
        if base > self.limit and not keep_task and pinned and pinned[-1].role == "user":
            pinned_count -= 1
            pinned = messages[:pinned_count]
            base = self._base_tokens(request, pinned)
        steps = _split_steps(messages[pinned_count:])
        self._follow(messages, pinned_count)
        if base > self.limit:
            raise ContextOverflowError(
                f"the system prompt, the task and the tool descriptions take {base} tokens, more than the "
                f"{self.limit} the prompt may use (a window of {self.window} less {self._held_back()}); "
                "shorten them, offer fewer tools or use a larger context window"
            )
        costs = [sum(self._cost(self._view(m, 0)) for m in step.messages) for step in steps]
        suffix = [0] * (len(steps) + 1)
        for i in range(len(steps) - 1, -1, -1):
            suffix[i] = suffix[i + 1] + costs[i]

        def estimate(folded: int) -> int:
            return base + self._summary_estimate(steps, folded) + suffix[folded]

        folded = self._folded
        if estimate(folded) > self.limit:
            # Fold a block at once, down to `refill` of the budget, so the next steps only append.
            target = self.refill * self.limit
            while folded < len(steps) - self.keep_recent and estimate(folded) > target:
                folded += 1
        squeeze = 0  # halvings of the observation limit inside the kept steps, as a last resort
        while True:
            if estimate(folded) <= self.limit or squeeze:
                fitted = self._assemble(request, pinned, steps, folded, squeeze)
                tokens = self.counter.count_prompt(fitted)
                if tokens <= self.limit:
                    break
            if folded < len(steps) - 1:
                folded += 1
            elif squeeze < 8 and self._can_squeeze(steps[folded:], squeeze + 1):
                squeeze += 1
            else:
                raise ContextOverflowError(
                    f"the latest step does not fit in {self.limit} prompt tokens even with its tool results "
                    "cut short; use a larger context window or ask for smaller tool results"
                )
        self._folded = folded
        self._folded_messages = [m for step in steps[:folded] for m in step.messages]
        sent = {id(m) for m in messages}
        truncated = sum(m.role == "tool" and id(m) not in sent for m in fitted.messages)
        self.last = FitReport(
            tokens=tokens,
            exact=self.counter.exact,
            limit=self.limit,
            messages=len(fitted.messages),
            folded=folded,
            truncated=truncated,
            seconds=time.perf_counter() - started,
        )
        self._prune(messages)
        return fitted

    def _assemble(
        self, request: LLMRequest, pinned: list[Message], steps: list[_Step], folded: int, squeeze: int
    ) -> LLMRequest:
        out = list(pinned)
        if folded:
            out.append(self._summary_message(steps, folded))
        for step in steps[folded:]:
            out.extend(self._view(m, squeeze) for m in step.messages)
        if len(out) == len(request.messages) and all(
            a is b for a, b in zip(out, request.messages, strict=True)
        ):
            return request
        return request.model_copy(update={"messages": out})

    def _follow(self, messages: list[Message], pinned_count: int) -> None:
        """Start over unless `messages` continues the history folded so far."""
        folded = self._folded_messages
        rest = messages[pinned_count:]
        if len(rest) < len(folded) or any(a is not b for a, b in zip(folded, rest, strict=False)):
            self._reset()

    def _base_tokens(self, request: LLMRequest, pinned: list[Message]) -> int:
        """Tokens of the prompt with only the pinned messages: template, tools, generation prompt."""
        key = (tuple(id(m) for m in pinned), id(request.tools), request.tool_choice, request.effort)
        cached = self._base.get(key)
        if (
            cached is not None
            and cached[0][0] is request.tools
            and all(a is b for a, b in zip(cached[0][1], pinned, strict=True))
        ):
            return cached[1]
        tokens = self.counter.count_prompt(request.model_copy(update={"messages": list(pinned)}))
        if len(self._base) > 16:
            self._base.clear()
        self._base[key] = ((request.tools, list(pinned)), tokens)
        return tokens

    def _cost(self, message: Message) -> int:
        cached = self._tokens.get(id(message))
        if cached is not None and cached[0] is message:
            return cached[1]
        tokens = self.counter.count_message(message)
        self._tokens[id(message)] = (message, tokens)
        return tokens

    def _prune(self, messages: list[Message]) -> None:
        """Forget cached counts of messages no longer in the history (a shared budget)."""
        if len(self._tokens) > 4 * len(messages) + 64:
            live = {id(m) for m in messages}
            self._shown = {k: v for k, v in self._shown.items() if k[0] in live}
            self._prefixes = {k: v for k, v in self._prefixes.items() if k[0] in live}
            live.update(id(shown) for _, shown in self._shown.values())
            self._tokens = {k: v for k, v in self._tokens.items() if k in live}

    # -- observations ---------------------------------------------------------

    def _view(self, message: Message, squeeze: int) -> Message:
        """The message as shown: a long tool result cut to head and tail."""
        if message.role != "tool":
            return message
        limit = max(32, self.max_observation_tokens >> squeeze)
        key = (id(message), limit)
        cached = self._shown.get(key)
        if cached is not None and cached[0] is message:
            return cached[1]
        shown = self._truncate(message, limit) if self._over(message, limit) else message
        self._shown[key] = (message, shown)
        return shown

    def _over(self, message: Message, limit: int) -> bool:
        """Whether `message` takes more than `limit` tokens; a long one is judged by a prefix."""
        cached = self._tokens.get(id(message))
        if cached is not None and cached[0] is message:
            return cached[1] > limit
        # Tokenising a 100k-token tool result costs a quarter of a second; a prefix usually decides.
        if (
            len(message.content) > limit * _PROBE_CHARS_PER_TOKEN
            and self._prefix_tokens(message, limit)[1] > limit
        ):
            return True
        return self._cost(message) > limit

    def _prefix_tokens(self, message: Message, limit: int) -> tuple[int, int]:
        """(characters, tokens) of the start of a message's text that is enough to judge it."""
        key = (id(message), limit)
        cached = self._prefixes.get(key)
        if cached is None or cached[0] is not message:
            prefix = message.content[: limit * _PROBE_CHARS_PER_TOKEN]
            cached = self._prefixes[key] = (message, len(prefix), self.counter.count_text(prefix))
        return cached[1], cached[2]

    def _can_squeeze(self, steps: list[_Step], squeeze: int) -> bool:
        limit = max(32, self.max_observation_tokens >> squeeze)
        previous = max(32, self.max_observation_tokens >> (squeeze - 1))
        return limit < previous and any(
            m.role == "tool" and self._over(m, limit) for step in steps for m in step.messages
        )

    def _truncate(self, message: Message, limit: int) -> Message:
        text = message.content
        path = self._spill(message)
        ends = _line_ends(text)
        chars, tokens = self._prefix_tokens(message, limit)
        chars_per_token = chars / max(1, tokens)
        room = max(16, limit - self.counter.count_text(_pointer(text, ends, 0, len(text), path)) - 8)
        keep = int(room * chars_per_token)
        for _ in range(6):
            head, tail = _cut(text, ends, int(keep * 0.6), int(keep * 0.4))
            content = text[:head] + _pointer(text, ends, head, tail, path) + text[tail:]
            shown = message.model_copy(update={"content": content})
            tokens = self.counter.count_message(shown)
            if tokens <= limit or keep == 0:
                break
            keep = int(keep * limit / tokens * 0.9)
        self._tokens[id(shown)] = (shown, tokens)
        return shown

    def _spill(self, message: Message) -> str | None:
        """Save the full text of a cut observation; its path as the model should name it."""
        if self.spill_dir is None:
            return None
        digest = hashlib.sha1(message.content.encode("utf-8", errors="surrogatepass")).hexdigest()[:10]
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", message.tool_call_id or message.name or "observation")[:60]
        path = self.spill_dir / f"{name}-{digest}.txt"
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(_spill_text(message.content), encoding="utf-8", errors="surrogatepass")
                tmp.replace(path)
        except OSError:
            return None
        if self.read_root is not None:
            try:
                return path.resolve().relative_to(self.read_root.resolve()).as_posix()
            except ValueError:
                pass
        return str(path)

    # -- the summary ------------------------------------------------------------

    def _step_lines(self, step: _Step) -> tuple[str, int]:
        head = step.messages[0]
        cached = self._lines.get(id(head))
        if cached is not None and cached[0] is head:
            return cached[1], cached[2]
        text = self.summarize(step.messages, step.number).strip()
        tokens = self.counter.count_text(text) + 1
        self._lines[id(head)] = (head, text, tokens)
        return text, tokens

    def _summary_estimate(self, steps: list[_Step], folded: int) -> int:
        if not folded:
            return 0
        shown = sum(self._step_lines(step)[1] for step in steps[self._dropped : folded])
        return min(shown, self.max_summary_tokens) + 40

    def _summary_message(self, steps: list[_Step], folded: int) -> Message:
        dropped = self._dropped
        sizes = [self._step_lines(step)[1] for step in steps[:folded]]
        if sum(sizes[dropped:]) > self.max_summary_tokens:
            # Leave out the oldest lines in one block, down to half the summary's share.
            while dropped < folded - 1 and sum(sizes[dropped:]) > self.max_summary_tokens // 2:
                dropped += 1
        self._dropped = dropped
        cached = self._summary
        if cached is not None and cached[:2] == (dropped, folded):
            return cached[2]
        parts = [SUMMARY_HEADER]
        if dropped:
            last = steps[dropped - 1].number
            parts.append(
                f"(steps up to {last} are left out here)" if last else "(the first notes are left out here)"
            )
        parts.extend(self._step_lines(step)[0] for step in steps[dropped:folded])
        message = Message(role="user", content="\n".join(parts))
        self._summary = (dropped, folded, message)
        return message


# --------------------------------------------------------------------------- helpers


def _pinned_count(messages: Sequence[Message]) -> int:
    """Leading system messages and the first user message (the task)."""
    count = 0
    while count < len(messages) and messages[count].role == "system":
        count += 1
    if count < len(messages) and messages[count].role == "user":
        count += 1
    return count


def _split_steps(messages: Sequence[Message]) -> list[_Step]:
    """Steps: each assistant turn with what follows it (tool results, notes)."""
    steps: list[_Step] = []
    number = 0
    for m in messages:
        if m.role == "assistant":
            number += 1
            steps.append(_Step([m], number))
        elif steps and steps[-1].number:
            steps[-1].messages.append(m)
        else:  # before the first reply (a conversation's first message, a plan's note): one each
            steps.append(_Step([m], 0))
    return steps


SPILL_LINE = 1_000  # the longest line of a spilled file: read_file shows up to 2,000 characters of one


def _line_ends(text: str) -> list[int]:
    """Offsets where each line of the spilled file ends: at each "\n" (included; lines
    are numbered as `read_file` numbers them, see `tools.files.text_lines`), and every
    SPILL_LINE characters of a longer line, which the spilled file breaks there."""
    ends: list[int] = []
    start, size = 0, len(text)
    while start < size:
        newline = text.find("\n", start)
        stop = size if newline < 0 else newline + 1
        body_end = stop if newline < 0 else newline
        ends.extend(range(start + SPILL_LINE, body_end, SPILL_LINE))
        ends.append(stop)
        start = stop
    return ends


def _spill_text(text: str) -> str:
    """`text` with its long lines broken as `_line_ends` counts them, so read_file can show every part."""
    if all(len(line) <= SPILL_LINE for line in text.split("\n")):
        return text
    parts: list[str] = []
    previous = 0
    for end in _line_ends(text):
        piece = text[previous:end]
        parts.append(piece if piece.endswith("\n") or end == len(text) else piece + "\n")
        previous = end
    return "".join(parts)


def _cut(text: str, ends: list[int], head_chars: int, tail_chars: int) -> tuple[int, int]:
    """Where the kept head ends and the kept tail starts: at line breaks when one is near."""
    head_end = head_chars
    whole = bisect.bisect_right(ends, head_chars)
    if whole and ends[whole - 1] >= head_chars // 2:
        head_end = ends[whole - 1]
    tail_start = len(text) - tail_chars
    after = bisect.bisect_left(ends, tail_start)
    if after < len(ends) and ends[after] - tail_start <= tail_chars // 2:
        tail_start = ends[after]
    return head_end, max(head_end, tail_start)


def _pointer(text: str, ends: list[int], start: int, end: int, path: str | None) -> str:
    """The note that stands for `text[start:end]`, saying how to read it."""
    before = bisect.bisect_left(ends, start)  # whole lines before the gap, when it starts a line
    after = bisect.bisect_left(ends, end)
    starts_line = start == 0 or (before < len(ends) and ends[before] == start)
    ends_line = after < len(ends) and ends[after] == end
    if starts_line and ends_line and end > start:
        first, last = (before + 2 if start else 1), after + 1
        what = f"lines {first}-{last} of {len(ends)} ({end - start:,} characters)"
        where = (
            f'; read them with read_file(path="{path}", start_line={first}, end_line={last})' if path else ""
        )
    else:  # the gap starts or ends inside a line: name the lines of the file that hold it
        first = bisect.bisect_right(ends, start) + 1
        last = min(bisect.bisect_left(ends, end) + 1, len(ends))
        what = f"{end - start:,} characters"
        where = (
            f"; they are in lines {first}-{last} of {len(ends)} of the full text: "
            f'read_file(path="{path}", start_line={first}, end_line={last})'
            if path
            else ""
        )
    newline = "" if not start or text[start - 1] in "\n\r" else "\n"
    return f"{newline}[... {what} left out to fit the context window{where} ...]\n"
