"""Batch tasks: many prompts from a JSONL file, results to another.

Each result line is written once, flushed and synced as its task ends, so a
crash loses only the tasks in flight; `resume=True` skips the ids that have a
result and redoes the rest. Infrastructure failures (the model server, a
crashed backend) are retried with backoff; a model that fails the task is a
result, not a retry.
"""

from __future__ import annotations

import asyncio
import contextvars
import difflib
import json
import logging
import math
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import AgentError
from .runlog import try_lock
from .types import Effort


class BatchTask(BaseModel):
    """One line of a tasks file."""

    model_config = ConfigDict(extra="allow")

    id: str
    prompt: str
    tools: list[str] | None = None
    effort: Effort | None = None
    expected: Any = None
    max_steps: int | None = Field(default=None, ge=1)


class BatchResult(BaseModel):
    """One line of a results file."""

    id: str
    status: str
    answer: Any = None
    correct: bool | None = None
    error: str | None = None
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_s: float = 0.0
    attempts: int = 1
    # It failed for the infrastructure (the model server unreachable, a backend that broke)
    # every time it was tried: --resume runs it again, where it keeps every other result.
    infrastructure: bool = False
    run_id: str | None = None
    log_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"


_TASK_KEYS = tuple(BatchTask.model_fields)
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false"}
_JSON_KINDS[type(None)] = "null"


def read_tasks(path: str | Path) -> list[BatchTask]:
    """Parse a tasks file; a bad line is an error naming its line number."""
    tasks: list[BatchTask] = []
    seen: set[str] = set()
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").split("\n")  # not splitlines(): see read_events
    except OSError as e:
        raise AgentError(f"cannot read tasks file {path}: {e.strerror}") from e
    except UnicodeDecodeError:
        raise AgentError(f"tasks file {path} is not UTF-8 text (one JSON object per line)") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise AgentError(f"{path}:{number}: not a valid task ({e})") from None
        if not isinstance(data, dict):
            kind = _JSON_KINDS.get(type(data), type(data).__name__)
            raise AgentError(
                f"{path}:{number}: each line is one JSON object (a task: id, prompt, ...), not {kind}"
            )
        try:  # a \ud83d escape alone is valid JSON but no text: no result or log could hold it
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise AgentError(
                f"{path}:{number}: the task holds a lone surrogate escape (such as \\ud83d without its pair), "
                "which is not text; fix or remove it"
            ) from None
        if type(data.get("id")) is int:  # an id that is a number is read as its text
            data["id"] = str(data["id"])
        try:
            task = BatchTask.model_validate(data)
        except ValidationError as e:
            problems = [f"{'.'.join(map(str, err['loc'])) or 'task'}: {err['msg']}" for err in e.errors()[:3]]
            raise AgentError(f"{path}:{number}: not a valid task ({'; '.join(problems)})") from None
        for key in task.model_extra or {}:  # kept as the task's own data, unless it is a known key misspelt
            near = (
                None if key.startswith("x_") else difflib.get_close_matches(key, _TASK_KEYS, n=1, cutoff=0.75)
            )
            if near:
                raise AgentError(
                    f"{path}:{number}: unknown key {key!r}: did you mean {near[0]!r}? (a task's keys are "
                    f"{', '.join(_TASK_KEYS)}; others are kept as its data: name it x_{key} to keep it so)"
                )
        if not task.prompt.strip():  # refused as `agent run ""` is, before any task runs
            raise AgentError(f"{path}:{number}: task {task.id!r} has an empty prompt")
        if task.id in seen:
            raise AgentError(f"{path}:{number}: task id {task.id!r} appears twice")
        seen.add(task.id)
        tasks.append(task)
    if not tasks:
        raise AgentError(f"{path} holds no tasks")
    return tasks


def read_results(path: str | Path, *, strict: bool = False) -> dict[str, BatchResult]:
    """Results so far, by id; a torn last line (a crash mid-write) is ignored.

    `strict`: any other line that is not a result is an error, so that resuming
    into the wrong file (the tasks file, another program's output) refuses
    instead of dropping its lines.
    """
    results: dict[str, BatchResult] = {}
    p = Path(path)
    if not p.exists():
        return results
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise AgentError(f"cannot read results file {path}: {e.strerror}") from e
    except UnicodeDecodeError:
        raise AgentError(f"results file {path} is not UTF-8 text; is it a results file?") from None
    lines = text.split("\n")  # not splitlines(): see read_events
    for number, line in enumerate(lines, 1):
        try:
            result = BatchResult.model_validate_json(line)
        except ValidationError:
            torn = number == len(lines)  # the last line, with no newline after it
            if strict and line.strip() and not torn:
                raise AgentError(
                    f"{path}:{number} is not a batch result ({line[:60]!r}); is -o the results file of this batch?"
                ) from None
            continue
        results.setdefault(result.id, result)
    return results


def finished_count(tasks: list[BatchTask], path: str | Path) -> int:
    """How many of `tasks` have a result in the file that --resume keeps: results of other
    ids, and failures of the infrastructure (which it runs again), do not count."""
    have = read_results(path)
    return sum(1 for t in tasks if t.id in have and not have[t.id].infrastructure)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _hold(path: Path) -> int:
    """The results file in place, open and locked; refused when another batch holds it."""
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            _lock(fd, path)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # replaced while we waited: the new file is the one to hold


def _same_owner_and_mode(fd: int, like: int) -> None:
    """Give the file `fd` the permissions (and, where allowed, the owner) of the file `like`."""
    st = os.fstat(like)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
        try:
            os.fchown(fd, st.st_uid, st.st_gid)
        except OSError:  # only root may give a file away: it stays ours, with the same mode
            pass


def _lock(fd: int, path: Path) -> None:
    if not try_lock(fd):
        raise AgentError(
            f"{path} is being written by another agent batch; wait for it to end, or give this one another -o"
        )


_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?![\w])")


def graded(expected: Any) -> bool:
    """Whether a task's `expected` value grades its answer (empty text or list does not)."""
    return expected is not None and expected != "" and expected != []


def is_correct(expected: Any, answer: Any) -> bool | None:
    """Whether `answer` matches the task's `expected` value (None: nothing to grade).

    Text matches when it appears in the answer as whole words (case and spacing
    ignored: "4" is not in "14", nor "yes" in "yesterday"). A number matches a
    number equal to it in the answer ("4" in "It is 4."). A list matches when
    every item does. Other values (a typed answer's dict) must be equal.
    """
    if not graded(expected):
        return None
    if answer is None:
        return False
    if isinstance(answer, (dict, list)) and isinstance(expected, type(answer)):
        return bool(expected == answer)
    if isinstance(expected, list):
        return all(is_correct(item, answer) for item in expected)
    text = (
        answer if isinstance(answer, str) else json.dumps(answer) if isinstance(answer, dict) else str(answer)
    )
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            return math.isclose(answer, expected, rel_tol=1e-9, abs_tol=1e-12)
        found = (float(m.group().replace(",", "")) for m in _NUMBER.finditer(text))
        return any(math.isclose(n, expected, rel_tol=1e-9, abs_tol=1e-12) for n in found)
    if not isinstance(expected, str):
        expected = json.dumps(expected) if isinstance(expected, dict) else str(expected)
    words = " ".join(expected.lower().split())
    # Whole words, and no part of a longer number: "4" is not in "4.5", nor "3" in "3,000".
    pattern = r"(?<!\w)(?<!\d[.,])" + re.escape(words).replace(r"\ ", r"\s+") + r"(?!\w)(?![.,]\d)"
    return re.search(pattern, text.lower()) is not None


class Progress(BaseModel):
    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    skipped: int = 0  # tasks that already had a result (--resume)
    foreign: int = 0  # results in the file for ids this tasks file does not hold (kept)
    tokens: int = 0
    started: float = Field(default_factory=time.monotonic)


AgentFactory = Callable[[BatchTask], Any]


class BatchRunner:
    """Runs tasks concurrently with one shared model, writing results as they end."""

    def __init__(
        self,
        make_agent: AgentFactory,
        output: str | Path,
        *,
        concurrency: int = 4,
        resume: bool = False,
        overwrite: bool = False,
        retries: int = 2,
        backoff: float = 1.0,
        on_progress: Callable[[Progress, BatchResult | None], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise AgentError("--concurrency must be at least 1")
        if resume and overwrite:
            raise AgentError(
                "--resume and --overwrite contradict each other: --resume keeps the results and runs "
                "the tasks without one, --overwrite starts over; pass one"
            )
        self.make_agent = make_agent
        self.output = Path(output)
        self.concurrency = concurrency
        self.resume = resume
        self.overwrite = overwrite
        self.retries = retries
        self.backoff = backoff
        self.on_progress = on_progress
        self._lock = asyncio.Lock()
        self._fd: int | None = None  # the results file, open and locked while the batch runs

    def check(self, tasks: list[BatchTask]) -> None:
        """What `run` would refuse about the tasks and the results file, found without
        changing either: a caller checks before it loads a model, which takes a while."""
        self._checked_output(tasks)
        if self.resume:
            read_results(self.output, strict=True)
        if self.output.exists():  # another batch writing it: said now, not after the model loads
            try:
                fd = os.open(self.output, os.O_RDONLY)
            except OSError as e:
                raise AgentError(f"cannot read results file {self.output}: {e.strerror or e}") from None
            try:
                _lock(fd, self.output)
            finally:
                os.close(fd)  # the lock goes with it: `run` takes it for good

    def _checked_output(self, tasks: list[BatchTask]) -> None:
        seen: set[str] = set()
        for task in tasks:  # results are by id: two tasks with one id would overwrite each other
            if task.id in seen:
                raise AgentError(f"task id {task.id!r} appears twice; give every task its own id")
            seen.add(task.id)
        given = self.output
        # Through a link to the file it names: the link stays, and its target gets the results.
        self.output = Path(os.path.realpath(given))
        if self.output.exists() and not self.output.is_file():
            raise AgentError(
                f"{given} is not a regular file (a device, a pipe or a folder); give -o the path of a results file"
            )
        if self.output.exists() and self.output.stat().st_size and not (self.resume or self.overwrite):
            raise AgentError(f"{given} already has results; pass --resume to continue or --overwrite")

    def pending(self, tasks: list[BatchTask]) -> tuple[list[BatchTask], dict[str, BatchResult]]:
        self._checked_output(tasks)
        finished = read_results(self.output, strict=True) if self.resume else {}
        # Resume keeps the results (a torn or repeated line left by a crash dropped, and a failure of
        # the infrastructure of one of these tasks, which is run again); overwrite keeps none.
        ids = {t.id for t in tasks}
        finished = {i: r for i, r in finished.items() if not (r.infrastructure and i in ids)}
        self._replace_with(finished)
        return [t for t in tasks if t.id not in finished], finished

    async def run(self, tasks: list[BatchTask]) -> list[BatchResult]:
        todo, finished = self.pending(tasks)
        ids = {t.id for t in tasks}
        here = {i: r for i, r in finished.items() if i in ids}  # counted: results of these tasks only
        progress = Progress(
            total=len(tasks), skipped=len(here), done=len(here), foreign=len(finished) - len(here)
        )
        progress.failed = sum(1 for r in here.values() if not r.ok)
        self._notify(progress, None)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(task: BatchTask) -> BatchResult:
            BATCH_TASK.set(task.id)  # this task's own context: what it logs can say whose it is
            async with gate:
                progress.running += 1
                self._notify(progress, None)
                try:
                    result = await self._attempts(task)
                finally:
                    progress.running -= 1
                await self._write(result)
                progress.done += 1
                progress.failed += not result.ok
                progress.tokens += result.prompt_tokens + result.completion_tokens
                self._notify(progress, result)
                return result

        try:
            new = await asyncio.gather(*(one(t) for t in todo))
        finally:
            self.close()
        by_id = {**finished, **{r.id: r for r in new}}
        return [by_id[t.id] for t in tasks if t.id in by_id]

    async def _attempts(self, task: BatchTask) -> BatchResult:
        attempt = 0
        while True:
            attempt += 1
            result, infrastructure = await self._once(task)
            result.attempts = attempt
            if not infrastructure or attempt > self.retries:
                result.infrastructure = infrastructure
                return result
            await asyncio.sleep(self.backoff * 2 ** (attempt - 1))

    async def _once(self, task: BatchTask) -> tuple[BatchResult, bool]:
        started = time.monotonic()
        try:
            agent = self.make_agent(task)
            run = await agent.arun(task.prompt)
        except AgentError as e:  # a bad task (unknown tool, ...): its own result, no retry
            return BatchResult(
                id=task.id,
                status="failed",
                error=str(e),
                correct=False if graded(task.expected) else None,  # graded like any failure
                time_s=time.monotonic() - started,
            ), False
        except Exception as e:  # the factory or backend broke: worth another try
            message = f"{type(e).__name__}: {e}"
            return BatchResult(
                id=task.id, status="failed", error=message, time_s=time.monotonic() - started
            ), True
        # Retried: a run ended by an infrastructure fault that may pass (not a refused key, a bad reply).
        infrastructure = run.status == "failed" and any(
            e.type == "error" and e.fatal and e.retryable is not False for e in run.events
        )
        answer = run.answer.model_dump(mode="json") if isinstance(run.answer, BaseModel) else run.answer
        result = BatchResult(
            id=task.id,
            status=run.status,
            answer=answer,
            correct=is_correct(task.expected, answer)
            if run.ok
            else (False if graded(task.expected) else None),
            error=run.error,
            steps=run.steps,
            prompt_tokens=run.usage.prompt_tokens,
            completion_tokens=run.usage.completion_tokens,
            time_s=round(time.monotonic() - started, 3),
            run_id=run.run_id,
            log_path=os.path.abspath(run.log_path) if run.log_path else None,  # read from anywhere later
        )
        return result, infrastructure

    async def _write(self, result: BatchResult) -> None:
        line = (result.model_dump_json() + "\n").encode()
        async with self._lock:
            try:
                _write_all(self._fd, line)
                os.fsync(self._fd)
            except OSError as e:
                raise AgentError(f"cannot write results to {self.output}: {e.strerror or e}") from None

    def _replace_with(self, finished: dict[str, BatchResult]) -> None:
        """Make the results file hold exactly `finished`, and hold it for this batch.

        The new contents go to a temporary file that is locked before it takes
        the results file's place, so the file is never half written and never
        unlocked: a second batch on the same file is refused, not run alongside
        (each task would run twice).
        """
        tmp = self.output.with_name(f".{self.output.name}.{os.getpid()}.tmp")
        held = fd = None
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            # The file in place (made now when missing, so that two batches starting together
            # meet at one file) stays locked until the new one, locked too, has replaced it.
            held = _hold(self.output)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            _lock(fd, self.output)
            _same_owner_and_mode(fd, held)  # a private results file stays private
            _write_all(fd, "".join(r.model_dump_json() + "\n" for r in finished.values()).encode())
            os.fsync(fd)
            os.replace(tmp, self.output)
        except BaseException as e:
            if fd is not None:
                os.close(fd)
                tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                reason = e.strerror or e
                raise AgentError(
                    f"cannot write results to {self.output}: {reason}; choose another -o"
                ) from None
            raise
        finally:
            if held is not None:
                os.close(held)
        self.close()
        self._fd = fd

    def close(self) -> None:
        """Let go of the results file (another batch may then take it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _notify(self, progress: Progress, result: BatchResult | None) -> None:
        if self.on_progress is not None:
            self.on_progress(progress, result)


def summarize(results: Iterable[BatchResult]) -> dict[str, Any]:
    results = list(results)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    graded = [r for r in results if r.correct is not None]
    return {
        "tasks": len(results),
        "statuses": statuses,
        "correct": sum(1 for r in graded if r.correct),
        "graded": len(graded),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "completion_tokens": sum(r.completion_tokens for r in results),
        "all_ok": all(r.ok for r in results),
    }


_shared_models: dict[tuple[str | None, str | None, int | None], Any] = {}


class AgentSpec(BaseModel):
    """How to build an agent for a task: picklable, so Ray workers can build it too.

    Real models are loaded once per process and shared by every task there;
    a scripted model (`scripted:FILE`) is fresh per task, so each task replays
    the whole script.
    """

    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    effort: Effort | None = None
    strategy: Literal["react", "plan-act-reflect"] | None = None
    tools: list[str] = Field(default_factory=list)
    max_steps: int | None = None
    max_seconds: float | None = None
    run_dir: str | None = ".agent/runs"
    workspace: str | None = None
    approve: bool = False
    context_window: int | None = None
    max_new_tokens: int | None = None
    request_timeout: float | None = None

    def llm(self) -> Any:
        from .cli import new_model

        options = {
            "base_url": self.base_url,
            "api_key": self.api_key,
            "max_new_tokens": self.max_new_tokens,
            "request_timeout": self.request_timeout,
        }
        if self.model and self.model.startswith("scripted:"):
            return new_model(self.model, **options)  # fresh per task: each replays the whole script
        key = (self.model, self.base_url, self.max_new_tokens, self.request_timeout)
        if key not in _shared_models:
            _shared_models[key] = new_model(self.model, **options)
        return _shared_models[key]

    def build(self, task: BatchTask) -> Any:
        from .agent import Agent

        return Agent(
            self.llm(),
            tools=task.tools if task.tools is not None else self.tools,
            effort=task.effort or self.effort,
            strategy=self.strategy,
            max_steps=task.max_steps if task.max_steps is not None else self.max_steps,
            max_seconds=self.max_seconds,
            run_dir=self.run_dir,
            workspace=self.workspace,
            context_window=self.context_window,
            # Batch runs have nobody to ask: approvals follow the --yes flag.
            approver=(lambda request: True) if self.approve else None,
        )


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A cluster address (`host:port`, `ray://host:port`) that nothing answers is a user error
    now: Ray itself retries for minutes, then fails with a log of its own."""
    if not address or address == "auto" or address.startswith("local"):
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port: Ray reads it its own way
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise AgentError(
            f"cannot reach the Ray cluster at {address} (--ray-address): {e.strerror or e}; "
            "check the address, or leave --ray-address out for a local cluster"
        ) from None


class RayBatchRunner(BatchRunner):
    """The same batch on a Ray cluster: each task runs in a Ray worker.

    Workers build their agent from the `AgentSpec` and load the model once per
    worker process; the driver writes the results file, so `--resume` works the
    same way. Point `address` at a cluster, or leave it None for a local one.
    """

    def __init__(
        self, spec: AgentSpec, output: str | Path, *, address: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(spec.build, output, **kwargs)
        self.spec = spec
        self.address = address
        self._remote: Any = None

    async def run(self, tasks: list[BatchTask]) -> list[BatchResult]:
        try:
            import ray
        except ImportError as e:
            raise AgentError("--executor ray needs Ray: pip install 'ray>=2.9'") from e
        if not ray.is_initialized():
            _check_reachable(self.address)
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        self._remote = ray.remote(max_retries=0)(_run_in_worker)
        return await super().run(tasks)

    async def _once(self, task: BatchTask) -> tuple[BatchResult, bool]:
        started = time.monotonic()
        try:
            data, infrastructure = await self._remote.remote(self.spec.model_dump(), task.model_dump())
        except Exception as e:  # the worker died or Ray failed: retry with backoff
            message = f"{type(e).__name__}: {e}"
            return BatchResult(
                id=task.id, status="failed", error=message, time_s=time.monotonic() - started
            ), True
        return BatchResult.model_validate(data), infrastructure


def _run_in_worker(spec: dict[str, Any], task: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    agent_spec = AgentSpec.model_validate(spec)
    batch_task = BatchTask.model_validate(task)
    runner = BatchRunner(agent_spec.build, os.devnull)
    result, infrastructure = asyncio.run(runner._once(batch_task))
    return result.model_dump(mode="json"), infrastructure


BATCH_TASK: contextvars.ContextVar[str | None] = contextvars.ContextVar("batch_task", default=None)


class _TaskTagged(logging.StreamHandler):  # type: ignore[type-arg]
    """Warnings and errors on stderr, each after the id of the task it came from: `[t17] ...`."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setLevel(logging.WARNING)

    def format(self, record: logging.LogRecord) -> str:
        task = BATCH_TASK.get()
        text = super().format(record)
        return f"[{task}] {text}" if task is not None else text

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # as it is now: the progress bar puts its own in while it shows
        super().emit(record)


def _check_tool_names(tasks: list[BatchTask], path: str | Path) -> None:
    """A task asking for a tool no built-in has is a mistake in the file: said before anything runs."""
    from .builtins import REGISTRY

    for task in tasks:
        unknown = [name for name in task.tools or () if name not in REGISTRY]
        if unknown:
            raise AgentError(
                f"{path}: task {task.id!r} asks for the unknown built-in tool {unknown[0]!r} "
                f"(available: {', '.join(sorted(REGISTRY))})"
            )


def run_cli(args: Any) -> int:
    """`agent batch TASKS -o RESULTS`: progress on stderr, a summary at the end."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar
    from rich.table import Table
    from rich.text import Text

    from .cli import tool_names, writable_dir
    from .render import Console

    tasks = read_tasks(args.tasks)
    _check_tool_names(tasks, args.tasks)
    output = Path(args.output)
    if str(args.output).endswith(("/", os.sep)):
        raise AgentError(f"-o {args.output} names a folder; give the path of a results file (.jsonl)")
    if output.exists() and os.path.samefile(output, args.tasks):
        raise AgentError(f"-o {output} is the tasks file; give the results their own file")
    if output.is_dir():
        raise AgentError(f"-o {output} is a directory; give the path of a results file (.jsonl)")
    writable_dir(output.parent, "-o", say_made=True)
    if output.exists() and not os.access(output, os.W_OK):
        raise AgentError(f"cannot write to {output} (-o): permission denied; choose another -o")
    writable_dir(args.run_dir, "--run-dir")
    spec = AgentSpec(
        model=args.model,
        base_url=args.base_url,
        api_key=args.api_key,
        effort=args.effort,
        strategy=args.strategy,
        tools=tool_names(args.tools),
        max_steps=args.max_steps,
        max_seconds=args.timeout,
        run_dir=str(args.run_dir),
        workspace=str(
            writable_dir(args.workspace, "--workspace", say_made=True).resolve()
        ),  # Ray workers start elsewhere
        approve=args.yes,
        context_window=getattr(args, "context_window", None),
        max_new_tokens=getattr(args, "max_new_tokens", None),
        request_timeout=getattr(args, "request_timeout", None),
    )
    options = dict(
        concurrency=args.concurrency,
        resume=args.resume,
        overwrite=args.overwrite,
        retries=args.retries,
    )
    runner: BatchRunner
    if args.executor == "ray":
        runner = RayBatchRunner(spec, args.output, address=args.ray_address, **options)
    else:
        runner = BatchRunner(spec.build, args.output, **options)
    # What the results file refuses (results there already, --resume of another program's file,
    # another batch writing it) is said before a model loads, which may take a while.
    runner.check(tasks)
    if args.executor == "local":
        # Load the shared model before the clock starts, and build one agent with the default
        # tools: a bad model path, --tools name or context window is one error now rather than a
        # failed result per task (a task's own tool names were checked with the file).
        spec.build(tasks[0].model_copy(update={"tools": None})).close()
    err = Console(stderr=True, emoji=False)  # ids and errors are shown as written: no :code: emoji
    bar = Bar(
        TextColumn("[bold]batch"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn(
            "[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/] {task.fields[running]} running"
        ),
        TextColumn("{task.fields[rate]} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    bar_id = bar.add_task("batch", total=len(tasks), ok=0, failed=0, running=0, rate="0")

    said: list[bool] = []

    def say(text: str) -> None:
        # Not markup: an id or error may hold "[/...]", which rich would read as a closing tag.
        err.print(text, markup=False, highlight=False, soft_wrap=True)

    def on_progress(p: Progress, result: BatchResult | None) -> None:
        if not said:  # the first call, before any task runs: what --resume found
            said.append(True)
            if p.skipped:
                say(
                    f"{p.skipped} of {p.total} tasks already have results in {args.output}; running {p.total - p.skipped}"
                )
            if p.foreign:
                one = p.foreign == 1
                say(
                    f"note: {p.foreign} result{'' if one else 's'} in {args.output} {'is' if one else 'are'} "
                    f"for ids not in {args.tasks}; kept as {'it is' if one else 'they are'}"
                )
        elapsed = max(time.monotonic() - p.started, 1e-6)
        bar.update(
            bar_id,
            completed=p.done,
            ok=p.done - p.failed,
            failed=p.failed,
            running=p.running,
            rate=f"{p.tokens / elapsed:.0f}",
        )
        if result is not None and (not err.is_terminal or not result.ok):
            if result.ok:
                mark = "ok" if result.correct is not False else "answered, not the expected answer"
            else:
                mark = result.status + (f": {result.error}" if result.error else "")
            say(f"[{p.done}/{p.total}] {result.id}: {mark}")

    runner.on_progress = on_progress
    tagged = _TaskTagged()  # warnings (a model server's retries) say which task they are about
    logging.getLogger().addHandler(tagged)
    try:
        with bar:
            results = asyncio.run(runner.run(tasks))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: say how far it got and how to go on
        done = finished_count(tasks, runner.output)
        err.print(
            Text(
                f"{done} of {len(tasks)} tasks have results in {args.output}; "
                f"run the same command with --resume to do the rest",
                style="yellow",
            ),
            soft_wrap=True,
        )
        raise
    finally:
        logging.getLogger().removeHandler(tagged)
    summary = summarize(results)
    table = Table("status", "tasks", title=Text(str(args.output)))
    for status, count in sorted(summary["statuses"].items()):
        table.add_row(status, str(count))
    if summary["graded"]:
        table.add_row("correct", f"{summary['correct']}/{summary['graded']}")
    table.add_row("tokens", f"{summary['prompt_tokens']} in, {summary['completion_tokens']} out")
    err.print(table)
    return 0 if summary["all_ok"] else 1
