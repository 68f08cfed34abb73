"""Reasoning effort for in-process models: the model's own switch and a thinking budget.

`LLMRequest.effort` reaches a local model in two ways:

* **The chat template's switch.** Templates that read `enable_thinking`
  (Qwen3 and its relatives) get `enable_thinking=False` for "low" and True
  otherwise; templates that read `reasoning_effort` (gpt-oss, harmony) get the
  effort itself, which the template writes as `Reasoning: low|medium|high` in
  the system message. A harmony template that does not read the kwarg gets
  that line added to the system message instead (`harmony_reasoning`).
* **A thinking-token budget enforced during generation.** `ThinkingBudgetProcessor`
  counts the tokens a sequence writes inside an open thinking block
  (`<think>...</think>`, or harmony's analysis channel). When the budget is
  spent it forces the tokens that close the block (`\\n</think>\\n\\n`, or
  `<|end|><|start|>assistant<|channel|>final<|message|>`) and then keeps the
  end-of-turn tokens away until the model has written some answer text.
  `request.thinking_budget` overrides the per-effort default
  (`DEFAULT_THINKING_BUDGETS`); 0 closes a block as soon as it opens.

Which effort a request carries is the loop's policy (agent/loop.py): an act
step uses the agent's `effort` (default "medium"), raised one level for the
next step after two steps in a row with failed tool calls or after a detected
loop; plan and reflect calls always use "high". The agent's `thinking_budget`,
when set, is sent as `request.thinking_budget` and overrides the default
budget of every effort.

Nothing here imports torch or transformers at import time.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..types import Effort

#: Thinking tokens allowed per effort when the request names no budget.
DEFAULT_THINKING_BUDGETS: dict[str, int] = {"low": 256, "medium": 1024, "high": 4096}
# Tokens of a reply kept for the answer when the budget is as long as the reply (see
# thinking_budget_processor): a tool call of a few arguments, or a short answer.
ANSWER_RESERVE = 64

_REASONING_LINE = re.compile(r"^Reasoning:\s*\w+\s*$", re.MULTILINE)


def thinking_budget(effort: Effort, override: int | None = None) -> int:
    """The thinking-token budget for a request: its own, else the effort's default."""
    if override is not None:
        return max(0, int(override))
    return DEFAULT_THINKING_BUDGETS.get(effort, DEFAULT_THINKING_BUDGETS["medium"])


def is_harmony_template(template_text: str) -> bool:
    """Whether a chat template writes OpenAI's harmony format (gpt-oss)."""
    return "<|channel|>" in template_text and "<|message|>" in template_text


def effort_template_options(template_text: str, effort: Effort) -> dict[str, Any]:
    """Chat-template kwargs that carry the effort, for the switches the template reads."""
    options: dict[str, Any] = {}
    if "enable_thinking" in template_text:
        options["enable_thinking"] = effort != "low"
    if "reasoning_effort" in template_text:
        options["reasoning_effort"] = effort
    return options


def harmony_reasoning(messages: list[dict[str, Any]], effort: Effort) -> list[dict[str, Any]]:
    """Messages with `Reasoning: <effort>` in the system message (harmony templates
    that take no `reasoning_effort` kwarg). An existing Reasoning line is replaced."""
    line = f"Reasoning: {effort}"
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        content = str(out[0].get("content") or "")
        if _REASONING_LINE.search(content):
            content = _REASONING_LINE.sub(line, content, count=1)
        else:
            content = f"{content.rstrip()}\n\n{line}" if content.strip() else line
        out[0]["content"] = content
    else:
        out.insert(0, {"role": "system", "content": line})
    return out


# --------------------------------------------------------------------------- thinking syntax


@dataclass(frozen=True)
class ThinkingSyntax:
    """How a model opens and closes its thinking, and what closes it by force."""

    name: str
    open: str
    close: str
    #: written before the close tag when the budget closes the block
    close_lead: str = ""
    #: written after the close tag when the budget closes the block (starts the answer)
    close_trail: str = ""
    #: end-of-turn tokens that end a message but must not end generation here
    continue_tokens: tuple[str, ...] = ()

    def forced_close(self, partial: int = 0) -> str:
        """The text forced to close the block; `partial` characters of the close tag
        are already written (the model had begun closing it)."""
        if partial:
            return self.close[partial:] + self.close_trail
        return self.close_lead + self.close + self.close_trail


THINK_TAGS = ThinkingSyntax("think-tags", "<think>", "</think>", close_lead="\n", close_trail="\n\n")
HARMONY = ThinkingSyntax(
    "harmony",
    "<|channel|>analysis<|message|>",
    "<|end|>",
    close_trail="<|start|>assistant<|channel|>final<|message|>",
    continue_tokens=("<|end|>",),
)


def detect_thinking_syntax(template_text: str) -> ThinkingSyntax:
    return HARMONY if is_harmony_template(template_text) else THINK_TAGS


def prompt_opens_thinking(prompt: str, syntax: ThinkingSyntax) -> bool:
    """Whether the prompt ends inside a thinking block the template opened."""
    return prompt.rstrip().endswith(syntax.open.rstrip())


def _overlap(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


# --------------------------------------------------------------------------- per-sequence state


class TokenTexts:
    """Decoded text of single tokens, cached (one per tokenizer)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token: int) -> str:
        text = self._cache.get(token)
        if text is None:
            text = self.tokenizer.decode([token], skip_special_tokens=False)
            self._cache[token] = text
        return text

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))


_texts: weakref.WeakKeyDictionary[Any, TokenTexts] = weakref.WeakKeyDictionary()
_texts_lock = threading.Lock()


def token_texts(tokenizer: Any) -> TokenTexts:
    with _texts_lock:
        texts = _texts.get(tokenizer)
        if texts is None:
            texts = _texts[tokenizer] = TokenTexts(tokenizer)
        return texts


class _Row:
    __slots__ = ("thinking", "spent", "forced", "tail", "answer_pending", "closed_by_budget")

    def __init__(self, thinking: bool) -> None:
        self.thinking = thinking
        self.spent = 0
        self.forced: list[int] = []
        self.tail = ""
        self.answer_pending = False
        self.closed_by_budget = 0


class ThinkingBudget:
    """The budget's per-sequence state machine, without torch.

    `observe(row, token)` takes each generated token; `action(row)` then says
    what the next token must be: a forced token id, "no_end" (end-of-turn
    tokens are banned until the model has answered), or None.
    """

    def __init__(
        self,
        syntax: ThinkingSyntax,
        budget: int,
        token_text: Callable[[int], str],
        encode: Callable[[str], list[int]],
        *,
        start_in_thinking: bool = False,
    ) -> None:
        self.syntax = syntax
        self.budget = max(0, budget)
        self.token_text = token_text
        self.encode = encode
        self.start_in_thinking = start_in_thinking
        self.rows: list[_Row] = []
        self._keep = max(len(syntax.open), len(syntax.close))

    def ensure_rows(self, n: int) -> None:
        while len(self.rows) < n:
            self.rows.append(_Row(self.start_in_thinking))

    def thinking_tokens(self, row: int = 0) -> int:
        """Thinking tokens the sequence wrote itself (forced tokens not counted)."""
        return self.rows[row].spent if row < len(self.rows) else 0

    def closed_by_budget(self, row: int = 0) -> int:
        """How many times the budget closed this sequence's thinking."""
        return self.rows[row].closed_by_budget if row < len(self.rows) else 0

    def observe(self, row: int, token: int) -> None:
        state = self.rows[row]
        forced = bool(state.forced) and state.forced[0] == token
        if forced:
            state.forced.pop(0)
        elif state.forced:  # something else came instead (another processor won): give up forcing
            state.forced.clear()
        text = self.token_text(token)
        if state.thinking and not forced:
            state.spent += 1
        elif state.answer_pending and not state.forced and text.strip() and not forced:
            state.answer_pending = False
        state.tail += text
        self._transitions(state)
        if forced and not state.forced:  # the forced text closed the block, however it tokenized
            state.thinking = False
            state.tail = ""

    def _transitions(self, state: _Row) -> None:
        syntax = self.syntax
        while True:
            tag = syntax.close if state.thinking else syntax.open
            index = state.tail.find(tag)
            if index < 0:
                break
            state.tail = state.tail[index + len(tag) :]
            state.thinking = not state.thinking
        if len(state.tail) > self._keep:
            state.tail = state.tail[-self._keep :]

    def action(self, row: int) -> int | str | None:
        state = self.rows[row]
        if not state.forced and state.thinking and state.spent >= self.budget:
            partial = _overlap(state.tail, self.syntax.close)
            state.forced = self.encode(self.syntax.forced_close(partial))
            state.answer_pending = True
            state.closed_by_budget += 1
        if state.forced:
            return state.forced[0]
        if state.answer_pending and not state.thinking:
            return "no_end"
        return None


class ThinkingBudgetProcessor:
    """A transformers logits processor enforcing a thinking budget per sequence.

    It implements the `LogitsProcessor` call protocol (`processor(input_ids,
    scores) -> scores`) and goes into `generate(logits_processor=...)`. State
    is kept per batch row, so batches (greedy or sampled) work; beam search,
    which reorders rows, is not supported.
    """

    supports_continuous_batching = False

    def __init__(
        self,
        tokenizer: Any,
        budget: int,
        *,
        syntax: ThinkingSyntax = THINK_TAGS,
        start_in_thinking: bool = False,
        end_ids: Iterable[int] = (),
    ) -> None:
        texts = token_texts(tokenizer)
        self.state = ThinkingBudget(syntax, budget, texts, texts.encode, start_in_thinking=start_in_thinking)
        self.end_ids = sorted(set(end_ids))
        vocab = tokenizer.get_vocab()
        #: ids that must not end generation for this syntax (harmony's <|end|>)
        self.continue_ids = {vocab[t] for t in syntax.continue_tokens if t in vocab}
        self._seen: int | None = None

    @property
    def budget(self) -> int:
        return self.state.budget

    def thinking_tokens(self, row: int = 0) -> int:
        return self.state.thinking_tokens(row)

    def closed_by_budget(self, row: int = 0) -> int:
        return self.state.closed_by_budget(row)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        batch, length = int(input_ids.shape[0]), int(input_ids.shape[1])
        state = self.state
        state.ensure_rows(batch)
        if self._seen is None:  # the first call sees only the prompt
            self._seen = length
        elif length > self._seen:
            new = input_ids[:, self._seen :].tolist()
            self._seen = length
            for row, tokens in enumerate(new):
                for token in tokens:
                    state.observe(row, int(token))
        for row in range(batch):
            action = state.action(row)
            if action is None:
                continue
            if action == "no_end":
                if self.end_ids:
                    kept = scores[row, self.end_ids].clone()
                    scores[row, self.end_ids] = float("-inf")
                    if not bool((scores[row] > float("-inf")).any()):  # an end is all that is left
                        scores[row, self.end_ids] = kept
            else:
                scores[row, :] = float("-inf")
                scores[row, int(action)] = 0.0
        return scores


def thinking_budget_processor(
    tokenizer: Any,
    template_text: str,
    prompt: str,
    *,
    effort: Effort,
    budget: int | None,
    max_new_tokens: int,
    end_ids: Sequence[int] = (),
) -> ThinkingBudgetProcessor | None:
    """The budget processor for one request, or None when there is nothing for it to do.
    Harmony models always get one: it also keeps `<|end|>` from ending the turn after
    the analysis.

    A budget at least the reply's whole limit (medium's 1,024 against a 512-token
    reply) would never be reached: the thinking could take every token and leave no
    answer or call. For a model that thinks (its template or prompt has the block),
    it is cut to leave the answer a quarter of the reply, at least `ANSWER_RESERVE`
    tokens; a model whose template has no thinking block gets no processor then."""
    syntax = detect_thinking_syntax(template_text)
    limit = thinking_budget(effort, budget)
    if limit >= max_new_tokens:
        opens = prompt_opens_thinking(prompt, syntax)
        if syntax is not HARMONY and syntax.open not in template_text and not opens:
            return None
        limit = max(0, max_new_tokens - max(ANSWER_RESERVE, max_new_tokens // 4))
    return ThinkingBudgetProcessor(
        tokenizer,
        limit,
        syntax=syntax,
        start_in_thinking=prompt_opens_thinking(prompt, syntax),
        end_ids=end_ids,
    )
