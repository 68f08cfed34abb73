"""The loop's fast paths behave like the slow ones they replace.

Events built without validation, the unbuffered run log, the lock-free bus
delivery, non-blocking tools on the event loop, the cheap loop-detection
comparison, the lazy package root, the parser's shortcuts and the agent's one
event loop for its sync runs.
"""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import call, types
from pydantic import BaseModel

from agent import Agent, AgentError, Bus, read_events, tool
from agent.bus import Decision
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
from agent.llm.formats import parse_ladder, parse_output, plain_text
from agent.llm.formats.hermes import single_call
from agent.runlog import RunLog
from agent.tool import Tool, tool_context
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


def test_run_log_finishes_a_line_the_kernel_took_only_part_of(tmp_path, monkeypatch):
    """write() may take fewer bytes than given (a signal, a nearly full disk): the log
    writes the rest, so each event is still one whole line."""
    import agent.runlog as runlog

    real_write = os.write
    calls = []

    def short_write(fd, data):
        calls.append(len(data))
        return real_write(fd, bytes(data[:7]))

    monkeypatch.setattr(runlog.os, "write", short_write)
    path = tmp_path / "r.jsonl"
    log = RunLog(path)
    events = [UserMessage(content="first"), UserMessage(content="second ✓")]
    for event in events:
        log(event)
    log.close()
    monkeypatch.undo()
    assert read_events(path) == events
    assert len(calls) > 2 * len(events)  # each line took several writes


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


PARSE_CASES = [
    '<tool_call>{"name": "add", "arguments": {"a": 1, "b": [2, 3.5, null, true]}}</tool_call>',
    '  <tool_call>\n{"name": " add ", "arguments": {}}\n</tool_call>\n',
    '<tool_call>{"name": "add", "arguments": {"x": "\u00fcn\u00ef \u2713"}, "id": "7"}</tool_call>',
    '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call><tool_call>{"name": "b", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "add", "arguments": {"a": "<b>"}}</tool_call>',
    '<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>',
    '<tool_call>{"name": "add", "parameters": {"a": 1}}</tool_call>',
    '<tool_call>{"name": "add", "arguments": {"a": 1},}</tool_call>',
    "<tool_call>{'name': 'add', 'arguments': {'a': 1}}</tool_call>",
    '<tool_call>{"name": "", "arguments": {}}</tool_call>',
    '<tool_call>{"name": 3, "arguments": {}}</tool_call>',
    '<tool_call>[{"name": "add", "arguments": {}}]</tool_call>',
    '<tool_call>{"name": "add", "arguments": {"a": 1}} {"name": "b", "arguments": {}}</tool_call>',
    '<tool_call>```json\n{"name": "add", "arguments": {}}\n```</tool_call>',
    '<tool_call>{"name": "add", "arguments": {"a": "[THINK]x[/THINK]"}}</tool_call>',
    '<think>hm</think><tool_call>{"name": "add", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call><|im_end|>',
    "<tool_call></tool_call>",
    '<tool_call>{"name": "add", "arguments": {"a": 1}</tool_call>',
    '<tool_call>{"name": "add", "arguments": {"a": 1}}}</tool_call>',
    "<tool_call><function=add><parameter=a>1</parameter></function></tool_call>",
    '<|channel|>final<|message|>{"name": "add", "arguments": {}}',
    "done",
    "  The answer is 5.\n",
    "",
    "use [brackets]",
    '{"name": "add", "arguments": {}}',
    "call add with arguments a=1",
    "Thinking done</think> The answer",
    '[TOOL_CALLS] [{"name": "add", "arguments": {}}]',
]


def _reading(parsed):
    calls = [
        (c.name, c.arguments, c.raw_arguments, c.parse_error, c.model_fields_set) for c in parsed.tool_calls
    ]
    return parsed.content, parsed.thinking, parsed.format, parsed.model_fields_set, calls


@pytest.mark.parametrize("text", PARSE_CASES)
def test_parser_shortcuts_read_text_as_the_ladder_does(text):
    fast = single_call(text) or plain_text(text)
    slow = parse_ladder(text, None)
    if fast is not None:
        assert _reading(fast) == _reading(slow)
    assert _reading(parse_output(text)) == _reading(slow)


def test_parser_shortcuts_take_the_usual_turns():
    assert [single_call(t) is not None for t in PARSE_CASES[:4]] == [True, True, True, False]
    assert plain_text("done") is not None and plain_text("  The answer is 5.\n") is not None
    assert plain_text('{"name": "add", "arguments": {}}') is None


async def test_emit_now_delivers_only_when_nothing_would_wait():
    bus = Bus("r1")
    seen: list[UserMessage] = []
    bus.subscribe(seen.append)
    assert bus.emit_now(UserMessage(content="a")) is Decision.allow()

    async def judge(event):
        return Decision.block("no")

    bus.intercept(judge)
    assert bus.emit_now(UserMessage(content="b")) is None  # a guard must judge it: emit() does
    assert bus.emit_now(UserMessage(content="c"), judge=False) is Decision.allow()

    async def note(event):
        pass

    bus.subscribe(note)
    assert bus.emit_now(UserMessage(content="d"), judge=False) is None
    await bus.emit(UserMessage(content="e"), judge=False)
    assert [(e.content, e.seq) for e in seen] == [("a", 1), ("c", 2), ("e", 3)]


def test_one_event_loop_serves_sync_runs_from_threads_and_after_ctrl_c(run_dir):
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("Ctrl-C is handled by someone else here")
    loops = []

    @tool(blocking=False)
    def where() -> str:
        """Note the event loop."""
        loops.append(asyncio.get_running_loop())
        return "ok"

    @tool
    def slow() -> str:
        """Take a while."""
        time.sleep(1)
        return "late"

    turn = '<tool_call>{"name": "%s", "arguments": {}}</tool_call>'
    script = [turn % "where", "one", turn % "where", "two", turn % "slow", turn % "where", "three"]
    agent = Agent(ScriptedLLM(script), tools=[where, slow], run_dir=run_dir, guards=None)
    results = [agent.run_sync("1")]
    in_thread = threading.Thread(target=lambda: results.append(agent.run_sync("2")))
    in_thread.start()
    in_thread.join()
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C while `slow` runs
    results.append(agent.run_sync("3"))
    in_thread = threading.Thread(target=lambda: results.append(agent.run_sync("4")))
    in_thread.start()
    in_thread.join()
    agent.close()
    assert [(r.status, r.answer) for r in results] == [
        ("completed", "one"),
        ("completed", "two"),
        ("cancelled", None),
        ("completed", "three"),
    ]
    assert len(loops) == 3 and loops[0] is loops[1] is loops[2]
    assert not loops[0].is_closed()  # this thread's loop: other agents go on using it
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_agents_of_one_thread_share_its_loop_and_an_async_resource(run_dir):
    class Upper(Tool):
        """A client of a server task it starts on first use, as kernels and HTTP pools do."""

        name = "upper"
        description = "Upper-case a text."

        class Args(BaseModel):
            text: str

        def __init__(self) -> None:
            self.server: asyncio.Task | None = None

        async def run(self, args: BaseModel) -> str:
            if self.server is None:
                self.requests: asyncio.Queue[str] = asyncio.Queue()
                self.replies: asyncio.Queue[str] = asyncio.Queue()
                self.server = asyncio.create_task(self._serve())
            await self.requests.put(args.text)
            return await asyncio.wait_for(self.replies.get(), 5)

        async def _serve(self) -> None:
            while True:
                self.replies.put_nowait((await self.requests.get()).upper())

        async def aclose(self) -> None:
            if self.server is not None:
                self.server.cancel()

    upper = Upper()  # one tool object shared by two agents
    agents = [
        Agent(
            ScriptedLLM(
                [f'<tool_call>{{"name": "upper", "arguments": {{"text": "{word}"}}}}</tool_call>', "ok"]
            ),
            tools=[upper],
            run_dir=run_dir,
            guards=None,
        )
        for word in ("one", "two")
    ]
    results = [agent.run_sync("go") for agent in agents]
    for agent in agents:
        agent.close()
    outputs = [next(e.content for e in r.events if e.type == "tool_result") for r in results]
    assert outputs == ["ONE", "TWO"]


def test_a_thread_loop_closes_once_its_thread_and_agents_are_gone(run_dir):
    import gc

    loops = []

    @tool(blocking=False)
    def where() -> str:
        """Note the event loop."""
        loops.append(asyncio.get_running_loop())
        return "ok"

    def work() -> None:
        agent = Agent(
            ScriptedLLM(['<tool_call>{"name": "where", "arguments": {}}</tool_call>', "done"]),
            tools=[where],
            run_dir=run_dir,
            guards=None,
        )
        assert agent.run_sync("go").answer == "done"

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    gc.collect()
    assert len(loops) == 1 and loops[0].is_closed()


def test_an_idle_tool_worker_holds_nothing_of_its_last_call(run_dir):
    import gc
    import weakref

    @tool  # a plain sync tool: it runs on one of the daemon workers
    def big() -> str:
        """Return a large result."""
        return "x" * 1_000_000

    refs = []

    def work() -> None:
        agent = Agent(ScriptedLLM([call("big"), "done"]), tools=[big], run_dir=run_dir, guards=None)
        assert agent.run_sync("go").answer == "done"
        refs.append(weakref.ref(agent))
        refs.append(weakref.ref(agent._loop.loop))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    # The worker that ran `big` waits for its next job: the agent, its loop and the
    # result must be gone all the same (the loop closes when nothing holds it). The
    # worker lets go of the loop just after waking it, and the run may have ended before
    # it runs again: it has a moment to get there, not a next job.
    deadline = time.monotonic() + 5
    while True:
        gc.collect()
        alive = [r() is not None for r in refs]
        if not any(alive) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert alive == [False, False]


async def test_a_thread_loop_let_go_of_inside_another_running_loop_closes_without_warnings(run_dir):
    import gc
    import warnings

    holder: list[Agent] = []

    def work() -> None:
        agent = Agent(ScriptedLLM(["done"]), run_dir=run_dir, guards=None)
        assert agent.run_sync("go").answer == "done"
        holder.append(agent)  # the agent, and so its thread's loop, outlives the thread

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    loop = holder[0]._loop.loop
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        holder.clear()  # let go of it here, inside this test's running loop
        gc.collect()
    assert loop.is_closed()
    assert [str(w.message) for w in caught] == []


def test_scripted_requests_keep_each_prompt_as_the_model_was_given_it(run_dir):
    @tool(blocking=False)
    def noop(i: int) -> str:
        """Do nothing."""
        return "ok"

    script = [f'<tool_call>{{"name": "noop", "arguments": {{"i": {i}}}}}</tool_call>' for i in range(3)]
    llm = ScriptedLLM([*script, "done"])
    early: list[int] = []

    class Peeking(Agent):
        def on_event(self, event) -> None:
            if event.type == "tool_result" and not early:  # read mid-run, then the run goes on
                early.extend(len(r.messages) for r in llm.requests)

    agent = Peeking(llm, tools=[noop], run_dir=run_dir, guards=None)
    result = agent.run_sync("task")
    sizes = [len(r.messages) for r in llm.requests]
    assert result.answer == "done" and early == [2]
    assert sizes == [2, 4, 6, 8]  # system + task, then a call and its result per step
    assert llm.requests[0].messages[-1].content == "task"
    assert llm.requests[3].messages[-1].role == "tool"
    assert len(agent._last.state.messages) == 9  # the history went on growing; the prompts did not


def test_a_scripted_response_object_is_copied_so_the_run_never_changes_the_script(run_dir):
    @tool(blocking=False)
    def add(a: int, b: int = 0) -> int:
        """Add."""
        return a + b

    first = ModelResponse(
        tool_calls=[ToolCallRequest(id="c1", name="add", arguments={"a": 1})], finish_reason="tool_calls"
    )
    last = ModelResponse(content="done")
    script = [first, last]
    before = [r.model_dump() for r in script]

    class Editing(Agent):
        def act(self, response):  # changes the call it was given, in place
            for c in response.tool_calls:
                c.arguments["b"] = 41
                c.name = "add"
            return response

    llm = ScriptedLLM(script)
    result = Editing(llm, tools=[add], run_dir=run_dir, guards=None).run_sync("task")
    assert result.status == "completed" and result.answer == "done"
    assert [e.content for e in result.events if e.type == "tool_result"] == ["42"]
    responses = [e for e in result.events if e.type == "model_response"]
    assert [r.step for r in responses] == [1, 2] and all(r.seq > 0 for r in responses)
    assert responses[0].tool_calls[0].id == "c1"  # the script's call, as given
    assert [r.model_dump() for r in script] == before  # step, seq, arguments: all as they were
    assert responses[0] is not first and responses[1] is not last


def test_hooks_set_on_the_instance_or_overridden_are_called_and_the_base_ones_skipped(run_dir):
    @tool(blocking=False)
    def noop(i: int) -> str:
        """Do nothing."""
        return "ok"

    seen: list[str] = []

    class Stopping(Agent):
        def should_stop(self, state):
            seen.append(f"stop? {state.step}")
            return None

    agent = Stopping(ScriptedLLM([call("noop", i=1), "done"]), tools=[noop], run_dir=run_dir, guards=None)
    agent.observe = lambda result: seen.append(f"observed {result.content}") or result  # on the instance
    result = agent.run_sync("task")
    assert result.answer == "done"
    assert seen == ["stop? 0", "observed ok", "stop? 1"]
    plain = Agent(ScriptedLLM(["done"]), run_dir=run_dir, guards=None)
    assert plain.run_sync("task").answer == "done"
    from agent.loop import _hooks

    assert _hooks(plain) == [None, None, None]  # the base class's hooks: skipped
    assert _hooks(agent)[0] is not None and _hooks(agent)[1] is None and _hooks(agent)[2] is not None


def test_a_task_or_system_prompt_that_is_not_text_fails_with_a_clear_error(run_dir):
    agent = Agent(ScriptedLLM(["x"]), run_dir=run_dir, guards=None)
    for task, message in ((123, "the task must be a str, not int"), ("caf\udce9", r"byte 0xe9 at character 3")):
        with pytest.raises(AgentError, match=message):  # before anything starts: no run, no log
            agent.run_sync(task)  # type: ignore[arg-type]
    assert not list(run_dir.glob("*.jsonl"))
    with pytest.raises(AgentError, match="the message is not valid UTF-8"):
        agent.session().send_sync("\ud800")

    class Odd(Agent):
        def render_system_prompt(self):
            return None

    result = Odd(ScriptedLLM(["x"]), run_dir=run_dir, guards=None).run_sync("task")
    assert result.status == "failed" and "render_system_prompt() must be a str, not NoneType" in result.error
    assert read_events(result.log_path)[-1].type == "run_finished"


def test_a_sync_call_on_an_agent_busy_in_another_thread_is_refused_clearly(run_dir):
    started, release = threading.Event(), threading.Event()

    @tool(blocking=False)
    async def hold() -> str:
        """Wait until released."""
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return "released"

    call = '<tool_call>{"name": "hold", "arguments": {}}</tool_call>'
    agent = Agent(ScriptedLLM([call, "first", "second"]), tools=[hold], run_dir=run_dir, guards=None)
    results = []
    worker = threading.Thread(target=lambda: results.append(agent.run_sync("one")))
    worker.start()
    assert started.wait(10)
    with pytest.raises(AgentError, match="event loop .* is running a sync call.*cannot start until that one returns"):
        agent.run_sync("two")  # the agent's loop is running in the worker
    release.set()
    worker.join(10)
    assert results[0].answer == "first"
    assert agent.run_sync("three").answer == "second"  # and the loop works again once free
    agent.close()


def test_two_threads_making_an_agents_first_sync_call_at_once_get_one_loop(run_dir):
    # Both find the agent without a loop at the same moment: one runs, the other is refused,
    # every time (before, each could pick its own thread's loop and both ran).
    def work(agent: Agent, barrier: threading.Barrier, outcomes: list[str]) -> None:
        barrier.wait()
        try:
            outcomes.append(agent.run_sync("go").status)
        except AgentError as e:
            outcomes.append(str(e)[:30])

    for _ in range(20):
        agent = Agent(ScriptedLLM(["a", "b"], delay=0.01), run_dir=run_dir, guards=None)
        barrier, outcomes = threading.Barrier(2), []
        threads = [threading.Thread(target=work, args=(agent, barrier, outcomes)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(outcomes) == ["completed", "this agent's event loop (that "]


async def test_a_sync_method_inside_an_event_loop_is_refused_with_the_async_form_named(run_dir):
    from agent import AgentError

    agent = Agent(ScriptedLLM(["done"]), run_dir=run_dir, guards=None)
    with pytest.raises(AgentError, match="cannot run inside an event loop.*await agent.arun"):
        agent.run_sync("task")
    assert (await agent.arun("task")).answer == "done"  # the refused call left nothing behind


def test_every_package_says_it_carries_type_hints():
    import importlib.resources
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    shipped = data["tool"]["setuptools"]["package-data"]
    for package in ("agent", "tools", "memory", "guards"):
        assert importlib.resources.files(package).joinpath("py.typed").is_file(), package
        assert "py.typed" in shipped[package], package  # and the wheel takes it along


def test_a_run_logs_where_run_dir_says_when_it_runs(tmp_path):
    """The log folder's path is made once per value of `run_dir`: setting another one
    after the agent was made moves the next run's log there."""
    agent = Agent(ScriptedLLM(["one", "two"]), run_dir=tmp_path / "first", guards=None)
    first = agent.run_sync("task")
    agent.run_dir = tmp_path / "second"
    second = agent.run_sync("task")
    assert os.path.dirname(first.log_path) == str(tmp_path / "first")
    assert os.path.dirname(second.log_path) == str(tmp_path / "second")
    assert [e.type for e in read_events(second.log_path)][-1] == "run_finished"


def test_tool_context_names_the_call_running_now(run_dir):
    seen = []

    @tool(blocking=False)
    def where(i: int) -> str:
        """Say where it runs."""
        ctx = tool_context()
        seen.append((ctx.run_id, ctx.step, ctx.call_id, ctx.workspace))
        return "ok"

    llm = ScriptedLLM(
        [
            ModelResponse(tool_calls=[ToolCallRequest(id=f"c{i}", name="where", arguments={"i": i})])
            for i in range(2)
        ]
        + ["done"]
    )
    result = Agent(llm, tools=[where], run_dir=run_dir, workspace=run_dir, guards=None).run_sync("task")
    assert seen == [(result.run_id, 1, "c0", run_dir), (result.run_id, 2, "c1", run_dir)]
    assert tool_context() is None  # outside a call


def test_updated_copies_extra_fields_and_private_attributes_of_the_models_that_have_them():
    from pydantic import ConfigDict, PrivateAttr

    from agent.types import updated

    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")
        a: int = 0

    class Secret(BaseModel):
        a: int = 0
        _note: str = PrivateAttr(default="kept")

    open_one = Open(a=1, b=2)
    copy = updated(open_one, a=3)
    assert copy == Open(a=3, b=2) and copy.__pydantic_extra__ is not open_one.__pydantic_extra__
    secret = Secret(a=1)
    copy = updated(secret, a=2)
    assert copy.a == 2 and copy._note == "kept"
    copy._note = "changed"
    assert secret._note == "kept"  # its own private dict
    plain = updated(ModelResponse(content="x"), content="y")  # neither: both None
    assert plain.__pydantic_extra__ is None and plain.__pydantic_private__ is None
    assert plain == ModelResponse(content="y", time=plain.time)


def test_arguments_reach_positional_only_parameters_in_order_whatever_order_they_came_in(run_dir):
    seen = []

    @tool(blocking=False)
    def pair(a: int, b: str, /) -> str:
        """Take two by position."""
        seen.append((a, b))
        return f"{a}{b}"

    reply = ModelResponse(tool_calls=[ToolCallRequest(id="c1", name="pair", arguments={"b": "x", "a": 1})])
    result = Agent(ScriptedLLM([reply, "done"]), tools=[pair], run_dir=run_dir).run_sync("go")
    assert result.status == "completed" and seen == [(1, "x")]


def test_what_a_runs_last_step_schedules_has_run_when_run_sync_returns(run_dir):
    done = []

    async def save() -> None:
        done.append("task")

    @tool(blocking=False)
    def note() -> str:
        """Schedule work on the event loop and return at once."""
        loop = asyncio.get_running_loop()
        loop.call_soon(done.append, "callback")
        loop.create_task(save())
        return "ok"

    agent = Agent(ScriptedLLM([call("note"), "done"]), tools=[note], run_dir=run_dir, guards=None)
    assert agent.run_sync("go").answer == "done"
    assert sorted(done) == ["callback", "task"]  # not left queued on the loop until a later call


def test_the_run_log_leaves_out_deltas_of_a_delta_subclass_too(run_dir):
    from agent.events import ModelDelta

    class TimedDelta(ModelDelta):
        latency_ms: float = 0.0

    class Streaming(ScriptedLLM):
        async def stream(self, request):
            async for item in super().stream(request):
                yield TimedDelta(content=item.content) if item.type == "model_delta" else item

    result = Agent(Streaming(["a long answer"], chunk_size=4), run_dir=run_dir, guards=None).run_sync("go")
    assert result.status == "completed"
    assert "model_delta" not in [e.type for e in read_events(result.log_path)]
