"""A floor for `loop_overhead.py`: the least an agent loop with a run log can cost here.

A minimal loop written for the comparison, not a framework: per turn it makes a
pydantic model-request event, takes the scripted response, validates the call's
arguments with a pydantic model, runs a no-op tool and records a result, and
writes each of the four events to a JSONL file as it happens (one write each,
as ours does). No state, guards, budgets, hooks or loop detection. Timed as
`loop_overhead.py` times a run (after `gc.collect()`, a fresh loop object per
run), median microseconds per model turn.

    .venv/bin/python benchmarks/loop_floor.py            # N = 10
    N=200 .venv/bin/python benchmarks/loop_floor.py
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import tempfile
import time
from typing import Literal

from pydantic import BaseModel, Field, create_model


class Ev(BaseModel):
    run_id: str = ""
    step: int = 0
    seq: int = 0
    time: float = Field(default_factory=time.time)


class Request(Ev):
    type: Literal["model_request"] = "model_request"
    messages: int = 0
    tools: list[str] = Field(default_factory=list)


class Response(Ev):
    type: Literal["model_response"] = "model_response"
    content: str = ""
    tool_calls: list[dict] = Field(default_factory=list)


class Call(Ev):
    type: Literal["tool_call"] = "tool_call"
    call_id: str
    name: str
    arguments: dict


class Result(Ev):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str
    content: str


def make(n: int, root: str):
    args_model = create_model("Args", i=(int, ...))
    script = [Response(tool_calls=[{"id": f"c{i}", "name": "noop", "arguments": {"i": i}}]) for i in range(n)]
    script.append(Response(content="done"))
    folder = tempfile.mkdtemp(dir=root)

    async def run() -> str:
        fd = os.open(os.path.join(folder, "run.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        seq, messages = 0, []

        def emit(event: Ev) -> None:
            nonlocal seq
            seq += 1
            event.seq = seq
            os.write(fd, event.__pydantic_serializer__.to_json(event) + b"\n")

        response = script[0]
        for step in range(n + 1):
            emit(Request(step=step, messages=len(messages), tools=["noop"]))
            response = script[step]
            emit(response)
            messages.append(response)
            if not response.tool_calls:
                break
            for call in response.tool_calls:
                args = args_model.model_validate(call["arguments"])
                emit(Call(call_id=call["id"], name=call["name"], arguments=args.model_dump()))
                result = Result(call_id=call["id"], name=call["name"], content="ok")
                emit(result)
                messages.append(result)
        os.close(fd)
        return response.content

    return run


def main() -> None:
    n = int(os.environ.get("N", "10"))
    rounds = int(os.environ.get("R", "300"))
    loop = asyncio.new_event_loop()
    root = tempfile.mkdtemp(prefix="loop-floor-")
    times = []
    for k in range(rounds + 20):
        run = make(n, root)
        gc.collect()
        t0 = time.perf_counter()
        assert loop.run_until_complete(run()) == "done"
        if k >= 20:  # the first runs warm up imports and caches
            times.append((time.perf_counter() - t0) / (n + 1) * 1e6)
    print(f"minimal loop with a run log, N={n}: {statistics.median(times):.1f} us per model turn (median)")


if __name__ == "__main__":
    main()
