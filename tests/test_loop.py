"""The agent loop: event order, tools, model mistakes, strategies."""

import asyncio
import json
import logging
import time

import pytest
from helpers import add, call, types
from pydantic import BaseModel

from agent import Agent, Tool, ToolError, read_events, tool
from agent.events import ModelResponse, parse_event
from agent.llm import ScriptedLLM
from agent.types import ToolCallRequest


def test_multi_step_run_events_in_order(run_dir):
    llm = ScriptedLLM(
        [
            "<think>I should add.</think>" + call("add", a=2, b=3),
            call("add", a=5, b=10),
            "The total is 15.",
        ]
    )
    result = Agent(llm, tools=[add], run_dir=run_dir).run_sync("Add 2 and 3, then add 10.")
    assert result.status == "completed" and result.ok
    assert result.answer == "The total is 15."
    assert result.steps == 3
    assert types(result.events) == [
        "run_started", "user_message",
        "model_request", "model_response", "tool_call", "tool_result",
        "model_request", "model_response", "tool_call", "tool_result",
        "model_request", "model_response", "final_answer", "run_finished",
    ]  # fmt: skip
    seqs = [e.seq for e in result.events]  # deltas are numbered too, but are not in the record
    assert seqs == sorted(set(seqs)) and seqs[0] == 1
    assert not [e for e in result.events if e.type == "model_delta"]
    assert {e.run_id for e in result.events} == {result.run_id}
    first = next(e for e in result.events if e.type == "model_response")
    assert first.thinking == "I should add." and first.tool_calls[0].arguments == {"a": 2, "b": 3}
    outputs = [e.content for e in result.events if e.type == "tool_result"]
    assert outputs == ["5", "15"]
    steps = [e.step for e in result.events if e.type == "tool_result"]
    assert steps == [1, 2]
    # the model saw each tool result in its next prompt
    second_prompt = llm.requests[1].messages
    assert second_prompt[-1].role == "tool" and second_prompt[-1].content == "5"
    assert second_prompt[-2].tool_calls[0].name == "add"
    # the log on disk holds the same events, byte-stable through a round trip
    logged = read_events(result.log_path)
    assert [e.seq for e in logged] == [e.seq for e in result.events if e.type != "model_delta"]
    for line in open(result.log_path):
        assert parse_event(line).model_dump_json() == line.rstrip("\n")


def test_a_scripted_response_is_stamped_when_it_is_replayed_not_when_it_was_written(run_dir):
    script = [
        ModelResponse(tool_calls=[ToolCallRequest(id="c1", name="add", arguments={"a": 1, "b": 2})]),
        ModelResponse(content="3"),
    ]
    written = [r.time for r in script]
    time.sleep(0.05)
    result = Agent(ScriptedLLM(script), tools=[add], run_dir=run_dir).run_sync("1+2")
    assert result.answer == "3"
    times = [e.time for e in result.events]
    assert times == sorted(times), [(e.type, e.time) for e in result.events]
    responses = [e for e in result.events if e.type == "model_response"]
    assert all(r.time > w + 0.04 for r, w in zip(responses, written, strict=True))
    assert [r.time for r in script] == written  # the script itself is unchanged


async def test_run_yields_events_as_they_happen(run_dir):
    llm = ScriptedLLM([call("add", a=1, b=1), "two"], chunk_size=1)
    agent = Agent(llm, tools=[add], run_dir=run_dir)
    seen = [e async for e in agent.run("1+1")]
    assert seen[0].type == "run_started" and seen[-1].type == "run_finished"
    deltas = "".join(e.content for e in seen if e.type == "model_delta")
    assert deltas == "two"


def test_read_only_calls_in_one_turn_run_concurrently(run_dir):
    log: list[tuple[str, str]] = []

    @tool
    async def fetch(key: str) -> str:
        """Read a value."""
        log.append(("start", key))
        await asyncio.sleep(0.2)
        log.append(("end", key))
        return key.upper()

    @tool(effects={"writes"})
    async def store(key: str) -> str:
        """Write a value."""
        log.append(("start", key))
        await asyncio.sleep(0.05)
        log.append(("end", key))
        return "stored"

    llm = ScriptedLLM(
        [
            call("fetch", key="a") + call("fetch", key="b") + call("fetch", key="c"),
            call("store", key="x") + call("store", key="y"),
            "done",
        ]
    )
    result = Agent(llm, tools=[fetch, store], run_dir=run_dir).run_sync("go")
    assert result.ok
    # all three reads started before any finished
    assert [kind for kind, _ in log[:3]] == ["start", "start", "start"]
    # writes ran one after the other
    assert log[6:] == [("start", "x"), ("end", "x"), ("start", "y"), ("end", "y")]
    results = [e for e in result.events if e.type == "tool_result"]
    assert sorted(r.content for r in results[:3]) == ["A", "B", "C"]


def test_a_concurrent_call_that_ends_the_run_stops_the_others_before_it_ends(run_dir):
    from agent import Decision

    slow_ended = []

    @tool
    async def fast() -> str:
        """Read quickly."""
        return "SECRET"

    @tool
    async def slow() -> str:
        """Read slowly."""
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            slow_ended.append("cancelled")
            raise
        slow_ended.append("finished")
        return "late"

    async def guard(event):
        if event.type == "tool_result" and "SECRET" in event.content:
            return Decision.halt("a secret leaked")
        return None

    llm = ScriptedLLM([call("fast") + call("slow")])
    result = Agent(llm, tools=[fast, slow], guards=[guard], run_dir=run_dir).run_sync("go")
    assert result.status == "halted"
    assert slow_ended == ["cancelled"]
    assert result.events[-1].type == "run_finished"
    logged = read_events(result.log_path)
    assert [e.seq for e in logged] == [e.seq for e in result.events if e.type != "model_delta"]
    assert logged[-1].type == "run_finished"
    Agent(ScriptedLLM(["ok"]), run_dir=run_dir).run_sync("later")  # the thread's loop runs again
    assert slow_ended == ["cancelled"] and len(read_events(result.log_path)) == len(logged)


@pytest.mark.parametrize(
    "bad_turn, kind, hint",
    [
        (
            '<tool_call>{"name": "add", "arguments": {"a": 1, "b": }</tool_call>',
            "invalid_json",
            "Call add again with its arguments as one valid JSON object.",  # the call was read, not its JSON
        ),
        (
            "<tool_call>add a=1 b=2</tool_call>",
            "invalid_json",
            'Write the call as <tool_call>{"name": "<tool>", "arguments": {...}}</tool_call> with valid JSON.',
        ),
        (call("multiply", a=1, b=2), "unknown_tool", "Available tools: add"),
        (call("add", a="one", b=2), "invalid_arguments", "a: Input should be a valid integer"),
        (call("add", a=1), "invalid_arguments", "b: Field required"),
        (call("boom"), "exception", "ZeroDivisionError"),
        (call("slow"), "timeout", "timed out"),
        (call("database"), "exception", "raised TimeoutError: the database did not answer"),
        (call("unprintable"), "exception", "raised RuntimeError: cannot print this"),
    ],
)
def test_model_mistakes_become_observations(run_dir, bad_turn, kind, hint):
    @tool
    def boom() -> int:
        """Always fails."""
        return 1 // 0

    @tool(timeout=30)
    def database() -> str:
        """A TimeoutError of its own, long before its timeout: an exception, not a timeout."""
        raise TimeoutError("the database did not answer")

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot print this")

    @tool
    def unprintable() -> dict:
        """Returns a value that cannot be rendered for the model."""
        return {"value": Unprintable()}

    @tool(timeout=0.2)
    async def slow() -> str:
        """Never finishes in time."""
        await asyncio.sleep(30)
        return "late"

    llm = ScriptedLLM([bad_turn, call("add", a=1, b=2), "3"])
    result = Agent(llm, tools=[add, boom, slow, database, unprintable], run_dir=run_dir).run_sync(
        "add 1 and 2"
    )
    assert result.status == "completed" and result.answer == "3"
    error = next(e for e in result.events if e.type == "tool_result" and e.is_error)
    assert error.error_kind == kind
    assert hint in error.content
    # the model was shown the error in its next prompt
    assert hint in llm.requests[1].messages[-1].content


def test_retry_budget_is_per_tool_and_ends_the_run(run_dir):
    @tool(max_retries=2)
    def pick(n: int) -> int:
        """Pick a number."""
        return n

    bad = call("pick", n="x")
    llm = ScriptedLLM([bad, bad, bad, "never reached"])
    result = Agent(llm, tools=[pick], run_dir=run_dir).run_sync("pick")
    assert result.status == "failed"
    # The reason names the field, not only "Invalid arguments for tool 'pick':".
    assert result.error.startswith(
        "gave up after 3 malformed calls to pick: Invalid arguments for tool 'pick': - n:"
    )
    assert llm.remaining == 1


def test_valid_call_resets_the_retry_budget(run_dir):
    bad = call("add", a="x", b=1)
    good = call("add", a=1, b=1)
    llm = ScriptedLLM([bad, bad, bad, good, bad, bad, bad, good, "2"])
    result = Agent(llm, tools=[add], run_dir=run_dir, loop_repeats=10).run_sync("add")
    assert result.status == "completed"


def test_typed_final_answer_is_validated_and_retried(run_dir):
    class Answer(BaseModel):
        value: int
        unit: str

    llm = ScriptedLLM(
        [
            "It is 42 metres.",  # plain text is not accepted when a schema is set
            call("final_answer", value="forty-two", unit="m"),
            call("final_answer", value=42, unit="m"),
        ]
    )
    result = Agent(llm, run_dir=run_dir, answer_schema=Answer).run_sync("how far?")
    assert result.status == "completed"
    assert result.answer == Answer(value=42, unit="m")
    feedback = [e for e in result.events if e.type == "feedback"]
    assert feedback and "final_answer" in feedback[0].content
    errors = [e for e in result.events if e.type == "tool_result" and e.is_error]
    assert "value: Input should be a valid integer" in errors[0].content
    assert read_events(result.log_path)[-1].answer == {"value": 42, "unit": "m"}


def test_final_answer_tool_without_schema(run_dir):
    llm = ScriptedLLM([call("final_answer", answer="Paris")])
    result = Agent(llm, run_dir=run_dir).run_sync("capital of France?")
    assert result.answer == "Paris"


def test_react_loop_detection_warns_the_model(run_dir):
    same = call("add", a=1, b=1)
    llm = ScriptedLLM([same, same, same, "2"])
    result = Agent(llm, tools=[add], run_dir=run_dir).run_sync("1+1")
    assert result.ok
    warning = next(e for e in result.events if e.type == "feedback")
    assert warning.reason == "loop" and "same call repeatedly" in warning.content
    # effort was raised for the step after the loop
    efforts = [e.effort for e in result.events if e.type == "model_request"]
    assert efforts == ["medium", "medium", "medium", "high"]


def test_loops_are_repeated_turns_not_repeated_calls_within_one_turn(run_dir):
    a, b = call("add", a=1, b=1), call("add", a=2, b=2)
    llm = ScriptedLLM([a + a + a, a + b + a + b, "done"])  # three dice rolled at once is no loop
    result = Agent(llm, tools=[add], run_dir=run_dir).run_sync("add")
    assert result.ok and not [e for e in result.events if e.type == "feedback"]
    llm = ScriptedLLM([a + b, a + b, a + b, "done"])  # the same turn of two calls, three times, is
    result = Agent(llm, tools=[add], run_dir=run_dir).run_sync("add")
    assert [e.reason for e in result.events if e.type == "feedback"] == ["loop"]


def test_plan_act_reflect(run_dir):
    a, b = call("add", a=1, b=1), call("add", a=2, b=2)
    llm = ScriptedLLM(
        [
            "1. add numbers\n2. answer",  # initial plan
            a, b, a, b,  # A-B-A-B oscillation
            "I keep alternating; I will answer now.",  # reflection on the loop
            "1. answer with 4",  # re-plan because stuck
            call("oops"),  # unknown tool: an error
            "I called a tool that does not exist.",  # reflection after the error
            "4",
        ]
    )  # fmt: skip
    agent = Agent(llm, tools=[add], strategy="plan-act-reflect", run_dir=run_dir, replan_every=0)
    result = agent.run_sync("add things")
    assert result.ok and result.answer == "4"
    kinds = [(e.type, getattr(e, "reason", "")) for e in result.events if e.type in ("plan", "reflection")]
    assert kinds == [("plan", "initial"), ("reflection", "loop"), ("plan", "stuck"), ("reflection", "error")]
    purposes = [e.purpose for e in result.events if e.type == "model_request"]
    assert purposes == ["plan", "act", "act", "act", "act", "reflect", "plan", "act", "reflect", "act"]
    # the plan is in the prompt of the first act step, with no tools offered to the planner
    assert "1. add numbers" in llm.requests[1].messages[-1].content
    assert llm.requests[0].tools == [] and llm.requests[1].tools


def test_periodic_replanning_and_reflection_before_answer(run_dir):
    llm = ScriptedLLM(
        [
            "plan A",
            call("add", a=1, b=1),
            call("add", a=1, b=2),
            "plan B",  # re-plan before step 3
            "answer 3",
            "Checked: the answer is right.",  # reflection before the final answer
            "3",
        ]
    )
    agent = Agent(
        llm,
        tools=[add],
        strategy="plan-act-reflect",
        replan_every=2,
        reflect_before_answer=True,
        run_dir=run_dir,
    )
    result = agent.run_sync("sum")
    assert result.ok and result.answer == "3"
    plans = [e.reason for e in result.events if e.type == "plan"]
    assert plans == ["initial", "periodic"]
    assert [e.reason for e in result.events if e.type == "reflection"] == ["final"]


def test_an_answer_on_the_last_allowed_step_is_kept_without_a_final_reflection(run_dir):
    llm = ScriptedLLM(["The answer is 4.", "Checked: it is 4.", "4"])
    agent = Agent(llm, reflect_before_answer=True, max_steps=1, run_dir=run_dir)
    result = agent.run_sync("2+2?")
    assert (result.status, result.answer) == ("completed", "The answer is 4.")
    result = Agent(
        ScriptedLLM(["4", "Checked.", "4"]), reflect_before_answer=True, max_steps=2, run_dir=run_dir
    ).run_sync("2+2?")
    assert result.answer == "4" and [e.reason for e in result.events if e.type == "reflection"] == ["final"]


def test_each_session_message_starts_fresh_reflection_and_loop_counts(run_dir):
    llm = ScriptedLLM(["4", "checked: 4", "4", "6", "checked: 6", "6"])
    session = Agent(llm, reflect_before_answer=True, run_dir=run_dir).session()
    session.send_sync("2+2?")
    assert session.send_sync("3+3?").answer == "6"
    assert [r.purpose for r in llm.requests] == ["act", "reflect", "act"] * 2 and llm.remaining == 0
    same = call("add", a=1, b=2)
    session = Agent(ScriptedLLM([same, same, "3", same, "3 again"]), tools=[add], run_dir=run_dir).session()
    session.send_sync("What is 1+2?")
    session.send_sync("Compute 1+2 again with the tool.")
    assert [e for e in session.history if e.type == "feedback"] == []


@pytest.mark.parametrize("verdict", ["halt", "block"])
def test_a_guard_verdict_on_a_plan_or_reflection_is_acted_on(run_dir, verdict):
    from agent.bus import Decision

    @tool
    def boom(x: int) -> int:
        """Fails."""
        raise ValueError("kaboom")

    async def no_notes(event):
        if event.type in ("plan", "reflection"):
            return Decision(action=verdict, feedback="plans and reflections are not allowed here")

    llm = ScriptedLLM(["1. plan", call("boom", x=1), "reflection", "final"])
    result = Agent(
        llm, tools=[boom], strategy="plan-act-reflect", run_dir=run_dir, guards=[no_notes]
    ).run_sync("t")
    notes = [e for e in result.events if e.type in ("plan", "reflection")]
    assert notes == []
    if verdict == "halt":
        assert result.status == "halted" and "not allowed" in result.error
    else:
        assert result.status == "completed"
        told = [e.content for e in result.events if e.type == "feedback" and e.reason == "blocked"]
        assert told == ["plans and reflections are not allowed here"] * 2


def test_a_plan_stopped_by_the_content_filter_fails_the_run(run_dir):
    llm = ScriptedLLM([ModelResponse(content="", finish_reason="content_filter"), "4"])
    result = Agent(llm, strategy="plan-act-reflect", run_dir=run_dir).run_sync("2+2?")
    assert result.status == "failed" and "content filter" in result.error


def test_cut_off_replies_count_against_the_budget_only_in_a_row(run_dir):
    cut = ModelResponse(content="It is", finish_reason="length")
    script = [cut, call("add", a=1, b=1)] * 4 + ["done"]
    result = Agent(ScriptedLLM(script), tools=[add], max_retries=2, run_dir=run_dir).run_sync("t")
    assert (result.status, result.answer) == ("completed", "done")
    result = Agent(ScriptedLLM([cut, cut, cut, "done"]), max_retries=2, run_dir=run_dir).run_sync("t")
    assert result.status == "failed" and "cut off" in result.error


def test_an_empty_reply_is_no_answer_and_is_asked_again_within_the_budget(run_dir):
    silent = ModelResponse(content="  \n", thinking="Hmm.")  # a model that only thought
    llm = ScriptedLLM([silent, "4"])
    result = Agent(llm, run_dir=run_dir).run_sync("2+2?")
    assert (result.status, result.answer) == ("completed", "4")
    assert "Your reply was empty" in llm.requests[1].messages[-1].content
    result = Agent(ScriptedLLM([silent] * 3), max_retries=2, run_dir=run_dir).run_sync("2+2?")
    assert (result.status, result.error) == ("failed", "the model's reply was empty 3 times")


@pytest.mark.parametrize("hook", ["act", "observe", "plan", "reflect"])
def test_a_hook_that_forgets_to_return_fails_with_a_clear_message(run_dir, hook):
    def forgetful(self, event):
        event.content = event.content.strip()

    Forgetful = type("Forgetful", (Agent,), {hook: forgetful})
    llm = ScriptedLLM(["plan", call("add", a=1, b=1), "reflection", "2", "2"])
    agent = Forgetful(
        llm, tools=[add], strategy="plan-act-reflect", reflect_before_answer=True, run_dir=run_dir
    )
    result = agent.run_sync("1+1")
    assert result.status == "failed"
    assert f"Forgetful.{hook}() must return the" in result.error and "not NoneType" in result.error


def test_tool_error_class_shows_plain_message(run_dir):
    @tool
    def lookup(key: str) -> str:
        """Look up a key."""
        raise ToolError(f"no entry named {key!r}")

    llm = ScriptedLLM([call("lookup", key="zz"), "unknown"])
    result = Agent(llm, tools=[lookup], run_dir=run_dir).run_sync("find zz")
    error = next(e for e in result.events if e.type == "tool_result")
    assert error.content == "Error: no entry named 'zz'"


@pytest.mark.parametrize("blocking", [True, False])
def test_a_tool_that_exits_or_interrupts_ends_its_call_or_the_run_not_the_program(run_dir, blocking):
    import argparse

    @tool(blocking=blocking)
    def cli(args: str) -> str:
        """Run a command-line program in process."""
        parser = argparse.ArgumentParser(prog="cli")
        parser.add_argument("--n", type=int)
        return str(parser.parse_args(args.split()).n)  # sys.exit(2) on a bad --n

    @tool(blocking=blocking)
    def wait() -> str:
        """Wait for the user."""
        raise KeyboardInterrupt

    llm = ScriptedLLM([call("cli", args="--n x"), call("cli", args="--n 3"), call("wait"), "unreached"])
    result = Agent(llm, tools=[cli, wait], run_dir=run_dir).run_sync("go")
    results = [e.content for e in result.events if e.type == "tool_result"]
    assert results == ["Tool 'cli' tried to exit the program (SystemExit: 2); it did not finish.", "3"]
    assert (result.status, result.error) == ("cancelled", "the tool 'wait' raised KeyboardInterrupt")
    assert read_events(result.log_path)[-1].type == "run_finished"


def test_class_based_tool_keeps_state(run_dir):
    class Counter(Tool):
        name = "count"
        description = "Add `step` to a counter."
        effects = {"writes"}

        class Args(BaseModel):
            step: int = 1

        def __init__(self):
            self.value = 0

        async def run(self, args):
            self.value += args.step
            return {"value": self.value}

    counter = Counter()
    llm = ScriptedLLM([call("count", step=2), call("count"), "3"])
    result = Agent(llm, tools=[counter], run_dir=run_dir).run_sync("count")
    assert result.ok and counter.value == 3
    assert [e.content for e in result.events if e.type == "tool_result"] == ['{"value": 2}', '{"value": 3}']
    assert counter.read_only is False and counter.safe_to_rerun is False  # writes: not re-run on resume


def test_subclass_with_method_tools_and_class_settings(run_dir):
    class Shop(Agent):
        name = "shop"
        system_prompt = "You run a shop."
        strategy = "react"
        effort = "low"

        def __init__(self, model, **kw):
            self.stock = {"apple": 3}
            super().__init__(model, **kw)

        @tool
        def stock_of(self, item: str) -> int:
            """How many of an item are in stock."""
            return self.stock.get(item, 0)

    llm = ScriptedLLM([call("stock_of", item="apple"), "3 apples"])
    result = Shop(llm, run_dir=run_dir).run_sync("apples?")
    assert result.ok
    assert next(e for e in result.events if e.type == "tool_result").content == "3"
    started = result.events[0]
    assert started.agent == "shop" and started.effort == "low" and started.system_prompt == "You run a shop."
    assert llm.requests[0].messages[0].content == "You run a shop."


def test_tool_schema_from_signature_and_docstring():
    schema = add.schema()["function"]
    assert schema["name"] == "add" and schema["description"] == "Add two integers."
    props = schema["parameters"]["properties"]
    assert props["a"] == {"description": "The first number.", "title": "A", "type": "integer"}
    assert schema["parameters"]["required"] == ["a", "b"]
    assert add(2, 3) == 5  # still callable directly


def test_oversized_tool_output_is_capped(run_dir):
    @tool
    def big() -> str:
        """A huge output."""
        return "HEAD" + "x" * 100_000 + "TAIL"

    @tool
    def fails() -> str:
        """A huge error."""
        raise ValueError("v" * 300_000)

    llm = ScriptedLLM([call("big"), call("fails"), "ok"])
    result = Agent(llm, tools=[big, fails], run_dir=run_dir).run_sync("big")
    output, error = [e.content for e in result.events if e.type == "tool_result"]
    assert len(output) < 21_000 and "characters cut here" in output
    assert output.startswith("HEAD") and output.endswith("TAIL")  # the end of an output often matters most
    assert len(error) < 21_000 and "ValueError" in error


def test_a_tool_result_with_undecodable_bytes_reaches_the_model_and_the_log(run_dir):
    @tool
    def legacy() -> str:
        """Text decoded the way the files tools and os.listdir keep odd bytes."""
        return b"caf\xe9 ok".decode("utf-8", "surrogateescape")

    result = Agent(ScriptedLLM([call("legacy"), "ok"]), tools=[legacy], run_dir=run_dir).run_sync("read")
    assert result.ok
    content = next(e for e in result.events if e.type == "tool_result").content
    assert content == "caf\\xe9 ok"
    assert next(e for e in read_events(result.log_path) if e.type == "tool_result").content == content


def test_extra_model_call_fails_loudly(run_dir):
    llm = ScriptedLLM([call("add", a=1, b=1)])
    result = Agent(llm, tools=[add], run_dir=run_dir).run_sync("add")
    assert result.status == "failed"
    assert "ScriptedLLM: call 2 but the script has 1 turns" in result.error
    assert result.events[-2].type == "error" and result.events[-2].fatal


def test_events_serialise_to_json_lines(run_dir):
    result = Agent(ScriptedLLM(["hi"]), run_dir=run_dir).run_sync("hello")
    for event in result.events:
        data = json.loads(event.model_dump_json())
        assert data["type"] == event.type and data["run_id"] == result.run_id


def test_subclass_hooks_change_one_decision_each(run_dir):
    from agent.events import ModelResponse, Plan, Reflection, ToolResult

    class Careful(Agent):
        strategy = "plan-act-reflect"

        def plan(self, plan: Plan) -> Plan:
            return plan.model_copy(update={"content": plan.content + "\n3. double-check"})

        async def act(self, response: ModelResponse) -> ModelResponse:
            # never let the model add more than 100
            calls = [c for c in response.tool_calls if (c.arguments or {}).get("b", 0) <= 100]
            return response.model_copy(update={"tool_calls": calls})

        def observe(self, result: ToolResult) -> ToolResult:
            return result.model_copy(update={"content": f"result={result.content}"})

        def reflect(self, reflection: Reflection) -> Reflection:
            return reflection.model_copy(update={"content": reflection.content.upper()})

        def should_stop(self, state):
            return "enough additions" if state.step >= 2 else None

    llm = ScriptedLLM(
        [
            "1. add\n2. answer",
            call("add", a=1, b=1000) + call("add", a=1, b=2),
            call("nope"),
            "the tool did not exist",
            call("add", a=2, b=2),
            "unreached",
        ]
    )
    result = Careful(llm, tools=[add], run_dir=run_dir, replan_every=0).run_sync("add")
    assert result.status == "stopped" and result.error == "enough additions"
    plan = next(e for e in result.events if e.type == "plan")
    assert plan.content.endswith("3. double-check")
    outputs = [e.content for e in result.events if e.type == "tool_result" and not e.is_error]
    assert outputs == ["result=3"]  # the b=1000 call was dropped by act()
    reflection = next(e for e in result.events if e.type == "reflection")
    assert reflection.content == "THE TOOL DID NOT EXIST"


def test_tool_context_lets_a_tool_emit_guarded_events(run_dir):
    from agent import Decision
    from agent.events import MemoryWrite
    from agent.tool import tool_context

    @tool(effects={"writes"})
    async def remember(text: str) -> str:
        """Remember a fact."""
        ctx = tool_context()
        decision = await ctx.emit(MemoryWrite(text=text, step=ctx.step))
        return "refused" if decision.action == "block" else f"saved in run {ctx.run_id}"

    async def guard(event):
        if isinstance(event, MemoryWrite) and "password" in event.text:
            return Decision.block("no secrets in memory")
        return None

    llm = ScriptedLLM(
        [call("remember", text="the sky is blue"), call("remember", text="password=hunter2"), "ok"]
    )
    result = Agent(llm, tools=[remember], guards=[guard], run_dir=run_dir).run_sync("remember")
    outputs = [e.content for e in result.events if e.type == "tool_result"]
    assert outputs == [f"saved in run {result.run_id}", "refused"]
    writes = [e.text for e in result.events if e.type == "memory_write"]
    assert writes == ["the sky is blue"]


def test_a_tool_class_without_run_is_refused_when_made():
    class Broken(Tool):
        name = "broken"

        class Args(BaseModel):
            x: int

    with pytest.raises(TypeError, match="abstract method"):
        Broken()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_on_event_that_raises_is_logged_and_the_run_ends_once(run_dir, caplog, kind):
    seen: list[str] = []

    def look(event) -> None:
        seen.append(event.type)
        raise ValueError("observer bug")

    class Watching(Agent):
        if kind == "sync":

            def on_event(self, event) -> None:
                look(event)

        else:

            async def on_event(self, event) -> None:
                look(event)

    llm = ScriptedLLM([call("add", a=1, b=2), "3"])
    with caplog.at_level("ERROR", logger="agent"):
        result = Watching(llm, tools=[add], run_dir=run_dir).run_sync("add")
    assert result.ok and result.answer == "3"
    assert [t for t in seen if t != "model_delta"] == [
        e.type for e in result.events
    ]  # every event, each once
    assert "model_delta" in seen  # the live stream too
    assert [e.type for e in result.events].count("run_finished") == 1
    assert "Watching.on_event raised on a run_finished event" in caplog.text
    assert "observer bug" in caplog.text


def test_a_log_that_fails_while_recording_a_fault_still_ends_the_run_failed(run_dir):
    class FullDisk:
        def __call__(self, event) -> None:
            if event.type in ("tool_call", "error", "run_finished"):
                raise OSError(28, "No space left on device")

    class Agent2(Agent):
        def _wire(self, run, log_path=None):
            run = super()._wire(run, log_path)
            run.bus.subscribe(FullDisk())
            return run

    result = Agent2(ScriptedLLM([call("add", a=1, b=2)]), tools=[add], run_dir=run_dir).run_sync("add")
    assert result.status == "failed"
    assert "No space left on device" in result.error


def test_a_reply_cut_off_at_the_output_limit_is_asked_again_not_taken_as_the_answer(run_dir):
    from agent.events import ModelResponse
    from agent.loop import CUT_OFF_PROMPT

    cut = ModelResponse(content="The answer is", finish_reason="length")
    llm = ScriptedLLM([cut, "The answer is 42."])
    result = Agent(llm, run_dir=run_dir).run_sync("what is it?")
    assert result.ok and result.answer == "The answer is 42."
    assert [e.reason for e in result.events if e.type == "feedback"] == ["cut_off"]
    assert llm.requests[1].messages[-1].content == CUT_OFF_PROMPT

    always = Agent(ScriptedLLM([cut] * 3), run_dir=run_dir, max_retries=2).run_sync("what is it?")
    assert always.status == "failed" and "cut off at its output limit 3 times" in always.error


def test_a_reply_stopped_by_the_servers_content_filter_fails_the_run(run_dir):
    from agent.events import ModelResponse

    llm = ScriptedLLM([ModelResponse(content="", finish_reason="content_filter")])
    result = Agent(llm, run_dir=run_dir).run_sync("x")
    assert result.status == "failed" and "content filter" in result.error


def test_cancel_during_a_long_reply_stops_it_at_the_next_token(run_dir):
    import threading
    import time

    from agent.events import ModelDelta, ModelResponse

    closed = []

    class Slow:
        name = "slow"

        async def stream(self, request):
            try:
                for _ in range(500):  # about 5 s of tokens
                    await asyncio.sleep(0.01)
                    yield ModelDelta(content="word ")
                yield ModelResponse(content="word " * 500)
            finally:
                closed.append(True)

    agent = Agent(Slow(), run_dir=run_dir)
    threading.Timer(0.3, agent.cancel).start()
    started = time.monotonic()
    result = agent.run_sync("talk")
    assert result.status == "cancelled"
    assert time.monotonic() - started < 2.0
    assert closed == [True]  # the reply's stream (a connection, on a server) was closed at once
    assert not [e for e in result.events if e.type == "final_answer"]
    (cut,) = [e for e in result.events if e.type == "model_response"]  # what was shown, kept
    assert cut.finish_reason == "cancelled" and cut.content.startswith("word word ")


def test_turns_are_the_same_only_with_the_same_json_arguments():
    from agent.loop import _same_turn

    one = (("f", {"a": 1}),)
    assert _same_turn(one, (("f", {"a": 1}),))
    assert not _same_turn(one, (("f", {"a": True}),))  # equal in Python, not as JSON
    assert not _same_turn(one, (("f", {"a": 1}), ("f", {"a": 1})))


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"max_steps": "5"}, "max_steps must be a whole number"),
        ({"max_steps": 0}, "max_steps must be a whole number of at least 1"),
        ({"loop_repeats": 1}, "loop_repeats=1 would call every turn a loop"),
        ({"max_tokens": 2.5}, "max_tokens must be"),
        ({"max_seconds": -1}, "max_seconds must be a positive number"),
        ({"reflect_before_answer": "yes"}, "reflect_before_answer must be True or False"),
        ({"approver": True}, "approver must be a function"),
        ({"guards": lambda event: None}, "guards must be a list"),
        ({"context_window": "8k"}, "context_window must be a number of tokens"),
        ({"context_window": True}, "context_window must be a number of tokens"),
    ],
)
def test_settings_a_typo_would_break_mid_run_are_refused_when_the_agent_is_made(run_dir, setting, match):
    from agent import AgentError

    with pytest.raises(AgentError, match=match):
        Agent(ScriptedLLM([]), run_dir=run_dir, **setting)


def test_loop_detection_can_be_turned_off(run_dir):
    same = call("add", a=1, b=1)
    result = Agent(ScriptedLLM([same] * 4 + ["2"]), tools=[add], loop_repeats=0, run_dir=run_dir).run_sync(
        "1+1"
    )
    assert result.ok and not [e for e in result.events if e.type == "feedback"]


def test_a_loop_replan_is_not_followed_by_a_periodic_one(run_dir):
    a, b = call("add", a=1, b=1), call("add", a=2, b=2)
    llm = ScriptedLLM(["plan", a, b, a, b, "I alternate.", "new plan", "4"])
    # Step 5 would be a periodic re-plan; the loop's re-plan came just before it.
    agent = Agent(llm, tools=[add], strategy="plan-act-reflect", replan_every=4, run_dir=run_dir)
    result = agent.run_sync("add")
    assert result.ok and result.answer == "4"
    assert [e.reason for e in result.events if e.type == "plan"] == ["initial", "stuck"]


def test_an_async_system_prompt_is_awaited(run_dir):
    class Dated(Agent):
        async def render_system_prompt(self):
            await asyncio.sleep(0)
            return "Today is Sunday."

    llm = ScriptedLLM(["ok"])
    assert Dated(llm, run_dir=run_dir).run_sync("day?").ok
    assert llm.requests[0].messages[0].content == "Today is Sunday."


def test_an_act_hook_that_drops_every_call_is_no_answer(run_dir):
    @tool(effects={"writes"})
    def delete_all(path: str) -> str:
        """Delete everything under a path."""
        raise AssertionError("must not run")

    class Careful(Agent):
        def act(self, response):
            kept = [c for c in response.tool_calls if c.name != "delete_all"]
            return response.model_copy(update={"tool_calls": kept})

    llm = ScriptedLLM(["Let me clean up first. " + call("delete_all", path="/"), "Nothing was deleted."])
    result = Careful(llm, tools=[delete_all], run_dir=run_dir).run_sync("tidy up")
    assert result.ok and result.answer == "Nothing was deleted."
    note = next(e for e in result.events if e.type == "feedback")
    assert note.reason == "held_back" and "delete_all was not run" in note.content
    assert "delete_all was not run" in llm.requests[1].messages[-1].content

    # A crash before the note: resumed, the reply is still no answer.
    lines = open(result.log_path).read().splitlines()
    cut = next(i for i, line in enumerate(lines) if '"type":"feedback"' in line)
    with open(result.log_path, "w") as f:
        f.write("\n".join(lines[:cut]) + "\n")
    again = Careful(ScriptedLLM(["Nothing was deleted."]), tools=[delete_all], run_dir=run_dir)
    resumed = again.resume_sync(result.run_id)
    assert resumed.ok and resumed.answer == "Nothing was deleted."

    # A hook that empties the list in place is noticed too.
    class Clearing(Agent):
        def act(self, response):
            response.tool_calls.clear()
            return response

    llm = ScriptedLLM(["I will delete. " + call("delete_all", path="/"), "Held back."])
    assert Clearing(llm, tools=[delete_all], run_dir=run_dir).run_sync("tidy up").answer == "Held back."


def test_generator_tools_are_refused_and_dataclass_results_are_json(run_dir):
    import dataclasses

    with pytest.raises(TypeError, match="is a generator"):

        @tool
        async def numbers(n: int):
            """Count."""
            yield n

    with pytest.raises(TypeError, match="is a generator"):

        class Numbers(Tool):
            name = "numbers"

            class Args(BaseModel):
                n: int

            def run(self, args):
                yield args.n

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    @tool
    def where() -> list:
        """Where things are."""
        return [Point(1, 2)]

    result = Agent(ScriptedLLM([call("where"), "ok"]), tools=[where], run_dir=run_dir).run_sync("where?")
    assert [e.content for e in result.events if e.type == "tool_result"] == ['[{"x": 1, "y": 2}]']


def test_answer_schemas_made_on_the_fly_do_not_pile_up(run_dir):
    from pydantic import create_model

    from agent import loop

    for i in range(loop._FINAL_TOOLS_KEPT + 20):
        schema = create_model(f"Answer{i}", value=(int, ...))
        Agent(ScriptedLLM([]), answer_schema=schema, run_dir=run_dir, guards=None)._new_run()
    assert len(loop._final_tools) <= loop._FINAL_TOOLS_KEPT


def test_a_call_cut_off_at_the_output_limit_is_not_run(run_dir):
    pushed = []

    @tool(effects={"writes"})
    def git_push(branch: str, force: bool = False, dry_run: bool = True) -> str:
        """Push a branch."""
        pushed.append((branch, force, dry_run))
        return "pushed"

    # The server (or a parser closing brackets) read the cut call as complete; dry_run was lost.
    cut = ModelResponse(
        tool_calls=[ToolCallRequest(name="git_push", arguments={"branch": "main", "force": True})],
        finish_reason="length",
    )
    llm = ScriptedLLM([cut, call("git_push", branch="main", force=True, dry_run=True), "done"])
    result = Agent(llm, tools=[git_push], run_dir=run_dir).run_sync("push")
    assert result.ok and pushed == [("main", True, True)]
    first = next(e for e in result.events if e.type == "tool_result")
    assert first.error_kind == "invalid_json" and "output limit" in first.content


def test_a_call_cut_off_mid_json_is_told_as_cut_off_not_as_bad_json(run_dir):
    @tool(blocking=False)
    def list_files(path: str) -> str:
        """List files."""
        return "a.txt"

    # A server without a parser that closes brackets: the arguments are not JSON at all.
    cut = ModelResponse(
        tool_calls=[ToolCallRequest(name="list_files", arguments=None, raw_arguments='{"path": "sc',
                                    parse_error="Unterminated string starting at: line 1 column 10")],
        finish_reason="length",
    )  # fmt: skip
    result = Agent(ScriptedLLM([cut] * 4), tools=[list_files], run_dir=run_dir).run_sync("list")
    told = [e.content for e in result.events if e.type == "tool_result"]
    assert told[0] == "Your call to list_files was cut off at the output limit and was not run. Make it again, shorter."
    # The run's reason names the limit (it said "not valid JSON (Unterminated string ...)").
    assert result.status == "failed" and "output limit" in result.error and "Unterminated" not in result.error


def test_a_fault_that_fails_the_run_leaves_its_traceback_in_the_debug_log(run_dir, caplog):
    def helper(response):
        return response.no_such_field  # a bug in the agent's own hook

    class Buggy(Agent):
        def act(self, response):
            return helper(response)

    with caplog.at_level(logging.DEBUG, logger="agent"):
        result = Buggy(ScriptedLLM(["hi"]), run_dir=run_dir).run_sync("go")
    assert result.status == "failed" and "no_such_field" in result.error
    record = next(r for r in caplog.records if r.name == "agent" and r.exc_info)
    assert record.levelno == logging.DEBUG and "in helper" in caplog.text  # the frame of the bug
