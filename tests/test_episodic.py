"""Episodic memory: episodes from real runs, recall ranking, lessons, wiring helpers."""

import time

import pytest
from helpers import call

from agent import Agent, AgentError, Bus, Decision, tool
from agent.llm import ScriptedLLM
from memory import EpisodicMemory
from memory.embedders import CachedEmbedder, EmbeddingCache, HashingEmbedder, default_embedder
from memory.episodic import DAY, Episode, format_lessons, llm_reflector, recall_for_run, record_run, summarize


@tool
def divide(a: int, b: int) -> float:
    """Divide a by b."""
    return a / b


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


@pytest.fixture(scope="module")
def minilm():
    emb = CachedEmbedder(default_embedder(), EmbeddingCache(lru=10_000))
    emb.embed(["warm up"])
    return emb


def _run(script, task, run_dir, **kwargs):
    return Agent(ScriptedLLM(script), tools=[divide, lookup], run_dir=run_dir, **kwargs).run_sync(task)


def test_an_episode_from_a_real_run(run_dir):
    result = _run(
        [
            "1. Divide with divide.\n2. Answer.",
            call("divide", a=1, b=0),
            "Dividing by zero fails; use the non-zero denominator 2.",
            call("divide", a=4, b=2),
            "The answer is 2.",
        ],
        "Divide 4 by the number of apples (2).",
        run_dir,
        strategy="plan-act-reflect",
    )
    assert result.ok
    ep = summarize(result.events)
    assert ep.task == "Divide 4 by the number of apples (2)." and ep.run_id == result.run_id
    assert ep.status == "completed" and ep.answer == "The answer is 2."
    assert ep.plan.startswith("1. Divide with divide.")
    assert ep.tools == ["divide"] and ep.tool_calls == 2
    assert [s.ok for s in ep.steps] == [False, True]
    assert ep.steps[0].arguments == "a=1, b=0" and "division by zero" in ep.steps[0].result
    assert any("ZeroDivisionError" in e for e in ep.errors)
    assert any("divide worked after its exception once called with a=4, b=2" in w for w in ep.worked)
    assert any("own reflection: Dividing by zero fails" in a for a in ep.avoid)
    assert ep.reflection.startswith("Worked: finished in") and "Next time:" in ep.reflection
    assert ep.ended >= ep.started > 0 and ep.model_steps == result.steps
    # the same from the log on disk (dicts / JSON lines)
    from agent import read_events

    assert summarize(read_events(result.log_path)).to_dict() == ep.to_dict()


def test_importance_follows_what_a_run_teaches(run_dir):
    easy = summarize(_run(["4"], "What is 2+2?", run_dir).events)
    bumpy = summarize(
        _run([call("divide", a=1, b=0), call("divide", a=1, b=1), "1"], "Divide 1 by 1", run_dir).events
    )
    failed = summarize(
        _run(
            [call("lookup", key="a"), call("nope"), call("lookup", key="b")],
            "Find a and b",
            run_dir,
            max_steps=3,
        ).events
    )
    assert failed.status == "max_steps"
    assert 0 <= easy.importance < bumpy.importance < failed.importance <= 1
    assert any("ran out of steps" in a for a in failed.avoid)
    assert any("does not exist; available: divide, lookup" in a for a in failed.avoid)


def _episode(task, days_ago, importance, status="completed", now=None, reflection=""):
    now = time.time() if now is None else now
    return Episode(
        task=task,
        status=status,
        importance=importance,
        ended=now - days_ago * DAY,
        started=now - days_ago * DAY - 60,
        reflection=reflection or f"Worked: {task}.",
    )


def test_recall_ranks_by_recency_importance_and_relevance(tmp_path, minilm):
    now = time.time()
    mem = EpisodicMemory(tmp_path / "ep.db", minilm)
    ids = {}
    for key, task, days, imp in [
        ("csv_old", "Summarise the monthly sales CSV file by region", 40, 0.3),
        ("csv_new", "Summarise the weekly sales CSV file by region", 1, 0.3),
        ("weather", "Get tomorrow's weather forecast for Berlin", 1, 0.3),
        ("deploy_low", "Deploy the web service to the staging cluster", 5, 0.1),
        ("deploy_high", "Deploy the web service to the staging environment", 5, 0.9),
        ("poem", "Write a haiku about autumn leaves", 2, 0.5),
    ]:
        ids[key] = mem.add(_episode(task, days, imp, now=now)).id
    top = mem.recall("summarise the sales spreadsheet per region", k=2, now=now)
    assert [s.episode.id for s in top] == [ids["csv_new"], ids["csv_old"]]  # recent wins a near tie
    assert top[0].recency > top[1].recency and top[0].score > top[1].score
    top = mem.recall("deploy the service to staging", k=2, now=now)
    assert top[0].episode.id == ids["deploy_high"]  # important wins a near tie
    assert mem.recall("what will the weather be in Berlin", k=1, now=now)[0].episode.id == ids["weather"]
    # weights are configurable: relevance only ignores recency
    rel = mem.recall("Summarise the monthly sales CSV file by region", k=1, now=now, weights=(0, 0, 1))
    assert rel[0].episode.id == ids["csv_old"]
    # a far-off query recalls nothing rather than noise
    assert mem.recall("quantum chromodynamics lattice simulation", k=3, now=now, min_relevance=0.35) == []
    # half-life: a day-old episode has recency ~0.5 with a one-day half-life
    short = EpisodicMemory(mem.memory, half_life=DAY)
    scored = {
        s.episode.id: s for s in short.recall("weather forecast Berlin", k=6, now=now, min_relevance=-1)
    }
    assert scored[ids["weather"]].recency == pytest.approx(0.5, abs=0.01)
    lines = mem.lessons("summarise the sales spreadsheet per region", k=2, now=now)
    assert len(lines) == 2 and lines[0].startswith('1 day ago, "Summarise the weekly sales CSV')
    block = format_lessons(lines)
    assert block.startswith("Lessons from similar past runs") and block.count("\n- ") == 2
    mem.close()


def test_recording_a_run_twice_replaces_it(tmp_path, run_dir):
    mem = EpisodicMemory(tmp_path / "ep.db", HashingEmbedder(64))
    result = _run([call("lookup", key="x"), "value of x"], "Look up x", run_dir)
    first = mem.record(result.events)
    again = mem.record(result.events)
    assert first.id == again.id and mem.count() == 1
    stored = mem.get(first.id)
    assert stored.task == "Look up x" and stored.tools == ["lookup"] and stored.run_id == result.run_id
    assert mem.memory.get(first.id).source == {"run_id": result.run_id, "seq": result.events[-1].seq}
    with pytest.raises(ValueError):
        mem.record([])
    mem.close()


async def test_an_llm_writes_the_reflection(tmp_path, run_dir):
    mem = EpisodicMemory(tmp_path / "ep.db", HashingEmbedder(64))
    agent = Agent(ScriptedLLM([call("divide", a=1, b=0), "cannot"]), tools=[divide], run_dir=run_dir)
    result = await agent.arun("Divide 1 by 0")
    critic = ScriptedLLM(["Check the denominator before dividing; ask for a non-zero one."])
    ep = await mem.arecord(result.events, reflect=llm_reflector(critic))
    assert ep.reflection == "Check the denominator before dividing; ask for a non-zero one."
    prompt = critic.requests[0].messages[0].content
    assert "Task: Divide 1 by 0" in prompt and "divide(a=1, b=0) -> failed (exception)" in prompt
    assert mem.get(ep.id).reflection == ep.reflection
    sync = mem.record(result.events, reflect=lambda e: f"{len(e.errors)} error(s)")
    assert sync.reflection == "1 error(s)"
    mem.close()


async def test_wiring_helpers_emit_memory_read_and_honour_guards(tmp_path, run_dir):
    mem = EpisodicMemory(tmp_path / "ep.db", HashingEmbedder(64))
    agent = Agent(ScriptedLLM([call("lookup", key="invoice"), "found it"]), tools=[lookup], run_dir=run_dir)
    result = await agent.arun("Find the invoice number for ACME")
    ep = await record_run(mem, result.events)
    assert ep is not None and mem.count() == 1
    assert await record_run(mem, []) is None

    bus = Bus("run-x")
    delivered = []
    bus.subscribe(delivered.append)
    lines = await recall_for_run(mem, "Find the invoice number for Globex", bus.emit)
    assert len(lines) == 1 and "Find the invoice number for ACME" in lines[0]
    (event,) = delivered
    assert event.type == "memory_read" and event.memory == "episodes" and event.run_id == "run-x"
    assert event.hits[0]["text"] == lines[0] and event.hits[0]["task"] == "Find the invoice number for ACME"

    async def rewrite(e):
        hits = [{**h, "text": "[redacted lesson]"} for h in e.hits]
        return Decision.rewrite(e.model_copy(update={"hits": hits}))

    bus = Bus("run-y")
    bus.intercept(rewrite)
    assert await recall_for_run(mem, "invoice number", bus.emit) == ["[redacted lesson]"]

    async def block(e):
        return Decision.block("no recall")

    bus = Bus("run-z")
    bus.intercept(block)
    bus.subscribe(delivered.append)
    assert await recall_for_run(mem, "invoice number", bus.emit) == []
    assert len(delivered) == 1  # the blocked event was not delivered
    mem.close()


def test_recall_reads_only_episodes_and_passes_over_damaged_ones(tmp_path, run_dir):
    from memory import VectorMemory

    notes = VectorMemory(tmp_path / "shared.db", HashingEmbedder())
    notes.add("Deploy the service to staging before production", metadata={"topic": "ops"})
    episodes = EpisodicMemory(notes)
    assert episodes.recall("Deploy the service to production") == []  # a note is no past run
    agent = Agent(ScriptedLLM(["ok"]), memory=[episodes], run_dir=run_dir)
    result = agent.run_sync("Deploy the service to production")
    assert [e for e in result.events if e.type == "feedback"] == []
    notes.add("Deploy the service", metadata={"kind": "episode", "importance": "high"})  # edited by hand
    assert [s.episode.task for s in episodes.recall("Deploy the service to production")] == [
        "Deploy the service to production"
    ]
    result = Agent(ScriptedLLM(["ok"]), memory=[episodes], run_dir=run_dir).run_sync("Deploy the service")
    assert result.status == "completed"


def test_a_recall_that_fails_leaves_the_run_going_and_says_why(tmp_path, run_dir):
    episodes = EpisodicMemory(tmp_path / "episodes.db", HashingEmbedder())
    episodes.add(Episode(task="an earlier task"))

    def broken(*args, **kwargs):
        raise RuntimeError("database disk image is malformed")

    episodes.memory.search = broken
    result = Agent(ScriptedLLM(["done"]), memory=[episodes], run_dir=run_dir).run_sync("an earlier task")
    assert (result.status, result.answer) == ("completed", "done")
    errors = [e.message for e in result.events if e.type == "error"]
    assert errors[0] == "could not recall past episodes: database disk image is malformed"


def test_a_new_store_opened_by_another_process_at_the_same_moment_is_taken_as_new(tmp_path):
    import sqlite3

    path = tmp_path / "episodes.db"
    other = sqlite3.connect(path)  # the other process: switched to WAL, schema not yet written
    other.execute("PRAGMA journal_mode = WAL")
    episodes = EpisodicMemory(path, HashingEmbedder())
    episodes.add(Episode(task="a task"))
    assert len(episodes.recall("a task")) == 1
    other.close()


def test_recording_a_run_leaves_a_note_about_the_same_run_alone(tmp_path, run_dir):
    from memory import VectorMemory

    result = Agent(ScriptedLLM(["42."]), run_dir=run_dir).run_sync("What is six times seven?")
    notes = VectorMemory(tmp_path / "shared.db", HashingEmbedder())
    note = notes.add("Customer asked about pricing; follow up Friday.", {"run_id": result.run_id})
    episodes = EpisodicMemory(notes)
    first = episodes.record(result.events)
    again = episodes.record(result.events)  # a resumed run recorded again: its episode replaced
    assert notes.get(note).text == "Customer asked about pricing; follow up Friday."
    assert first.id == again.id != note and episodes.count() == 1 and notes.count() == 2


def test_two_memories_of_one_kind_are_refused_not_half_used(tmp_path):
    from memory import VectorMemory

    one, two = (EpisodicMemory(tmp_path / f"e{i}.db", HashingEmbedder()) for i in (1, 2))
    with pytest.raises(AgentError, match="two episodic memories"):
        Agent(ScriptedLLM(["ok"]), memory=[one, two], run_dir=None)
    a, b = (VectorMemory(tmp_path / f"v{i}.db", HashingEmbedder()) for i in (1, 2))
    with pytest.raises(AgentError, match=r"memory_tools\(second, prefix='notes'\)"):
        Agent(ScriptedLLM(["ok"]), memory=[a, b], run_dir=None)
