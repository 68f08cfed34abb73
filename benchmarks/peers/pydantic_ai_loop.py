"""Pydantic AI: an Agent driven by FunctionModel.

The model function returns one ``noop`` ToolCallPart per turn (argument
i), then a TextPart "done".  The default ``request_limit`` of 50 is lifted
to N + 5 so long runs are not cut off.  Instrumentation is off by default.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from importlib.metadata import version as _pkg_version  # noqa: E402

from _common import Counter, measure  # noqa: E402
from pydantic_ai import Agent  # noqa: E402
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart  # noqa: E402
from pydantic_ai.models.function import AgentInfo, FunctionModel  # noqa: E402
from pydantic_ai.usage import UsageLimits  # noqa: E402


def make_run(n: int):
    counter = Counter()
    turns = [0]

    def scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        i = turns[0]
        turns[0] += 1
        if i < n:
            return ModelResponse(
                parts=[ToolCallPart(tool_name="noop", args={"i": i}, tool_call_id=f"call_{i}")]
            )
        if i == n:
            return ModelResponse(parts=[TextPart(content="done")])
        raise RuntimeError(f"scripted model asked for turn {i + 1}, script has {n + 1}")

    agent = Agent(FunctionModel(scripted))  # instrumentation is off by default

    @agent.tool_plain
    def noop(i: int) -> str:
        """Do nothing."""
        return counter.hit(i)

    limits = UsageLimits(request_limit=n + 5)

    def run():
        return agent.run_sync("task", usage_limits=limits)

    def verify(result):
        counter.check(n)
        assert result.output == "done", result.output
        assert turns[0] == n + 1, turns[0]

    return run, verify


if __name__ == "__main__":
    measure("pydantic-ai", _pkg_version("pydantic-ai-slim"), make_run)
