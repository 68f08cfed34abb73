"""The run log: one JSON line per event, flushed as it happens.

A process killed mid-run loses at most the event being written; a torn last
line is skipped on reading. The log is what `agent replay` renders and what
`Agent.resume` continues from.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import IO

from .errors import AgentError
from .events import Event, ModelDelta, parse_event

DEFAULT_RUN_DIR = Path(".agent") / "runs"


def new_run_id() -> str:
    """Sortable by start time, unique enough for concurrent batch runs."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class RunLog:
    """Subscriber that appends every event of one run to `<dir>/<run_id>.jsonl`."""

    def __init__(self, path: str | Path, *, log_deltas: bool = False) -> None:
        self.path = Path(path)
        self.log_deltas = log_deltas
        self._file: IO[str] | None = None

    def __call__(self, event: Event) -> None:
        if not self.log_deltas and isinstance(event, ModelDelta):
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        self._file.write(event.model_dump_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def find_run(run: str | Path, run_dir: str | Path = DEFAULT_RUN_DIR) -> Path:
    """Resolve a run id, a unique id prefix, `last`, or a path to a log file."""
    path = Path(run)
    if path.suffix == ".jsonl" and path.exists():
        return path
    directory = Path(run_dir)
    logs = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    if str(run) == "last":
        if not logs:
            raise AgentError(f"no runs in {directory}/")
        return max(logs, key=os.path.getmtime)
    exact = directory / f"{run}.jsonl"
    if exact.exists():
        return exact
    matches = [p for p in logs if p.stem.startswith(str(run))]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(p.stem for p in matches[:5])
        raise AgentError(f"run id {run!r} is ambiguous: {names}")
    raise AgentError(f"no run {run!r} in {directory}/ (pass a run id, 'last', or a .jsonl path)")


def trim_torn_tail(path: str | Path) -> None:
    """Cut a partial last line, so that appending after a crash stays valid JSONL."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_events(path: str | Path) -> list[Event]:
    """Read a run log, skipping a torn final line from a killed process."""
    events: list[Event] = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(parse_event(line))
        except ValueError as e:
            if number == len(lines):
                break
            raise AgentError(f"{path}:{number}: not a valid event ({e.__class__.__name__})") from e
    return events
