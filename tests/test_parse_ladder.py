"""The output-parser ladder: harmony, Hermes, Llama 3, Mistral, lenient JSON,
the tokenizer's own response schema, and the stream splitters."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest

from agent import Agent
from agent.llm import ScriptedLLM
from agent.llm.formats import (
    HARMONY,
    HERMES,
    LLAMA3,
    MISTRAL,
    ChatFormat,
    ResponseSchemaFormat,
    detect_format,
    format_for_tokenizer,
    get_format,
    loads_lenient,
    parse_output,
    stream_splitter,
)
from agent.llm.formats.base import END_TOKENS
from agent.llm.parse import has_markup, parse_hermes

ROOT = Path(__file__).resolve().parents[1]
S, CH, M, END, CALL, RET, CON = (
    "<|start|>",
    "<|channel|>",
    "<|message|>",
    "<|end|>",
    "<|call|>",
    "<|return|>",
    "<|constrain|>",
)


def _bench():
    spec = importlib.util.spec_from_file_location("parser_ladder", ROOT / "benchmarks" / "parser_ladder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()
CORPUS = BENCH.load_corpus()


def calls(parsed):
    return [(c.name, c.arguments) for c in parsed.tool_calls]


# --------------------------------------------------------------------------- the corpus


def test_corpus_is_big_and_covers_every_format():
    formats = {e["format"] for e in CORPUS}
    assert len(CORPUS) >= 80
    assert {"harmony", "hermes", "llama3", "mistral", "deepseek", "json", "text"} <= formats
    assert len({e["id"] for e in CORPUS}) == len(CORPUS)
    assert sum(any(c.get("parse_error") for c in e["expected"]["tool_calls"]) for e in CORPUS) >= 15


def test_corpus_is_handled_as_expected():
    rows = BENCH.run(CORPUS, repeats=0)
    failures = [f for row in rows.values() for f in row["failures"]]
    assert not failures, "\n".join(f"{i}: {'; '.join(p)}" for i, p in failures)


# --------------------------------------------------------------------------- each format


def test_hermes_keeps_its_behaviour():
    text = '<think> plan it </think> Hello <tool_call>{"name": "f", "arguments": {}}</tool_call> world \n'
    parsed = parse_output(text)
    assert (parsed.content, parsed.thinking, calls(parsed), parsed.format) == (
        "Hello  world",
        "plan it",
        [("f", {})],
        "hermes",
    )
    assert parse_hermes(text).content == "Hello  world"


def test_harmony_turn_with_analysis_call_and_final():
    text = (
        f"{CH}analysis{M}Need weather.{END}{S}assistant{CH}commentary to=functions.get_weather "
        f'{CON}json{M}{{"city": "Paris"}}{CALL}'
    )
    parsed = parse_output(text)
    assert parsed.format == "harmony" and parsed.thinking == "Need weather." and parsed.content == ""
    assert calls(parsed) == [("get_weather", {"city": "Paris"})]
    final = parse_output(f"{CH}analysis{M}Easy.{END}{S}assistant{CH}final{M}It is 4.{RET}")
    assert (final.content, final.thinking, final.tool_calls) == ("It is 4.", "Easy.", [])


@pytest.mark.parametrize(
    "header",
    [
        f"{S}assistant{CH}commentary to=functions.lookup {CON}json{M}",  # the canonical header
        f"{CH}commentary to=functions.lookup {CON}json{M}",  # no <|start|>assistant
        f"{CH}commentary to=functions.lookup{M}",  # no <|constrain|>
        f"{CH}commentary to=functions.lookup json{M}",  # bare content type
        f"{S}assistant to=functions.lookup{CH}commentary json{M}",  # recipient before the channel
        f"{S}assistant to=functions.lookup{CH}commentary {CON}json{M}",
        f"{S}assistant{CH}analysis to=functions.lookup code{M}",  # a call on the analysis channel
        f"assistant{CH}commentary to=functions.lookup {CON}json{M}",  # <|start|> lost, role kept
        f"{CH}commentary to=lookup {CON}json{M}",  # no functions. namespace
    ],
)
@pytest.mark.parametrize("ending", [CALL, "", f"{CALL}{S}assistant{CH}final{M}ok{RET}"])
def test_harmony_header_variants(header, ending):
    text = f'{CH}analysis{M}Think first.{END}{header}{{"q": "x"}}{ending}'
    parsed = parse_output(text)
    assert calls(parsed) == [("lookup", {"q": "x"})]
    assert parsed.thinking == "Think first."
    assert parsed.content == ("ok" if ending.endswith(RET) else "")


def test_harmony_truncation():
    head = f"{CH}analysis{M}Think.{END}{S}assistant{CH}commentary to=functions.f {CON}json"
    cut_header = parse_output(head)
    assert cut_header.tool_calls[0].name == "f" and cut_header.tool_calls[0].parse_error
    cut_json = parse_output(head + M + '{"a": {"b": 1')
    assert calls(cut_json) == [("f", {"a": {"b": 1}})]
    cut_string = parse_output(head + M + '{"a": "unfinis')
    assert cut_string.tool_calls[0].parse_error and cut_string.tool_calls[0].raw_arguments == '{"a": "unfinis'
    cut_thinking = parse_output(f"{CH}analysis{M}Half a tho")
    assert (cut_thinking.thinking, cut_thinking.content, cut_thinking.tool_calls) == ("Half a tho", "", [])


def test_harmony_analysis_text_is_never_a_call():
    text = (
        f'{CH}analysis{M}Maybe <tool_call>{{"name": "rm", "arguments": {{}}}}</tool_call> '
        f'or {{"name": "rm", "parameters": {{}}}} or [TOOL_CALLS]rm[ARGS]{{}}{END}'
        f"{S}assistant{CH}final{M}No.{RET}"
    )
    parsed = parse_output(text)
    assert parsed.tool_calls == [] and parsed.content == "No." and "rm" in parsed.thinking


def test_llama3_json_calls():
    one = parse_output('{"name": "get_weather", "parameters": {"city": "Paris"}}')
    assert (one.format, calls(one)) == ("llama3", [("get_weather", {"city": "Paris"})])
    several = parse_output(
        '<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"s": "x;y"}}'
    )
    assert calls(several) == [("a", {}), ("b", {"s": "x;y"})]
    builtin = parse_output('<|python_tag|>brave_search.call(query="paris")')
    assert calls(builtin) == [("brave_search", {"query": "paris"})]
    not_a_call = parse_output('{"answer": 42}')
    assert (not_a_call.content, not_a_call.tool_calls) == ('{"answer": 42}', [])


def test_mistral_both_forms():
    old = parse_output('[TOOL_CALLS] [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]')
    assert (old.format, calls(old)) == ("mistral", [("a", {"x": 1}), ("b", {})])
    new = parse_output('Looking.[TOOL_CALLS]a[ARGS]{"x": 1}[TOOL_CALLS]b[CALL_ID]123456789[ARGS]{}')
    assert (new.content, calls(new)) == ("Looking.", [("a", {"x": 1}), ("b", {})])
    magistral = parse_output('[THINK]plan[/THINK][TOOL_CALLS]a[ARGS]{"x": 2}')
    assert (magistral.thinking, calls(magistral)) == ("plan", [("a", {"x": 2})])


def test_lenient_json_fallback():
    fenced = parse_output("I'll search.\n```json\n{'name': 'search', 'arguments': {'q': 'x',},}\n```")
    assert (fenced.format, fenced.content, calls(fenced)) == (
        "json",
        "I'll search.",
        [("search", {"q": "x"})],
    )
    unclosed = parse_output('```json\n{"name": "f", "arguments": {"a": {"b": True}')
    assert calls(unclosed) == [("f", {"a": {"b": True}})]
    data = parse_output('```json\n{"name": "Alice", "age": 3}\n```')
    assert data.tool_calls == [] and data.format == "text"


def test_loads_lenient_repairs_and_refuses():
    assert loads_lenient("{'a': 'it\\'s', 'b': [1, 2,], c: None,}") == {"a": "it's", "b": [1, 2], "c": None}
    assert loads_lenient('{"a": {"b": [1, {"c": 2') == {"a": {"b": [1, {"c": 2}]}}
    assert loads_lenient('```json\n{"a": 1}\n```') == {"a": 1}
    assert loads_lenient('{"a": 1}}') == {"a": 1}
    for bad in ('{"a": 1,, oops', '{"a": 1, "b": }', '{"a": "unterminated', "not json", ""):
        with pytest.raises(json.JSONDecodeError):
            loads_lenient(bad)


# --------------------------------------------------------------------------- thinking and several calls


@pytest.mark.parametrize(
    "inside",
    [
        '<tool_call>{"name": "rm", "arguments": {}}</tool_call>',
        '{"name": "rm", "parameters": {}}',
        '<|python_tag|>{"name": "rm", "parameters": {}}',
        '[TOOL_CALLS] [{"name": "rm", "arguments": {}}]',
        "[TOOL_CALLS]rm[ARGS]{}",
        '```json\n{"name": "rm", "arguments": {}}\n```',
    ],
)
@pytest.mark.parametrize("think", [("<think>", "</think>"), ("[THINK]", "[/THINK]")])
def test_calls_inside_thinking_are_ignored(inside, think):
    parsed = parse_output(f"{think[0]}I could write {inside} but no.{think[1]}\nThe answer is 7.")
    assert parsed.tool_calls == []
    assert parsed.content == "The answer is 7."
    assert inside in parsed.thinking
    # and the same call outside the thinking is read
    outside = parse_output(f"{think[0]}Yes.{think[1]}{inside}")
    assert [c.name for c in outside.tool_calls] == ["rm"] and outside.thinking == "Yes."


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "a", "arguments": {"n": 1}}</tool_call>\n<tool_call>{"name": "b", "arguments": {"n": 2}}</tool_call>',
        '<tool_call>[{"name": "a", "arguments": {"n": 1}}, {"name": "b", "arguments": {"n": 2}}]</tool_call>',
        '{"name": "a", "parameters": {"n": 1}}; {"name": "b", "parameters": {"n": 2}}',
        '[TOOL_CALLS] [{"name": "a", "arguments": {"n": 1}}, {"name": "b", "arguments": {"n": 2}}]',
        '[TOOL_CALLS]a[ARGS]{"n": 1}[TOOL_CALLS]b[ARGS]{"n": 2}',
        f'{CH}commentary to=functions.a {CON}json{M}{{"n": 1}}{CALL}{S}assistant{CH}commentary to=functions.b {CON}json{M}{{"n": 2}}{CALL}',
        '```json\n[{"name": "a", "arguments": {"n": 1}}, {"name": "b", "arguments": {"n": 2}}]\n```',
    ],
)
def test_every_call_in_a_turn_is_read(text):
    assert calls(parse_output(text)) == [("a", {"n": 1}), ("b", {"n": 2})]


@pytest.mark.parametrize(
    "text, name",
    [
        ('<tool_call>{"name": "add", "arguments": {"a": 1, "b": }</tool_call>', "add"),
        ('<tool_call>{"name": "w", "arguments": {"t": "cut', "w"),
        ("<tool_call></tool_call>", ""),
        ('<tool_call>{"name": "f", "arguments": 3}</tool_call>', "f"),
        ('{"name": "w", "parameters": {"t": "cut', "w"),
        ("<|python_tag|>", ""),
        ("[TOOL_CALLS]", ""),
        ('[TOOL_CALLS]w[ARGS]{"t": "cut', "w"),
        (f"{CH}commentary to=functions.w {CON}json{M}{{t: cut}}", "w"),
        (f"{CH}commentary to=functions.w {CON}json", "w"),
        ('```json\n{"name": "w", "arguments": {"a": 1,, "b"}}\n```', "w"),
    ],
)
def test_broken_calls_come_back_with_a_parse_error(text, name):
    parsed = parse_output(text)
    assert len(parsed.tool_calls) == 1
    call = parsed.tool_calls[0]
    assert call.parse_error and call.arguments is None and call.name == name


# --------------------------------------------------------------------------- families and detection


class _Tok:
    def __init__(self, template):
        self.chat_template = template


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{{ '<|start|>assistant<|channel|>final<|message|>' }}", HARMONY),
        ("{% if tools %}[AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]", MISTRAL),
        ("<|start_header_id|>{% if builtin_tools %}<|python_tag|>{% endif %}", LLAMA3),
        ("<|im_start|>{% if tools %}<tool_call>{% endif %}", HERMES),
        ("<|im_start|>{{ message.content }}<|im_end|>", None),
        ({"default": "x", "tool_use": "<tool_call>"}, HERMES),
    ],
)
def test_the_family_comes_from_the_template(template, expected):
    tok = _Tok(template)
    assert format_for_tokenizer(tok) is expected
    if expected is not None:
        assert expected.detect(tok)
    assert detect_format(tok) is expected


def test_detect_by_text_and_get_by_name():
    assert detect_format(f"{CH}final{M}hi") is HARMONY
    assert detect_format('<think>[TOOL_CALLS]</think><tool_call>{"name": "f"}</tool_call>') is HERMES
    assert detect_format("<think><tool_call></think>plain") is None
    assert HARMONY.detect(f"{CH}analysis") and not HERMES.detect("<think><tool_call></think>")
    assert get_format("gpt-oss") is HARMONY and get_format("qwen") is HERMES and get_format(HERMES) is HERMES
    with pytest.raises(ValueError, match="unknown output format"):
        get_format("klingon")
    assert isinstance(HARMONY, ChatFormat)


def test_a_family_is_tried_first_but_the_ladder_still_runs():
    # a harmony model that wrote a Hermes call, or a Hermes model that wrote harmony
    assert calls(parse_output('<tool_call>{"name": "f", "arguments": {}}</tool_call>', "harmony")) == [
        ("f", {})
    ]
    assert calls(parse_output(f"{CH}commentary to=functions.f{M}{{}}", "hermes")) == [("f", {})]
    assert calls(parse_output("[TOOL_CALLS]f[ARGS]{}", "llama3")) == [("f", {})]


def test_has_markup():
    assert has_markup(f"x{CH}y") and has_markup("[TOOL_CALLS]") and has_markup("<think>hm</think>ok")
    assert has_markup('{"name": "f", "parameters": {}}') and not has_markup('plain {"json": 1}')


# --------------------------------------------------------------------------- the tokenizer's own schema

QWEN_RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "reasoning_content": {"open": "<think>", "close": "</think>", "content": "text"},
        "tool_calls": {
            "open_pattern": r"\s*<tool_call>",
            "close": "</tool_call>",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"\s*(?:<\|im_end\|>|<\|endoftext\|>)", "content": "text"},
    },
}


def _real_tokenizer():
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    if not hasattr(transformers.PreTrainedTokenizerBase, "parse_response"):
        pytest.skip("this transformers has no parse_response")
    model = tokenizers.models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer(model))
    tok.chat_template = "<|im_start|>{% if tools %}<tool_call>{% endif %}"
    return tok


def test_the_tokenizers_response_schema_comes_first():
    tok = _real_tokenizer()
    if not hasattr(tok, "response_template"):
        pytest.skip("this transformers reads response_schema, not response_template")
    tok.response_template = QWEN_RESPONSE_TEMPLATE
    fmt = format_for_tokenizer(tok)
    assert isinstance(fmt, ResponseSchemaFormat) and fmt.fallback is HERMES and fmt.detect(tok)
    text = '<think>plan</think>Sure.\n<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>\n<tool_call>{"name": "g", "arguments": {}}</tool_call><|im_end|>'
    parsed = parse_output(text, fmt)
    assert parsed.format == "schema"
    assert (parsed.content, parsed.thinking, calls(parsed)) == ("Sure.", "plan", [("f", {"a": 1}), ("g", {})])
    # the schema's parser raises on JSON it cannot read: the ladder takes over
    broken = parse_output('<tool_call>{"name": "f", "arguments": {"a": }</tool_call>', fmt)
    assert broken.format == "hermes" and broken.tool_calls[0].parse_error
    # a schema that finds no calls where the ladder does loses to the ladder
    harmony = parse_output(f"{CH}commentary to=functions.f{M}{{}}", fmt)
    assert harmony.format == "harmony" and calls(harmony) == [("f", {})]


def test_the_older_response_schema_api_is_used_too():
    class Legacy:
        chat_template = "<tool_call>"
        response_schema = {"type": "object"}

        def parse_response(self, text):  # no prefix argument before transformers 5.13
            return {
                "role": "assistant",
                "content": [{"type": "text", "text": "Hi."}],
                "thinking": "hm",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
            }

    fmt = format_for_tokenizer(Legacy())
    assert isinstance(fmt, ResponseSchemaFormat)
    parsed = parse_output("anything", fmt)
    assert (parsed.content, parsed.thinking, calls(parsed), parsed.format) == (
        "Hi.",
        "hm",
        [("f", {"x": 1})],
        "schema",
    )
    assert format_for_tokenizer(_Tok("<tool_call>")) is HERMES  # no schema: the family


# --------------------------------------------------------------------------- streaming


def _stream(text, size):
    fmt = detect_format(text)
    opened = "</think>" in text and "<think>" not in text  # the prompt opened the block
    splitter = stream_splitter(fmt, in_thinking=opened)
    deltas = []
    for i in range(0, len(text), size):
        deltas += splitter.feed(text[i : i + size])
    deltas += splitter.finish()
    return "".join(d.content for d in deltas), "".join(d.thinking for d in deltas)


# Fenced JSON calls stream as text (a reply that starts with a fence is not held
# back), and a generation loop drops end tokens before they reach the splitter.
STREAMABLE = [e for e in CORPUS if e["format"] != "json" and not any(t in e["text"] for t in END_TOKENS)]


@pytest.mark.parametrize("entry", STREAMABLE, ids=[e["id"] for e in STREAMABLE])
def test_stream_deltas_add_up_to_the_parse(entry):
    parsed = parse_output(entry["text"], entry.get("family"))
    for size in (1, 3, 7, 1000):
        assert _stream(entry["text"], size) == (parsed.content, parsed.thinking), size


# --------------------------------------------------------------------------- backends


def test_scripted_llm_auto_detects_every_format(run_dir):
    from helpers import add

    llm = ScriptedLLM(
        [
            f'{CH}analysis{M}Add them.{END}{S}assistant{CH}commentary to=functions.add {CON}json{M}{{"a": 1, "b": 2}}{CALL}',
            '[TOOL_CALLS]add[ARGS]{"a": 3, "b": 4}',
            '<|python_tag|>{"name": "add", "parameters": {"a": 5, "b": 6}}',
            f"{CH}final{M}Done: 3, 7, 11.{RET}",
        ]
    )
    result = Agent(llm, tools=[add], run_dir=run_dir).run_sync("add things")
    assert result.ok and result.answer == "Done: 3, 7, 11."
    assert [e.content for e in result.events if e.type == "tool_result"] == ["3", "7", "11"]
    first = next(e for e in result.events if e.type == "model_response")
    assert first.thinking == "Add them."


def test_transformers_llm_streams_and_parses_harmony():
    from agent.llm.base import LLMRequest
    from agent.types import Message

    output = (
        f"{CH}analysis{M}Weather, so call the tool.{END}{S}assistant{CH}commentary to=functions.get_weather "
        f'{CON}json{M}{{"city": "Oslo"}}'
    )
    llm = _char_llm(
        output,
        chat_template="{{ '<|start|>assistant' }}{# <|channel|> #}",
        prompt="<|start|>user<|message|>{}<|end|><|start|>assistant",
    )

    async def go():
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        request = LLMRequest(messages=[Message(role="user", content="weather?")], tools=tools)
        items = [x async for x in llm.stream(request)]
        return items[:-1], items[-1]

    deltas, response = asyncio.run(go())
    assert "".join(d.thinking for d in deltas) == response.thinking == "Weather, so call the tool."
    assert "".join(d.content for d in deltas) == response.content == ""
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert response.finish_reason == "tool_calls"


def _char_llm(
    output: str,
    *,
    chat_template: str = "{{ '<|im_start|>assistant' }}{# <tool_call> #}",
    prompt: str = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
):
    """A TransformersLLM whose fake model writes `output`, one character a token (no
    weights); `chat_template` names the format's markers, `prompt` renders the last message."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from agent.llm.transformers import TemplateChatFormat, TransformersLLM

    class CharTokenizer:
        pad_token_id = 0
        eos_token_id = None

        def __call__(self, text, return_tensors=None, add_special_tokens=False):
            return {"input_ids": torch.tensor([[ord(c) for c in text]])}

        def decode(self, ids, skip_special_tokens=False):
            return "".join(map(chr, ids))

        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

        def apply_chat_template(self, messages, **kwargs):
            return prompt.replace("{}", messages[-1]["content"])

    class Model:
        device = "cpu"

        def generate(self, input_ids, streamer, **kwargs):
            streamer.put(input_ids)
            for ch in output:
                streamer.put(torch.tensor([ord(ch)]))
            streamer.end()

    tokenizer = CharTokenizer()
    tokenizer.chat_template = chat_template
    llm = TransformersLLM("unused")
    llm.model, llm.tokenizer = Model(), tokenizer
    llm.chat_format = TemplateChatFormat(llm.tokenizer)
    llm.end_ids = {3}
    llm._logits_processors = lambda *args, **kwargs: []  # the grammar and budgets are not what these test
    return llm


def test_a_local_model_reads_no_call_without_tools_and_a_cut_call_ends_on_length():
    from agent.llm.base import LLMRequest
    from agent.types import Message

    add = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    text = 'Use <tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call> like this.'

    async def reply(llm, **fields):
        items = [
            x async for x in llm.stream(LLMRequest(messages=[Message(role="user", content="q")], **fields))
        ]
        return "".join(d.content for d in items[:-1]), items[-1]

    streamed, response = asyncio.run(reply(_char_llm(text), max_new_tokens=500))  # no tools offered
    assert (
        response.tool_calls == []
        and response.content == streamed == text
        and response.finish_reason == "stop"
    )
    _, response = asyncio.run(reply(_char_llm(text), max_new_tokens=500, tools=[add]))
    assert [c.name for c in response.tool_calls] == ["add"] and response.finish_reason == "tool_calls"
    cut = '<tool_call>{"name": "add", "argu'
    _, response = asyncio.run(reply(_char_llm(cut), max_new_tokens=len(cut), tools=[add]))
    assert response.finish_reason == "length"


def test_a_local_model_refuses_a_prompt_and_reply_that_do_not_fit_its_window():
    from agent.llm.base import ContextLengthError, LLMRequest
    from agent.types import Message

    llm = _char_llm("ok")
    llm.context_window = 80  # the fake tokenizer counts characters; the prompt takes about 50

    async def reply(content, **fields):
        request = LLMRequest(messages=[Message(role="user", content=content)], **fields)
        return [x async for x in llm.stream(request)][-1]

    assert asyncio.run(reply("short")).content == "ok"  # the default reply limit shrinks to fit
    with pytest.raises(ContextLengthError, match="context window is 80 tokens"):
        asyncio.run(reply("short", max_new_tokens=60))
    with pytest.raises(ContextLengthError):
        asyncio.run(reply("x" * 100))


@pytest.mark.parametrize(
    "text",
    [
        'Sure.\n{"name": "f", "parameters": {"a": 1}}',  # a bare call after some text (Llama 3 style)
        'A\n{"name": "f", "arguments": {"a": 1}}\nafter',
        'Here:\n{"x": 1}',  # JSON that is no call stays
        'Line one\n\n{"x": [1, 2]}\n',
        '<think>hm</think>Sure.\n{"name": "f", "parameters": {"a": 1}}',
        # a call whose JSON string never ends: the close tag ended it after all
        '<tool_call>{"name": "f", "arguments": {"x": "abc}}</tool_call>\nHere is the answer.',
        # a close tag inside the call's code is the code's text, not the call's end
        '<tool_call>\n{"name": "python", "arguments": {"code": "s = \'</tool_call>\'\\nprint(s)"}}\n</tool_call> after',
    ],
)
@pytest.mark.parametrize("size", [1, 3, 100])
def test_streamed_content_adds_up_to_the_parsed_content(text, size):
    from agent.llm.formats import stream_splitter

    splitter = stream_splitter(None)
    deltas = [d for i in range(0, len(text), size) for d in splitter.feed(text[i : i + size])]
    deltas += splitter.finish()
    parsed = parse_output(text)
    assert "".join(d.content for d in deltas) == parsed.content  # a call's JSON is not streamed as text
    assert "".join(d.thinking for d in deltas) == parsed.thinking
    if "abc}}</tool_call>" in text:  # the close tag ended the broken call: the rest is the answer
        assert parsed.content == "Here is the answer." and [
            c.parse_error is not None for c in parsed.tool_calls
        ] == [True]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"function": "add", "arguments": {"a": 1}}</tool_call>',  # "function" for "name"
        '<tool_call>{"name": "add", // the tool\n "arguments": {"a": 1 /* one */}}</tool_call>',
        '<tool_call>{"name": "add", "arguments": {"a": 1}} // done</tool_call>',
    ],
)
def test_calls_with_a_function_key_or_comments_are_read(text):
    [call_] = parse_output(text).tool_calls
    assert (call_.name, call_.arguments, call_.parse_error) == ("add", {"a": 1}, None)


def test_comment_markers_inside_strings_are_text():
    [call_] = parse_output(
        '<tool_call>{"name": "fetch", "arguments": {"url": "http://x.y/*z*/"},}</tool_call>'
    ).tool_calls
    assert call_.arguments == {"url": "http://x.y/*z*/"}


@pytest.mark.parametrize(
    "tag", ["<think>", "</think>", "</tool_call>", "<tool_call>", "<tool_call>'; b='<think>x</think>"]
)
def test_a_tag_inside_a_calls_arguments_is_text(tag):
    code = f's = "{tag}"\nprint(s)'
    text = "<tool_call>" + json.dumps({"name": "python", "arguments": {"code": code}}) + "</tool_call>"
    parsed = parse_output(text)
    assert [(c.name, c.arguments, c.parse_error) for c in parsed.tool_calls] == [
        ("python", {"code": code}, None)
    ]
    assert parsed.content == "" and parsed.thinking == ""


def test_a_json_mistake_is_told_once_with_its_place():
    from agent.llm.formats.jsonfix import call_from_text

    assert call_from_text("f", '{"a": "no end').parse_error.endswith(
        "(Unterminated string starting at character 6)"
    )
    assert call_from_text("f", '{"a": 1 "b": 2}').parse_error.endswith(
        "(Expecting ',' delimiter at character 8)"
    )


def test_json_data_in_prose_that_no_call_could_take_stays_text():
    text = 'The API returns JSON like {"name": "Bob", "arguments": ["a", "b"]} for each user.'
    parsed = parse_output(text)
    assert (parsed.content, parsed.tool_calls) == (text, [])
    parsed = parse_output('I will call {"name": "add", "arguments": {"a": 1}} now.')  # a call: taken
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [("add", {"a": 1})]


@pytest.mark.parametrize(
    ("text", "thinking"),
    [
        ("<think>weighing it</thi", "weighing it"),  # cut while the close was written
        ("<think>weighing it</", "weighing it"),
        ("<think>weighing it</think", "weighing it"),
        ("<think>is x <", "is x <"),  # a lone `<` may be the model's own
        ("<think>see </thinker", "see </thinker"),  # no prefix of the close: text
    ],
)
def test_an_unclosed_thinking_block_drops_a_close_tag_cut_short(text, thinking):
    from agent.llm.formats.stream import TagStreamSplitter

    parsed = parse_output(text)
    assert (parsed.thinking, parsed.content) == (thinking, "")
    splitter = TagStreamSplitter(in_thinking=True)
    deltas = splitter.feed(text.removeprefix("<think>")) + splitter.finish()
    assert "".join(d.thinking for d in deltas) == thinking and not any(d.content for d in deltas)


def test_python_is_read_again_when_the_interpreter_s_ast_race_failed_the_read(monkeypatch):
    """CPython before 3.11.8 (gh-106905) can fail a thread's syntax tree while another thread
    builds one; the Llama call parser and the guards' reading of code read it once more."""
    import ast

    from agent import pysyntax
    from agent.llm.formats.llama import _python_calls
    from guards._pycode import readings

    real = ast.parse
    failures: list[BaseException] = []

    def racy(*args, **kwargs):
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(ast, "parse", racy)
    failures[:] = [SystemError("AST constructor recursion depth mismatch (before=9, after=3)")]
    [call] = _python_calls('get_weather(city="Paris")')
    assert (call.name, call.arguments, failures) == ("get_weather", {"city": "Paris"}, [])
    failures[:] = [SystemError("AST constructor recursion depth mismatch (before=9, after=3)")]
    assert readings("exec('import os' + '; os.system(1)')")[-1] == "import os; os.system(1)" and not failures
    failures[:] = [SystemError("something else")]
    with pytest.raises(SystemError, match="something else"):
        pysyntax.parse("x = 1")
    failures[:] = [SystemError("AST constructor recursion depth mismatch")] * 2
    with pytest.raises(SystemError):  # twice in a row: not hidden
        pysyntax.parse("x = 1")


@pytest.mark.parametrize(
    "text",
    [
        "<tool_call>" + "[" * 1000 + "</tool_call>",  # about 500 tokens of a small model's reply
        '<tool_call>{"name": "f", "arguments": ' + '{"a":' * 5000 + "</tool_call>",
        "[TOOL_CALLS]" + "[" * 3000,
        '<|python_tag|>{"name": "f", "parameters": ' + "[" * 3000,
    ],
)
def test_a_call_nested_past_the_recursion_limit_is_unreadable_not_a_crash(text):
    from agent.llm.parse import parse_output, parse_text_only

    parsed = parse_output(text)  # raised RecursionError
    assert all(c.parse_error for c in parsed.tool_calls)
    parse_text_only(text)
