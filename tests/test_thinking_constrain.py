"""Reasoning effort, the thinking budget, and tool calls constrained by their schemas.

The real-model tests use the default model (SmolLM2-135M-Instruct) on CPU,
loaded once for the module: from the user cache when it is already converted
there, else converted into a temporary AGENT_CACHE_DIR. Generations are kept
to a few dozen tokens.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import call

from agent import Agent, tool
from agent.events import ModelResponse
from agent.llm import ScriptedLLM, constrain
from agent.llm.base import LLMRequest, complete
from agent.llm.constrain import ToolCallProcessor, excluding_pattern, tool_call_grammar, tool_call_schema
from agent.llm.thinking import (
    DEFAULT_THINKING_BUDGETS,
    HARMONY,
    THINK_TAGS,
    ThinkingBudget,
    ThinkingBudgetProcessor,
    effort_template_options,
    harmony_reasoning,
    thinking_budget,
)
from agent.llm.transformers import TemplateChatFormat, TransformersLLM
from agent.types import Message

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("llguidance")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: The expression, e.g. "2 * (3 + 4)".
    """
    return expression


@tool
def get_weather(city: str, unit: str = "celsius") -> str:
    """Get the current weather for a city.

    Args:
        city: The city.
        unit: celsius or fahrenheit.
    """
    return city


@tool
def web_search(query: str) -> str:
    """Search the web.

    Args:
        query: What to search for.
    """
    return query


TOOLS = [calculator, get_weather, web_search]
SCHEMAS = [t.schema() for t in TOOLS]


def ask(text: str, **kwargs) -> LLMRequest:
    return LLMRequest(messages=[Message(role="user", content=text)], **kwargs)


@pytest.fixture(scope="module")
def llm(tmp_path_factory) -> TransformersLLM:
    from agent.llm.default_model import default_model_dir, is_converted

    if is_converted(default_model_dir()):
        return TransformersLLM(max_new_tokens=16).load()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENT_CACHE_DIR", str(tmp_path_factory.mktemp("agent-cache")))
        return TransformersLLM(max_new_tokens=16).load()


class _OpenThinking(TemplateChatFormat):
    """Starts the assistant turn inside a `<think>` block, as thinking templates do."""

    def render(self, request: LLMRequest) -> str:
        return super().render(request) + "<think>\n"


def _grab_processors(llm, monkeypatch) -> list:
    seen: list = []
    original = llm._logits_processors

    def grab(*args, **kwargs):
        processors = original(*args, **kwargs)
        seen.extend(processors)
        return processors

    monkeypatch.setattr(llm, "_logits_processors", grab)
    return seen


# --------------------------------------------------------------------------- real model: the budget


async def test_budget_closes_a_forced_thinking_block(llm, monkeypatch):
    monkeypatch.setattr(llm, "chat_format", _OpenThinking(llm.tokenizer))
    seen = _grab_processors(llm, monkeypatch)
    request = ask("Write a long story about a dragon.", thinking_budget=8, max_new_tokens=32)
    deltas, responses = [], []
    async for item in llm.stream(request):
        (responses if isinstance(item, ModelResponse) else deltas).append(item)
    [response] = responses
    [budget] = [p for p in seen if isinstance(p, ThinkingBudgetProcessor)]
    assert budget.closed_by_budget() == 1
    assert budget.thinking_tokens() == 8
    assert response.thinking  # what it thought before the budget closed the block
    assert response.usage.thinking_tokens <= 8 + 2
    assert response.content.strip(), "the model must answer after the block is closed"
    assert "</think>" not in response.content and "<think>" not in response.content
    assert "".join(d.thinking for d in deltas) == response.thinking


async def test_a_reply_cut_inside_the_budget_s_close_keeps_no_piece_of_the_tag(llm, monkeypatch):
    """The budget closes the block with a few tokens; a token limit that falls among them
    leaves `</thi` at the end, which is no thinking (neither streamed nor in the reply)."""
    monkeypatch.setattr(llm, "chat_format", _OpenThinking(llm.tokenizer))
    close_tokens = len(llm.tokenizer.encode("</think>", add_special_tokens=False))
    assert close_tokens > 1  # else no limit could cut the tag
    cuts = []
    for extra in range(1, close_tokens):  # the limit falls after `extra` tokens of the close
        request = ask("Write a long story about a dragon.", thinking_budget=8, max_new_tokens=8 + extra)
        deltas, responses = [], []
        async for item in llm.stream(request):
            (responses if isinstance(item, ModelResponse) else deltas).append(item)
        [response] = responses
        cuts.append(response.finish_reason)
        assert response.thinking and response.content == ""
        assert not re.search(r"<(/(t(h(i(n(k)?)?)?)?)?)?$", response.thinking), response.thinking
        assert "".join(d.thinking for d in deltas) == response.thinking
    assert set(cuts) == {"length"}


def test_budget_processor_handles_a_batch(llm):
    """Two prompts, left-padded, in one generate call: each row is closed at its own budget."""
    tokenizer, model = llm.tokenizer, llm.model
    prompts = [
        llm.render_prompt(ask("Write a long story about a dragon.")) + "<think>\n",
        llm.render_prompt(ask("Explain, step by step and at length, how a bicycle works.")) + "<think>\n",
    ]
    encoded = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    width = max(map(len, encoded))
    pad = min(llm.end_ids)
    input_ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    attention = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    budget = ThinkingBudgetProcessor(tokenizer, 6, start_in_thinking=True, end_ids=llm.end_ids)
    from transformers import LogitsProcessorList

    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=20,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=sorted(llm.end_ids),
            pad_token_id=pad,
            logits_processor=LogitsProcessorList([budget]),
        )
    for row in range(2):
        new = out[row, width:].tolist()
        text = tokenizer.decode(new, skip_special_tokens=False)
        assert "</think>" in text, text
        thought, _, answer = text.partition("</think>")
        assert len(tokenizer.encode(thought.strip(), add_special_tokens=False)) <= 6 + 1
        assert budget.thinking_tokens(row) == 6 and budget.closed_by_budget(row) == 1
        assert answer.strip(), f"row {row} did not answer: {text!r}"


# --------------------------------------------------------------------------- real model: constrained calls


async def test_a_budget_longer_than_the_reply_leaves_the_reply_room_for_its_call(llm, monkeypatch):
    monkeypatch.setattr(llm, "chat_format", _OpenThinking(llm.tokenizer))
    seen = _grab_processors(llm, monkeypatch)
    # effort low: 256 thinking tokens, against a 100-token reply. A budget that long got no
    # processor at all, so nothing closed the block before the reply's limit.
    request = ask("What is 17 multiplied by 23?", tools=SCHEMAS, tool_choice="required", max_new_tokens=100)
    response = await complete(llm, request.model_copy(update={"effort": "low"}))
    [budget] = [p for p in seen if isinstance(p, ThinkingBudgetProcessor)]
    assert budget.thinking_tokens() <= 100 - 64  # the answer keeps at least ANSWER_RESERVE tokens
    assert response.finish_reason == "tool_calls" and response.tool_calls[0].parse_error is None


def test_a_budget_longer_than_the_reply_is_no_processor_for_a_model_that_does_not_think(llm):
    from agent.llm.thinking import thinking_budget_processor

    prompt = llm.render_prompt(ask("Hi"))
    template = llm.chat_format.template_text  # SmolLM2's: no thinking block
    assert thinking_budget_processor(llm.tokenizer, template, prompt, effort="medium", budget=None,
                                     max_new_tokens=512) is None  # fmt: skip
    opened = thinking_budget_processor(llm.tokenizer, template, prompt + "<think>\n", effort="medium",
                                       budget=None, max_new_tokens=512)  # fmt: skip
    assert opened is not None and opened.state.budget == 512 - 128


async def test_constrained_call_is_valid_where_the_free_model_fails(llm, monkeypatch):
    request = ask("What is 17 multiplied by 23?", tools=SCHEMAS, tool_choice="required", max_new_tokens=40)

    monkeypatch.setattr(llm, "constrain_required_calls", False)
    free = await complete(llm, request)
    free_valid = False
    for c in free.tool_calls:
        tool_ = next((t for t in TOOLS if t.name == c.name), None)
        if tool_ is not None and c.parse_error is None:
            try:
                tool_.validate(c.arguments or {})
                free_valid = True
            except Exception:
                pass
    assert not free_valid, "the unconstrained 135M model was expected to fail here"

    monkeypatch.setattr(llm, "constrain_required_calls", True)
    seen = _grab_processors(llm, monkeypatch)
    response = await complete(llm, request)
    assert any(isinstance(p, ToolCallProcessor) for p in seen)
    assert response.finish_reason == "tool_calls"
    [c] = response.tool_calls
    assert c.parse_error is None
    tool_ = next(t for t in TOOLS if t.name == c.name)
    args = tool_.validate(c.arguments)  # the pydantic args model accepts it
    assert args.model_dump() == c.arguments
    assert response.content == ""  # the tag came at once: no free text before the call


async def test_auto_requests_warm_the_grammar_and_are_not_constrained(llm, monkeypatch):
    seen = _grab_processors(llm, monkeypatch)
    tools = [get_weather.schema()]
    grammars = constrain.tool_grammars(llm.tokenizer, llm.end_ids)
    options = constrain.grammar_options(llm.chat_format.template_text, "")
    key = grammars.key(tools, **options)
    response = await complete(llm, ask("Hi", tools=tools, max_new_tokens=2))
    assert response.usage.completion_tokens <= 2
    assert not [p for p in seen if isinstance(p, ToolCallProcessor)]
    for _ in range(200):  # the warm-up runs on a daemon thread
        if key in grammars._matchers:
            break
        await asyncio.sleep(0.05)
    assert key in grammars._matchers


def test_processor_wiring(llm):
    prompt = llm.render_prompt(ask("x"))
    required = ask("x", tools=SCHEMAS, tool_choice="required")
    kinds = [type(p) for p in llm._logits_processors(required, prompt, 16)]
    assert kinds == [ToolCallProcessor]
    # a budget below the generation length adds the budget processor (low: 256 < 512)
    low = ask("x", effort="low")
    assert [type(p) for p in llm._logits_processors(low, prompt, 512)] == [ThinkingBudgetProcessor]
    assert llm._logits_processors(ask("x", effort="high"), prompt, 512) == []
    assert llm._logits_processors(ask("x", tools=SCHEMAS, tool_choice="none"), prompt, 16) == []


def test_grammar_accepts_calls_and_rejects_others(llm):
    grammars = constrain.tool_grammars(llm.tokenizer, llm.end_ids)

    def accepts(text: str, **options) -> bool:
        matcher = grammars.matcher(SCHEMAS, **{"thinking": "none", "preamble_chars": 0, **options})
        return matcher.consume_tokens(llm.tokenizer.encode(text, add_special_tokens=False)) and (
            matcher.is_accepting()
        )

    good = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}</tool_call>'
    assert accepts(good)
    assert accepts('<tool_call>\n{"name": "calculator", "arguments": {"expression": "1+1"}}\n</tool_call>')
    assert not accepts('<tool_call>{"name": "nope", "arguments": {}}</tool_call>')
    assert not accepts('<tool_call>{"name": "calculator", "arguments": {"city": "Oslo"}}</tool_call>')
    assert not accepts(
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "x": 1}}</tool_call>'
    )
    assert not accepts("Sure! " + good)  # the tag comes at once by default
    assert accepts("Sure! " + good, preamble_chars=40)
    assert not accepts("Sure, let me look that up for you right now. " + good, preamble_chars=10)
    assert accepts("<think>which tool? <tool_call> no</think>\n\n" + good, thinking="optional")
    assert accepts("weather, so get_weather.\n</think>\n\n" + good, thinking="open")
    # a string may not hold the closing tag: a parser would cut the call there
    assert not accepts(good.replace("Oslo", "Os</tool_call>lo"))
    assert accepts(good.replace("Oslo", "<b>Oslo</b>"))
    # compiled once per tool set and options, then copied
    assert grammars.matcher(SCHEMAS, thinking="none") is not grammars.matcher(SCHEMAS, thinking="none")
    assert len([k for k in grammars._matchers if '"calculator"' in k]) >= 1


# --------------------------------------------------------------------------- schemas and grammar text


def test_call_schema_pins_names_to_their_arguments():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "move",
                "parameters": {
                    "type": "object",
                    "properties": {"to": {"$ref": "#/$defs/Point"}},
                    "required": ["to"],
                    "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}},
                },
            },
        },
        {"name": "ping", "parameters": {}},
    ]
    schema = tool_call_schema(tools)
    move, ping = schema["anyOf"]
    assert move["properties"]["name"] == {"const": "move"}
    assert move["properties"]["arguments"]["properties"]["to"] == {"$ref": "#/$defs/t0_Point"}
    assert schema["$defs"]["t0_Point"]["additionalProperties"] is False
    assert move["properties"]["arguments"]["additionalProperties"] is False
    assert ping["properties"]["arguments"] == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    assert schema["x-guidance"]["whitespace_flexible"] is False
    grammar = tool_call_grammar(tools, thinking="open", preamble_chars=None, max_calls=3)
    assert grammar.startswith('%llguidance {}\nstart: thought NL* pre body (NL? "<tool_call>" body){0,2}')


def test_excluding_pattern():
    pattern = re.compile(excluding_pattern("</tool_call>"))
    for text in ("", "abc", "a<b", "<<<", "</div>", "</tool_cal", "</tool_call", "x</tool_callx>"):
        assert pattern.match(text), text
    for text in ("</tool_call>", "a</tool_call>b", "<</tool_call>", "</tool_call>>"):
        assert not pattern.match(text), text


# --------------------------------------------------------------------------- effort -> template options


class _FakeTemplateTokenizer:
    def __init__(self, template: str) -> None:
        self.chat_template = template
        self.calls: list = []

    def apply_chat_template(self, messages, **kwargs):
        self.calls.append((messages, kwargs))
        return "PROMPT"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "{% if enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}",
            {
                "low": {"enable_thinking": False},
                "medium": {"enable_thinking": True},
                "high": {"enable_thinking": True},
            },
        ),
        (
            "<|start|>system<|message|>Reasoning: {{ reasoning_effort }}<|end|><|channel|>",
            {e: {"reasoning_effort": e} for e in ("low", "medium", "high")},
        ),
        ("{{ messages }}", {e: {} for e in ("low", "medium", "high")}),
    ],
)
def test_effort_maps_to_the_templates_switch(template, expected):
    tokenizer = _FakeTemplateTokenizer(template)
    fmt = TemplateChatFormat(tokenizer)
    for effort, options in expected.items():
        assert effort_template_options(template, effort) == options
        fmt.render(ask("hi", effort=effort))
        _, kwargs = tokenizer.calls[-1]
        assert {k: v for k, v in kwargs.items() if k in ("enable_thinking", "reasoning_effort")} == options


def test_harmony_template_without_the_kwarg_gets_a_reasoning_line():
    tokenizer = _FakeTemplateTokenizer(
        "{% for m in messages %}<|start|>{{ m.role }}<|message|>{% endfor %}<|channel|>"
    )
    fmt = TemplateChatFormat(tokenizer)
    fmt.render(
        LLMRequest(messages=[Message(role="system", content="Be brief."), Message(role="user", content="hi")])
    )
    messages, kwargs = tokenizer.calls[-1]
    assert messages[0] == {"role": "system", "content": "Be brief.\n\nReasoning: medium"}
    assert "reasoning_effort" not in kwargs
    fmt.render(ask("hi", effort="high"))
    assert tokenizer.calls[-1][0][0] == {"role": "system", "content": "Reasoning: high"}
    again = harmony_reasoning([{"role": "system", "content": "x\nReasoning: low"}], "high")
    assert again == [{"role": "system", "content": "x\nReasoning: high"}]


def test_default_budgets():
    assert DEFAULT_THINKING_BUDGETS == {"low": 256, "medium": 1024, "high": 4096}
    assert thinking_budget("high") == 4096
    assert thinking_budget("high", 10) == 10
    assert thinking_budget("low", 0) == 0


# --------------------------------------------------------------------------- the budget state machine


class _Vocab:
    """A tiny tokenizer: whole pieces, greedy longest match."""

    pieces = [
        "<think>", "</think>", "</", "think", ">", "\n", "\n\n", "a", "b", " ", "Hi", "<|im_end|>",
        "<|channel|>", "analysis", "<|message|>", "<|end|>", "<|start|>", "assistant", "final", "<|return|>",
    ]  # fmt: skip

    def __init__(self) -> None:
        self.ids = {p: i for i, p in enumerate(self.pieces)}

    def get_vocab(self):
        return dict(self.ids)

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.pieces[i] for i in ids)

    def encode(self, text, add_special_tokens=False):
        out = []
        while text:
            piece = max((p for p in self.pieces if text.startswith(p)), key=len)
            out.append(self.ids[piece])
            text = text[len(piece) :]
        return out


def _run(processor, vocab, script: list[str], steps: int, batch: int = 1) -> list[list[str]]:
    """Feed `script` tokens (or whatever the processor forces) and record what was produced;
    "Hi" is every step's second choice."""
    produced: list[list[str]] = [[] for _ in range(batch)]
    ids = torch.zeros((batch, 3), dtype=torch.long)
    for step in range(steps):
        scores = torch.zeros((batch, len(vocab.pieces)))
        scores[:, vocab.ids["Hi"]] = 0.5
        for row in range(batch):
            scores[row, vocab.ids[script[min(step, len(script) - 1)]]] = 1.0
        scores = processor(ids, scores)
        chosen = scores.argmax(-1)
        for row in range(batch):
            produced[row].append(vocab.pieces[int(chosen[row])])
        ids = torch.cat([ids, chosen[:, None]], dim=1)
    return produced


def test_budget_forces_the_close_then_bans_the_end():
    vocab = _Vocab()
    processor = ThinkingBudgetProcessor(vocab, 3, end_ids=[vocab.ids["<|im_end|>"]])
    # the model opens a block, thinks "a", and would end the turn right after the block
    [out] = _run(processor, vocab, ["<think>", "a", "a", "a", "a", "a", "a", "<|im_end|>"], 9)
    assert out == ["<think>", "a", "a", "a", "\n", "</think>", "\n\n", "Hi", "<|im_end|>"]
    assert processor.thinking_tokens() == 3 and processor.closed_by_budget() == 1


def test_answer_must_come_before_the_end():
    vocab = _Vocab()
    end = vocab.ids["<|im_end|>"]
    state = ThinkingBudget(THINK_TAGS, 1, lambda t: vocab.pieces[t], vocab.encode)
    state.ensure_rows(1)
    for piece in ("<think>", "a"):
        state.observe(0, vocab.ids[piece])
    forced = []
    while isinstance(action := state.action(0), int):
        forced.append(vocab.pieces[action])
        state.observe(0, action)
    assert forced == ["\n", "</think>", "\n\n"]
    assert state.action(0) == "no_end"
    state.observe(0, vocab.ids[" "])  # whitespace is not an answer
    assert state.action(0) == "no_end"
    state.observe(0, vocab.ids["Hi"])
    assert state.action(0) is None
    assert end not in forced


def test_a_half_written_close_is_completed():
    vocab = _Vocab()
    processor = ThinkingBudgetProcessor(vocab, 2, start_in_thinking=True)
    [out] = _run(processor, vocab, ["a", "</", "a"], 5)
    assert out == ["a", "</", "think", ">", "\n\n"]


def test_zero_budget_and_reopened_blocks():
    vocab = _Vocab()
    processor = ThinkingBudgetProcessor(vocab, 0, start_in_thinking=True)
    [out] = _run(processor, vocab, ["a"], 4)
    assert out == ["\n", "</think>", "\n\n", "a"]
    # the budget is per turn: a second block is closed at once
    processor = ThinkingBudgetProcessor(vocab, 1)
    [out] = _run(processor, vocab, ["<think>", "a", "a", "a", "a", "<think>", "b", "b"], 10)
    assert out == ["<think>", "a", "\n", "</think>", "\n\n", "<think>", "\n", "</think>", "\n\n", "b"]
    assert processor.closed_by_budget() == 2 and processor.thinking_tokens() == 1


def test_rows_keep_their_own_state():
    vocab = _Vocab()
    processor = ThinkingBudgetProcessor(vocab, 2)
    produced = [[] for _ in range(2)]
    ids = torch.zeros((2, 1), dtype=torch.long)
    scripts = [["<think>", "a", "a", "a", "a"], ["Hi", "Hi", "Hi", "Hi", "Hi"]]
    for step in range(5):
        scores = torch.zeros((2, len(vocab.pieces)))
        for row in range(2):
            scores[row, vocab.ids[scripts[row][step]]] = 1.0
        chosen = processor(ids, scores).argmax(-1)
        for row in range(2):
            produced[row].append(vocab.pieces[int(chosen[row])])
        ids = torch.cat([ids, chosen[:, None]], dim=1)
    assert produced[0] == ["<think>", "a", "a", "\n", "</think>"]
    assert produced[1] == ["Hi"] * 5
    assert processor.closed_by_budget(0) == 1 and processor.closed_by_budget(1) == 0


def test_harmony_budget_ends_the_analysis_and_starts_the_final_channel():
    vocab = _Vocab()
    processor = ThinkingBudgetProcessor(vocab, 2, syntax=HARMONY, end_ids=[vocab.ids["<|return|>"]])
    assert processor.continue_ids == {vocab.ids["<|end|>"]}
    [out] = _run(processor, vocab, ["<|channel|>", "analysis", "<|message|>", "a", "a", "a", "a", "a"], 10)
    assert out == [
        "<|channel|>", "analysis", "<|message|>", "a", "a",
        "<|end|>", "<|start|>", "assistant", "<|channel|>", "final",
    ]  # fmt: skip


# --------------------------------------------------------------------------- the loop's last retry


def test_the_last_retry_of_a_malformed_call_is_required(run_dir):
    @tool(max_retries=2)
    def pick(n: int) -> int:
        """Pick a number."""
        return n

    bad = call("pick", n="x")
    llm = ScriptedLLM([bad, bad, call("pick", n=1), "done"])
    result = Agent(llm, tools=[pick], run_dir=run_dir).run_sync("pick")
    assert result.status == "completed"
    assert [r.tool_choice for r in llm.requests] == ["auto", "auto", "required", "auto"]


def test_text_answers_to_a_schema_get_a_required_last_retry(run_dir):
    from pydantic import BaseModel

    class Answer(BaseModel):
        value: int

    llm = ScriptedLLM(["forty-two", "42", call("final_answer", value=42)])
    result = Agent(llm, run_dir=run_dir, answer_schema=Answer, max_retries=2).run_sync("how many?")
    assert result.status == "completed"
    assert [r.tool_choice for r in llm.requests] == ["auto", "auto", "required"]


# --------------------------------------------------------------------------- imports


def test_importing_the_modules_does_not_import_torch_or_llguidance():
    code = (
        "import sys, agent.llm.thinking, agent.llm.constrain\n"
        "heavy = [m for m in ('torch', 'transformers', 'llguidance') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
