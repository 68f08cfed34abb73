"""Context budget benchmark: prompt tokens per step of a long run, with and without the budget.

A 50-step scripted run through the real loop: each step the model calls a
`read_log` tool whose result is a few thousand tokens of log lines, then it
answers. The same run goes once with `ContextBudget` (the default model's 8,192
window, 512 tokens kept for the reply) and once without it (the whole history
every step). Every prompt the model was sent is counted exactly afterwards:
rendered with SmolLM2-135M-Instruct's own chat template, tool schemas
included, and tokenised with its own tokenizer, as `TransformersLLM` does
before generating. The script also times `fit` itself per step, next to the
time one exact count of the unfitted history takes at that step (what a
fitter that re-tokenised everything would pay at least once per step).

    .venv/bin/python benchmarks/context_budget.py                   # 50 steps, 8192 window
    .venv/bin/python benchmarks/context_budget.py --steps 100 --lines 300 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent import Agent, tool  # noqa: E402
from agent.llm import LLMRequest, ScriptedLLM  # noqa: E402
from agent.testing import call  # noqa: E402
from memory.context import ContextBudget, TemplateCounter  # noqa: E402


def log_part(part: int, lines: int) -> str:
    """Deterministic log lines: numbers, names and timings, as a service log has."""
    rng = random.Random(part)
    return "\n".join(
        f"2025-03-{1 + part % 28:02d} 0{i % 10}:{i % 60:02d}:{(7 * i) % 60:02d} INFO worker-{rng.randint(1, 9)} "
        f"handled batch {rng.randint(0, 99999)} in {rng.random():.3f}s status={'ok' if rng.random() > 0.05 else 'ERROR'}"
        for i in range(1, lines + 1)
    )


class MeteredCounter(TemplateCounter):
    """Counts exactly, and adds up the characters it tokenises: a measure of work that load does not skew."""

    characters = 0

    def count_text(self, text: str) -> int:
        self.characters += len(text)
        return super().count_text(text)


def load_counter() -> MeteredCounter:
    """The default model's tokenizer and chat template, without its weights."""
    from transformers import AutoTokenizer

    from agent.llm.default_model import ensure_default_model
    from agent.llm.transformers import TemplateChatFormat

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model(), local_files_only=True)
    return MeteredCounter(TemplateChatFormat(tokenizer).render, tokenizer)


def run(
    steps: int, lines: int, budget: ContextBudget | None, run_dir: Path
) -> tuple[list[LLMRequest], list[dict]]:
    """One scripted run; returns the requests the model got and, with a budget, one report per fit."""

    @tool
    def read_log(part: int) -> str:
        """Read one part of the service log.

        Args:
            part: Which part, from 1.
        """
        return log_part(part, lines)

    reports: list[dict] = []
    if budget is not None:
        fit = budget.fit

        def recorded(request: LLMRequest) -> LLMRequest:
            before = budget.counter.characters
            fitted = fit(request)
            reports.append({**vars(budget.last), "characters": budget.counter.characters - before})
            return fitted

        budget.fit = recorded  # type: ignore[method-assign]
    model = ScriptedLLM([call("read_log", part=n) for n in range(1, steps + 1)] + ["Found the errors."])
    agent = Agent(model, tools=[read_log], max_steps=steps + 5, guards=None, run_dir=run_dir)
    # Our budget itself rather than the per-run copy `context_window=` makes, to read its reports.
    agent.context_budget = lambda: budget  # type: ignore[method-assign]
    result = agent.run_sync(f"Read the {steps} parts of the service log and say which batches failed.")
    if not result.ok:
        raise SystemExit(f"the scripted run did not complete: {result.status} {result.error}")
    return model.requests, reports


def timed_count(counter: TemplateCounter, request: LLMRequest) -> tuple[int, float]:
    started = time.perf_counter()
    tokens = counter.count_prompt(request)
    return tokens, time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--lines", type=int, default=200, help="log lines per tool result")
    parser.add_argument("--window", type=int, default=8192)
    parser.add_argument("--reserve", type=int, default=512)
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of each kind, interleaved; times are medians"
    )
    parser.add_argument("--every", type=int, default=5, help="print every Nth step")
    args = parser.parse_args()

    import tokenizers
    import transformers

    load_start = os.getloadavg()
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
        f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}"
    )
    counter = load_counter()
    sample = log_part(1, args.lines)
    print(
        f"{args.steps} steps, tool results of {args.lines} lines = {len(sample):,} characters = "
        f"{counter.count_text(sample):,} tokens each; window {args.window}, reserve {args.reserve}, "
        f"{args.rounds} round(s)"
    )

    with_budget: list[int] = []
    without: list[int] = []
    reports: list[dict] = []
    fit_seconds: list[list[float]] = []
    full_seconds: list[list[float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            budget = ContextBudget(
                args.window, counter=counter, reserve=args.reserve, spill_dir=Path(tmp) / "observations"
            )
            fitted, reports = run(args.steps, args.lines, budget, Path(tmp) / "runs")
            whole, _ = run(args.steps, args.lines, None, Path(tmp) / "runs")
            with_budget = [counter.count_prompt(r) for r in fitted]
            counts = [timed_count(counter, r) for r in whole]
            without = [tokens for tokens, _ in counts]
            fit_seconds.append([r["seconds"] for r in reports])
            full_seconds.append([seconds for _, seconds in counts])
    fit_ms = [statistics.median(per) * 1000 for per in zip(*fit_seconds, strict=True)]
    full_ms = [statistics.median(per) * 1000 for per in zip(*full_seconds, strict=True)]

    limit = args.window - args.reserve
    print()
    print(
        "| step | prompt tokens, no budget | with budget | steps summarised | results cut | fit ms | one count of the whole history, ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for i in range(len(with_budget)):
        step = i + 1
        if step % args.every and step != 1 and step != len(with_budget):
            continue
        r = reports[i]
        print(
            f"| {step} | {without[i]:,} | {with_budget[i]:,} | {r['folded']} | {r['truncated']} "
            f"| {fit_ms[i]:.1f} | {full_ms[i]:.1f} |"
        )
    assert all(r["tokens"] == t for r, t in zip(reports, with_budget, strict=True)), (
        "budget count != exact count"
    )

    quarter = max(1, len(with_budget) // 4)
    quarters = [with_budget[i : i + quarter] for i in range(0, 4 * quarter, quarter)]
    fit_chars = [r["characters"] for r in reports]
    history_chars = len(counter.render(whole[-1]))
    load_end = os.getloadavg()
    print()
    print(
        f"limit (window - reserve): {limit:,} tokens; the budget's counts equal the exact recount at every step"
    )
    print(
        f"with budget:    max {max(with_budget):,}, mean {statistics.mean(with_budget):,.0f}; "
        "mean / max by quarter of the run: "
        + ", ".join(f"{statistics.mean(q):,.0f} / {max(q):,}" for q in quarters)
    )
    print(
        f"without budget: max {max(without):,} ({max(without) / args.window:.1f}x the window), "
        f"last / first: {without[-1] / without[0]:.1f}; over the window from step "
        f"{next((i + 1 for i, t in enumerate(without) if t > limit), '-')}"
    )
    print(
        f"fit time per step: median {statistics.median(fit_ms):.1f} ms, p90 {pct(fit_ms, 0.9):.1f} ms, "
        f"max {max(fit_ms):.1f} ms; one exact count of the unfitted history at the last step: "
        f"{full_ms[-1]:.1f} ms ({full_ms[-1] / statistics.median(fit_ms):.1f}x the median fit)"
    )
    print(
        f"characters tokenised per fit: median {statistics.median(fit_chars):,.0f}, max {max(fit_chars):,}; "
        f"the unfitted prompt at the last step has {history_chars:,}"
    )
    print(f"load average at the end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")


if __name__ == "__main__":
    main()
