"""LangGraph: the canonical tool-calling agent graph.

A ``StateGraph(MessagesState)`` with a model node, a prebuilt ``ToolNode``
and ``tools_condition`` routing -- the pattern the LangGraph docs build
agents from (``langgraph.prebuilt.create_react_agent`` is deprecated in
current releases in favour of ``langchain.agents.create_agent``, which
lives in the separate ``langchain`` package).  ``--variant prebuilt``
measures the deprecated ``create_react_agent`` instead.

The model is a custom ``BaseChatModel`` whose ``bind_tools`` converts the
tools to OpenAI schemas and binds them, like a real chat model, and whose
``_generate`` returns an ``AIMessage`` carrying one tool call per turn,
then a plain-text answer.  LangSmith tracing stays off (no env vars set).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
for _var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
    os.environ.pop(_var, None)

from importlib.metadata import version as _pkg_version  # noqa: E402
from typing import Any  # noqa: E402

from _common import Counter, measure  # noqa: E402
from langchain_core.language_models.chat_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_core.utils.function_calling import convert_to_openai_tool  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import ToolNode, tools_condition  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

_parser = argparse.ArgumentParser(add_help=False)
_parser.add_argument("--variant", choices=["graph", "prebuilt"], default="graph")
_known, sys.argv[1:] = _parser.parse_known_args()
_VARIANT = _known.variant


class ScriptedChatModel(BaseChatModel):
    n: int

    _turn: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def turns(self) -> int:
        return self._turn

    def bind_tools(self, tools, *, tool_choice=None, **kwargs: Any):
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any
    ) -> ChatResult:
        i = self._turn
        self._turn += 1
        if i < self.n:
            message = AIMessage(
                content="",
                tool_calls=[{"name": "noop", "args": {"i": i}, "id": f"call_{i}", "type": "tool_call"}],
            )
        elif i == self.n:
            message = AIMessage(content="done")
        else:
            raise RuntimeError(f"scripted model asked for turn {i + 1}, script has {self.n + 1}")
        return ChatResult(generations=[ChatGeneration(message=message)])


def build_graph(model: BaseChatModel, tools: list):
    bound = model.bind_tools(tools)

    def call_model(state: MessagesState):
        return {"messages": [bound.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", call_model)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile()


def build_prebuilt(model: BaseChatModel, tools: list):
    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_react_agent(model, tools)


def make_run(n: int):
    counter = Counter()

    @tool
    def noop(i: int) -> str:
        """Do nothing."""
        return counter.hit(i)

    model = ScriptedChatModel(n=n)
    app = (build_graph if _VARIANT == "graph" else build_prebuilt)(model, [noop])
    # Each turn is two supersteps (model node, tool node); the default
    # recursion limit of 25 would stop long runs.
    config = {"recursion_limit": 2 * n + 10}

    def run():
        return app.invoke({"messages": [("user", "task")]}, config)

    def verify(result):
        counter.check(n)
        assert result["messages"][-1].content == "done", result["messages"][-1]
        assert model.turns == n + 1, model.turns

    return run, verify


if __name__ == "__main__":
    name = "langgraph" if _VARIANT == "graph" else "langgraph-prebuilt"
    measure(name, _pkg_version("langgraph"), make_run, {"langchain_core": _pkg_version("langchain-core")})
