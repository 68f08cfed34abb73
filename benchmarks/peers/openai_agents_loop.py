"""OpenAI Agents SDK: an Agent driven by a custom ``Model`` implementation.

``get_response`` returns a Responses-API ``ResponseFunctionToolCall`` for
``noop`` (argument i) per turn, then an assistant ``ResponseOutputMessage``
with the text "done".  Tracing is disabled globally and per run;
``max_turns`` is raised to N + 5 (the default is 10). ``stream_response``
gives the same turn as one ``response.completed`` event, so
``Runner.run_streamed`` works too; the benchmark times ``Runner.run_sync``.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

from importlib.metadata import version as _pkg_version  # noqa: E402

from _common import Counter, measure  # noqa: E402
from agents import (  # noqa: E402
    Agent,
    Model,
    ModelResponse,
    RunConfig,
    Runner,
    Usage,
    function_tool,
    set_tracing_disabled,
)
from openai.types.responses import (  # noqa: E402
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

set_tracing_disabled(True)


class ScriptedModel(Model):
    def __init__(self, n: int) -> None:
        self.n = n
        self.turn = 0

    async def get_response(
        self,
        system_instructions,
        input,
        model_settings,
        tools,
        output_schema,
        handoffs,
        tracing,
        *,
        previous_response_id=None,
        conversation_id=None,
        prompt=None,
        **kwargs,
    ) -> ModelResponse:
        i = self.turn
        self.turn += 1
        if i < self.n:
            item = ResponseFunctionToolCall(
                type="function_call",
                name="noop",
                arguments=json.dumps({"i": i}),
                call_id=f"call_{i}",
                id=f"fc_{i}",
                status="completed",
            )
        elif i == self.n:
            item = ResponseOutputMessage(
                type="message",
                id=f"msg_{i}",
                role="assistant",
                status="completed",
                content=[ResponseOutputText(type="output_text", text="done", annotations=[])],
            )
        else:
            raise RuntimeError(f"scripted model asked for turn {i + 1}, script has {self.n + 1}")
        return ModelResponse(output=[item], usage=Usage(requests=1), response_id=None)

    async def stream_response(self, *args, **kwargs):
        turn = await self.get_response(*args, **kwargs)
        response = Response(
            id=f"resp_{self.turn}",
            created_at=0,
            model="scripted",
            object="response",
            output=turn.output,
            parallel_tool_calls=False,
            tool_choice="auto",
            tools=[],
        )
        yield ResponseCompletedEvent(type="response.completed", sequence_number=0, response=response)


def make_run(n: int):
    counter = Counter()

    @function_tool
    def noop(i: int) -> str:
        """Do nothing."""
        return counter.hit(i)

    model = ScriptedModel(n)
    agent = Agent(name="bench", instructions="Run the task.", model=model, tools=[noop])
    config = RunConfig(tracing_disabled=True)

    def run():
        return Runner.run_sync(agent, "task", max_turns=n + 5, run_config=config)

    def verify(result):
        counter.check(n)
        assert result.final_output == "done", result.final_output
        assert model.turn == n + 1, model.turn

    return run, verify


if __name__ == "__main__":
    measure("openai-agents", _pkg_version("openai-agents"), make_run)
