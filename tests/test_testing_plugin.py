"""The pytest plugin users get with the package."""

import pytest

from agent import Agent, tool
from agent.testing import call, match_events


@tool
def add(a: int, b: int) -> int:
    """Add."""
    return a + b


def test_fixtures_and_matcher(scripted_llm, agent_run_dir, agent_workspace, expect_events):
    assert agent_workspace.is_dir() and not any(agent_workspace.iterdir())
    llm = scripted_llm([call("add", a=2, b=3), "5"])
    result = Agent(llm, tools=[add], run_dir=agent_run_dir, workspace=agent_workspace).run_sync("2+3?")
    expect_events(
        result.events,
        [
            "run_started",
            ("tool_call", {"name": "add", "arguments": {"a": 2, "b": 3}}),
            {"type": "tool_result", "content": lambda c: c == "5"},
            ("final_answer", {"content": "5"}),
        ],
    )
    assert list(agent_run_dir.glob("*.jsonl"))


def test_matcher_reports_what_it_saw(scripted_llm, agent_run_dir):
    result = Agent(scripted_llm(["hi"]), run_dir=agent_run_dir).run_sync("hello")
    with pytest.raises(AssertionError, match="not found in order; events were: run_started, user_message"):
        match_events(result.events, ["final_answer", "run_started"])
    with pytest.raises(AssertionError) as info:  # a near miss shows what the fields held
        match_events(result.events, [("final_answer", {"content": "hello"})])
    assert str(info.value).endswith("final_answer after the last match had:\n  content='hi'")
