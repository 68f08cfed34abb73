"""How often the default model's tool calls parse and validate, with and without the grammar.

    .venv/bin/python benchmarks/tool_call_validity.py              # all prompts
    .venv/bin/python benchmarks/tool_call_validity.py --limit 20   # the first 20

Data: benchmarks/data/tool_prompts.jsonl, one tool-use prompt a line with the
tools offered (2 to 5 of the 18 defined below) and the tool a good answer
would call. Each prompt is one turn of the default model (SmolLM2-135M-Instruct,
greedy) with `tool_choice="required"` (the Hermes tool prompt then says a call
is required), run twice with the same prompt:

* unconstrained: `TransformersLLM.constrain_required_calls = False`;
* constrained: the llguidance grammar of agent.llm.constrain.

A turn counts as valid when it holds at least one call and every call parses,
names an offered tool, and its arguments validate against that tool's pydantic
model (`Tool.validate`, what the loop does). "right tool" is the share whose
first call names the expected tool. tok/s is completion tokens over the wall
time of the turns (prefill included); the modes alternate per prompt, so load
on the machine hits both alike. "grammar µs/token" is the time spent in the
constraint's logits processor per generated token (mask + applying it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pydantic import Field, ValidationError  # noqa: E402

from agent import tool  # noqa: E402
from agent.llm import constrain  # noqa: E402
from agent.llm.base import LLMRequest, complete  # noqa: E402
from agent.llm.transformers import TransformersLLM, prepare_openmp  # noqa: E402
from agent.types import Message  # noqa: E402

DATA = REPO / "benchmarks" / "data" / "tool_prompts.jsonl"

# --------------------------------------------------------------------------- the tools


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Args:
        expression: The expression, e.g. "(2 + 3) * 4".
    """
    return expression


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Get the current weather for a city.

    Args:
        city: The city name.
        unit: Temperature unit.
    """
    return city


@tool
def get_forecast(city: str, days: Annotated[int, Field(ge=1, le=7)] = 3) -> str:
    """Get the weather forecast for the next days.

    Args:
        city: The city name.
        days: How many days ahead, 1 to 7.
    """
    return city


@tool
def read_file(path: str, max_lines: int | None = None) -> str:
    """Read a text file.

    Args:
        path: Path of the file.
        max_lines: Read at most this many lines.
    """
    return path


@tool
def write_file(path: str, content: str) -> str:
    """Write text to a file, replacing it.

    Args:
        path: Path of the file.
        content: The text to write.
    """
    return path


@tool
def list_dir(path: str = ".") -> str:
    """List the files in a directory.

    Args:
        path: The directory.
    """
    return path


@tool
def delete_file(path: str) -> str:
    """Delete a file.

    Args:
        path: Path of the file.
    """
    return path


@tool
def web_search(query: str, max_results: Annotated[int, Field(ge=1, le=20)] = 5) -> str:
    """Search the web.

    Args:
        query: What to search for.
        max_results: How many results to return.
    """
    return query


@tool
def search_wikipedia(topic: str) -> str:
    """Get the summary of a Wikipedia article.

    Args:
        topic: The article's topic.
    """
    return topic


@tool
def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a quantity between units (length, mass, volume, temperature).

    Args:
        value: The quantity.
        from_unit: Unit of the quantity, e.g. "km".
        to_unit: Unit to convert to, e.g. "mi".
    """
    return from_unit


@tool
def convert_currency(amount: float, from_currency: str, to_currency: str) -> str:
    """Convert money between currencies at today's rate.

    Args:
        amount: The amount.
        from_currency: ISO code of the amount's currency, e.g. "USD".
        to_currency: ISO code to convert to, e.g. "EUR".
    """
    return from_currency


@tool
def send_email(to: str, subject: str, body: str) -> str:
    """Send an email.

    Args:
        to: Recipient address.
        subject: Subject line.
        body: The message.
    """
    return to


@tool
def set_timer(minutes: int, label: str | None = None) -> str:
    """Start a countdown timer.

    Args:
        minutes: Length of the timer in minutes.
        label: What the timer is for.
    """
    return str(minutes)


@tool
def get_time(timezone: str) -> str:
    """Get the current local time in a timezone.

    Args:
        timezone: An IANA timezone or a city, e.g. "Europe/Paris".
    """
    return timezone


@tool
def create_event(title: str, date: str, time: str | None = None) -> str:
    """Add an event to the calendar.

    Args:
        title: The event's title.
        date: The date, YYYY-MM-DD.
        time: The start time, HH:MM.
    """
    return title


@tool
def translate(text: str, target_language: str) -> str:
    """Translate text into another language.

    Args:
        text: The text to translate.
        target_language: The language to translate into.
    """
    return text


@tool
def get_stock_price(symbol: str) -> str:
    """Get the latest price of a stock.

    Args:
        symbol: The ticker symbol, e.g. "AAPL".
    """
    return symbol


@tool
def run_python(code: str) -> str:
    """Run Python code and return what it prints.

    Args:
        code: The Python source.
    """
    return code


TOOLS = {
    t.name: t
    for t in (
        calculator,
        get_weather,
        get_forecast,
        read_file,
        write_file,
        list_dir,
        delete_file,
        web_search,
        search_wikipedia,
        convert_units,
        convert_currency,
        send_email,
        set_timer,
        get_time,
        create_event,
        translate,
        get_stock_price,
        run_python,
    )
}

# --------------------------------------------------------------------------- the run


def load(limit: int | None) -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    for row in rows:
        unknown = [t for t in row["tools"] if t not in TOOLS]
        assert not unknown and row["expected"] in row["tools"], row
    return rows[:limit] if limit else rows


def request_for(row: dict, max_new: int) -> LLMRequest:
    return LLMRequest(
        messages=[Message(role="user", content=row["prompt"])],
        tools=[TOOLS[name].schema() for name in row["tools"]],
        tool_choice="required",
        max_new_tokens=max_new,
    )


def judge(row: dict, response) -> tuple[bool, bool, str]:
    """(valid, right tool, why not valid)."""
    calls = response.tool_calls
    if not calls:
        return False, False, "no call"
    right = calls[0].name == row["expected"]
    for call in calls:
        if call.parse_error:
            return False, right, "parse: " + call.parse_error
        if call.name not in row["tools"]:
            return False, right, f"unknown tool {call.name!r}"
        try:
            TOOLS[call.name].validate(call.arguments or {})
        except ValidationError as e:
            return False, right, "invalid: " + str(e.errors()[0]["msg"])
    return True, right, ""


class _Timed:
    """Wraps ToolCallProcessor.__call__ to add up its time."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.original = constrain.ToolCallProcessor.__call__

    def install(self) -> None:
        original, timed = self.original, self

        def call(processor, input_ids, scores):
            start = time.perf_counter()
            try:
                return original(processor, input_ids, scores)
            finally:
                timed.seconds += time.perf_counter() - start
                timed.calls += 1

        constrain.ToolCallProcessor.__call__ = call  # type: ignore[method-assign]


async def run(rows: list[dict], max_new: int, show: bool) -> dict:
    prepare_openmp()
    llm = TransformersLLM(max_new_tokens=max_new).load()
    grammars = constrain.tool_grammars(llm.tokenizer, llm.end_ids)
    start = time.perf_counter()
    grammars.ll_tokenizer  # noqa: B018 - built once per model
    tokenizer_s = time.perf_counter() - start
    tool_sets = {tuple(r["tools"]) for r in rows}
    start = time.perf_counter()
    for names in tool_sets:  # what warm_in_background does when tools are first offered
        prompt = llm.render_prompt(request_for({"prompt": "", "tools": list(names)}, max_new))
        options = constrain.grammar_options(llm.chat_format.template_text, prompt)
        grammars.warm([TOOLS[n].schema() for n in names], **options)
    warm_ms = (time.perf_counter() - start) / len(tool_sets) * 1e3
    timer = _Timed()
    timer.install()

    modes = {"unconstrained": False, "constrained": True}
    stats = {m: {"valid": 0, "right": 0, "tokens": 0, "seconds": 0.0, "turns": 0} for m in modes}
    details = []
    for i, row in enumerate(rows, 1):
        for mode, constrained in modes.items():
            llm.constrain_required_calls = constrained
            started = time.perf_counter()
            response = await complete(llm, request_for(row, max_new))
            seconds = time.perf_counter() - started
            valid, right, why = judge(row, response)
            s = stats[mode]
            s["turns"] += 1
            s["valid"] += valid
            s["right"] += right
            s["tokens"] += response.usage.completion_tokens
            s["seconds"] += seconds
            first = response.tool_calls[0] if response.tool_calls else None
            details.append(
                {
                    "id": row["id"],
                    "mode": mode,
                    "valid": valid,
                    "right_tool": right,
                    "why": why,
                    "call": {"name": first.name, "arguments": first.arguments} if first else None,
                    "content": response.content[:300],
                    "tokens": response.usage.completion_tokens,
                    "seconds": round(seconds, 2),
                }
            )
            if show:
                mark = "ok " if valid else "BAD"
                call = f"{first.name}({json.dumps(first.arguments)})" if first and first.arguments else why
                print(f"[{i:2d}/{len(rows)}] {mode:13s} {mark} {seconds:5.1f}s {call[:90]}", flush=True)
    return {
        "stats": stats,
        "details": details,
        "llg_tokenizer_s": tokenizer_s,
        "grammar_warm_ms": warm_ms,
        "grammar_us_per_token": timer.seconds / max(1, timer.calls) * 1e6,
        "tool_sets": len(tool_sets),
    }


def table(result: dict) -> str:
    lines = [
        "| mode | turns | valid calls | right tool | tokens | tok/s | s/turn |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, s in result["stats"].items():
        n = max(1, s["turns"])
        lines.append(
            f"| {mode} | {s['turns']} | {s['valid'] / n:.0%} ({s['valid']}) | {s['right'] / n:.0%} | "
            f"{s['tokens']} | {s['tokens'] / max(1e-9, s['seconds']):.1f} | {s['seconds'] / n:.1f} |"
        )
    lines.append("")
    lines.append(
        f"llguidance tokenizer: {result['llg_tokenizer_s']:.2f} s once per model; grammar compile + first mask: "
        f"{result['grammar_warm_ms']:.1f} ms per tool set ({result['tool_sets']} sets); "
        f"grammar µs/token: {result['grammar_us_per_token']:.0f}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="run only the first N prompts")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="write the per-turn details here")
    parser.add_argument("--quiet", action="store_true", help="no per-turn lines")
    args = parser.parse_args()
    rows = load(args.limit)
    started = time.perf_counter()
    result = asyncio.run(run(rows, args.max_new_tokens, not args.quiet))
    print()
    print(table(result))
    print(
        f"\n{len(rows)} prompts, max_new_tokens={args.max_new_tokens}, {time.perf_counter() - started:.0f} s in all"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
