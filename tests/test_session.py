"""Sessions: a conversation is one run that each message continues."""

import asyncio

import pytest
from helpers import call

from agent import Agent, AgentError, read_events, tool
from agent.llm import ScriptedLLM


@tool
def add(a: int, b: int) -> int:
    """Add."""
    return a + b


def test_messages_continue_one_run_with_history(run_dir):
    llm = ScriptedLLM([call("add", a=2, b=3), "5", "You asked about 2 + 3.", call("add", a=5, b=5), "10"])
    agent = Agent(llm, tools=[add], run_dir=run_dir)
    chat = agent.session()
    first = chat.send_sync("2+3?")
    assert first.ok and first.answer == "5"
    second = chat.send_sync("what did I ask?")
    assert second.ok and second.answer == "You asked about 2 + 3." and second.run_id == first.run_id
    # the model saw the earlier turn
    roles = [m.role for m in llm.requests[2].messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    third = chat.send_sync("add 5 and 5")
    assert third.answer == "10"
    events = read_events(chat.log_path)
    assert [e.content for e in events if e.type == "user_message"] == [
        "2+3?",
        "what did I ask?",
        "add 5 and 5",
    ]
    assert [e.status for e in events if e.type == "run_finished"] == ["completed"] * 3


def test_a_saved_session_resumes_from_its_log(run_dir):
    agent = Agent(ScriptedLLM(["Nice to meet you, Ada."]), run_dir=run_dir)
    first = agent.session()
    first.send_sync("I am Ada.")
    llm = ScriptedLLM(["Your name is Ada."])
    later = Agent(llm, run_dir=run_dir).session("last")
    result = later.send_sync("What is my name?")
    assert result.answer == "Your name is Ada." and later.run_id == first.run_id
    assert [m.content for m in llm.requests[0].messages if m.role == "user"] == [
        "I am Ada.",
        "What is my name?",
    ]


def test_step_budget_is_per_turn(run_dir):
    llm = ScriptedLLM([call("add", a=1, b=1), "2", call("add", a=2, b=2), "4"])
    chat = Agent(llm, tools=[add], max_steps=2, run_dir=run_dir).session()
    assert chat.send_sync("1+1").ok
    assert chat.send_sync("2+2").ok


def test_token_budget_is_per_turn_and_a_turn_after_it_is_answered(run_dir):
    # ScriptedLLM counts a text reply as len(text) // 4 completion tokens: the call
    # crosses the budget of 5, so it is not run; a next turn gets the budget anew.
    llm = ScriptedLLM([call("add", a=2, b=3), "Fine."])
    chat = Agent(llm, tools=[add], max_tokens=5, run_dir=run_dir).session()
    assert chat.send_sync("add a lot").status == "max_tokens"
    second = chat.send_sync("now briefly")
    assert second.ok and second.answer == "Fine."
    assert llm.remaining == 0
    events = read_events(chat.log_path)
    assert [e.content for e in events if e.type == "user_message"] == ["add a lot", "now briefly"]
    assert [e.status for e in events if e.type == "run_finished"] == ["max_tokens", "completed"]
    kinds = [e.type for e in events]
    assert kinds.index("run_finished") < kinds.index("tool_call")  # not run in the turn the budget ended


def test_an_answer_that_crosses_the_token_budget_is_taken_and_a_next_call_is_not_made(run_dir):
    answer = "a long answer of forty characters, more!"
    llm = ScriptedLLM([answer])
    assert Agent(llm, max_tokens=5, run_dir=run_dir).run_sync("say a lot").answer == answer
    # ... through the final_answer call too, and with no reflection the budget cannot pay for
    llm = ScriptedLLM([call("final_answer", answer=answer)])
    agent = Agent(llm, max_tokens=5, reflect_before_answer=True, run_dir=run_dir)
    assert agent.run_sync("say a lot").answer == answer and len(llm.requests) == 1
    # A reply cut at the output limit is no answer, and asking for a shorter one would cross the budget.
    cut = ScriptedLLM([{"content": answer, "finish_reason": "length", "usage": {"completion_tokens": 10}}])
    result = Agent(cut, max_tokens=5, run_dir=run_dir).run_sync("say a lot")
    assert result.status == "max_tokens" and len(cut.requests) == 1


def test_a_session_another_writer_holds_is_refused(run_dir):
    import fcntl

    import pytest

    from agent import AgentError

    chat = Agent(ScriptedLLM(["Hello."]), run_dir=run_dir).session()
    chat.send_sync("Hi.")
    with open(chat.log_path, "a") as other:  # another process resumed the same session first
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        with pytest.raises(AgentError, match="being written by another process"):
            Agent(ScriptedLLM(["Again."]), run_dir=run_dir).session(chat.run_id)
    later = Agent(ScriptedLLM(["Again."]), run_dir=run_dir).session(chat.run_id)  # free once it is let go
    assert later.send_sync("Hi again.").answer == "Again."


def test_a_session_whose_log_could_not_be_written_refuses_the_next_turn(tmp_path):
    import os

    import pytest

    from agent import AgentError

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    agent = Agent(ScriptedLLM(["first", "second"]), run_dir=tmp_path, guards=None)
    chat = agent.session()
    first = chat.send_sync("hello")
    assert first.ok
    log = first.log_path
    os.replace(log, log + ".kept")
    os.symlink("/dev/full", log)  # the disk fills up between two turns
    second = chat.send_sync("again")
    assert second.status == "failed" and "No space left on device" in second.error
    with pytest.raises(AgentError, match="cannot go on unrecorded"):
        chat.send_sync("and again")


def test_each_turns_result_counts_that_turn_alone(run_dir):
    llm = ScriptedLLM([call("add", a=2, b=3), "5", "hello", call("add", a=1, b=1), "2"])
    chat = Agent(llm, tools=[add], run_dir=run_dir).session()
    first, second, third = (chat.send_sync(m) for m in ("2+3?", "hi", "1+1?"))
    assert (first.steps, second.steps, third.steps) == (2, 1, 2)
    assert second.usage.completion_tokens == len("hello") // 4
    assert [e.content for e in second.events if e.type == "user_message"] == ["hi"]
    assert [e.content for e in third.events if e.type == "user_message"] == ["1+1?"]
    assert len(first.events) + len(second.events) + len(third.events) == len(chat.history)
    assert first.events[-1].type == "run_finished"  # a later turn leaves an earlier result as it was


def test_a_session_holds_its_log_between_messages_until_closed(run_dir):
    import pytest

    from agent import AgentError

    chat = Agent(ScriptedLLM(["Hello.", "Again."]), run_dir=run_dir).session().hold()
    chat.send_sync("Hi.")
    # Another chat on the same session, while this one may still go on, is refused.
    with pytest.raises(AgentError, match="being written by another process"):
        Agent(ScriptedLLM(["Mixed in."]), run_dir=run_dir).session(chat.run_id)
    assert chat.send_sync("Still there?").answer == "Again."
    chat.close()
    other = Agent(ScriptedLLM(["Taken up."]), run_dir=run_dir).session(chat.run_id)
    assert other.send_sync("Me now.").answer == "Taken up."


async def test_messages_sent_at_once_are_answered_one_after_the_other(run_dir):
    session = Agent(ScriptedLLM(["one", "two", "three", "four"], delay=0.02), run_dir=run_dir).session()
    first, second = await asyncio.gather(session.asend("A"), session.asend("B"))  # a double submit
    assert (first.answer, second.answer) == ("one", "two")
    assert [e.content for e in second.events if e.type == "user_message"] == ["B"]  # each turn its own
    async for event in session.send("C"):  # a stream left part way: the next message waits for it to close
        if event.type == "model_request":
            break
    assert (await session.asend("D")).answer == "three"
    with pytest.raises(AgentError, match="from inside it"):  # one that would wait for itself is refused
        async for _ in session.send("E"):
            await session.asend("F")
    user_messages = [e.content for e in session.history if e.type == "user_message"]
    assert user_messages == ["A", "B", "C", "D", "E"]


async def test_a_message_waiting_its_turn_is_answered_before_the_next_one_of_a_busy_sender(run_dir):
    llm = ScriptedLLM([f"r{i}" for i in range(5)], delay=0.5)
    session = Agent(llm, run_dir=run_dir).session()
    answered = []

    async def chatty():
        for i in range(3):
            await session.asend(f"A{i}")
            answered.append(f"A{i}")

    async def once():
        while not llm.requests:  # sent while A0 is being answered (its reply takes 0.5 s)
            await asyncio.sleep(0.005)
        await session.asend("B")
        answered.append("B")

    await asyncio.gather(chatty(), once())
    assert answered == ["A0", "B", "A1", "A2"]


async def test_cancel_reaches_a_message_sent_but_not_yet_started(run_dir):
    agent = Agent(ScriptedLLM(["1", "2", "3"]), run_dir=run_dir, guards=None)
    session = agent.session()
    await session.asend("a")
    waiting = asyncio.create_task(session.asend("b"))  # asked for, not started
    agent.cancel()
    assert (await waiting).status == "cancelled"  # it ran to "completed", as arun's did not
    assert (await session.asend("c")).status == "completed"  # a message after the cancel runs
    waiting = asyncio.create_task(session.asend("d"))
    session.cancel()  # the session's own cancel, with no turn running: it was lost
    assert (await waiting).status == "cancelled"
