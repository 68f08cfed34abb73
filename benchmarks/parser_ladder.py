"""The output-parser ladder over a corpus of raw model outputs.

Each line of `data/parser_corpus.jsonl` is one raw generation (decoded with
its special tokens) in one of the formats the ladder reads: harmony (gpt-oss),
Hermes/Qwen `<tool_call>`, Llama 3 JSON, Mistral `[TOOL_CALLS]`, bare or
fenced JSON, or plain text; many are broken on purpose (truncated JSON, calls
inside thinking, several calls in a turn, header variants). Each holds the
expected content, thinking and calls (name and arguments, or a parse_error
flag). The script runs `parse_output` on every line and prints, per format,
the share handled exactly as expected and the time per parse.

    .venv/bin/python benchmarks/parser_ladder.py            # table
    .venv/bin/python benchmarks/parser_ladder.py --verbose  # also every mismatch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.llm.parse import ParsedOutput, parse_output  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "data" / "parser_corpus.jsonl"


def load_corpus(path: Path = CORPUS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mismatches(entry: dict[str, Any], parsed: ParsedOutput) -> list[str]:
    """How `parsed` differs from the entry's expectation (empty: handled as expected)."""
    want = entry["expected"]
    problems: list[str] = []
    if parsed.content != want.get("content", ""):
        problems.append(f"content {parsed.content!r} != {want.get('content', '')!r}")
    if parsed.thinking != want.get("thinking", ""):
        problems.append(f"thinking {parsed.thinking!r} != {want.get('thinking', '')!r}")
    expected_calls = want.get("tool_calls", [])
    if len(parsed.tool_calls) != len(expected_calls):
        got = [(c.name, c.arguments, c.parse_error) for c in parsed.tool_calls]
        return [*problems, f"{len(parsed.tool_calls)} calls {got} != {len(expected_calls)} expected"]
    for i, (got, exp) in enumerate(zip(parsed.tool_calls, expected_calls, strict=True)):
        if exp.get("parse_error"):
            if got.parse_error is None:
                problems.append(f"call {i}: expected a parse_error, got {got.name}({got.arguments})")
            if "name" in exp and got.name != exp["name"]:
                problems.append(f"call {i}: name {got.name!r} != {exp['name']!r}")
            continue
        if got.parse_error is not None:
            problems.append(f"call {i}: unexpected parse_error {got.parse_error!r}")
        if got.name != exp["name"] or got.arguments != exp.get("arguments", {}):
            problems.append(
                f"call {i}: {got.name}({got.arguments}) != {exp['name']}({exp.get('arguments', {})})"
            )
    return problems


def time_parse(entry: dict[str, Any], repeats: int) -> float:
    """µs per `parse_output` call on this entry: the best of 5 batches of `repeats / 5`
    calls (the least disturbed by other load on the machine)."""
    text, family = entry["text"], entry.get("family")
    batch = max(1, repeats // 5)
    samples = []
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(batch):
            parse_output(text, family)
        samples.append((time.perf_counter_ns() - start) / batch / 1000)
    return min(samples)


def run(corpus: list[dict[str, Any]], repeats: int = 200) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = defaultdict(lambda: {"cases": 0, "ok": 0, "us": [], "failures": []})
    for entry in corpus:
        row = rows[entry["format"]]
        row["cases"] += 1
        problems = mismatches(entry, parse_output(entry["text"], entry.get("family")))
        if problems:
            row["failures"].append((entry["id"], problems))
        else:
            row["ok"] += 1
        if repeats:
            row["us"].append(time_parse(entry, repeats))
    return dict(rows)


def print_table(rows: dict[str, Any]) -> None:
    print(
        f"{'format':<10} {'cases':>6} {'handled':>8} {'share':>8} {'µs/parse (median)':>18} {'µs/parse (max)':>15}"
    )
    everything: list[float] = []
    cases = ok = 0
    order = ["harmony", "hermes", "llama3", "mistral", "json", "text"]
    for name in [n for n in order if n in rows] + sorted(set(rows) - set(order)):
        row = rows[name]
        cases += row["cases"]
        ok += row["ok"]
        everything += row["us"]
        us = row["us"] or [0.0]
        print(
            f"{name:<10} {row['cases']:>6} {row['ok']:>8} {row['ok'] / row['cases']:>8.1%} "
            f"{statistics.median(us):>18.1f} {max(us):>15.1f}"
        )
    us = everything or [0.0]
    print(
        f"{'overall':<10} {cases:>6} {ok:>8} {ok / max(cases, 1):>8.1%} {statistics.median(us):>18.1f} {max(us):>15.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--repeats", type=int, default=500, help="parses timed per entry (0: no timing)")
    ap.add_argument("--verbose", action="store_true", help="print every mismatch")
    args = ap.parse_args(argv)
    corpus = load_corpus(args.corpus)
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores; "
        f"{len(corpus)} outputs from {args.corpus.name}"
    )
    rows = run(corpus, args.repeats)
    print_table(rows)
    failures = [f for row in rows.values() for f in row["failures"]]
    if failures:
        print(f"\n{len(failures)} not handled as expected:")
        for entry_id, problems in failures:
            print(f"  {entry_id}: " + ("; ".join(problems) if args.verbose else problems[0]))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
