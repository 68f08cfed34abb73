"""Batched generation and prefix reuse (agent.llm.scheduler) with the real default model on CPU.

Greedy outputs are compared with transformers' own `generate` on the request
alone. A padded batch computes the same float32 sums in a different order
(other matrix shapes, masked columns), so logits can differ in the last bits;
`assert_greedy_match` therefore accepts a difference only where the reference
model itself is at a tie (its two candidate tokens within 1e-3 in logit),
and fails on anything else, such as a wrong position id or an unmasked pad.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from agent.events import ModelDelta, ModelResponse
from agent.llm import constrain
from agent.llm.base import LLMError, LLMRequest, complete
from agent.llm.constrain import ToolCallProcessor
from agent.llm.scheduler import BatchScheduler, GenerationJob, PrefixCache, SchedulerStats, common_prefix
from agent.llm.thinking import ThinkingBudgetProcessor
from agent.llm.transformers import TemplateChatFormat, TransformersLLM
from agent.types import Message

TIE = 1e-3

WEATHER = {
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
def llm(tmp_path_factory) -> TransformersLLM:
    from agent.llm.default_model import default_model_dir, is_converted

    if is_converted(default_model_dir()):
        return TransformersLLM(max_new_tokens=16).load()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENT_CACHE_DIR", str(tmp_path_factory.mktemp("agent-cache")))
        return TransformersLLM(max_new_tokens=16).load()


@pytest.fixture
def jobs(llm, monkeypatch) -> list[GenerationJob]:
    """The jobs `llm.stream` hands to the scheduler, in order."""
    seen: list[GenerationJob] = []
    submit = llm.scheduler.submit

    def record(job: GenerationJob) -> GenerationJob:
        seen.append(job)
        return submit(job)

    monkeypatch.setattr(llm.scheduler, "submit", record)
    return seen


@pytest.fixture
def stats(llm) -> SchedulerStats:
    """Fresh counters for this test on the shared scheduler."""
    llm.scheduler.stats = SchedulerStats()
    return llm.scheduler.stats


def overlapped(a: GenerationJob, b: GenerationJob) -> bool:
    """Both rows were in the batch at once, so they shared decode steps."""
    return a.first_token_at < b.finished_at and b.first_token_at < a.finished_at


def prompt_ids(llm: TransformersLLM, request: LLMRequest) -> list[int]:
    return llm.tokenizer(llm.render_prompt(request), add_special_tokens=False)["input_ids"]


def job_for(llm: TransformersLLM, jobs: list[GenerationJob], request: LLMRequest) -> GenerationJob:
    [job] = [j for j in jobs if j.prompt_ids == prompt_ids(llm, request)]
    return job


def reference(llm: TransformersLLM, ids: list[int], max_new: int, end_ids=None) -> list[int]:
    """Greedy tokens from transformers' `generate` for the prompt alone."""
    import torch

    end = sorted(llm.end_ids if end_ids is None else end_ids)
    kwargs = {"eos_token_id": end} if end else {"min_new_tokens": max_new}
    with torch.inference_mode():
        out = llm.model.generate(
            torch.tensor([ids]),
            max_new_tokens=max_new,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=llm._pad_token_id(),
            **kwargs,
        )
    return out[0, len(ids) :].tolist()


def assert_greedy_match(llm: TransformersLLM, ids: list[int], expected: list[int], got: list[int]) -> None:
    """`got` equals `expected`, or departs from it only at a float tie of the model."""
    import torch

    if got == expected:
        return
    at = common_prefix(expected, got)
    assert at < len(expected) and at < len(got), f"lengths differ: {len(expected)} vs {len(got)}"
    with torch.inference_mode():
        logits = llm.model(torch.tensor([ids + expected[:at]])).logits[0, -1].float()
    gap = abs(float(logits[expected[at]] - logits[got[at]]))
    assert gap < TIE, f"token {at}: {expected[at]} vs {got[at]} with a logit gap of {gap:.4f}, not a tie"


# --------------------------------------------------------------------------- batching


async def test_concurrent_runs_share_forward_passes(llm, jobs, stats):
    # prompts with long answers: both rows run all 12 tokens, so they overlap for sure
    requests = [
        ask("Write a poem about the sea.", max_new_tokens=12),
        ask("Explain what a CPU does.", max_new_tokens=12),
    ]
    responses = await asyncio.gather(*(complete(llm, r) for r in requests))
    assert stats.batched_steps > 0 and stats.max_batch == 2, stats
    assert stats.decoded_tokens > stats.decode_steps  # some steps decoded both rows at once
    assert overlapped(*jobs)
    for request, response in zip(requests, responses, strict=True):
        job = job_for(llm, jobs, request)
        assert_greedy_match(llm, job.prompt_ids, reference(llm, job.prompt_ids, 12), job.tokens)
        assert response.usage.prompt_tokens == len(job.prompt_ids)
        assert response.usage.completion_tokens == len(job.tokens)
        assert response.content.strip()


def test_a_request_joins_mid_decode(llm):
    scheduler = llm.scheduler
    first_ids = prompt_ids(llm, ask("Write a long story about a dragon."))
    second_ids = prompt_ids(llm, ask("Name three colours."))
    joined = threading.Event()
    second = GenerationJob(second_ids, max_new_tokens=10, end_ids=llm.end_ids, on_done=lambda e: joined.set())

    def on_token(token: int) -> None:
        if len(first.tokens) == 4:
            scheduler.submit(second)

    first = GenerationJob(first_ids, max_new_tokens=24, on_token=on_token)  # no end tokens: all 24
    scheduler.submit(first)
    assert joined.wait(120) and first.done.wait(120)
    assert second.error is None and first.error is None
    assert second.first_token_at < first.finished_at, "the second job waited for the first"
    assert len(first.tokens) == 24
    assert_greedy_match(llm, first_ids, reference(llm, first_ids, 24, end_ids=()), first.tokens)
    assert_greedy_match(llm, second_ids, reference(llm, second_ids, 10), second.tokens)


async def test_a_closed_stream_leaves_the_batch_without_disturbing_the_others(llm, jobs, stats):
    async def abandon() -> None:
        stream = llm.stream(ask("Write a long story about a dragon.", max_new_tokens=200))
        assert isinstance(await anext(stream), ModelDelta)
        while len(jobs) < 3 or not all(j.tokens for j in jobs):  # the others are decoding too
            await asyncio.sleep(0.01)
        await stream.aclose()

    # Long enough that neither ends before the other joins, on a busy machine too.
    requests = [
        ask("Describe a forest in detail.", max_new_tokens=32),
        ask("Explain how rain forms.", max_new_tokens=32),
    ]
    results = await asyncio.gather(abandon(), *(complete(llm, r) for r in requests))
    assert stats.max_batch == 3
    [dropped] = [j for j in jobs if j.max_new_tokens == 200]
    assert dropped.done.is_set() and dropped.error is None and len(dropped.tokens) < 200
    for request, response in zip(requests, results[1:], strict=True):
        job = job_for(llm, jobs, request)
        assert_greedy_match(llm, job.prompt_ids, reference(llm, job.prompt_ids, 32), job.tokens)
        assert response.usage.completion_tokens == len(job.tokens)


async def test_a_failing_request_raises_llm_error_and_the_others_go_on(llm, jobs, monkeypatch):
    original = llm._logits_processors

    def processors(request, prompt, max_new):
        if request.purpose != "reflect":
            return original(request, prompt, max_new)
        calls = []

        def broken(input_ids, scores):  # fails on the third token
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("processor broke")
            return scores

        return [broken]

    monkeypatch.setattr(llm, "_logits_processors", processors)
    failing = ask("Write a long story about a dragon.", purpose="reflect", max_new_tokens=12)
    fine = ask("Name three colours.", max_new_tokens=12)
    results = await asyncio.gather(complete(llm, failing), complete(llm, fine), return_exceptions=True)
    assert isinstance(results[0], LLMError) and "processor broke" in str(results[0])
    job = job_for(llm, jobs, fine)
    assert_greedy_match(llm, job.prompt_ids, reference(llm, job.prompt_ids, 12), job.tokens)
    assert results[1].usage.completion_tokens == len(job.tokens)


def test_caps_bound_the_batch(llm):
    scheduler = BatchScheduler(
        llm.model, max_batch_size=2, prefix_entries=0, pad_token_id=llm._pad_token_id()
    )
    try:
        prompts = [prompt_ids(llm, ask(q)) for q in ("Say hi.", "Say yes.", "Say no.")]
        queued = [scheduler.submit(GenerationJob(ids, max_new_tokens=4)) for ids in prompts]
        for job in queued:
            assert len(job.wait(120)) == 4
        assert scheduler.stats.max_batch == 2
        # a token cap that fits one row at a time runs the jobs one after another
        scheduler.max_batch_size, scheduler.max_batch_tokens = 8, max(len(p) for p in prompts) + 4
        before = scheduler.stats.snapshot()
        for job in [scheduler.submit(GenerationJob(ids, max_new_tokens=4)) for ids in prompts]:
            job.wait(120)
        assert (scheduler.stats - before).batched_steps == 0
    finally:
        scheduler.close()
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.submit(GenerationJob(prompts[0], max_new_tokens=1))


# --------------------------------------------------------------------------- prefix reuse


async def test_a_follow_up_reuses_the_prefix_and_matches_a_cold_run(llm, jobs):
    messages = [Message(role="user", content="What is the capital of France?")]
    first = await complete(llm, LLMRequest(messages=messages, max_new_tokens=12))
    follow_up = LLMRequest(
        messages=[
            *messages,
            Message(role="assistant", content=first.content),
            Message(role="user", content="And of Italy?"),
        ],
        max_new_tokens=12,
    )
    before = llm.scheduler.stats.snapshot()
    second = await complete(llm, follow_up)
    stats = llm.scheduler.stats - before
    job = jobs[-1]
    assert stats.prefix_hits == 1 and stats.reused_tokens == job.reused_tokens
    # at least the whole first prompt came from the cache
    assert job.reused_tokens >= len(jobs[0].prompt_ids)
    assert second.usage.prompt_tokens == len(job.prompt_ids)  # usage counts every prompt token

    cold = BatchScheduler(llm.model, prefix_entries=0, pad_token_id=llm._pad_token_id())
    try:
        cold_tokens = cold.generate(job.prompt_ids, max_new_tokens=12, end_ids=llm.end_ids)
    finally:
        cold.close()
    assert_greedy_match(llm, job.prompt_ids, cold_tokens, job.tokens)
    assert_greedy_match(llm, job.prompt_ids, reference(llm, job.prompt_ids, 12), job.tokens)


def test_prefix_cache_bounds_and_covering_entries():
    import torch

    def kv(n: int) -> list:
        return [(torch.zeros(1, 1, n, 2), torch.zeros(1, 1, n, 2))]  # 16 bytes a token

    cache = PrefixCache(max_entries=2, max_bytes=16 * 100)
    cache.store([1, 2, 3], kv(3))
    cache.store([1, 2, 3, 4, 5], kv(5))  # covers [1, 2, 3]
    assert len(cache) == 1
    entry, n = cache.lookup([1, 2, 3, 9], limit=3)
    assert n == 3 and entry.tokens == [1, 2, 3, 4, 5]
    assert cache.lookup([1, 2, 3, 4, 5, 6], limit=2)[1] == 2  # never more than the limit
    cache.store([7, 8], kv(2))
    cache.store([9], kv(1))  # over the entry count: the least recently used goes
    assert len(cache) == 2 and cache.lookup([1, 2], limit=2) == (None, 0)
    cache.store(list(range(50, 150)), kv(100))  # alone fills the byte budget
    assert len(cache) == 1 and cache.nbytes == 1600
    cache.store(list(range(200)), kv(200))  # bigger than the whole budget: not kept
    assert len(cache) == 1
    assert common_prefix([1, 2, 3] * 200, [1, 2, 3] * 100 + [0]) == 300


# --------------------------------------------------------------------------- processors in a batch


class _ThinkingPlans(TemplateChatFormat):
    """Plan requests start inside a `<think>` block, as thinking templates do; others do not."""

    def render(self, request: LLMRequest) -> str:
        prompt = super().render(request)
        return prompt + "<think>\n" if request.purpose == "plan" else prompt


async def test_thinking_budget_and_constrained_call_inside_a_batch(llm, jobs, stats, monkeypatch):
    monkeypatch.setattr(llm, "chat_format", _ThinkingPlans(llm.tokenizer))
    seen: list = []
    original = llm._logits_processors

    def grab(*args, **kwargs):
        processors = original(*args, **kwargs)
        seen.append(processors)
        return processors

    monkeypatch.setattr(llm, "_logits_processors", grab)
    plan = ask("Write a long story about a dragon.", purpose="plan", thinking_budget=8, max_new_tokens=32)
    call = ask("What is the weather in Paris?", tools=[WEATHER], tool_choice="required", max_new_tokens=40)
    plain = ask("Say hello.", max_new_tokens=12)
    # compile the grammar first, so that the three requests start together
    options = constrain.grammar_options(llm.chat_format.template_text, llm.render_prompt(call))
    constrain.tool_grammars(llm.tokenizer, llm.end_ids).warm(call.tools, **options)
    thought, called, said = await asyncio.gather(
        complete(llm, plan), complete(llm, call), complete(llm, plain)
    )
    assert stats.max_batch == 3
    assert overlapped(job_for(llm, jobs, plan), job_for(llm, jobs, call))

    [budget] = [p for group in seen for p in group if isinstance(p, ThinkingBudgetProcessor)]
    assert budget.closed_by_budget() == 1 and budget.thinking_tokens() == 8
    assert thought.thinking and thought.content.strip()
    assert "<think>" not in thought.content and "</think>" not in thought.content

    assert any(isinstance(p, ToolCallProcessor) for group in seen for p in group)
    assert called.finish_reason == "tool_calls"
    [tool_call] = called.tool_calls
    assert tool_call.name == "get_weather" and tool_call.parse_error is None
    assert isinstance(tool_call.arguments["city"], str)

    assert said.content.strip() and not said.tool_calls and not said.thinking


# --------------------------------------------------------------------------- serial fallback


def test_models_that_cannot_be_batched_generate_serially(llm):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "lfm2", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, layer_types=["conv", "full_attention"],
    )  # fmt: skip
    with torch.device("cpu"):
        hybrid = AutoModelForCausalLM.from_config(config)
    reason = BatchScheduler.unsupported(hybrid)
    assert reason and "LinearAttentionLayer" in reason
    with pytest.raises(ValueError, match="cannot be batched"):
        BatchScheduler(hybrid)

    serial = TransformersLLM(llm.model_path, batching=False).load()
    assert serial.scheduler is None and serial.serial_reason == "batching=False"
    response = asyncio.run(complete(serial, ask("Say hello.", max_new_tokens=6)))
    assert response.content and response.usage.completion_tokens <= 6


async def test_sampled_requests_batch_with_greedy_ones(llm, stats):
    sampled, greedy = await asyncio.gather(
        complete(llm, ask("Write a poem about the sea.", temperature=0.8, max_new_tokens=8)),
        complete(llm, ask("Explain what a CPU does.", max_new_tokens=8)),
    )
    assert sampled.content and greedy.content and stats.batched_steps > 0
    assert sampled.usage.completion_tokens <= 8


def test_sampling_keeps_to_top_k_and_top_p(llm):
    import torch

    scheduler = llm.scheduler
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    saved = scheduler.top_k, scheduler.top_p
    try:
        scheduler.top_k, scheduler.top_p = 2, 1.0
        assert {scheduler._sample(logits.clone(), 1.0) for _ in range(200)} <= {0, 1}
        scheduler.top_k, scheduler.top_p = 0, 0.7  # 0.5 + 0.3 reach 0.7: tokens 0 and 1 stay
        assert {scheduler._sample(logits.clone(), 1.0) for _ in range(200)} <= {0, 1}
        scheduler.top_p = 0.4  # the most likely token alone reaches it
        assert {scheduler._sample(logits.clone(), 1.0) for _ in range(50)} == {0}
    finally:
        scheduler.top_k, scheduler.top_p = saved


def test_generation_jobs_refuse_bad_input():
    with pytest.raises(ValueError, match="at least one prompt token"):
        GenerationJob([], max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationJob([1], max_new_tokens=0)


async def test_stream_yields_only_one_response(llm):
    items = [item async for item in llm.stream(ask("Say hi.", max_new_tokens=4))]
    assert isinstance(items[-1], ModelResponse)
    assert not any(isinstance(item, ModelResponse) for item in items[:-1])
