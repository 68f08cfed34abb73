"""The context budget: prompts fitted to the window, counted with the real tokenizer.

The exact checks render each fitted prompt with SmolLM2's own chat template
(tool schemas included) and count it with its own tokenizer, as
`TransformersLLM` does before generating; the model loads once per module.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string

import pytest
from helpers import call
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import Agent, tool
from agent.llm import LLMRequest, ScriptedLLM
from agent.llm.base import complete
from agent.llm.transformers import TransformersLLM
from agent.types import Message, ToolCallRequest
from memory.context import (
    ApproxCounter,
    ContextBudget,
    ContextOverflowError,
    TemplateCounter,
    summarize_step,
)

WORDS = "the log shows worker batch error retry timeout 42 0.37s ok ünïcode 東京 {json} [x] path/to/file.py".split()


@pytest.fixture(scope="module")
def llm(tmp_path_factory) -> TransformersLLM:
    from agent.llm.default_model import default_model_dir, is_converted

    if is_converted(default_model_dir()):
        return TransformersLLM(max_new_tokens=4).load()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENT_CACHE_DIR", str(tmp_path_factory.mktemp("agent-cache")))
        return TransformersLLM(max_new_tokens=4).load()


@pytest.fixture(scope="module")
def counter(llm) -> TemplateCounter:
    return TemplateCounter(llm.render_prompt, llm.tokenizer)


def exact_tokens(llm: TransformersLLM, request: LLMRequest) -> int:
    """Tokens the model receives for `request`, counted as `TransformersLLM` counts its prompt."""
    return len(llm.tokenizer(llm.render_prompt(request), add_special_tokens=False)["input_ids"])


@tool
def read_log(part: int) -> str:
    """Read one part of the service log.

    Args:
        part: Which part, from 1.
    """
    return log_part(part)


def log_part(part: int, lines: int = 120) -> str:
    rng = random.Random(part)
    return "\n".join(
        f"part {part} line {i}: worker-{rng.randint(1, 9)} handled batch {rng.randint(0, 99999)} "
        f"in {rng.random():.3f}s status={'ok' if rng.random() > 0.05 else 'error'}"
        for i in range(1, lines + 1)
    )


def text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        out.append(word + ("\n" if rng.random() < 0.12 else " "))
        size += len(word) + 1
    return "".join(out)


def history(seed: int, steps: list[tuple[int, int, bool]]) -> list[Message]:
    """System, task, then per step: an assistant turn with `calls` calls, results of about `size` chars, maybe a note."""
    rng = random.Random(seed)
    messages = [
        Message(role="system", content="You are a careful log analyst."),
        Message(role="user", content="Find why the service failed last night. " + text(rng, 200)),
    ]
    for calls, size, note in steps:
        requests = [
            ToolCallRequest(name="read_log", arguments={"part": rng.randint(1, 99)}) for _ in range(calls)
        ]
        messages.append(
            Message(role="assistant", content=text(rng, rng.randint(0, 160)), tool_calls=requests)
        )
        for request in requests:
            content = text(rng, rng.randint(size // 2, size + 1))
            messages.append(Message(role="tool", content=content, tool_call_id=request.id, name="read_log"))
        if note:
            messages.append(Message(role="user", content="Reflection on progress so far:\n" + text(rng, 300)))
    return messages


def check_structure(fitted: list[Message], original: list[Message]) -> None:
    """Pinned messages first and untouched; every call with all its results, in order; the last step whole."""
    assert fitted[0] is original[0] and fitted[1] is original[1]
    results = {m.tool_call_id for m in original if m.role == "tool"}
    pending: set[str] = set()
    for m in fitted:
        if m.role == "assistant":
            assert not pending, "a call's results were split from it"
            pending = {c.id for c in m.tool_calls} & results
        elif m.role == "tool":
            assert m.tool_call_id in pending, "a tool result without its call"
            pending.discard(m.tool_call_id)
    assert not pending
    last_turn = max(i for i, m in enumerate(original) if m.role == "assistant")
    assert [m.tool_call_id for m in fitted[-(len(original) - last_turn) :]] == [
        m.tool_call_id for m in original[last_turn:]
    ]


step_spec = st.tuples(st.integers(0, 3), st.integers(50, 7000), st.booleans())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    steps=st.lists(step_spec, min_size=1, max_size=9),
    window=st.integers(1536, 6144),
    reserve=st.integers(16, 512),
)
def test_random_histories_never_exceed_the_window(llm, counter, seed, steps, window, reserve):
    messages = history(seed, steps)
    tools = [read_log.schema()]
    budget = ContextBudget(window, counter=counter, reserve=reserve)
    turns = [i for i, m in enumerate(messages) if m.role == "assistant"]
    # Fitted as the loop does: the same budget at every step of the growing history.
    for end in [*turns[1:], len(messages)]:
        request = LLMRequest(messages=messages[:end], tools=tools)
        fitted = budget.fit(request)
        tokens = exact_tokens(llm, fitted)
        assert tokens == budget.last.tokens
        assert tokens <= window - reserve
        check_structure(fitted.messages, request.messages)


def test_a_wide_last_step_is_squeezed_not_split(llm, counter):
    messages = history(11, [(1, 3000, False), (4, 6000, False)])
    budget = ContextBudget(1536, counter=counter, reserve=128, max_observation_tokens=600)
    fitted = budget.fit(LLMRequest(messages=messages, tools=[read_log.schema()]))
    assert exact_tokens(llm, fitted) <= 1536 - 128
    check_structure(fitted.messages, messages)
    results = [m for m in fitted.messages if m.role == "tool"]
    assert len(results) == 4 and all("left out to fit the context window" in m.content for m in results)


async def test_count_is_what_the_model_receives(llm):
    budget = ContextBudget.for_model(llm, window=384)  # small: the prompt is run through the model on CPU
    assert budget.counter.exact and budget.reserve == llm.max_new_tokens and budget.limit == 380
    assert ContextBudget.for_model(llm).window == 8192  # SmolLM2's max_position_embeddings

    request = LLMRequest(messages=history(7, [(1, 6000, False), (2, 3000, True), (1, 5000, False)]), tools=[])
    fitted = budget.fit(request)
    assert budget.last.folded >= 1 and budget.last.truncated >= 1
    response = await complete(llm, fitted)
    assert response.usage.prompt_tokens == budget.last.tokens <= 380


def test_fifty_step_run_stays_bounded(llm, counter, tmp_path):
    window, reserve = 4096, 256
    script = [call("read_log", part=n) for n in range(1, 51)] + ["The failures are in the error lines."]
    model = ScriptedLLM(script)
    budget = ContextBudget(window, counter=counter, reserve=reserve, spill_dir=tmp_path / "spill")
    agent = Agent(model, tools=[read_log], context_window=budget, max_steps=60, run_dir=tmp_path / "runs")
    result = agent.run_sync("Read the 50 parts of the log and find the failures.")
    assert result.ok and result.steps == 51

    prompts = [exact_tokens(llm, r) for r in model.requests]
    assert max(prompts) <= window - reserve
    # Without the budget the last prompt would hold every part of the log: over ten windows.
    assert sum(counter.count_text(log_part(n)) for n in range(1, 51)) > 10 * window
    # Between folds a prompt only grows at the end, so a KV prefix cache keeps its front.
    folds = 0
    for before, after in zip(model.requests, model.requests[1:], strict=False):
        old = [m.content for m in before.messages]
        new = [m.content for m in after.messages]
        if new[: len(old)] != old:
            folds += 1
            assert new[:2] == old[:2]  # the system prompt and the task never move
    assert 3 <= folds <= 50 // 3
    # The full history stays in the run's events.
    outputs = [e.content for e in result.events if e.type == "tool_result" and e.name == "read_log"]
    assert outputs == [log_part(n) for n in range(1, 51)]


def test_cut_observation_points_to_a_file_the_agent_can_read(tmp_path):
    """A scripted model follows the pointer with the real read_file tool and gets the lines left out."""
    seen: dict[str, str] = {}

    def follow(request: LLMRequest) -> str:
        shown = request.messages[-1].content
        seen["shown"] = shown
        match = re.search(r'read_file\(path="([^"]+)", start_line=(\d+), end_line=(\d+)\)', shown)
        assert match, shown[-600:]
        path, first = match[1], int(match[2])
        seen["first"] = str(first)
        return call("read_file", path=path, start_line=first, end_line=first + 2)

    llm = ScriptedLLM([call("read_log", part=3), follow, "Done."])
    agent = Agent(
        llm, tools=[read_log, "files"], workspace=tmp_path, context_window=4096, run_dir=tmp_path / "runs"
    )
    result = agent.run_sync("Look at part 3 of the log.")
    assert result.ok, result.error

    full = log_part(3).splitlines()
    first = int(seen["first"])
    assert full[first - 1] not in seen["shown"]  # the line really was left out of the prompt
    read_back = [e.content for e in result.events if e.type == "tool_result" and e.name == "read_file"][0]
    for line in full[first - 1 : first + 2]:
        assert line in read_back
    assert (tmp_path / ".agent" / "observations").is_dir()


def test_whole_history_sent_when_no_window_is_known(tmp_path):
    llm = ScriptedLLM([call("read_log", part=1), "ok"])
    Agent(llm, tools=[read_log], run_dir=None).run_sync("Read part 1.")
    assert llm.requests[-1].messages[-1].content == log_part(1)
    assert ContextBudget.for_model(llm) is None

    approx = ContextBudget.for_model(llm, window=4096)
    assert not approx.counter.exact
    assert approx.limit == 4096 - 1024 - 205  # the reserve, then a 5% margin for approximate counts


def test_approximate_counts_cover_the_real_tokenizer(llm):
    from pathlib import Path

    root = Path(__file__).parent.parent
    samples = {
        "log": log_part(5),
        "english": (root / "README.md").read_text()[:20_000],
        "code": (root / "agent" / "loop.py").read_text()[:20_000],
        "json": json.dumps([read_log.schema()] * 20),
        "digits": " ".join(str(random.Random(1).randint(0, 10**9)) for _ in range(2000)),
    }
    approx = ApproxCounter()
    for name, sample in samples.items():
        real = len(llm.tokenizer.encode(sample, add_special_tokens=False))
        assert real <= approx.count_text(sample) <= 2 * real, name
    # Letters that are no words: counted about as finely as the tokenizer cuts them (they were
    # counted a token per four letters, a half to a third of their tokens), within the 5% the
    # budget holds back for an approximate count.
    rng = random.Random(3)
    hard = {
        "base64": base64.b64encode(bytes(rng.randrange(256) for _ in range(6000))).decode(),
        "random letters": " ".join(
            "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 30))) for _ in range(300)
        ),
        "random case": "".join(rng.choice(string.ascii_letters) for _ in range(6000)),
        "hex": " ".join(f"{rng.getrandbits(128):032x}" for _ in range(200)),
        "german": "Die Donaudampfschifffahrtsgesellschaftskapitänsmütze liegt auf dem Küchentisch. " * 60,
    }
    for name, sample in hard.items():
        real = len(llm.tokenizer.encode(sample, add_special_tokens=False))
        assert 0.95 * real <= approx.count_text(sample) <= 2 * real, name


def test_approximate_budget_fits_its_own_count(tmp_path):
    llm = ScriptedLLM([call("read_log", part=n) for n in range(1, 21)] + ["ok"])
    agent = Agent(llm, tools=[read_log], context_window=3000, max_steps=30, run_dir=None)
    assert agent.run_sync("Read twenty parts.").ok
    limit = 3000 - 750 - 150  # a quarter of the window for the reply, then the 5% margin
    assert all(ApproxCounter().count_prompt(r) <= limit for r in llm.requests)
    assert len(llm.requests[-1].messages) < len(agent._last.state.messages)


def test_summary_lines_and_a_custom_summariser():
    messages = history(3, [(2, 4000, False), (1, 4000, True), (1, 4000, False), (1, 4000, False)])
    lines = summarize_step(messages[2:5], 1)
    assert lines.startswith("step 1:") and "read_log(part=" in lines and "->" in lines

    budget = ContextBudget(2048, reserve=256, summarize=lambda step, number: f"STEP {number} DONE")
    fitted = budget.fit(LLMRequest(messages=messages)).messages
    summary = fitted[2].content
    assert fitted[2].role == "user" and "STEP 1 DONE" in summary
    assert "STEP 4 DONE" not in summary  # the latest step stays whole


def test_what_must_stay_too_big_is_a_clear_error(tmp_path):
    budget = ContextBudget(1024, reserve=128)
    task = Message(role="user", content="word " * 5000)
    with pytest.raises(
        ContextOverflowError, match="the system prompt, the task and the tool descriptions take"
    ):
        budget.fit(LLMRequest(messages=[task]))

    llm = ScriptedLLM(["never used"])
    result = Agent(llm, context_window=1024, run_dir=None).run_sync("word " * 5000)
    assert result.status == "failed" and "larger context window" in result.error
    with pytest.raises(Exception, match="context_window=10 is too small"):
        Agent(llm, context_window=10)


def test_one_message_too_big_does_not_stop_a_conversations_later_turns(tmp_path):
    # The first message of a session was kept as "the task" in every later prompt: once it did
    # not fit, no later turn could run (and a resumed session neither).
    llm = ScriptedLLM(["never used", "Hi!", "Still here."])
    session = Agent(llm, context_window=1024, run_dir=tmp_path / "runs").session()
    first = session.send_sync("Summarise: " + "the cat sat on the mat. " * 600)
    assert first.status == "failed" and "larger context window" in first.error
    llm.script.pop(0)  # the failed turn asked nothing
    second = session.send_sync("Say hi")
    assert (second.status, second.answer) == ("completed", "Hi!")
    assert llm.requests[-1].messages[-1].content == "Say hi"
    assert sum(len(m.content) for m in llm.requests[-1].messages) < 4000  # the big one folded away
    resumed = Agent(llm, context_window=1024, run_dir=tmp_path / "runs").session(session.run_id)
    assert resumed.send_sync("Are you there?").answer == "Still here."
    # a run's task is kept whole as before: it is what the run is for
    result = Agent(ScriptedLLM(["never used"]), context_window=1024, run_dir=None).run_sync("word " * 5000)
    assert result.status == "failed" and "larger context window" in result.error


def test_a_run_with_a_budget_keeps_a_long_result_whole(tmp_path):
    """Only the prompt is fitted: the event, the log and the spilled file keep all of it."""

    full = "\n".join(f"line {i} " + "abc" * 5 for i in range(1, 3001))  # 77K characters

    @tool
    def dump() -> str:
        """A long output."""
        return full

    llm = ScriptedLLM([call("dump"), "Done."])
    agent = Agent(llm, tools=[dump, "files"], workspace=tmp_path, context_window=4096, run_dir=tmp_path / "runs")
    result = agent.run_sync("Dump it.")
    assert result.ok, result.error
    content = next(e.content for e in result.events if e.type == "tool_result")
    assert content == full
    shown = llm.requests[1].messages[-1].content
    assert "line 3000 " in shown and len(shown) < len(full)  # the prompt has the tail, cut in the middle
    [spilled] = (tmp_path / ".agent" / "observations").iterdir()
    assert spilled.read_text() == full
    # without read_file to follow it, the cut points nowhere and nothing is saved
    llm = ScriptedLLM([call("dump"), "Done."])
    alone = tmp_path / "alone"
    Agent(llm, tools=[dump], workspace=alone, context_window=4096, run_dir=tmp_path / "runs").run_sync("Dump it.")
    shown = llm.requests[1].messages[-1].content
    assert "left out to fit the context window ...]" in shown and "read_file" not in shown
    assert not (alone / ".agent").exists()


def test_a_cut_single_line_result_can_be_read_back_in_full(tmp_path):
    """Minified JSON is one long line: the spilled file breaks it, so read_file reaches every part."""
    big = json.dumps({f"key{i}": i for i in range(8000)})  # about 110K characters on one line
    seen: dict[str, str] = {}

    @tool
    def fetch() -> str:
        """Fetch the data."""
        return big

    def follow(request: LLMRequest) -> str:
        shown = request.messages[-1].content
        match = re.search(r'read_file\(path="([^"]+)", start_line=(\d+), end_line=(\d+)\)', shown)
        assert match, shown[-600:]
        seen["shown"] = shown
        return call("read_file", path=match[1], start_line=int(match[2]), end_line=int(match[2]) + 1)

    llm = ScriptedLLM([call("fetch"), follow, "Done."])
    agent = Agent(llm, tools=[fetch, "files"], workspace=tmp_path, context_window=4096, run_dir=tmp_path / "runs")
    result = agent.run_sync("Fetch the data.")
    assert result.ok, result.error
    read_back = [e.content for e in result.events if e.type == "tool_result" and e.name == "read_file"][0]
    gap = read_back.split("| ", 1)[1].splitlines()[0]  # the first line read back, without its number
    assert len(gap) >= 900 and gap in big and gap not in seen["shown"]  # a part the prompt left out
    assert "more characters]" not in read_back  # nothing of those lines was clipped by read_file
