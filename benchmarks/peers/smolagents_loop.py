"""smolagents: ToolCallingAgent driven by a scripted Model subclass.

The model returns one ``noop`` tool call per turn (argument i), then a
``final_answer`` tool call -- smolagents' ToolCallingAgent ends a run
only through its final_answer tool, so that is its "final text answer".
Console logging is switched off (LogLevel.OFF) so terminal rendering is
not counted as loop overhead.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import smolagents  # noqa: E402
from _common import Counter, measure  # noqa: E402
from smolagents import ChatMessage, LogLevel, Model, ToolCallingAgent, tool  # noqa: E402
from smolagents.models import (  # noqa: E402
    ChatMessageToolCall,
    ChatMessageToolCallFunction,
    MessageRole,
)


class ScriptedModel(Model):
    def __init__(self, n: int) -> None:
        super().__init__(model_id="scripted")
        self.n = n
        self.turn = 0

    def generate(
        self, messages, stop_sequences=None, response_format=None, tools_to_call_from=None, **kwargs
    ):
        i = self.turn
        self.turn += 1
        if i < self.n:
            name, arguments = "noop", {"i": i}
        elif i == self.n:
            name, arguments = "final_answer", {"answer": "done"}
        else:
            raise RuntimeError(f"scripted model asked for turn {i + 1}, script has {self.n + 1}")
        call = ChatMessageToolCall(
            id=f"call_{i}",
            type="function",
            function=ChatMessageToolCallFunction(name=name, arguments=arguments),
        )
        return ChatMessage(role=MessageRole.ASSISTANT, content="", tool_calls=[call])


def make_run(n: int):
    counter = Counter()

    @tool
    def noop(i: int) -> str:
        """Do nothing.

        Args:
            i: The step index.
        """
        return counter.hit(i)

    model = ScriptedModel(n)
    agent = ToolCallingAgent(tools=[noop], model=model, max_steps=n + 5, verbosity_level=LogLevel.OFF)

    def run():
        return agent.run("task")

    def verify(result):
        counter.check(n)
        assert result == "done", result
        assert model.turn == n + 1, model.turn

    return run, verify


if __name__ == "__main__":
    measure("smolagents", smolagents.__version__, make_run)
