"""Generation throughput of the batching scheduler, and prefix reuse over an agent-like run.

Part 1, throughput. N requests with distinct prompts go to one
`BatchScheduler` at the same moment (greedy, end tokens ignored, so each
writes exactly --new-tokens tokens; prefix reuse off, so rounds do not help
each other). For each N it reports the aggregate generated tokens/s (all
tokens over the wall time from the first submit to the last token), the
ratio to N = 1, and the time to first token (median and max over the N
requests). The levels run in a rotating order, --rounds times, and the
median is kept. In the same rounds `model.generate` on one request (the
serial path `TransformersLLM` used before batching) gives a baseline, and a
late request joining a running batch of 16 gives the join latency.

Part 2, an agent-like run of --steps steps: each prompt is the previous
prompt, the previous output and an observation (with the default model the
chat template renders the growing conversation, so the prompt is
re-tokenized as a real run's would be; synthetic models append token ids).
Each step runs on two schedulers sharing the model, prefix reuse on and off,
and prints the prompt tokens, the tokens actually prefilled and the prefill
time of both.

    .venv/bin/python benchmarks/llm_throughput.py               # default model, CPU
    .venv/bin/python benchmarks/llm_throughput.py --quick       # smoke run
    .venv/bin/python benchmarks/llm_throughput.py --concurrency 1,4,16,64 --rounds 3 --json out.json

`benchmarks/gpu_check.sh` drives the same functions with random-weight
Qwen3-8B- and gpt-oss-20b-sized models on a CUDA machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: the issue's CPU target: 16 concurrent requests at >= 3x the single-request tokens/s
TARGET_LEVEL, TARGET_RATIO = 16, 3.0


def scheduler_module() -> Any:
    """`agent.llm.scheduler`, or the same file loaded alone where the project's
    dependencies are not installed (a bare GPU machine)."""
    try:
        from agent.llm import scheduler

        return scheduler
    except ImportError:
        name = "agent_llm_scheduler"
        spec = importlib.util.spec_from_file_location(name, REPO / "agent" / "llm" / "scheduler.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
        return module


def machine_line(device: str = "cpu") -> str:
    import torch
    import transformers

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    parts = [
        f"{platform.system()} {platform.machine()}",
        f"{os.cpu_count()} cpus ({usable} usable)",
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        f"transformers {transformers.__version__}",
        f"python {platform.python_version()}",
    ]
    if device.startswith("cuda") and torch.cuda.is_available():
        parts.insert(0, torch.cuda.get_device_name(0))
    return "machine: " + ", ".join(parts)


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def say(text: str = "") -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- part 1: throughput


def run_batch(scheduler: Any, prompts: Sequence[Sequence[int]], new_tokens: int) -> dict[str, float]:
    """Submit every prompt at once; aggregate tokens/s and time to first token."""
    sched = scheduler_module()
    before = scheduler.stats.snapshot()
    jobs = [sched.GenerationJob(p, max_new_tokens=new_tokens) for p in prompts]
    start = time.perf_counter()
    for job in jobs:
        scheduler.submit(job)
    for job in jobs:
        job.wait()
    wall = max(job.finished_at for job in jobs) - start
    ttft = [job.first_token_at - job.submitted_at for job in jobs]
    stats = scheduler.stats - before
    return {
        "tokens_per_s": sum(len(job.tokens) for job in jobs) / wall,
        "ttft_median_s": statistics.median(ttft),
        "ttft_max_s": max(ttft),
        "mean_batch": stats.decoded_tokens / max(1, stats.decode_steps),
        "wall_s": wall,
    }


def join_latency(
    scheduler: Any, prompts: Sequence[Sequence[int]], late: Sequence[int], new_tokens: int
) -> float:
    """Time to first token of a request submitted while `prompts` decode."""
    sched = scheduler_module()
    jobs = [scheduler.submit(sched.GenerationJob(p, max_new_tokens=new_tokens)) for p in prompts]
    while sum(len(job.tokens) for job in jobs) < len(jobs) * 2:  # the batch is decoding
        time.sleep(0.001)
    job = scheduler.submit(sched.GenerationJob(late, max_new_tokens=2))
    job.wait()
    for other in jobs:
        other.wait()
    return job.first_token_at - job.submitted_at


def run_generate(model: Any, prompt: Sequence[int], new_tokens: int, pad: int) -> float:
    """Tokens/s of transformers' `generate` on one request (greedy, end tokens ignored)."""
    import torch

    ids = torch.tensor([list(prompt)], device=model.get_input_embeddings().weight.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=pad,
        )
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return (out.shape[1] - ids.shape[1]) / (time.perf_counter() - start)


def throughput(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    levels: Sequence[int],
    new_tokens: int,
    rounds: int,
    threads: int | None = None,
    pad: int = 0,
    baseline: bool = True,
) -> dict[str, Any]:
    """Part 1: measure and print the table; returns the figures."""
    import torch

    sched = scheduler_module()
    if len(prompts) < max(levels):
        raise ValueError(f"need {max(levels)} distinct prompts, got {len(prompts)}")
    if threads:
        torch.set_num_threads(threads)  # for the `generate` baseline on this thread
    scheduler = sched.BatchScheduler(
        model,
        threads=threads,
        max_batch_size=max(levels),
        max_batch_tokens=None,
        prefix_entries=0,
        pad_token_id=pad,
    )
    run_batch(scheduler, prompts[:2], 4)  # warm-up
    figures: dict[int, list[dict[str, float]]] = {n: [] for n in levels}
    generate: list[float] = []
    joins: list[float] = []
    join_level = min(16, max(levels))
    for r in range(rounds):
        order = list(levels[r % len(levels) :]) + list(levels[: r % len(levels)])
        for n in order:
            figures[n].append(run_batch(scheduler, prompts[:n], new_tokens))
        if baseline:
            generate.append(run_generate(model, prompts[0], new_tokens, pad))
        if join_level > 1:
            joins.append(join_latency(scheduler, prompts[:join_level], prompts[-1], new_tokens))
        say(f"  round {r + 1}/{rounds} done, {load_line()}")
    scheduler.close()

    med = {n: {k: statistics.median(f[k] for f in figures[n]) for k in figures[n][0]} for n in levels}
    single = med[levels[0]]["tokens_per_s"] if levels[0] == 1 else None
    say(f"\n{new_tokens} new tokens per request, greedy, medians of {rounds} rounds")
    say("| concurrent | tokens/s | x single | TTFT median | TTFT max | mean batch |")
    say("|---:|---:|---:|---:|---:|---:|")
    for n in levels:
        m = med[n]
        ratio = f"{m['tokens_per_s'] / single:.2f}x" if single else "-"
        say(
            f"| {n} | {m['tokens_per_s']:.1f} | {ratio} | {m['ttft_median_s'] * 1000:.0f} ms"
            f" | {m['ttft_max_s'] * 1000:.0f} ms | {m['mean_batch']:.1f} |"
        )
    out: dict[str, Any] = {"levels": {str(n): med[n] for n in levels}}
    if generate:
        g = statistics.median(generate)
        out["generate_tokens_per_s"] = g
        line = f"`model.generate`, one request: {g:.1f} tokens/s"
        if single:
            line += f"; the scheduler alone runs at {single / g:.2f}x that"
        say(line)
    if joins:
        out["join_ttft_s"] = statistics.median(joins)
        say(
            f"a request joining a running batch of {join_level}: first token after {out['join_ttft_s'] * 1000:.0f} ms"
        )
    if single and TARGET_LEVEL in med:
        ratio = med[TARGET_LEVEL]["tokens_per_s"] / single
        met = "met" if ratio >= TARGET_RATIO else "NOT met"
        say(
            f"target: {TARGET_LEVEL} concurrent >= {TARGET_RATIO:.0f}x single-request tokens/s: {met} ({ratio:.2f}x)"
        )
        out["target_ratio"] = ratio
    return out


def continuous_batching(
    model: Any, prompts: Sequence[Sequence[int]], *, levels: Sequence[int], new_tokens: int
) -> dict[str, float]:
    """Aggregate tokens/s of transformers' own continuous batching (`generate_batch`,
    paged attention) on the same prompts, for comparison. One untimed call with
    the most prompts starts the manager, sized for them, and warms it up; the
    timed calls reuse it."""
    import logging

    from transformers import GenerationConfig

    logging.getLogger("ContinuousBatchingLogger").setLevel(logging.ERROR)
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=-1)
    batch = [list(p) for p in prompts]
    out: dict[str, float] = {}
    say("\ntransformers continuous batching (`generate_batch`, paged attention), same prompts:")
    try:
        started = time.perf_counter()
        model.generate_batch(inputs=batch[: max(levels)], generation_config=config, persistent_manager=True)
        say(f"  start and warm-up: {time.perf_counter() - started:.1f} s")
        for n in levels:
            started = time.perf_counter()
            results = model.generate_batch(
                inputs=batch[:n], generation_config=config, persistent_manager=True
            )
            wall = time.perf_counter() - started
            tokens = sum(len(r.generated_tokens) for r in results.values())
            out[str(n)] = tokens / wall
            say(f"  {n} concurrent: {tokens / wall:.1f} tokens/s ({tokens} tokens)")
    finally:
        destroy = getattr(model, "destroy_cached_continuous_batching_manager", None)
        if destroy is not None:
            destroy()
    return out


# --------------------------------------------------------------------------- part 2: agent-like run


def agent_run(
    model: Any,
    next_prompt: Callable[[list[int] | None], list[int]],
    *,
    steps: int,
    new_tokens: int,
    end_ids: Sequence[int] = (),
    threads: int | None = None,
    pad: int = 0,
) -> list[dict[str, float]]:
    """Part 2: per-step prefill with prefix reuse on and off; prints the table.

    `next_prompt(None)` gives the first prompt, `next_prompt(output)` the next
    one after a step wrote `output`."""
    sched = scheduler_module()
    on = sched.BatchScheduler(model, threads=threads, pad_token_id=pad)
    off = sched.BatchScheduler(model, threads=threads, prefix_entries=0, pad_token_id=pad)
    for s in (on, off):  # warm-up, then forget it
        s.generate([1, 2, 3], max_new_tokens=2)
    on.prefix_cache.clear()
    rows: list[dict[str, float]] = []
    prompt = next_prompt(None)
    say(f"\nagent-like run: {steps} steps, up to {new_tokens} new tokens per step")
    say(
        "| step | prompt | reused | prefilled | prefill, reuse on | prefill, reuse off | TTFT on | TTFT off |"
    )
    say("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for step in range(steps):
        result: dict[str, Any] = {}
        for name, s in (("on", on), ("off", off)) if step % 2 == 0 else (("off", off), ("on", on)):
            before = s.stats.snapshot()
            job = s.submit(sched.GenerationJob(prompt, max_new_tokens=new_tokens, end_ids=end_ids))
            job.wait()
            result[name] = (job, s.stats - before)
        job, stats = result["on"]
        row = {
            "step": step + 1,
            "prompt": len(prompt),
            "reused": job.reused_tokens,
            "prefilled": len(prompt) - job.reused_tokens,
            "prefill_on_s": stats.prefill_seconds,
            "prefill_off_s": result["off"][1].prefill_seconds,
            "ttft_on_s": job.first_token_at - job.submitted_at,
            "ttft_off_s": result["off"][0].first_token_at - result["off"][0].submitted_at,
        }
        rows.append(row)
        say(
            f"| {row['step']} | {row['prompt']} | {row['reused']} | {row['prefilled']}"
            f" | {row['prefill_on_s'] * 1000:.0f} ms | {row['prefill_off_s'] * 1000:.0f} ms"
            f" | {row['ttft_on_s'] * 1000:.0f} ms | {row['ttft_off_s'] * 1000:.0f} ms |"
        )
        prompt = next_prompt(list(job.tokens))
    on.close()
    off.close()
    span = max(1, min(5, steps // 2))
    for key, label in (("prefill_on_s", "reuse on"), ("prefill_off_s", "reuse off")):
        first = statistics.mean(r[key] for r in rows[:span]) * 1000
        last = statistics.mean(r[key] for r in rows[-span:]) * 1000
        say(
            f"prefill, {label}: steps 1-{span} {first:.0f} ms, steps {steps - span + 1}-{steps} {last:.0f} ms"
            f" ({last / first:.2f}x)"
        )
    return rows


def synthetic_steps(
    first: list[int], *, observation_tokens: int, vocab: int, seed: int = 0
) -> Callable[[list[int] | None], list[int]]:
    """Prompts that grow by the output plus `observation_tokens` random ids a step."""
    rng = random.Random(seed)
    state = {"prompt": list(first)}

    def next_prompt(output: list[int] | None) -> list[int]:
        if output is not None:
            observation = [rng.randrange(10, vocab - 10) for _ in range(observation_tokens)]
            state["prompt"] = state["prompt"] + output + observation
        return list(state["prompt"])

    return next_prompt


def random_prompts(count: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(10, vocab - 10) for _ in range(length)] for _ in range(count)]


# --------------------------------------------------------------------------- the default model

TOPICS = ["dragon", "lighthouse", "robot", "river", "violin", "glacier", "market", "comet"]
STYLES = ["funny", "sad", "short", "strange", "hopeful", "quiet", "busy", "old"]
WORDS = (
    "file line error value result test module import path config token cache step output "
    "request model thread queue batch prompt tool call memory guard event log run"
).split()


def chat_prompts(llm: Any, count: int) -> list[list[int]]:
    from agent.llm.base import LLMRequest
    from agent.types import Message

    out = []
    for i in range(count):
        text = f"Tell a {STYLES[i % 8]} story about a {TOPICS[(i // 8) % 8]} (story {i})."
        prompt = llm.render_prompt(LLMRequest(messages=[Message(role="user", content=text)]))
        out.append(llm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return out


def chat_steps(llm: Any, *, observation_words: int) -> Callable[[list[int] | None], list[int]]:
    """Prompts rendered by the chat template from a conversation that grows by
    the model's reply and an observation each step."""
    from agent.llm.base import LLMRequest
    from agent.types import Message

    rng = random.Random(0)
    messages = [
        Message(role="system", content="You are an agent. Read each observation and say what to do next."),
        Message(role="user", content="Find why the test suite fails and fix it."),
    ]

    def next_prompt(output: list[int] | None) -> list[int]:
        if output is not None:
            reply = llm.tokenizer.decode(
                [t for t in output if t not in llm.end_ids], skip_special_tokens=True
            )
            observation = " ".join(rng.choice(WORDS) for _ in range(observation_words))
            step = len(messages) // 2
            messages.append(Message(role="assistant", content=reply))
            messages.append(Message(role="user", content=f"Observation {step}: {observation}"))
        prompt = llm.render_prompt(LLMRequest(messages=messages))
        return llm.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    return next_prompt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated request counts")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="steps of the agent-like run (0: skip it)")
    parser.add_argument("--step-tokens", type=int, default=32, help="new tokens per agent step")
    parser.add_argument("--observation", type=int, default=60, help="words of observation per agent step")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: usable cores)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--quick", action="store_true", help="levels 1,4; 1 round; 4 agent steps")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    try:
        levels = sorted({int(x) for x in args.concurrency.split(",") if x.strip()})
    except ValueError:
        parser.error(f"--concurrency takes numbers separated by commas, not {args.concurrency!r}")
    if not levels or levels[0] < 1:
        parser.error("--concurrency needs counts of at least 1")
    if args.quick:
        levels, args.rounds, args.steps = [1, 4], 1, min(args.steps, 4)

    from agent.llm.transformers import TransformersLLM, usable_cores

    threads = args.threads or usable_cores()
    llm = TransformersLLM(threads=threads).load()
    pad = llm._pad_token_id()
    say(machine_line())
    say(f"model: {llm.name}, {load_line()}")
    results: dict[str, Any] = {"machine": machine_line(), "model": llm.name, "threads": threads}
    if not args.skip_throughput:
        prompts = chat_prompts(llm, max(levels) + 1)
        results["throughput"] = throughput(
            llm.model,
            prompts,
            levels=levels,
            new_tokens=args.new_tokens,
            rounds=args.rounds,
            threads=threads,
            pad=pad,
        )
    if args.steps:
        results["agent_run"] = agent_run(
            llm.model,
            chat_steps(llm, observation_words=args.observation),
            steps=args.steps,
            new_tokens=args.step_tokens,
            end_ids=sorted(llm.end_ids),
            threads=threads,
            pad=pad,
        )
    say(load_line())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
