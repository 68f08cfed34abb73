"""The `agent` command, run as a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def agent(*args, cwd, input=None, timeout=60):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, input=input
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


def test_json_mode_prints_only_events(tmp_path, script):
    out = agent("run", "x", "--model", f"scripted:{script}", "--json", cwd=tmp_path)
    assert out.returncode == 0
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert events[-1]["answer"] == "It is **391**."


def test_replay_renders_a_past_run(tmp_path, script):
    agent("run", "x", "--model", f"scripted:{script}", cwd=tmp_path)
    out = agent("replay", "last", cwd=tmp_path)
    assert out.returncode == 0 and "It is **391**." in out.stdout
    out = agent("replay", "last", "--json", cwd=tmp_path)
    assert [json.loads(line)["type"] for line in out.stdout.splitlines()][-1] == "run_finished"
    out = agent("runs", cwd=tmp_path)
    assert "completed" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "x", "--model", "scripted:missing.jsonl"], "scripted model file not found"),
        (["run", "x", "--model", "scripted:script.jsonl", "--tools", "teleport"], "unknown built-in tool 'teleport'"),
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
    path.write_text(json.dumps("still thinking <tool_call>{\"name\": \"nope\", \"arguments\": {}}</tool_call>") + "\n")
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


def test_guards_are_on_by_default_and_the_cli_says_when_off(tmp_path):
    path = tmp_path / "script.jsonl"
    path.write_text(json.dumps("ok") + "\n")
    out = agent("run", "x", "--model", f"scripted:{path}", "--no-guards", cwd=tmp_path)
    assert out.returncode == 0 and "guards are off" in out.stderr
    out = agent("run", "x", "--model", f"scripted:{path}", cwd=tmp_path)
    assert out.returncode == 0 and "guards are off" not in out.stderr


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
