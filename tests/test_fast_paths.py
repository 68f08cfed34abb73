"""The loop's fast paths behave like the slow ones they replace.

Events built without validation, the unbuffered run log, the lock-free bus
delivery, non-blocking tools on the event loop, the cheap loop-detection
comparison and the lazy package root.
"""

import asyncio
import subprocess
import sys
import threading

from helpers import call, types

from agent import Agent, Bus, read_events, tool
from agent.events import (
    ModelRequest,
    ModelResponse,
    RunStarted,
    ToolCall,
    ToolResult,
    UserMessage,
    parse_event,
)
from agent.llm import ScriptedLLM
from agent.runlog import RunLog
from agent.tool import tool_context
from agent.types import Message, ToolCallRequest, Usage, trusted


def test_trusted_models_equal_validated_ones():
    cases = [
        (
            ToolResult,
            {"call_id": "c1", "name": "add", "content": "5", "duration": 0.25, "step": 2, "time": 1.5},
        ),
        (ToolCall, {"call_id": "c1", "name": "add", "arguments": {"a": 1}, "step": 2, "time": 1.5}),
        (ModelRequest, {"purpose": "act", "messages": 3, "tools": ["add"], "step": 1, "time": 2.0}),
        (Message, {"role": "tool", "content": "5", "tool_call_id": "c1", "name": "add"}),
        (Usage, {"prompt_tokens": 3, "completion_tokens": 4}),
    ]
    for cls, values in cases:
        built, checked = trusted(cls, **values), cls(**values)
        assert built == checked
        assert built.model_dump_json() == checked.model_dump_json()
        assert repr(built) == repr(checked)
        assert built.model_fields_set == checked.model_fields_set
    # defaults from factories are fresh per instance, as with validation
    first, second = trusted(Message, role="user"), trusted(Message, role="user")
    assert first.tool_calls == [] and first.tool_calls is not second.tool_calls
    assert trusted(ToolResult, call_id="c", name="n", content="").time > 0
    assert (Usage(prompt_tokens=1) + Usage(completion_tokens=2)).total_tokens == 3


def test_run_log_lines_are_model_dump_json_and_written_per_event(tmp_path):
    path = tmp_path / "runs" / "r.jsonl"
    log = RunLog(path)
    started = RunStarted(task="ünïcode ✓", system_prompt="be brief")
    log(started)
    # on disk before the log is closed: one write() per event, no buffering
    assert path.read_bytes() == (started.model_dump_json() + "\n").encode()
    response = ModelResponse(content="hi", tool_calls=[ToolCallRequest(name="add", arguments={"a": 1})])
    log(response)
    log(UserMessage(content="more"))
    log.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[1] == response.model_dump_json()
    assert [parse_event(line) for line in lines] == read_events(path)
    assert read_events(path)[1] == response


async def test_bus_keeps_order_with_and_without_async_subscribers():
    bus = Bus("r1")
    seen: list[tuple[str, int]] = []
    bus.subscribe(lambda e: seen.append(("sync", e.seq)))
    await bus.emit(UserMessage(content="a"))

    async def slow(event):
        await asyncio.sleep(0.01)
        seen.append(("async", event.seq))

    bus.subscribe(slow)
    # concurrent deliveries: the lock keeps each event whole and in order
    await asyncio.gather(bus.emit(UserMessage(content="b")), bus.emit(UserMessage(content="c")))
    bus.unsubscribe(slow)
    await bus.emit(UserMessage(content="d"))
    assert seen == [("sync", 1), ("sync", 2), ("async", 2), ("sync", 3), ("async", 3), ("sync", 4)]


def test_non_blocking_tool_runs_on_the_event_loop_thread(run_dir):
    threads: dict[str, int] = {}

    @tool(blocking=False)
    def quick(x: int) -> int:
        """Double x."""
        context = tool_context()
        assert context is not None and context.call_id
        threads["quick"] = threading.get_ident()
        return 2 * x

    @tool
    def plain(x: int) -> int:
        """Triple x."""
        threads["plain"] = threading.get_ident()
        return 3 * x

    llm = ScriptedLLM([call("quick", x=2), call("plain", x=2), "done"])
    result = Agent(llm, tools=[quick, plain], run_dir=run_dir, guards=None).run_sync("go")
    assert result.status == "completed"
    assert [e.content for e in result.events if e.type == "tool_result"] == ["4", "6"]
    assert threads["quick"] == threading.get_ident()  # run_sync drives the loop on this thread
    assert threads["plain"] != threading.get_ident()
    assert not quick.blocking and plain.blocking


def test_timeout_error_raised_by_a_tool_is_its_own_error(run_dir):
    @tool(blocking=False)
    def flaky() -> str:
        """Fail."""
        raise TimeoutError("upstream took too long")

    @tool(timeout=None)
    def flaky_thread() -> str:
        """Fail on a thread."""
        raise TimeoutError("upstream took too long")

    llm = ScriptedLLM([call("flaky"), call("flaky_thread"), "done"])
    result = Agent(llm, tools=[flaky, flaky_thread], run_dir=run_dir, guards=None).run_sync("go")
    assert result.status == "completed"
    errors = [(e.error_kind, e.content) for e in result.events if e.type == "tool_result"]
    assert errors == [
        ("exception", "Tool 'flaky' raised TimeoutError: upstream took too long"),
        ("exception", "Tool 'flaky_thread' raised TimeoutError: upstream took too long"),
    ]


def test_loop_detection_tells_json_types_apart(run_dir):
    @tool(blocking=False)
    def echo(v: int | bool) -> str:
        """Echo v."""
        return str(v)

    # 1 and true are equal in Python but different calls: no loop warning
    mixed = ScriptedLLM([call("echo", v=1), call("echo", v=True), call("echo", v=1), "done"])
    result = Agent(mixed, tools=[echo], run_dir=run_dir, guards=None).run_sync("go")
    assert "feedback" not in types(result.events)
    same = ScriptedLLM([call("echo", v=1), call("echo", v=1), call("echo", v=1), "done"])
    result = Agent(same, tools=[echo], run_dir=run_dir, guards=None).run_sync("go")
    warnings = [e for e in result.events if e.type == "feedback"]
    assert len(warnings) == 1 and warnings[0].reason == "loop"


def test_import_agent_loads_only_the_protocol_modules():
    code = (
        "import sys, agent\n"
        "lazy = ['agent.agent', 'agent.loop', 'agent.llm', 'agent.runlog', 'agent.state']\n"
        "print([m for m in lazy if m in sys.modules])\n"
        "import agent.tool\n"
        "from agent import Agent, RunLog, tool\n"
        "print(callable(tool) and not isinstance(tool, type(sys)), Agent.__module__, RunLog.__module__)\n"
        "print([m for m in ('torch', 'transformers', 'jupyter_client', 'httpx', 'rich') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "True agent.agent agent.runlog", "[]"]
