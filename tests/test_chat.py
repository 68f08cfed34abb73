"""`agent chat` in a real terminal: tmux runs it, the tests type and read the screen."""

import json
import os
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agent.errors import AgentError
from agent.runlog import read_events
from agent.session import resolve_session, save_session, saved_sessions

ROOT = Path(__file__).resolve().parents[1]
TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(
    TMUX is None,
    reason="tmux is not installed (apt-get install -y tmux); the chat UI tests drive a real terminal",
)


def write_script(path: Path, turns: list) -> Path:
    path.write_text("\n".join(json.dumps(t) for t in turns) + "\n")
    return path


def write_call(path: str, content: str) -> dict:
    return {"tool_calls": [{"name": "write_file", "arguments": {"path": path, "content": content}}]}


def log_events(cwd: Path) -> list:
    """The session's log once its last turn has ended: the answer is on the screen a
    moment before the turn's run_finished is written."""
    logs = sorted((cwd / ".agent" / "runs").glob("*.jsonl"))
    assert len(logs) == 1, logs
    deadline = time.monotonic() + 10
    while True:
        events = read_events(logs[0])
        turns = sum(e.type == "user_message" for e in events)
        if sum(e.type == "run_finished" for e in events) >= turns or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


class Terminal:
    """`agent chat` in a detached tmux session of a fixed size."""

    def __init__(self, cwd: Path, *args: str, width: int = 100, height: int = 40) -> None:
        # A private server on a short socket path (tmux limits its length), removed on close.
        self.socket_dir = tempfile.mkdtemp(prefix="chat-tmux-")
        self.socket = os.path.join(self.socket_dir, "s")
        env = {"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "HF_HUB_OFFLINE": "1"}
        command = shlex.join(
            ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "agent", "chat", *args]
        )
        # Keep the pane after the program ends, so its last words can be read.
        shell = f'cd {shlex.quote(str(cwd))} && {command}; echo "[exited $?]"; sleep 600'
        self.tmux("new-session", "-d", "-s", "chat", "-x", str(width), "-y", str(height), shell)

    def tmux(self, *args: str) -> str:
        out = subprocess.run(
            [TMUX, "-S", self.socket, "-f", "/dev/null", *args], capture_output=True, text=True, timeout=10
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-1000", "-t", "chat")

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "chat", *keys)

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", "chat", "-l", line)
        self.send("Enter")

    def wait_for(self, text: str, count: int = 1, timeout: float = 30.0) -> str:
        """Poll the screen until `text` shows `count` times; fail with the screen.

        The timeout is generous: on a loaded 2-core machine starting `agent chat`
        alone has taken several seconds, and a passing test never waits it out."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if screen.count(text) >= count:
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} did not show {count}x within {timeout} s; the screen:\n{screen}")
            time.sleep(0.05)

    def close(self) -> None:
        subprocess.run([TMUX, "-S", self.socket, "kill-server"], capture_output=True, timeout=10)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


@pytest.fixture
def terminals():
    opened: list[Terminal] = []

    def open_terminal(cwd: Path, *args: str) -> Terminal:
        terminal = Terminal(cwd, *args)
        opened.append(terminal)
        return terminal

    yield open_terminal
    for terminal in opened:
        terminal.close()


@needs_tmux
def test_streamed_markdown_answer_and_effort(tmp_path, terminals):
    script = write_script(
        tmp_path / "script.jsonl",
        [
            "<think>A greeting with a heading and a list.</think># Greetings\n\nThis is **bold**.\n\n- item one\n- item two",
            "Second answer at high effort.",
        ],
    )
    term = terminals(tmp_path, "--model", f"scripted:{script}")
    term.wait_for("Ctrl-D leaves")
    term.type("say hello")
    # The live view shows the answer before the final answer settles it with its
    # thinking folded above: wait for the settled screen, not the first sight of it.
    term.wait_for("▸ thought (")
    screen = term.wait_for("• item two")
    # rendered as markdown: bullets, no raw emphasis markers; thinking folded into one line
    assert (
        "• item one" in screen and "Greetings" in screen and "This is bold." in screen and "**" not in screen
    )
    assert "▸ thought (" in screen and "A greeting with" in screen
    screen = term.wait_for("tokens · ")
    assert "tokens" in screen

    term.type("/effort high")
    term.wait_for("effort: high (from the next turn)")
    term.type("again")
    term.wait_for("Second answer at high effort.")
    term.wait_for("effort high · ")
    requests = [e for e in log_events(tmp_path) if e.type == "model_request"]
    assert [r.effort for r in requests] == ["medium", "high"]


@needs_tmux
def test_approvals_yes_no_always(tmp_path, terminals):
    script = write_script(
        tmp_path / "script.jsonl",
        [
            write_call("a.txt", "A"),
            "Wrote a.",
            write_call("b.txt", "B"),
            "Did not write b.",
            write_call("c.txt", "C"),
            "Wrote c.",
            write_call("d.txt", "D"),
            "Wrote d.",
        ],
    )
    term = terminals(tmp_path, "--model", f"scripted:{script}", "--tools", "files", "--approve-writes")
    term.wait_for("Ctrl-D leaves")
    prompt = "Allow write_file? [y]es / [n]o / [a]lways"

    term.type("write a")
    term.wait_for(prompt)
    assert "a.txt" in term.screen()
    term.type("y")
    term.wait_for("Wrote a.")
    assert (tmp_path / "a.txt").read_text() == "A"

    term.type("write b")
    term.wait_for(prompt, count=2)
    term.type("n")
    screen = term.wait_for("Did not write b.")
    assert "✗ write_file refused" in screen and not (tmp_path / "b.txt").exists()

    term.type("write c")
    term.wait_for(prompt, count=3)
    term.type("a")
    term.wait_for("Wrote c.")

    term.type("write d")  # no question this time: "always" holds for the session
    screen = term.wait_for("Wrote d.")
    assert screen.count(prompt) == 3 and "approved (always, this session)" in screen
    assert [(tmp_path / f"{n}.txt").read_text() for n in "acd"] == ["A", "C", "D"]
    given = [e.approved for e in log_events(tmp_path) if e.type == "approval_given"]
    assert given == [True, False, True, True]


@needs_tmux
def test_ctrl_c_interrupts_the_turn_not_the_session(tmp_path, terminals):
    script = write_script(tmp_path / "script.jsonl", [{"content": "too late", "delay": 60}, "Back again."])
    term = terminals(tmp_path, "--model", f"scripted:{script}")
    term.wait_for("Ctrl-D leaves")
    term.type("take your time")
    term.wait_for("thinking…")
    started = time.monotonic()
    term.send("C-c")
    term.wait_for("interrupted · the turn was cancelled")
    assert time.monotonic() - started < 5
    # at the prompt, Ctrl-C drops the line instead of sending it
    term.send("-l", "never sent")
    term.send("C-c")
    term.type("are you there?")
    screen = term.wait_for("Back again.")
    assert "too late" not in screen and "Traceback" not in screen
    events = log_events(tmp_path)
    assert [e.content for e in events if e.type == "user_message"] == ["take your time", "are you there?"]
    assert [e.status for e in events if e.type == "run_finished"] == ["cancelled", "completed"]


@needs_tmux
def test_text_typed_during_a_turn_is_not_echoed_over_it_and_waits_for_the_prompt(tmp_path, terminals):
    script = write_script(tmp_path / "script.jsonl", [{"content": "First.", "delay": 3}, "Second."])
    term = terminals(tmp_path, "--model", f"scripted:{script}")
    term.wait_for("Ctrl-D leaves")
    term.type("one")
    term.wait_for("thinking…")
    term.send("-l", "typed ahead")  # while the turn runs: it was echoed into the spinner's line
    seen = []
    for _ in range(20):
        seen.append(term.screen())
        time.sleep(0.02)
    assert not [screen for screen in seen if "typed ahead" in screen]
    screen = term.wait_for("First.")
    screen = term.wait_for("› typed ahead")  # the next prompt has it, to finish and send
    term.send("Enter")
    screen = term.wait_for("Second.")
    assert screen.count("typed ahead") == 1 and "Traceback" not in screen
    events = log_events(tmp_path)
    assert [e.content for e in events if e.type == "user_message"] == ["one", "typed ahead"]


@needs_tmux
def test_ctrl_c_leaves_what_the_turn_had_on_screen(tmp_path, terminals):
    code = "import time; time.sleep(60)"
    slow = {
        "content": "Let me wait a while first.",
        "tool_calls": [{"name": "python", "arguments": {"code": code}}],
    }
    script = write_script(tmp_path / "script.jsonl", [slow, "ok"])
    term = terminals(tmp_path, "--model", f"scripted:{script}", "--tools", "python")
    term.wait_for("Ctrl-D leaves")
    term.type("wait for it")
    term.wait_for("python · running", timeout=60)
    term.send("C-c")
    screen = term.wait_for("interrupted · the turn was cancelled")
    assert (
        "Let me wait a while first." in screen and "python · stopped" in screen and "time.sleep(60)" in screen
    )


@needs_tmux
def test_quit_and_resume_last(tmp_path, terminals):
    first = write_script(tmp_path / "first.jsonl", ["Nice to meet you, Ada."])
    term = terminals(tmp_path, "--model", f"scripted:{first}")
    term.wait_for("Ctrl-D leaves")
    term.type("My name is Ada.")
    term.wait_for("Nice to meet you, Ada.")
    term.type("/save ada")
    term.wait_for("saved as 'ada'")
    term.send("C-d")
    term.wait_for("[exited 0]")

    second = write_script(tmp_path / "second.jsonl", ["Your name is Ada."])
    term = terminals(tmp_path, "--model", f"scripted:{second}", "--resume", "last")
    screen = term.wait_for("Ctrl-D leaves")
    assert "resumed session" in screen and "My name is Ada." in screen
    term.type("What is my name?")
    term.wait_for("Your name is Ada.")
    events = log_events(tmp_path)  # one session, one log
    assert [e.content for e in events if e.type == "user_message"] == ["My name is Ada.", "What is my name?"]
    # the second model saw the first turn: system, user, assistant, user
    assert [e.messages for e in events if e.type == "model_request"] == [2, 4]
    assert resolve_session("ada", tmp_path / ".agent" / "runs") == events[0].run_id


def chat(cwd: Path, *args: str, input: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-m", "agent", "chat", *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_piped_input_works_without_a_terminal(tmp_path):
    script = write_script(tmp_path / "script.jsonl", ["First.", "Second."])
    out = chat(tmp_path, "--model", f"scripted:{script}", input="one\n/effort low\n/nonsense\ntwo\n")
    assert out.returncode == 0, out.stderr
    assert "First." in out.stdout and "Second." in out.stdout
    assert "effort: low" in out.stdout and "unknown command /nonsense" in out.stdout
    assert [e.effort for e in log_events(tmp_path) if e.type == "model_request"] == ["medium", "low"]


def test_user_errors_are_one_line(tmp_path):
    script = write_script(tmp_path / "script.jsonl", ["x"])
    out = chat(tmp_path, "--model", f"scripted:{script}", "--resume", "nosuch", input="")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert (
        out.stderr.strip().startswith("error: no session 'nosuch': no name saved with /save, nor a run") and len(out.stderr.strip().splitlines()) == 1
    )
    out = chat(tmp_path, "--model", f"scripted:{script}", "--tools", "nope", input="")
    assert (
        out.returncode == 2 and "unknown built-in tool 'nope'" in out.stderr and "Traceback" not in out.stderr
    )
    out = chat(tmp_path, "--model", "scripted:missing.jsonl", input="")
    assert out.returncode == 2 and "scripted model file not found" in out.stderr


def test_saved_session_names(tmp_path):
    run_dir = tmp_path / ".agent" / "runs"
    save_session("work", "20250101-000000-abcdef", run_dir)
    assert (tmp_path / ".agent" / "sessions" / "work").read_text().strip() == "20250101-000000-abcdef"
    assert resolve_session("work", run_dir) == "20250101-000000-abcdef"
    assert resolve_session("last", run_dir) == "last"
    assert saved_sessions(run_dir) == [("work", "20250101-000000-abcdef")]
    with pytest.raises(AgentError, match="bad session name"):
        save_session("../escape", "x", run_dir)


def test_piped_chat_refuses_approvals_keeps_lines_whole_and_survives_a_failing_save(tmp_path):
    long_line = "pip install agent-runtime --index-url https://packages.example.com/simple/ --extra-index-url https://more.example.com/simple/"
    write = {"tool_calls": [{"name": "write_file", "arguments": {"path": "a.txt", "content": "x"}}]}
    script = write_script(tmp_path / "script.jsonl", [write, "Not written.", "Yes?", long_line])
    (tmp_path / ".agent").mkdir()
    (tmp_path / ".agent" / "sessions").write_text("a file where /save wants a folder")
    out = chat(
        tmp_path,
        "--model", f"scripted:{script}", "--tools", "files", "--approve-writes",
        input="write a\ny\n/save work\n/effort HIGH\nhow do I install it?\n",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "approvals need a terminal" in out.stdout and not (tmp_path / "a.txt").exists()
    assert "cannot save the session name" in out.stdout and "effort: high" in out.stdout
    assert long_line in out.stdout.splitlines()
    asked = [e.content for e in log_events(tmp_path) if e.type == "user_message"]
    assert asked == ["write a", "y", "how do I install it?"]  # "y" was a message, not an answer


def test_retry_warnings_are_notes_in_the_chat_not_stray_log_lines(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = chat(tmp_path, "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m", input="hello\n")
    assert out.returncode == 0, out.stderr
    assert "⚠" in out.stdout and "retrying" in out.stdout and "is unreachable" in out.stdout
    assert "retrying" not in out.stderr


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_reply_left_unsettled_shows_only_when_the_user_interrupted(interrupted):
    import io

    from rich.console import Console

    from agent.chat import ChatView
    from agent.events import ModelDelta, ModelRequest, ModelResponse

    screen = io.StringIO()
    view = ChatView(Console(file=screen, width=100), lambda: "")
    view.begin()
    view(ModelRequest(purpose="act", messages=1))
    view(ModelDelta(content="WORDS A GUARD REFUSED"))
    view(ModelResponse(content="WORDS A GUARD REFUSED"))  # an answer; its final_answer never came
    view.end(interrupted=interrupted)
    assert ("WORDS A GUARD REFUSED" in screen.getvalue()) is interrupted


def test_load_lists_saved_sessions_with_their_start_and_first_message(tmp_path):
    script = write_script(tmp_path / "script.jsonl", ["Hi Ada."])
    out = chat(tmp_path, "--model", f"scripted:{script}", input="I am Ada.\n/save ada\n/load\n")
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("ada → "))
    assert "'I am Ada.'" in line and time.strftime("%Y-%m-%d") in line


def test_saving_a_taken_name_says_what_it_named_and_replay_and_resume_take_saved_names(tmp_path):
    script = write_script(tmp_path / "script.jsonl", ["Hi Ada."])
    first = chat(tmp_path, "--model", f"scripted:{script}", input="I am Ada.\n/save ada\n")
    assert first.returncode == 0, first.stderr
    ada = resolve_session("ada", tmp_path / ".agent" / "runs")
    second = chat(tmp_path, "--model", f"scripted:{script}", input="I am Bob.\n/save ada\n")
    assert second.returncode == 0, second.stderr
    assert f"it named {ada} before" in second.stdout  # said, not silently replaced
    bob = resolve_session("ada", tmp_path / ".agent" / "runs")
    assert bob != ada
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    replay = subprocess.run(
        [sys.executable, "-m", "agent", "replay", "ada"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert replay.returncode == 0 and "› I am Bob." in replay.stderr, replay.stderr
    resume = subprocess.run(
        [sys.executable, "-m", "agent", "resume", "ada"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert f"{bob} is a chat session" in resume.stderr  # found by its name, and pointed to chat


@needs_tmux
def test_an_unusable_history_file_is_a_note_not_a_traceback_at_every_prompt(tmp_path, terminals):
    (tmp_path / ".agent" / "chat_history").mkdir(parents=True)  # a folder where the history file goes
    script = write_script(tmp_path / "script.jsonl", ["Hello there."])
    term = terminals(tmp_path, "--model", f"scripted:{script}")
    screen = term.wait_for("Ctrl-D leaves")
    assert "no input history" in screen
    term.type("hi")
    screen = term.wait_for("Hello there.")
    assert "Traceback" not in screen and "Press ENTER" not in screen


def test_a_failed_load_keeps_the_current_session_locked(tmp_path):
    from agent.runlog import is_live

    script = write_script(tmp_path / "script.jsonl", ["First."])
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "chat", "--model", f"scripted:{script}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        process.stdin.write("hi\n/load no-such-session\n")
        process.stdin.flush()
        seen, deadline = "", time.monotonic() + 60
        while "no session 'no-such-session'" not in seen:  # the failed /load has been handled
            ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"the chat did not answer /load within 60 s: {seen!r}"  # not a hang of the suite
            line = process.stdout.readline()
            assert line, (seen, process.stderr.read())
            seen += line
        (log,) = (tmp_path / ".agent" / "runs").glob("*.jsonl")
        assert is_live(log)  # still this chat's: another cannot take the session up
    finally:
        process.stdin.close()
        process.wait(timeout=30)
    assert not is_live(log) and process.returncode == 0


def test_the_recap_of_a_resumed_session_pairs_the_last_message_with_its_own_answer(tmp_path):
    from agent import Agent
    from agent.llm import ScriptedLLM

    session = Agent(ScriptedLLM(["Hi there."]), run_dir=tmp_path / ".agent" / "runs").session()
    session.send_sync("hello")
    assert session.send_sync("sleep now").status == "failed"  # the script has no second turn
    script = write_script(tmp_path / "script.jsonl", ["ok"])
    out = chat(tmp_path, "--resume", "--model", f"scripted:{script}", input="")
    lines = out.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  you:"))
    # it showed "agent: Hi there." under "sleep now", the answer to "hello"
    assert lines[at : at + 2] == ["  you: sleep now", "  agent: (no answer: the turn ended failed)"]
