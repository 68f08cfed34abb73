"""Episodic recall evaluation: does `EpisodicMemory.recall` bring back the right past run?

Data (benchmarks/data/episodes/):
- episodes.jsonl: 69 hand-written past runs (task, tool steps with results and
  errors, outcome, model reflections, age in days). Each is turned into the
  agent's real event types and stored with `EpisodicMemory.record`, so the
  episode text, lessons and importance come from the production code path.
- queries.jsonl: 51 new tasks, each with the past episode that should be
  recalled for it. 42 are "topical" (paraphrased, other entities: only one
  episode is on topic); 9 are "tie-break": two past episodes fit about equally
  well and the expected one is the more recent (the procedure or tool changed
  since) or the more important (it failed and holds a lesson).

Reports hit rate at 1 and 3 and MRR for several weightings of
(recency, importance, relevance), with all-MiniLM-L6-v2 and, as a lexical
baseline, the hashing embedder.

    .venv/bin/python benchmarks/episodic_eval.py           # all weightings, both embedders
    .venv/bin/python benchmarks/episodic_eval.py --quick   # default weighting, MiniLM only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent.events import (  # noqa: E402
    FinalAnswer,
    Plan,
    Reflection,
    RunFinished,
    RunStarted,
    ToolCall,
    ToolResult,
    UserMessage,
)
from memory.episodic import DAY, EpisodicMemory  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "episodes"

CONFIGS = {
    "relevance only (0, 0, 1)": (0.0, 0.0, 1.0),
    "default (0.25, 0.25, 1)": (0.25, 0.25, 1.0),
    "medium (0.5, 0.5, 1)": (0.5, 0.5, 1.0),
    "generative agents (1, 1, 1)": (1.0, 1.0, 1.0),
    "recency-heavy (1, 0, 0.5)": (1.0, 0.0, 0.5),
}


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def to_events(spec: dict, now: float) -> list:
    """The events a run like `spec` would have produced."""
    run_id = spec["id"]
    end = now - spec["days_ago"] * DAY
    t = end - 30.0 * (len(spec["steps"]) + 2)
    seq = 0
    events = []

    def emit(event):
        nonlocal seq, t
        seq += 1
        t += 10.0
        event.run_id, event.seq, event.time = run_id, seq, t
        events.append(event)

    tools = list(dict.fromkeys(s["tool"] for s in spec["steps"]))
    emit(RunStarted(task=spec["task"], tools=[*tools, "final_answer"]))
    emit(UserMessage(content=spec["task"]))
    if spec.get("plan"):
        emit(Plan(content=spec["plan"]))
    for i, step in enumerate(spec["steps"], 1):
        call_id = f"{run_id}-{i}"
        emit(ToolCall(call_id=call_id, name=step["tool"], arguments=step["args"], step=i))
        error = step.get("error")
        content = f"Error: {step['result']}" if error else step["result"]
        emit(
            ToolResult(
                call_id=call_id,
                name=step["tool"],
                content=content,
                is_error=bool(error),
                error_kind=error,
                step=i,
            )
        )
    for text in spec.get("reflections", []):
        emit(Reflection(content=text, reason="error"))
    steps = len(spec["steps"]) + 1
    if spec["status"] == "completed":
        emit(FinalAnswer(content=spec.get("answer", ""), step=steps))
    error = None if spec["status"] == "completed" else f"run ended: {spec['status']}"
    emit(RunFinished(status=spec["status"], answer=spec.get("answer") or None, steps=steps, error=error))
    events[-1].time = end
    return events


def evaluate(embedder, configs: dict, k: int = 3) -> tuple[dict, float, list]:
    episodes = load("episodes.jsonl")
    queries = load("queries.jsonl")
    now = time.time()
    folder = tempfile.mkdtemp(prefix="episodic-eval-")
    mem = EpisodicMemory(Path(folder) / "episodes.db", embedder)
    started = time.perf_counter()
    id_of = {}
    for spec in episodes:
        ep = mem.record(to_events(spec, now))
        id_of[ep.id] = spec["id"]
    record_s = time.perf_counter() - started
    results = {}
    misses = []
    groups = sorted({q.get("group", "topical") for q in queries}, reverse=True)
    for label, weights in configs.items():
        stats = {g: [0.0, 0.0, 0.0, 0] for g in [*groups, "all"]}
        for q in queries:
            got = [
                id_of[s.episode.id]
                for s in mem.recall(q["query"], k=10, now=now, weights=weights, min_relevance=-1.0)
            ]
            expected = set(q["expected"])
            rank = next((i for i, g in enumerate(got, 1) if g in expected), None)
            for g in (q.get("group", "topical"), "all"):
                st = stats[g]
                st[0] += rank == 1
                st[1] += rank is not None and rank <= k
                st[2] += 1.0 / rank if rank else 0.0
                st[3] += 1
            if label.startswith("default") and (rank is None or rank > k):
                misses.append((q["query"], q["expected"][0], got[:3]))
        results[label] = {g: (h1 / n, h3 / n, rr / n, n) for g, (h1, h3, rr, n) in stats.items()}
    mem.close()
    return results, record_s, misses


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="default weighting, MiniLM only")
    args = parser.parse_args()
    from memory.embedders import HashingEmbedder, TransformersEmbedder

    n_ep, n_q = len(load("episodes.jsonl")), len(load("queries.jsonl"))
    print(f"# episodic_eval: {n_ep} episodes, {n_q} queries, hit rate at 3\n")
    embedders = [("all-MiniLM-L6-v2", TransformersEmbedder())]
    configs = CONFIGS
    if args.quick:
        configs = {k: v for k, v in CONFIGS.items() if k.startswith("default")}
    else:
        embedders.append(("hashing (lexical baseline)", HashingEmbedder(384)))
    print("| embedder | weights (recency, importance, relevance) | queries | n | hit@1 | hit@3 | MRR |")
    print("|---|---|---|---|---|---|---|")
    all_misses = {}
    for name, emb in embedders:
        results, record_s, misses = evaluate(emb, configs)
        all_misses[name] = (misses, record_s)
        for label, by_group in results.items():
            for group, (h1, h3, mrr, n) in by_group.items():
                print(f"| {name} | {label} | {group} | {n} | {h1:.3f} | {h3:.3f} | {mrr:.3f} |")
    for name, (misses, record_s) in all_misses.items():
        print(
            f"\n{name}: recorded {n_ep} episodes in {record_s:.1f} s; misses at 3 with the default weights: "
            f"{len(misses)}"
        )
        for query, expected, got in misses:
            print(f"  - {query!r}: expected {expected}, got {got}")


if __name__ == "__main__":
    main()
