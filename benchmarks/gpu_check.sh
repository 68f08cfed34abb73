#!/usr/bin/env bash
# GPU check of the batching scheduler (agent/llm/scheduler.py).
#
# Builds random-weight models with the shapes of Qwen3-8B and gpt-oss-20b
# (bf16, on the GPU, from the configs written below) and, through the same
# scheduler TransformersLLM uses, measures aggregate tokens/s and time to
# first token at 1/4/16/64 concurrent requests (benchmarks/llm_throughput.py),
# a 20-step agent-like run with prefix reuse on and off, and transformers' own
# continuous batching (`generate_batch`) on the same prompts for comparison.
#
# For a CUDA machine with torch, transformers (5.17 or later) and accelerate.
# It needs no network, no weights and no tokenizer: prompts are token ids.
# Not part of CI. It keeps to under 8 minutes: each part checks the clock and
# is skipped, with a note, when the time is short.
#
#   bash benchmarks/gpu_check.sh                      # both models on cuda
#   bash benchmarks/gpu_check.sh --only gpt-oss-20b   # one of them
#   bash benchmarks/gpu_check.sh --tiny               # tiny configs on the CPU: checks the script runs
#
# PYTHON=/path/to/python picks the interpreter (default: the first of python3
# and .venv/bin/python that imports torch and transformers).
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
    for candidate in ${PYTHON:-} python3 .venv/bin/python; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch, transformers" 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "gpu_check: no python with torch and transformers found (set PYTHON=...)" >&2
    exit 2
}

exec timeout --signal=INT 475 "$(pick_python)" - "$@" <<'PY'
import argparse
import gc
import os
import sys
import time

START = time.monotonic()
BUDGET_S = 450  # stop starting new parts after this; the whole run stays under 8 minutes

sys.path.insert(0, "benchmarks")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

import llm_throughput as bench  # noqa: E402

CONFIGS = {
    # Qwen/Qwen3-8B: dense, grouped-query attention, every layer full attention
    "qwen3-8b": {
        "model_type": "qwen3",
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "tie_word_embeddings": False,
    },
    # openai/gpt-oss-20b: mixture of 32 experts (4 active), sliding-window layers
    # alternating with full ones, attention sinks; bf16 here instead of MXFP4
    "gpt-oss-20b": {
        "model_type": "gpt_oss",
        "vocab_size": 201088,
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "num_hidden_layers": 24,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "num_local_experts": 32,
        "num_experts_per_tok": 4,
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * 12,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "attention_bias": True,
        "tie_word_embeddings": False,
    },
}
# the same architectures, small enough for a CPU; the window is crossed within the run
TINY = {
    "qwen3-8b": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16},
    "gpt-oss-20b": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 4,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 4,
                    "num_experts_per_tok": 2, "sliding_window": 16,
                    "layer_types": ["sliding_attention", "full_attention"] * 2},
}


def left() -> float:
    return BUDGET_S - (time.monotonic() - START)


def build(name: str, tiny: bool, device: str):
    spec = dict(CONFIGS[name])
    if tiny:
        spec.update(TINY[name])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    started = time.perf_counter()
    # built in place on the device: no CPU copy and no host-side init of 8-20B weights
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    if device != "cpu":
        torch.cuda.synchronize()
    params = sum(p.numel() for p in model.parameters())
    bench.say(
        f"\n## {name}{' (tiny)' if tiny else ''}: {params / 1e9:.2f}B parameters, {dtype}, "
        f"attention {config._attn_implementation}, built in {time.perf_counter() - started:.1f} s"
    )
    return model


def check(name: str, args, device: str, reserve: float) -> None:
    """Measure one model; `reserve` seconds are kept for the models after it."""
    model = build(name, args.tiny, device)
    sched = bench.scheduler_module()
    reason = sched.BatchScheduler.unsupported(model)
    if reason:
        bench.say(f"not batched: {reason}")
        return
    vocab = model.config.vocab_size
    levels = [1, 4, 16, 64]
    new_tokens, prompt_len, rounds = (8, 24, 1) if args.tiny else (64, 128, 2)
    prompts = bench.random_prompts(max(levels) + 1, prompt_len, vocab, seed=1)
    if left() > 60:
        bench.throughput(model, prompts, levels=levels, new_tokens=new_tokens, rounds=rounds)
    else:
        bench.say("throughput: skipped (time)")
    if left() > 60:
        steps, step_tokens, observation, first = (4, 4, 10, 20) if args.tiny else (20, 16, 100, 256)
        bench.agent_run(
            model,
            bench.synthetic_steps(bench.random_prompts(1, first, vocab, seed=2)[0], observation_tokens=observation,
                                  vocab=vocab),
            steps=steps,
            new_tokens=step_tokens,
        )
    else:
        bench.say("agent-like run: skipped (time)")
    if args.no_cb:
        pass
    elif left() - reserve > 90 and hasattr(model, "generate_batch"):
        try:
            cb_levels = [4] if args.tiny else [1, 16, 64]
            bench.continuous_batching(model, prompts, levels=cb_levels, new_tokens=new_tokens)
        except Exception as e:  # an optional comparison; report and go on
            bench.say(f"continuous batching failed: {type(e).__name__}: {e}")
    else:
        bench.say("continuous batching: skipped")
    if device != "cpu":
        bench.say(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def main() -> int:
    parser = argparse.ArgumentParser(description="GPU check of the batching scheduler")
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (checks the script)")
    parser.add_argument("--only", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--no-cb", action="store_true", help="skip transformers' continuous batching")
    args = parser.parse_args()
    if args.tiny:
        device = "cpu"
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        print("gpu_check: no CUDA device; use --tiny to check the script on the CPU", file=sys.stderr)
        return 2
    bench.say(bench.machine_line(device))
    bench.say(bench.load_line())
    names = [args.only] if args.only else list(CONFIGS)
    for index, name in enumerate(names):
        if left() < 90:
            bench.say(f"\n## {name}: skipped (time)")
            continue
        check(name, args, device, reserve=180 * (len(names) - index - 1))
        gc.collect()
        if device != "cpu":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    bench.say(f"\ndone in {time.monotonic() - START:.0f} s, {bench.load_line()}")
    return 0


sys.exit(main())
PY
