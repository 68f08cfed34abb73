"""The run log: one JSON line per event, flushed as it happens.

A process killed mid-run loses at most the event being written; a torn last
line is skipped on reading. The log is what `agent replay` renders and what
`Agent.resume` continues from.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic_core import SchemaSerializer

from .errors import AgentError
from .events import Event, parse_event

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

DEFAULT_RUN_DIR = Path(".agent") / "runs"


_stamp: tuple[int, str] = (-1, "")  # the last second's "YYYYmmdd-HHMMSS": strftime reads the time zone


def new_run_id() -> str:
    """Sortable by start time, unique enough for concurrent batch runs."""
    global _stamp
    now = int(time.time())
    if now != _stamp[0]:
        _stamp = (now, time.strftime("%Y%m%d-%H%M%S", time.localtime(now)))
    return f"{_stamp[1]}-{os.urandom(3).hex()}"  # secrets.token_hex(3), without its two wrappers


# Per event class: its pydantic serializer and whether it is a delta, learnt from its first
# event (the classes defer building their schema to their first use, and until then hold a
# stand-in). A class rebuilt with model_rebuild(force=True) after that keeps the first.
_kinds: dict[type, tuple[SchemaSerializer, bool]] = {}


def _kind(event: Event) -> tuple[SchemaSerializer, bool]:
    cls = type(event)
    serializer = cls.__pydantic_serializer__
    if not isinstance(serializer, SchemaSerializer):
        cls.model_rebuild()  # what the stand-in does on its first use
        serializer = cls.__pydantic_serializer__
    kind = (serializer, event.__dict__["type"] == "model_delta")  # by the tag: a subclass is one too
    if isinstance(serializer, SchemaSerializer):
        _kinds[cls] = kind
    return kind


class RunLog:
    """Subscriber that appends every event of one run to `<dir>/<run_id>.jsonl`."""

    _fd: int | None = None  # the open log file; a class default, so __del__ works even if __init__ failed

    def __init__(self, path: str | Path, *, log_deltas: bool = False) -> None:
        # Kept as given: a Path is built only when asked for (pathlib parses
        # on every construction, and most runs never need one).
        self._file = os.fspath(path)
        self.log_deltas = log_deltas

    @property
    def path(self) -> Path:
        return Path(self._file)

    @property
    def file(self) -> str:
        """The log's path as the string it was given as."""
        return self._file

    failed: str | None = None  # why the log stopped: a write failed (a full disk); nothing is written after

    def __call__(self, event: Event) -> None:
        # Looked up by class, not read from the event: an attribute of a pydantic model
        # (its serializer, its dict) goes through its __getattr__ hook, several times the cost.
        kind = _kinds.get(type(event)) or _kind(event)
        serializer, delta = kind
        if delta and not self.log_deltas:
            return
        fd = self._fd
        if fd is None:
            if self.failed is not None:
                return
            fd = self._fd = self._open()
        # One write() per event, unbuffered: once it returns, the line is the
        # kernel's and survives the process being killed (no fsync: a power
        # cut may still lose it). The bytes are model_dump_json()'s, in UTF-8.
        line = serializer.to_json(event) + b"\n"
        try:
            written = os.write(fd, line)
            while written < len(line):  # a short write (a signal, a full disk): the rest
                line = line[written:]
                written = os.write(fd, line)
        except OSError as e:
            # The run fails with this message, and the events that say so still reach the
            # other subscribers (the terminal, a caller's stream): the log writes no more.
            self.close()
            raise self._failure(e) from None

    def open(self) -> None:
        """Open the log now (it opens at the first event otherwise): a log that another
        writer holds is refused here, before anything runs."""
        if self._fd is None:
            self._fd = self._open()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        try:
            try:
                fd = os.open(self._file, flags, 0o644)
            except FileNotFoundError:  # the first run in this directory
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._file, flags, 0o644)
        except OSError as e:
            raise self._failure(e) from None
        _claim(fd, self._file)
        return fd

    def _failure(self, e: OSError) -> AgentError:
        """Record why the log stopped (nothing is written after), as the error to raise."""
        self.failed = f"cannot write the run log {self._file}: {e.strerror or e}"
        return AgentError(self.failed)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # a log its owner forgot to close must not leak the descriptor
        self.close()


def try_lock(fd: int, *, shared: bool = False) -> bool:
    """Take the open file's lock without waiting: False when another holder has it.
    Run logs and batch results files are held this way by their one writer."""
    if fcntl is None:  # pragma: no cover - Windows: no locks, every writer goes ahead
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _claim(fd: int, path: str) -> None:
    """Lock the open log for this writer: two writers (a session resumed twice at once)
    would interleave their events under the same sequence numbers."""
    if not try_lock(fd):
        os.close(fd)
        raise AgentError(
            f"the run log {path} is being written by another process (the run still going, or the "
            "same session resumed twice); wait until it has ended"
        )


def is_live(path: str | Path) -> bool:
    """Whether a run is writing this log now (it holds the log's lock)."""
    if fcntl is None:  # pragma: no cover - Windows: unknown
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not try_lock(fd, shared=True)
    finally:
        os.close(fd)


class RunNotFound(AgentError):
    """No run log answers to the id, prefix or path given."""


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
    raise RunNotFound(f"no run {run!r} in {directory}/ (pass a run id, 'last', or a .jsonl path)")


def trim_torn_tail(path: str | Path) -> None:
    """Cut a partial last line, so that appending after a crash stays valid JSONL."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def first_event(path: str | Path) -> Event | None:
    """A log's first event (its run_started) without reading the rest; None when unreadable."""
    try:
        with open(path, "rb") as f:
            return parse_event(f.readline())
    except (OSError, ValueError):
        return None


def read_events(path: str | Path) -> list[Event]:
    """Read a run log, skipping a torn final line from a killed process."""
    events: list[Event] = []
    try:
        # Split on "\n" only: str.splitlines() also breaks at U+2028, U+2029,
        # U+0085 and others, which JSON leaves unescaped inside strings.
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise AgentError(f"{path} is not a run log (not UTF-8 text)") from None
    except OSError as e:  # unreadable, a directory, ...
        raise AgentError(f"cannot read run log {path}: {e.strerror or e}") from None
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
