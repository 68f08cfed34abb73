"""Resume after a crash: a killed process, its log, and a second process."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent import Agent, AgentError, Tool, read_events, tool
from agent.events import ModelResponse
from agent.llm import ScriptedLLM
from agent.testing import call
from agent.types import ToolCallRequest

DRIVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agent import Agent, tool
    from agent.llm import ScriptedLLM

    work = Path(sys.argv[1])

    @tool(effects={"writes"})
    def charge(amount: int) -> str:
        "Charge a card (a side effect that must never repeat)."
        with open(work / "charges.txt", "a") as f:
            f.write(f"{amount}\\n")
        return f"charged {amount}"

    @tool(effects={"writes"}, timeout=None)
    def ship(order: str) -> str:
        "Ship an order; slow, and not safe to repeat."
        with open(work / "shipments.txt", "a") as f:
            f.write(order + "\\n")
        time.sleep(60)
        return "shipped"

    @tool
    def status(order: str) -> str:
        "Read an order's status (safe to repeat)."
        with open(work / "status_reads.txt", "a") as f:
            f.write(order + "\\n")
        return "pending"

    script = [
        '<tool_call>{"name": "charge", "arguments": {"amount": 30}}</tool_call>',
        '<tool_call>{"name": "status", "arguments": {"order": "A1"}}</tool_call>'
        '<tool_call>{"name": "ship", "arguments": {"order": "A1"}}</tool_call>',
    ]
    agent = Agent(ScriptedLLM(script), tools=[charge, ship, status], run_dir=work / "runs")
    agent.run_sync("charge and ship order A1")
    """
)


def _tools(work: Path):
    @tool(effects={"writes"})
    def charge(amount: int) -> str:
        """Charge a card."""
        raise AssertionError("charge must not run again")

    @tool(effects={"writes"}, timeout=None)
    def ship(order: str) -> str:
        """Ship an order."""
        raise AssertionError("ship must not run again")

    @tool
    def status(order: str) -> str:
        """Read an order's status."""
        with open(work / "status_reads.txt", "a") as f:
            f.write(order + "\n")
        return "pending"

    return [charge, ship, status]


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _log_has_call(runs: Path, name: str) -> bool:
    for path in runs.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if '"type":"tool_call"' in line and f'"name":"{name}"' in line:
                return True
    return False


def test_resume_after_kill_does_not_repeat_side_effects(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, str(driver), str(tmp_path)], env=env)
    try:
        _wait_for(lambda: (tmp_path / "shipments.txt").exists() and _log_has_call(runs, "ship"))
    finally:
        proc.kill()
        proc.wait()
    log = next(runs.glob("*.jsonl"))
    before = read_events(log)
    assert before[-1].type == "tool_call" and before[-1].name == "ship"

    llm = ScriptedLLM(["Charged 30 and shipped A1 (check shipment status)."])
    agent = Agent(llm, tools=_tools(tmp_path), run_dir=runs)
    result = agent.resume_sync(before[0].run_id)

    assert result.status == "completed" and result.run_id == before[0].run_id
    assert (tmp_path / "charges.txt").read_text() == "30\n"
    assert (tmp_path / "shipments.txt").read_text() == "A1\n"
    # the read-only call in the same turn had finished before the kill: not repeated
    assert (tmp_path / "status_reads.txt").read_text() == "A1\n"
    after = read_events(log)
    seqs = [e.seq for e in after]
    assert seqs == sorted(set(seqs))  # strictly increasing across the crash (deltas are not logged)
    resumed = [e for e in after if e.type == "run_started"]
    assert [e.resumed for e in resumed] == [False, True]
    interrupted = next(e for e in after if e.type == "tool_result" and e.name == "ship")
    assert interrupted.error_kind == "interrupted" and "not safe to repeat" in interrupted.content
    # the resumed model saw the whole history, ending with the interruption notice
    prompt = llm.requests[0].messages
    assert [m.role for m in prompt] == ["system", "user", "assistant", "tool", "assistant", "tool", "tool"]


def test_resume_reruns_an_interrupted_call_that_is_safe_to_repeat(tmp_path):
    runs = tmp_path / "runs"

    @tool(timeout=None, effects={"reads"})
    def lookup(key: str) -> str:
        """Look something up."""
        return f"value of {key}"

    # Simulate a crash between the tool call and its result by cutting the log.
    first = Agent(
        ScriptedLLM(['<tool_call>{"name": "lookup", "arguments": {"key": "k"}}</tool_call>', "x"]),
        tools=[lookup],
        run_dir=runs,
    )
    done = first.run_sync("look up k")
    lines = Path(done.log_path).read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if '"type":"tool_result"' in line)
    Path(done.log_path).write_text("\n".join(lines[:cut]) + '\n{"type": "tool_res')  # torn last line

    agent = Agent(ScriptedLLM(["the value of k"]), tools=[lookup], run_dir=runs)
    result = agent.resume_sync(done.run_id)
    assert result.ok and result.answer == "the value of k"
    rerun = [e for e in read_events(done.log_path) if e.type == "tool_result"]
    assert [r.content for r in rerun] == ["value of k"]


def test_resume_a_completed_run_is_refused(tmp_path):
    runs = tmp_path / "runs"
    done = Agent(ScriptedLLM(["hi"]), run_dir=runs).run_sync("hello")
    with pytest.raises(AgentError, match="already ended"):
        Agent(ScriptedLLM([]), run_dir=runs).resume_sync(done.run_id)


def test_resume_after_step_budget_continues(tmp_path):
    runs = tmp_path / "runs"

    @tool
    def tick(n: int) -> str:
        """Tick."""
        return str(n)

    calls = [json.dumps({"name": "tick", "arguments": {"n": i}}) for i in range(3)]
    script = [f"<tool_call>{c}</tool_call>" for c in calls]
    first = Agent(ScriptedLLM(script[:2]), tools=[tick], run_dir=runs, max_steps=2).run_sync("tick")
    assert first.status == "max_steps"
    second = Agent(ScriptedLLM([script[2], "ticked thrice"]), tools=[tick], run_dir=runs, max_steps=5)
    result = second.resume_sync("last")
    assert result.ok and result.steps == 4


def test_ctrl_c_in_run_sync_leaves_a_finished_log(tmp_path):
    driver = tmp_path / "sigint.py"
    driver.write_text(
        textwrap.dedent(
            """
            import sys, time
            from agent import Agent, tool
            from agent.llm import ScriptedLLM

            @tool(timeout=None)
            def wait() -> str:
                "Wait."
                print("waiting", flush=True)
                time.sleep(30)
                return "x"

            agent = Agent(ScriptedLLM(['<tool_call>{"name": "wait", "arguments": {}}</tool_call>']), tools=[wait], run_dir=sys.argv[1])
            result = agent.run_sync("wait")
            print("status", result.status, flush=True)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(tmp_path / "runs")], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "waiting"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert "status cancelled" in out
    events = read_events(next((tmp_path / "runs").glob("*.jsonl")))
    assert events[-1].type == "run_finished" and events[-1].status == "cancelled"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_log_holding_unicode_line_separators_reads_back_and_resumes(tmp_path, separator):
    # JSON leaves these unescaped in strings; str.splitlines() would cut an event in two.
    runs = tmp_path / "runs"

    @tool
    def fetch() -> str:
        """Fetch a text."""
        return f"first{separator}second"

    first = Agent(ScriptedLLM([_call("fetch")]), tools=[fetch], run_dir=runs, max_steps=1).run_sync("go")
    assert first.status == "max_steps"
    events = read_events(first.log_path)
    assert [e.type for e in events] == [e.type for e in first.events if e.type != "model_delta"]
    assert next(e for e in events if e.type == "tool_result").content == f"first{separator}second"
    second = Agent(ScriptedLLM(["done"]), tools=[fetch], run_dir=runs).resume_sync(first.run_id)
    assert second.ok and second.answer == "done"


def _call(name: str, **arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def _cut_last_line_in_half(path) -> None:
    data = Path(path).read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    Path(path).write_bytes(data[: start + (len(data) - start) // 2])


def test_resume_after_a_crash_between_the_answer_and_the_end_keeps_the_answer(tmp_path):
    runs = tmp_path / "runs"
    done = Agent(ScriptedLLM(["It is 42."]), run_dir=runs).run_sync("what is it?")
    _cut_last_line_in_half(done.log_path)  # run_finished torn: the process died writing it
    assert read_events(done.log_path)[-1].type == "final_answer"
    llm = ScriptedLLM([])
    result = Agent(llm, run_dir=runs).resume_sync(done.run_id)
    assert result.ok and result.answer == "It is 42."
    assert llm.requests == []
    assert [e.status for e in read_events(done.log_path) if e.type == "run_finished"] == ["completed"]


def test_resume_of_a_session_cut_after_a_new_message_answers_that_message(tmp_path):
    runs = tmp_path / "runs"
    chat = Agent(ScriptedLLM(["Hello, Ada."]), run_dir=runs).session()
    chat.send_sync("I am Ada.")
    with open(chat.log_path, "ab") as log:  # the second turn had begun when the process died
        log.write(_resumed_turn_lines(chat))
    llm = ScriptedLLM(["You are Ada."])
    result = Agent(llm, run_dir=runs).resume_sync(chat.run_id)
    assert result.ok and result.answer == "You are Ada."
    assert [m.content for m in llm.requests[0].messages if m.role == "user"] == ["I am Ada.", "Who am I?"]


def _resumed_turn_lines(chat) -> bytes:
    from agent.events import RunStarted, UserMessage

    last = chat.history[-1]
    started = RunStarted(run_id=chat.run_id, seq=last.seq + 1, step=last.step, task="I am Ada.", resumed=True)
    message = UserMessage(run_id=chat.run_id, seq=last.seq + 2, step=last.step, content="Who am I?")
    return (started.model_dump_json() + "\n" + message.model_dump_json() + "\n").encode()


class _CancelAt(Agent):
    """Cancels the run at the n-th request to the model for a purpose and reason."""

    cancel_at: tuple[str, str | None, int] = ("plan", None, 1)

    def on_event(self, event):
        if event.type == "model_request" and (event.purpose, event.reason) == self.cancel_at[:2]:
            self.seen = getattr(self, "seen", 0) + 1
            if self.seen == self.cancel_at[2]:
                self.cancel()


@tool
def boom(x: int) -> int:
    """Fails."""
    raise ValueError("kaboom")


@pytest.mark.parametrize(
    "cancel_at, first, then, asked",
    [
        # cut during the first plan: the resumed run plans first
        (
            ("plan", "initial", 1),
            ["1. plan"],
            ["1. plan", "answer", "Checked.", "answer"],
            ["plan", "act", "reflect", "act"],
        ),
        # cut during the reflection on a failed call: the resumed run reflects
        (
            ("reflect", "error", 1),
            ["1. plan", '<tool_call>{"name": "boom", "arguments": {"x": 1}}</tool_call>', "cut"],
            ["It failed; I will answer directly.", "answer", "Checked.", "answer"],
            ["reflect", "act", "reflect", "act"],
        ),
        # cut after the final reflection, on the answer: the resumed run does not reflect again
        (("act", None, 2), ["1. plan", "answer", "Checked.", "cut"], ["answer"], ["act"]),
    ],
)
def test_a_resumed_run_makes_the_plan_or_reflection_a_cut_interrupted(
    tmp_path, cancel_at, first, then, asked
):
    options = dict(tools=[boom], strategy="plan-act-reflect", reflect_before_answer=True, run_dir=tmp_path)
    agent = _CancelAt(ScriptedLLM(first), **options)
    agent.cancel_at = cancel_at
    result = agent.run_sync("task")
    assert result.status == "cancelled", result.error
    llm = ScriptedLLM(then)
    resumed = Agent(llm, **options).resume_sync(result.run_id)
    assert (resumed.status, resumed.answer) == ("completed", "answer"), resumed.error
    assert [r.purpose for r in llm.requests] == asked and llm.remaining == 0


def _cut_before(log_path: str, event_type: str) -> None:
    """The log as a crash just before the first `event_type` would leave it."""
    lines = Path(log_path).read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if f'"type":"{event_type}"' in line)
    Path(log_path).write_text("\n".join(lines[:cut]) + "\n")


def test_a_tool_class_that_writes_is_not_rerun_on_resume_unless_it_says_so(tmp_path):
    runs = tmp_path / "runs"
    sent: list[str] = []

    class SendEmail(Tool):
        name = "send_email"
        description = "Send an email."
        effects = {"writes", "network"}

        class Args(BaseModel):
            to: str

        def run(self, args: Args) -> str:
            sent.append(args.to)
            return "sent"

    class Resend(SendEmail):
        name = "resend"
        safe_to_rerun = True  # declared: idempotent

    for tool_class in (SendEmail, Resend):
        sent.clear()
        first = Agent(
            ScriptedLLM([call(tool_class.name, to="ada"), "done"]), tools=[tool_class()], run_dir=runs
        )
        done = first.run_sync("mail ada")
        _cut_before(done.log_path, "tool_result")  # the process died inside the call
        result = Agent(ScriptedLLM(["ok"]), tools=[tool_class()], run_dir=runs).resume_sync(done.run_id)
        assert result.ok
        results = [e for e in read_events(done.log_path) if e.type == "tool_result"]
        if tool_class is SendEmail:
            assert SendEmail().safe_to_rerun is False
            assert sent == ["ada"] and results[-1].error_kind == "interrupted"
        else:
            assert Resend().safe_to_rerun is True
            assert sent == ["ada", "ada"] and results[-1].content == "sent"


def test_a_run_that_failed_before_it_started_is_not_resumed(tmp_path):
    runs = tmp_path / "runs"

    class NoPrompt(Agent):
        def render_system_prompt(self):
            return None

    failed = NoPrompt(ScriptedLLM(["x"]), run_dir=runs).run_sync("task")
    assert failed.status == "failed"
    llm = ScriptedLLM(["I have no idea what the task is"])
    with pytest.raises(AgentError, match="never started.*render_system_prompt"):
        Agent(llm, run_dir=runs).resume_sync(failed.run_id)
    assert llm.requests == []


def test_a_typed_answer_recorded_before_a_crash_comes_back_typed(tmp_path):
    runs = tmp_path / "runs"

    class Total(BaseModel):
        total: int

    answer = call("final_answer", total=3)
    done = Agent(ScriptedLLM([answer]), answer_schema=Total, run_dir=runs).run_sync("add")
    _cut_before(done.log_path, "run_finished")
    result = Agent(ScriptedLLM([]), answer_schema=Total, run_dir=runs).resume_sync(done.run_id)
    assert result.ok and result.answer == Total(total=3)


def test_run_ids_sort_by_start_time_and_differ_within_a_second(monkeypatch):
    from agent import runlog

    clock = [1_800_000_000.2]
    monkeypatch.setattr(runlog.time, "time", lambda: clock[0])
    first, second = runlog.new_run_id(), runlog.new_run_id()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(1_800_000_000))
    assert first.startswith(stamp + "-") and second.startswith(stamp + "-") and first != second
    clock[0] += 1  # the next second: a new stamp, not the cached one
    later = runlog.new_run_id()
    assert later[: len(stamp)] == time.strftime("%Y%m%d-%H%M%S", time.localtime(1_800_000_001)) > stamp


def test_calls_that_reuse_an_id_get_their_own_and_resume_finds_the_interrupted_one(tmp_path):
    # Some servers number each reply's calls from call_0: a repeated id paired results with
    # the wrong call, and a resumed run took the interrupted second call for the finished first.
    charged = []

    @tool(effects={"writes"})
    def charge(amount: int) -> str:
        """Charge a card (not safe to repeat)."""
        charged.append(amount)
        return f"charged {amount}"

    def turn(*amounts):
        calls = [ToolCallRequest(id="call_0", name="charge", arguments={"amount": a}) for a in amounts]
        return ModelResponse(tool_calls=calls)

    script = [turn(10), turn(20, 30), "done"]
    result = Agent(ScriptedLLM(script), tools=[charge], run_dir=tmp_path).run_sync("pay")
    assert result.status == "completed" and charged == [10, 20, 30]
    ids = [e.call_id for e in result.events if e.type == "tool_call"]
    assert ids[0] == "call_0" and len(set(ids)) == 3
    assert [e.call_id for e in result.events if e.type == "tool_result"] == ids
    assert script[1].tool_calls[0].id == "call_0"  # the backend's calls are left as they were

    # A crash while the turn's second call ran: its result never reached the log.
    lines = Path(result.log_path).read_text().splitlines()
    cut = [i for i, line in enumerate(lines) if '"type":"tool_result"' in line][2]
    Path(result.log_path).write_text("\n".join(lines[:cut]) + "\n")
    llm = ScriptedLLM(["done"])
    resumed = Agent(llm, tools=[charge], run_dir=tmp_path).resume_sync(result.run_id)
    assert resumed.status == "completed" and charged == [10, 20, 30]  # not charged again
    tool_messages = [m for m in llm.requests[-1].messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages] == ids
    assert "interrupted while 'charge' was running" in tool_messages[-1].content
