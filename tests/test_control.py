"""Budgets, cancellation, interceptors and approvals."""

import asyncio
import threading
import time

import pytest
from helpers import call

from agent import Agent, Decision, Tool, tool
from agent.events import ModelResponse, ToolCall, ToolResult
from agent.llm import ScriptedLLM
from agent.types import Usage


@tool
def echo(text: str) -> str:
    """Echo the text."""
    return text


def test_step_budget(run_dir):
    llm = ScriptedLLM([call("echo", text=str(i)) for i in range(10)])
    result = Agent(llm, tools=[echo], max_steps=3, run_dir=run_dir).run_sync("go on forever")
    assert result.status == "max_steps" and result.steps == 3
    assert "3 steps" in result.error
    assert result.events[-1].type == "run_finished" and result.events[-1].status == "max_steps"


def test_token_budget(run_dir):
    turn = {
        "tool_calls": [{"name": "echo", "arguments": {"text": "x"}}],
        "usage": Usage(prompt_tokens=400, completion_tokens=100),
    }
    llm = ScriptedLLM([turn, turn, turn, "done"])
    result = Agent(llm, tools=[echo], max_tokens=1000, run_dir=run_dir).run_sync("spend")
    assert result.status == "max_tokens"
    assert result.usage.total_tokens == 1000 and result.steps == 2


def test_wall_clock_budget_during_a_tool(run_dir):
    @tool(timeout=None)
    async def wait() -> str:
        """Wait a long time."""
        await asyncio.sleep(30)
        return "done"

    llm = ScriptedLLM([call("wait"), "never"])
    result = Agent(llm, tools=[wait], max_seconds=0.3, run_dir=run_dir).run_sync("wait")
    assert result.status == "timeout"
    assert "ran out of time" in result.error


def test_wall_clock_budget_during_a_slow_model(run_dir):
    llm = ScriptedLLM(["a", "b"], delay=5)
    result = Agent(llm, max_seconds=0.2, run_dir=run_dir).run_sync("think slowly")
    assert result.status == "timeout"


def test_cancel_stops_at_the_next_safe_point(run_dir):
    holder = {}

    @tool(effects={"writes"})
    def work(n: int) -> str:
        """Do a unit of work."""
        if n == 2:
            holder["agent"].cancel()
        return f"did {n}"

    llm = ScriptedLLM([call("work", n=1), call("work", n=2), call("work", n=3), "done"])
    agent = Agent(llm, tools=[work], run_dir=run_dir)
    holder["agent"] = agent
    result = agent.run_sync("work")
    assert result.status == "cancelled"
    # the call in flight finished and was recorded; no further model call was made
    assert [e.content for e in result.events if e.type == "tool_result"] == ["did 1", "did 2"]
    assert llm.remaining == 2
    from agent import read_events

    assert read_events(result.log_path)[-1].status == "cancelled"


async def test_cancelling_the_task_records_the_run(run_dir):
    started = asyncio.Event()

    @tool(timeout=None)
    async def hang() -> str:
        """Hang."""
        started.set()
        await asyncio.sleep(30)
        return "never"

    agent = Agent(ScriptedLLM([call("hang")]), tools=[hang], run_dir=run_dir)
    task = asyncio.create_task(agent.arun("hang"))
    await started.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    from agent import read_events

    logs = list(run_dir.glob("*.jsonl"))
    events = read_events(logs[0])
    assert events[-1].type == "run_finished" and events[-1].status == "cancelled"
    assert events[-1].error == "cancelled by the user"


async def test_leaving_the_event_stream_cancels_the_run_and_says_why(run_dir):
    @tool(timeout=None)
    async def hang() -> str:
        """Hang."""
        await asyncio.sleep(30)
        return "never"

    agent = Agent(ScriptedLLM([call("hang")]), tools=[hang], run_dir=run_dir)
    stream = agent.run("hang")
    async for event in stream:
        if event.type == "tool_call":
            break
    await stream.aclose()
    end = agent._last.state.events[-1]
    assert end.type == "run_finished" and end.status == "cancelled"
    assert end.error == "the caller stopped reading the run's events"
    result = await stream  # the result, as the run ended
    assert (result.status, result.error) == ("cancelled", end.error)
    assert (await stream).status == "cancelled"  # and again
    assert [e async for e in stream] == []


def _sender() -> tuple[Tool, list[int]]:
    """A tool with a side effect, and the list of what it sent."""
    sent: list[int] = []

    @tool(effects={"writes"})
    async def send(i: int) -> str:
        """Send message i."""
        sent.append(i)
        return "sent"

    return send, sent


async def test_the_event_stream_goes_on_only_as_the_caller_reads_it(run_dir):
    send, sent = _sender()
    # An instant model and tool: a run that went on by itself would be over before the
    # caller saw its first event.
    agent = Agent(
        ScriptedLLM([call("send", i=i) for i in range(5)] + ["done"]), tools=[send], run_dir=run_dir
    )
    stream = agent.run("send them")
    async for event in stream:
        if event.type == "tool_call" and event.arguments["i"] == 1:
            break
    assert sent == [0]  # the call the caller saw last did not run
    await stream.aclose()
    assert sent == [0] and agent._last.state.status == "cancelled"


async def test_awaiting_a_stream_left_with_break_ends_the_run_there(run_dir):
    send, sent = _sender()
    script = [call("send", i=0), call("send", i=1), "done"]
    stream = Agent(ScriptedLLM(script), tools=[send], run_dir=run_dir).run("send them")
    async for event in stream:
        if event.type == "tool_call":
            break
    result = await stream  # no aclose() first: the break alone said stop
    assert sent == [] and result.status == "cancelled"
    assert result.error == "the caller stopped reading the run's events"

    whole = Agent(ScriptedLLM(script), tools=[send], run_dir=run_dir).run("send them")
    assert [e.type async for e in whole][-1] == "run_finished"
    assert (await whole).status == "completed" and sent == [0, 1]  # read to its end: the whole run


def test_interceptor_blocks_rewrites_and_halts(run_dir):
    async def guard(event):
        if isinstance(event, ToolCall) and event.arguments.get("text") == "rm -rf /":
            return Decision.block("that command is not allowed")
        if isinstance(event, ToolResult) and "sk-secret" in event.content:
            return Decision.rewrite(
                event.model_copy(update={"content": event.content.replace("sk-secret", "[REDACTED]")})
            )
        if isinstance(event, ModelResponse) and "HALT" in event.content:
            return Decision.halt("policy violation")
        return None

    llm = ScriptedLLM(
        [call("echo", text="rm -rf /"), call("echo", text="key sk-secret"), "HALT now", "unreached"]
    )
    result = Agent(llm, tools=[echo], guards=[guard], run_dir=run_dir).run_sync("go")
    assert result.status == "halted" and result.error == "policy violation"
    outputs = [e for e in result.events if e.type == "tool_result"]
    assert outputs[0].is_error and outputs[0].error_kind == "blocked"
    assert "not allowed" in outputs[0].content
    assert outputs[1].content == "key [REDACTED]"
    # the blocked call never reached the log as a tool_call; the redacted result did
    calls = [e for e in result.events if e.type == "tool_call"]
    assert [c.arguments["text"] for c in calls] == ["key sk-secret"]
    assert "sk-secret" not in llm.requests[2].messages[-1].content


def test_user_input_refused_by_a_guard(run_dir):
    async def guard(event):
        return Decision.block("refused") if event.type == "user_message" else None

    result = Agent(ScriptedLLM([]), guards=[guard], run_dir=run_dir).run_sync("bad request")
    assert result.status == "halted" and result.error == "refused"


def _deploy_tool(ran: list[str]):
    """A side-effecting tool that needs approval, recording the targets it ran for."""

    @tool(effects={"writes"}, needs_approval=True)
    def deploy(target: str) -> str:
        """Deploy to a target."""
        ran.append(target)
        return "deployed"

    return deploy


def test_approval_given_and_refused(run_dir):
    ran: list[str] = []
    deploy = _deploy_tool(ran)
    asked = []

    def approver(request):
        asked.append(request.arguments["target"])
        return request.arguments["target"] == "staging"

    llm = ScriptedLLM([call("deploy", target="prod"), call("deploy", target="staging"), "ok"])
    result = Agent(llm, tools=[deploy], approver=approver, run_dir=run_dir).run_sync("deploy")
    assert result.ok and ran == ["staging"] and asked == ["prod", "staging"]
    verdicts = [(e.approved) for e in result.events if e.type == "approval_given"]
    assert verdicts == [False, True]
    refused = next(e for e in result.events if e.type == "tool_result")
    assert refused.error_kind == "refused"


def test_an_approver_that_fails_refuses_and_the_run_goes_on(run_dir):
    ran: list[str] = []
    deploy = _deploy_tool(ran)

    def approver(request):
        raise RuntimeError("approval service down")

    llm = ScriptedLLM([call("deploy", target="prod"), "not deployed"])
    result = Agent(llm, tools=[deploy], approver=approver, run_dir=run_dir).run_sync("deploy")
    assert result.ok and ran == []
    given = next(e for e in result.events if e.type == "approval_given")
    assert not given.approved and "approval service down" in given.note


def test_approval_without_approver_refuses_and_says_so(run_dir, caplog):
    @tool(effects={"writes"}, needs_approval=True)
    def deploy_now() -> str:
        """Deploy."""
        raise AssertionError("must not run")

    llm = ScriptedLLM([call("deploy_now"), "ok"])
    result = Agent(llm, tools=[deploy_now], run_dir=run_dir).run_sync("deploy")
    given = next(e for e in result.events if e.type == "approval_given")
    assert not given.approved and given.by == "policy"
    assert "has no approver, so it was not run" in llm.requests[1].messages[-1].content  # no "user refused"
    assert caplog.messages == [
        "deploy_now needs approval and no one is set to give it (approver=; --yes or a terminal on the "
        "command line): every call to it is refused"
    ]
    Agent(ScriptedLLM(["ok"]), tools=[deploy_now], run_dir=run_dir).run_sync("x")  # once, not for every agent

    @tool(effects={"writes"}, needs_approval=True)
    def deploy_later() -> str:
        """Deploy later."""
        return "queued"

    later = Agent(ScriptedLLM(["ok"]), tools=[deploy_later], run_dir=run_dir)
    later.approver = lambda request: True  # set after the agent is made, as `agent chat` does: no warning
    later.run_sync("x")
    assert len(caplog.messages) == 1


def test_run_sync_inside_a_loop_gives_a_clear_error(run_dir):
    from agent import AgentError

    async def inner():
        Agent(ScriptedLLM(["x"]), run_dir=run_dir).run_sync("x")

    try:
        asyncio.run(inner())
    except AgentError as e:
        assert "await agent.arun" in str(e)
    else:
        raise AssertionError("expected AgentError")


def test_concurrent_runs_of_one_agent_are_independent(run_dir):
    async def main():
        agents = [
            Agent(ScriptedLLM([call("echo", text=str(i)), f"answer {i}"]), tools=[echo], run_dir=run_dir)
            for i in range(5)
        ]
        return await asyncio.gather(*(a.arun(f"task {i}") for i, a in enumerate(agents)))

    results = asyncio.run(main())
    assert [r.answer for r in results] == [f"answer {i}" for i in range(5)]
    assert len({r.run_id for r in results}) == 5


def test_no_run_log_when_run_dir_is_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = Agent(ScriptedLLM(["x"]), run_dir=None).run_sync("x")
    assert result.ok and result.log_path is None and not (tmp_path / ".agent").exists()


def test_run_in_thread_with_cancel(run_dir):
    gate = threading.Event()

    @tool(timeout=None)
    def step() -> str:
        """Block until released."""
        gate.wait(5)
        return "ok"

    llm = ScriptedLLM([call("step"), call("step"), "done"])
    agent = Agent(llm, tools=[step], run_dir=run_dir)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", agent.run_sync("x")))
    t.start()
    deadline = time.monotonic() + 10
    while not agent._runs:  # wait for the run to start, but fail rather than hang
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.001)
    agent.cancel()
    gate.set()
    t.join(10)
    assert out["r"].status == "cancelled"


async def test_cancel_reaches_a_run_asked_for_but_not_started(run_dir):
    agent = Agent(ScriptedLLM([call("echo", text="a"), "done"]), tools=[echo], run_dir=run_dir)
    task = asyncio.create_task(agent.arun("go"))
    agent.cancel()  # the task has not begun: its run must not go ahead
    result = await task
    assert result.status == "cancelled" and not [e for e in result.events if e.type == "tool_call"]
    later = await Agent(ScriptedLLM(["fine"]), run_dir=run_dir).arun("again")  # a run asked for after is not
    assert later.ok


async def test_the_event_stream_can_be_awaited_and_warns_when_never_used(run_dir):
    import gc

    import pytest

    agent = Agent(ScriptedLLM(["done"]), run_dir=run_dir)
    result = await agent.run("go")  # the pydantic-ai / OpenAI Agents habit
    assert result.ok and result.answer == "done"
    with pytest.warns(RuntimeWarning, match=r"Agent.run\(...\) was neither iterated nor awaited"):
        agent.run("never read")  # the smolagents habit, from sync code: nothing runs
        gc.collect()
    task = asyncio.create_task(
        Agent(ScriptedLLM(["as a task"]), run_dir=run_dir).run("go")
    )  # a coroutine too
    assert (await task).answer == "as a task"


def test_asyncio_run_takes_the_event_stream(run_dir):
    assert asyncio.run(Agent(ScriptedLLM(["done"]), run_dir=run_dir).run("go")).answer == "done"


async def test_a_slow_reader_does_not_eat_a_tools_time_and_leaving_at_the_end_keeps_the_episode(run_dir):
    from agent.events import MemoryWrite
    from agent.tool import tool_context
    from memory import EpisodicMemory
    from memory.embedders import HashingEmbedder

    @tool(timeout=0.5, effects={"writes"})
    async def note(text: str) -> str:
        """Take a note."""
        await tool_context().emit(MemoryWrite(memory="notes", text=text))
        return "noted"

    episodes = EpisodicMemory(run_dir / "episodes.db", HashingEmbedder(64))
    agent = Agent(
        ScriptedLLM([call("note", text="x"), "done"]), tools=[note], memory=episodes, run_dir=run_dir
    )
    stream = agent.run("take a note")
    async for event in stream:
        if event.type in ("tool_call", "memory_write"):
            await asyncio.sleep(0.8)  # longer than the tool may take: reading is not the tool's time
        if event.type == "run_finished":
            break  # the run is over: its episode is still recorded
    await stream.aclose()
    results = [e.content for e in agent._last.state.events if e.type == "tool_result"]
    assert results == ["noted"]
    assert episodes.count() == 1


async def test_a_run_read_inside_a_tool_stops_when_that_tool_stops_reading(run_dir):
    ran: list[str] = []

    @tool(effects={"writes"})
    async def danger(x: str) -> str:
        """Do something irreversible."""
        ran.append(x)
        return "done"

    inner = Agent(ScriptedLLM([call("danger", x="inner"), "inner done"]), tools=[danger], run_dir=run_dir)

    @tool(effects={"writes"})
    async def delegate(task: str) -> str:
        """Hand a task to a helper agent, and stop it at its first call."""
        stream = inner.run(task)
        async for event in stream:
            if event.type == "tool_call":
                break
        await stream.aclose()
        return "stopped the helper"

    outer = Agent(ScriptedLLM([call("delegate", task="go"), "ok"]), tools=[delegate], run_dir=run_dir)
    assert (await outer.arun("delegate")).ok
    assert ran == []  # the helper's call it was stopped at never ran


def test_a_reply_cut_by_cancel_is_recorded_and_is_no_answer_on_resume(run_dir):
    from agent import read_events

    llm = ScriptedLLM(["The capital of France is Paris, a city on the Seine.", "Paris."], chunk_size=8)
    agent = Agent(llm, run_dir=run_dir)
    seen = []

    def cancel_at_the_third_delta(event):
        if event.type == "model_delta":
            seen.append(event.content)
            if len(seen) == 3:
                agent.cancel()

    agent.on_event = cancel_at_the_third_delta
    result = agent.run_sync("capital of France?")
    assert result.status == "cancelled"
    cut = [e for e in read_events(result.log_path) if e.type == "model_response"]
    # the part the user saw, kept in the log (deltas are not logged): it was lost
    assert [(e.content, e.finish_reason) for e in cut] == [("The capital of France is", "cancelled")]
    resumed = Agent(llm, run_dir=run_dir).resume_sync(result.run_id)
    assert resumed.status == "completed" and resumed.answer == "Paris."  # asked again, not the cut text
    assert llm.requests[-1].messages[-1].content == "The capital of France is"  # the model sees its words


async def test_a_reply_cut_by_ctrl_c_in_a_session_is_kept_in_the_conversation(run_dir):
    from agent.events import ModelDelta, ModelResponse

    class SlowModel:
        """Streams two words, then waits: a long reply the user interrupts."""

        name = "slow"

        def __init__(self):
            self.requests = []

        async def stream(self, request):
            self.requests.append([(m.role, m.content) for m in request.messages])  # as sent
            if len(self.requests) == 1:
                yield ModelDelta(content="Once upon ")
                yield ModelDelta(content="a time")
                await asyncio.sleep(30)
            yield ModelResponse(content="ok")

    model = SlowModel()
    session = Agent(model, run_dir=run_dir).session()
    turn = asyncio.create_task(session.asend("tell me a long story"))
    while not model.requests:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    turn.cancel()  # what Ctrl-C in `agent chat` does
    with pytest.raises(asyncio.CancelledError):
        await turn
    cut = [e for e in session.history if e.type == "model_response"]
    assert [(e.content, e.finish_reason) for e in cut] == [("Once upon a time", "cancelled")]
    assert (await session.asend("go on")).answer == "ok"
    assert model.requests[-1][-3:] == [
        ("user", "tell me a long story"),
        ("assistant", "Once upon a time"),
        ("user", "go on"),
    ]
