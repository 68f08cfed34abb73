"""Batch runs: concurrency, results written once, resume, retries, Ray."""

import asyncio
import json
import os

import pytest

from agent import Agent, AgentError, tool
from agent.batch import (
    AgentSpec,
    BatchRunner,
    BatchTask,
    RayBatchRunner,
    finished_count,
    is_correct,
    read_results,
    read_tasks,
)
from agent.llm import LLMError, ScriptedLLM


def tasks(n):
    return [BatchTask(id=f"t{i}", prompt=f"say {i}", expected=f"answer {i}") for i in range(n)]


def scripted(run_dir, delay=0.0):
    def make(task):
        return Agent(ScriptedLLM([f"The answer {task.id[1:]}."], delay=delay), run_dir=run_dir)

    return make


def test_concurrent_batch_writes_one_line_per_task(tmp_path):
    out = tmp_path / "results.jsonl"
    running, peak = 0, 0

    def make(task):
        nonlocal running, peak

        def turn(request):
            return f"The answer {task.id[1:]}."

        llm = ScriptedLLM([turn], delay=0.05)
        original = llm.stream

        async def counting(request):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                async for item in original(request):
                    yield item
            finally:
                running -= 1

        llm.stream = counting
        return Agent(llm, run_dir=tmp_path / "runs")

    results = asyncio.run(BatchRunner(make, out, concurrency=3).run(tasks(7)))
    assert [r.id for r in results] == [f"t{i}" for i in range(7)]
    assert all(r.ok and r.correct for r in results)
    assert peak == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == [f"t{i}" for i in range(7)]
    assert all(line["log_path"] and line["run_id"] for line in lines)
    assert all(os.path.isabs(line["log_path"]) and os.path.exists(line["log_path"]) for line in lines)


def test_resume_skips_finished_and_drops_a_torn_line(tmp_path):
    out = tmp_path / "results.jsonl"
    asyncio.run(BatchRunner(scripted(tmp_path / "runs"), out).run(tasks(3)))
    with open(out, "a") as f:
        f.write('{"id": "t3", "stat')  # a crash in the middle of writing t3
    made = []

    def make(task):
        made.append(task.id)
        return scripted(tmp_path / "runs")(task)

    results = asyncio.run(BatchRunner(make, out, resume=True).run(tasks(5)))
    assert made == ["t3", "t4"]
    assert [r.id for r in results] == ["t0", "t1", "t2", "t3", "t4"]
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == ["t0", "t1", "t2", "t3", "t4"] and len(ids) == 5


def test_existing_results_need_resume_or_overwrite(tmp_path):
    out = tmp_path / "results.jsonl"
    asyncio.run(BatchRunner(scripted(tmp_path / "runs"), out).run(tasks(1)))
    with pytest.raises(AgentError, match="--resume"):
        asyncio.run(BatchRunner(scripted(tmp_path / "runs"), out).run(tasks(1)))
    asyncio.run(BatchRunner(scripted(tmp_path / "runs"), out, overwrite=True).run(tasks(2)))
    assert len(read_results(out)) == 2


class ServerDown(ScriptedLLM):
    """A scripted model behind a server that answers 503 while `down()` says so."""

    def __init__(self, script, down):
        super().__init__(script)
        self.down = down

    async def stream(self, request):
        if self.down():
            raise LLMError("server unavailable (503)")
        async for item in super().stream(request):
            yield item


def fails_its_task(run_dir):
    """An agent whose model keeps calling a tool it does not have: the task fails, not the server."""
    bad = '<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
    return Agent(ScriptedLLM([bad] * 5), run_dir=run_dir, max_retries=1)


def test_infrastructure_errors_are_retried_model_failures_are_not(tmp_path):
    out = tmp_path / "results.jsonl"
    attempts = {"flaky": 0, "bad": 0}

    def flaky_down():
        attempts["flaky"] += 1
        return attempts["flaky"] < 3

    def make(task):
        if task.id == "flaky":
            return Agent(ServerDown(["recovered"], flaky_down), run_dir=tmp_path / "runs")
        attempts["bad"] += 1
        return fails_its_task(tmp_path / "runs")

    work = [BatchTask(id="flaky", prompt="x"), BatchTask(id="bad", prompt="y")]
    results = {r.id: r for r in asyncio.run(BatchRunner(make, out, retries=3, backoff=0.01).run(work))}
    assert results["flaky"].ok and results["flaky"].attempts == 3
    assert results["bad"].status == "failed" and results["bad"].attempts == 1 and attempts["bad"] == 1


@pytest.mark.parametrize("status, attempts", [(401, 1), (404, 1), (429, 3), (503, 3)])
def test_http_errors_are_retried_only_when_asking_again_may_help(tmp_path, status, attempts):
    from agent.llm.openai_compat import LLMHTTPError

    class Refusing(ScriptedLLM):
        async def stream(self, request):
            raise LLMHTTPError(f"HTTP {status} from the server", status_code=status)
            yield  # an async generator

    def make(task):
        return Agent(Refusing([]), run_dir=tmp_path / "runs")

    out = tmp_path / "results.jsonl"
    [result] = asyncio.run(
        BatchRunner(make, out, retries=2, backoff=0.01).run([BatchTask(id="t", prompt="x")])
    )
    assert result.status == "failed" and f"HTTP {status}" in result.error
    assert result.attempts == attempts
    assert result.infrastructure == (attempts > 1)  # failed for the server, every try


def test_resume_runs_again_what_failed_only_for_the_infrastructure(tmp_path):
    out = tmp_path / "results.jsonl"
    down = {"server": True}

    def make(task):
        if task.id == "needs-server":
            return Agent(ServerDown(["up again"], lambda: down["server"]), run_dir=tmp_path / "runs")
        return fails_its_task(tmp_path / "runs")

    work = [BatchTask(id="needs-server", prompt="x"), BatchTask(id="model-fails", prompt="y")]
    first = {r.id: r for r in asyncio.run(BatchRunner(make, out, retries=1, backoff=0.01).run(work))}
    assert first["needs-server"].infrastructure and not first["model-fails"].infrastructure
    down["server"] = False  # the server is fixed: --resume runs that task again, and only that one
    again = asyncio.run(BatchRunner(make, out, resume=True, backoff=0.01).run(work))
    results = read_results(out)
    assert results["needs-server"].ok and results["model-fails"] == first["model-fails"]
    assert len(out.read_text().splitlines()) == 2 and len(again) == 2


def test_tasks_file_errors_name_the_line(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"id": 1, "prompt": "ok"}\n{"prompt": "no id"}\n')
    with pytest.raises(AgentError, match=r"tasks.jsonl:2: not a valid task \(id: Field required\)$"):
        read_tasks(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(AgentError, match=r"tasks.jsonl:1: each line is one JSON object .*, not an array$"):
        read_tasks(path)
    path.write_text('{"id": "a", "prompt": 5}\n')
    with pytest.raises(AgentError) as info:
        read_tasks(path)
    assert "prompt: Input should be a valid string" in str(info.value) and "pydantic.dev" not in str(
        info.value
    )
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(AgentError, match="appears twice"):
        read_tasks(path)
    path.write_text('{"id": 7, "prompt": "x", "effort": "high", "tools": []}\n')
    assert read_tasks(path)[0].id == "7"
    path.write_text(
        '{"id": "b", "prompt": "Capital of France?", "expectd": "Paris"}\n'
    )  # a typo would go ungraded
    with pytest.raises(AgentError, match=r"tasks.jsonl:1: unknown key 'expectd': did you mean 'expected'\?"):
        read_tasks(path)
    path.write_text(
        '{"id": "b", "prompt": "x", "topic": "geography", "source": "quiz"}\n'
    )  # the task's own data
    assert read_tasks(path)[0].model_extra == {"topic": "geography", "source": "quiz"}


def test_ray_executor_runs_the_same_file(tmp_path):
    ray = pytest.importorskip("ray")
    script = tmp_path / "script.jsonl"
    script.write_text(json.dumps("The answer is 42.") + "\n")
    spec = AgentSpec(model=f"scripted:{script}", run_dir=str(tmp_path / "runs"))
    out = tmp_path / "results.jsonl"
    work = [BatchTask(id=f"r{i}", prompt=f"q{i}", expected="42") for i in range(4)]
    try:
        results = asyncio.run(RayBatchRunner(spec, out, concurrency=2).run(work))
    finally:
        ray.shutdown()
    assert [r.id for r in results] == ["r0", "r1", "r2", "r3"]
    assert all(r.ok and r.correct for r in results)
    assert len(out.read_text().splitlines()) == 4


def test_a_ray_address_nothing_answers_is_an_error_at_once(tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as closed:  # a port with nothing listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    spec = AgentSpec(model="scripted:none.jsonl", run_dir=str(tmp_path / "runs"))
    runner = RayBatchRunner(spec, tmp_path / "out.jsonl", address=f"127.0.0.1:{port}")
    # Ray retried for over five minutes, then failed with its own log lines
    with pytest.raises(AgentError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        asyncio.run(runner.run([BatchTask(id="a", prompt="hi")]))


def test_cli_batch_killed_mid_run_then_resumed(tmp_path):
    """Kill `agent batch` mid-run; `--resume` finishes; every id appears exactly once."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text(
        "".join(json.dumps({"id": f"t{i}", "prompt": f"q{i}", "expected": "ok"}) + "\n" for i in range(12))
    )
    slow = tmp_path / "slow.jsonl"
    slow.write_text(json.dumps({"content": "ok", "delay": 0.4}) + "\n")
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "agent", "batch", str(tasks_file), "-o", str(out), "--model", f"scripted:{slow}",
           "--concurrency", "2", "--run-dir", str(tmp_path / "runs")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = [json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()]
    assert 3 <= len(partial) < 12
    done = subprocess.run(
        cmd + ["--resume"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"t{i}" for i in range(12)) and len(ids) == 12
    assert "completed" in done.stderr and "correct" in done.stderr
    # without --resume an existing results file is refused with one clear line
    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr


def test_results_holding_unicode_line_separators_count_as_done_on_resume(tmp_path):
    out = tmp_path / "results.jsonl"

    def make(task):
        return Agent(ScriptedLLM(["one\u2028two\x85three"]), run_dir=tmp_path / "runs")

    asyncio.run(BatchRunner(make, out).run(tasks(2)))
    assert set(read_results(out)) == {"t0", "t1"}
    made = []

    def again(task):
        made.append(task.id)
        return make(task)

    asyncio.run(BatchRunner(again, out, resume=True).run(tasks(2)))
    assert made == []


def test_grading_matches_whole_words_and_numbers():
    from agent.batch import is_correct

    assert is_correct(4, "It is 4.") and is_correct(4, "4") and not is_correct(4, "The answer is 14")
    assert is_correct("yes", "Yes, it is.") and not is_correct("yes", "yesterday")
    assert is_correct(["a", "b"], "a, b") and is_correct(1000, "1,000 items")
    assert is_correct("", "anything") is None and is_correct("none", None) is False


def test_a_task_that_cannot_start_is_graded_and_ids_must_be_unique(tmp_path):
    out = tmp_path / "results.jsonl"

    def make(task):
        return Agent(ScriptedLLM(["x"]), tools=["nonexistent_tool"], run_dir=tmp_path / "runs")

    [result] = asyncio.run(BatchRunner(make, out).run([BatchTask(id="t", prompt="x", expected="y")]))
    assert result.status == "failed" and result.correct is False
    with pytest.raises(AgentError, match="appears twice"):
        asyncio.run(BatchRunner(make, tmp_path / "r2.jsonl").run([BatchTask(id="a", prompt="x")] * 2))


def _batch_cli(tmp_path, *args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    script = tmp_path / "model.jsonl"
    script.write_text(json.dumps("ok") + "\n")
    return subprocess.run(
        [sys.executable, "-m", "agent", "batch", *args, "--model", f"scripted:{script}", "--run-dir", "runs"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_results_path_is_never_a_device_a_pipe_the_tasks_file_or_another_programs_file(tmp_path):
    import os

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "prompt": "x"}) + "\n" for i in range(3)))
    before = tasks.read_text()
    os.mkfifo(tmp_path / "pipe")
    for args, message in (
        (["tasks.jsonl", "-o", "tasks.jsonl", "--resume"], "is the tasks file"),
        (["tasks.jsonl", "-o", "pipe", "--overwrite"], "is not a regular file"),
    ):
        out = _batch_cli(tmp_path, *args)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert tasks.read_text() == before and (tmp_path / "pipe").is_fifo()
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "a", "status": "completed"}\n{"some": "other data"}\n{"more": 1}\n')
    out = _batch_cli(tmp_path, "tasks.jsonl", "-o", "other.jsonl", "--resume")
    assert out.returncode == 2 and "other.jsonl:2 is not a batch result" in out.stderr
    assert other.read_text().count("\n") == 3  # left as it was
    # through a link: the link stays one, and the file it names gets the results
    (tmp_path / "real.jsonl").write_text("")
    (tmp_path / "link.jsonl").symlink_to("real.jsonl")
    out = _batch_cli(tmp_path, "tasks.jsonl", "-o", "link.jsonl", "--resume")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "link.jsonl").is_symlink() and len(read_results(tmp_path / "real.jsonl")) == 3


def test_a_second_batch_on_the_same_results_file_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "results.jsonl"
    first = BatchRunner(scripted(tmp_path / "runs"), out, resume=True)
    first.pending(tasks(2))  # holds the results file, as a running batch does
    try:
        for resume in (True, False):
            second = BatchRunner(scripted(tmp_path / "runs"), out, resume=resume, overwrite=not resume)
            with pytest.raises(AgentError, match="being written by another agent batch"):
                second.pending(tasks(2))
    finally:
        first.close()
    asyncio.run(BatchRunner(scripted(tmp_path / "runs"), out, resume=True).run(tasks(2)))  # free again
    assert len(read_results(out)) == 2


def test_ids_and_errors_are_shown_as_written_and_a_bom_is_no_error(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    rows = [{"id": "x[/y]", "prompt": "x"}, {"id": ":thumbs_up:", "prompt": "y"}, {"id": "z", "prompt": "z"}]
    rows.append({"id": "graded", "prompt": "w", "expected": "something else"})  # the model says "ok"
    tasks.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    out = _batch_cli(tmp_path, "tasks.jsonl", "-o", "out[/x].jsonl")
    assert out.returncode == 0, out.stderr
    assert "[1/4]" in out.stderr and "x[/y]: ok" in out.stderr and ":thumbs_up:: ok" in out.stderr
    assert "graded: answered, not the expected answer" in out.stderr
    assert "out[/x].jsonl" in out.stderr and len(read_results(tmp_path / "out[/x].jsonl")) == 4


def test_two_batches_starting_together_on_a_new_results_file_meet_and_one_is_refused(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    out = tmp_path / "new" / "folder" / "results.jsonl"  # the folder is made as well
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_start_batch, args=(out, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["held", "refused"], outcomes


def _start_batch(out, barrier, results):
    runner = BatchRunner(scripted(out.parent / "runs"), out, resume=True)
    barrier.wait()
    try:
        runner.pending(tasks(2))
    except AgentError as e:
        results.put("refused" if "another agent batch" in str(e) else str(e))
        return
    results.put("held")
    import time

    time.sleep(1.0)  # hold it while the other tries
    runner.close()


def test_what_a_task_logs_during_a_batch_says_which_task_it_is(tmp_path, monkeypatch):
    import io
    import logging

    from agent import batch
    from agent.testing import call

    @tool
    def fetch() -> str:
        """Fetch."""
        logging.getLogger("agent.llm").warning("HTTP 500 from the server; retrying in 0.50 s (1/3)")
        return "ok"

    def make(task):
        return Agent(
            ScriptedLLM([call("fetch"), "done"], delay=0.01), tools=[fetch], run_dir=tmp_path / "runs"
        )

    stderr = io.StringIO()
    monkeypatch.setattr(batch.sys, "stderr", stderr)
    tagged = batch._TaskTagged()
    logging.getLogger().addHandler(tagged)
    try:
        asyncio.run(BatchRunner(make, tmp_path / "out.jsonl", concurrency=2).run(tasks(2)))
    finally:
        logging.getLogger().removeHandler(tagged)
    assert sorted(stderr.getvalue().splitlines()) == [
        "[t0] HTTP 500 from the server; retrying in 0.50 s (1/3)",
        "[t1] HTTP 500 from the server; retrying in 0.50 s (1/3)",
    ]


def test_a_task_with_a_lone_surrogate_is_refused_with_its_line(tmp_path):
    path = tmp_path / "tasks.jsonl"
    # Valid JSON, and no text: the batch wrote results up to it and then crashed on every resume.
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "caf\\ud83d", "prompt": "y"}\n')
    with pytest.raises(AgentError, match=r"tasks.jsonl:2: the task holds a lone surrogate escape"):
        read_tasks(path)
    path.write_text('{"id": "b", "prompt": "a pair is text: \\ud83d\\ude00"}\n')
    assert read_tasks(path)[0].prompt.endswith("\U0001f600")


def test_resume_keeps_what_failed_for_the_infrastructure_under_ids_of_another_file(tmp_path):
    out = tmp_path / "results.jsonl"
    old = [BatchTask(id="old", prompt="x")]
    down = ServerDown(["never"], lambda: True)
    first = asyncio.run(
        BatchRunner(lambda t: Agent(down, run_dir=tmp_path / "runs"), out, retries=0).run(old)
    )
    assert first[0].infrastructure
    new = [BatchTask(id="new", prompt="y")]
    asyncio.run(BatchRunner(scripted(tmp_path / "runs"), out, resume=True).run(new))
    # "old" is not in this file and will not run again here: its result stays, as any other id's does.
    assert set(read_results(out)) == {"old", "new"}
    assert finished_count(old + new, out) == 1  # the failure --resume runs again is no result yet
    assert finished_count(new, out) == 1


def test_a_private_results_file_stays_private(tmp_path):
    out = tmp_path / "results.jsonl"
    out.touch()
    out.chmod(0o600)
    asyncio.run(BatchRunner(scripted(tmp_path / "runs"), out).run(tasks(1)))
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    asyncio.run(BatchRunner(scripted(tmp_path / "runs"), out, resume=True).run(tasks(2)))
    assert oct(out.stat().st_mode & 0o777) == "0o600" and len(read_results(out)) == 2


@pytest.mark.parametrize(
    "expected, answer, correct",
    [
        ("4", "The answer is 4.5.", False),
        ("3", "About 3,000 of them.", False),
        ("5", "It is 4.5 now.", False),
        ("4", "It is 4.", True),
        ("4", "4, then 5", True),
        ("4.5", "The answer is 4.5.", True),
        ("3,000", "About 3,000 of them.", True),
        ("paris", "Paris.", True),
    ],
)
def test_text_that_is_a_number_is_not_found_inside_a_longer_number(expected, answer, correct):
    assert is_correct(expected, answer) is correct
