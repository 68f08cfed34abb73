"""The `python` tool: one persistent, sandboxed Jupyter kernel per agent session.

```python
from tools import PythonTool

agent = Agent(model, tools=[PythonTool(workspace="work")])
```

Variables persist from call to call. The kernel runs in the strongest
isolation available (`tool.isolation`: "bubblewrap", "netns" or "none"), with
no network unless `allow_network=True`, under resource limits. A cell that runs
too long is interrupted, and the kernel is restarted if it does not stop; a
kernel that dies is replaced. Either way the model is told what was lost.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.builtins import OPTIONS as BUILTIN_OPTIONS
from agent.threads import run_blocking
from agent.tool import Tool, ToolError, keep_ends, tool_context

from . import sandbox as sb

_IMAGES = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/svg+xml": "svg",
}
_RICH = {
    "text/html": "html",
    "text/markdown": "md",
    "text/latex": "tex",
    "application/json": "json",
    "application/pdf": "pdf",
    "application/javascript": "js",
}
_OBJECT_REPR = re.compile(r"^<[\w.]+ (object|at 0x[0-9a-f]+)[^>]*>$|^<IPython\.core\.display\.\w+ object>$")


class PythonArgs(BaseModel):
    code: str = Field(
        description="Python code to run. Variables, imports and functions persist between calls; "
        "the value of the last expression is shown."
    )


class PythonTool(Tool):
    """Run Python in a persistent, sandboxed Jupyter kernel (one per tool instance)."""

    name = "python"
    Args = PythonArgs
    effects = frozenset({"executes"})
    safe_to_rerun = False

    def __init__(
        self,
        *,
        workspace: str | Path | None = None,
        allow_network: bool = False,
        timeout: float | None = 30.0,
        isolation: str = "auto",
        limits: sb.Limits | None = None,
        run_as: str | None = "nobody",
        max_output: int = 10_000,
        interrupt_grace: float = 3.0,
        pool: sb.KernelPool | None = None,
        prefetch: bool = True,
        current_dir_default: bool = False,
    ) -> None:
        if isolation != "auto" and isolation not in sb.ISOLATION_LEVELS:
            raise ValueError(
                f"unknown isolation {isolation!r}; use 'auto' or one of {', '.join(sb.ISOLATION_LEVELS)}"
            )
        self.config = sb.SandboxConfig(
            isolation=isolation, allow_network=allow_network, limits=limits or sb.Limits(), run_as=run_as
        )
        self.allow_network = allow_network
        self.cell_timeout = timeout
        self.interrupt_grace = interrupt_grace
        # The loop's own timeout is a backstop: the tool stops the cell first and says what happened.
        self.timeout = None if timeout is None else timeout + interrupt_grace + 20.0
        self.max_output = max_output
        self.effects = frozenset({"executes", "network"} if allow_network else {"executes"})
        self._limit_text = f" Each call may run for at most {timeout:g} s." if timeout else ""
        self._workspace = str(Path(workspace).resolve()) if workspace is not None else None
        # No workspace of its own or of the run: the current directory (the built-in's way,
        # as the files tools do), or else a temporary folder.
        self.current_dir_default = current_dir_default
        self._pool = pool
        self._kernel: sb.Kernel | None = None
        self._key: str | None = None  # the workspace `_kernel` was asked for
        # Kernels of the other workspaces this tool has run in (one tool shared by agents with
        # workspaces of their own): each keeps its variables and its folder.
        self._parked: OrderedDict[str | None, tuple[sb.Kernel | None, list[str]]] = OrderedDict()  # and notes
        self._lock = threading.Lock()
        self._notes: list[str] = []
        self._announced = False
        self._closed = False
        self._cancel: threading.Event | None = None
        self._isolation: str | None = None
        self._prefetched = False
        # The kernel warmed up front is for the folder the first call will most likely use.
        self._prefetch_target = self._workspace or (os.getcwd() if current_dir_default else None)
        self._prefetch_done = threading.Event()
        if prefetch:
            threading.Thread(target=self._prefetch, name="agent-python-prefetch", daemon=True).start()
        else:
            self._prefetch_done.set()

    # -- public ----------------------------------------------------------------

    @property
    def description(self) -> str:  # type: ignore[override]
        try:
            isolated_net = not self.allow_network and self.isolation != "none"
        except sb.SandboxError:
            isolated_net = False
        return (
            "Run Python code in a persistent, sandboxed Jupyter kernel"
            + (" without network access" if isolated_net else "")
            + ". Variables, imports and functions persist between calls. The working directory is the "
            "workspace: read and write files there. stdout, stderr, the value of the last expression and errors "
            "are returned; images and other rich outputs (e.g. matplotlib plots) are saved under outputs/ in the "
            "workspace." + self._limit_text
        )

    @property
    def pool(self) -> sb.KernelPool:
        return self._pool or sb.get_pool()

    @property
    def isolation(self) -> str:
        """The isolation this tool's kernels get: "bubblewrap", "netns" or "none"."""
        if self._isolation is None:
            self._isolation = sb.resolve_isolation(self.config.isolation)
        return self._isolation

    @property
    def workspace(self) -> str | None:
        """The kernel's working directory (None until known)."""
        if self._kernel is not None:
            return self._kernel.workspace
        return self._workspace

    @property
    def kernel(self) -> sb.Kernel | None:
        return self._kernel

    def kernel_pids(self) -> list[int]:
        """Host pids of this session's sandbox (empty when no kernel is running)."""
        k = self._kernel
        return k.host_pids() if k is not None else []

    async def run(self, args: PythonArgs) -> str:
        workspace = self._workspace
        if workspace is None:
            ctx = tool_context()
            if ctx is not None and ctx.workspace is not None:
                workspace = str(Path(ctx.workspace).resolve())
            elif self.current_dir_default:
                workspace = os.getcwd()
        cancel = threading.Event()
        self._cancel = cancel
        try:
            return await run_blocking(self._call, args.code, cancel, workspace)
        except asyncio.CancelledError:
            cancel.set()  # the worker interrupts the kernel (or restarts it) and notes it for the next call
            raise

    async def aclose(self) -> None:
        self._closed = True
        if self._cancel is not None:
            self._cancel.set()
        await run_blocking(self._close)

    def close(self) -> None:
        """`aclose` for synchronous code."""
        self._closed = True
        if self._cancel is not None:
            self._cancel.set()
        self._close()

    # -- kernel management ------------------------------------------------------

    def _prefetch(self) -> None:
        try:
            isolation = self.isolation
            pool = self.pool
            target = self._prefetch_target
            if target is not None and isolation == "bubblewrap":
                os.makedirs(target, exist_ok=True)
                pool.prefetch(self.config, isolation, target)
                self._prefetched = True
            else:
                pool.warm(self.config, isolation, None)
        except Exception:
            pass
        finally:
            self._prefetch_done.set()

    def _acquire(self, workspace: str | None) -> sb.Kernel:
        self._prefetch_done.wait(10)
        if workspace is not None:
            os.makedirs(workspace, exist_ok=True)
        prefetched = self._prefetched and workspace == self._prefetch_target
        self._prefetched = False
        try:
            return self.pool.acquire(self.config, self.isolation, workspace, prefetched=prefetched, owner=self)
        except sb.SandboxError as e:
            raise ToolError(f"The Python sandbox is not available: {e}") from None

    def _replace(self, workspace: str | None) -> str:
        """Kill the current kernel and get a fresh one; the sentence to tell the model."""
        old, self._kernel = self._kernel, None
        if old is not None:
            old.kill()
            workspace = workspace or (None if old.temp_workspace else old.workspace)
        try:
            self._kernel = self._acquire(workspace)
        except ToolError as e:
            return f"A fresh kernel could not be started yet ({e}); it will be retried on the next call."
        return "a fresh kernel is ready"

    def _close(self) -> None:
        with self._lock:
            kernel, self._kernel = self._kernel, None
            if kernel is not None:
                kernel.kill()
            parked, self._parked = self._parked, OrderedDict()
            for other, _ in parked.values():
                if other is not None:
                    other.kill()
            if self._prefetched:
                self._prefetched = False
                self.pool.cancel_prefetch(self.config, self.isolation, self._workspace)

    # -- one call ---------------------------------------------------------------

    def _call(self, code: str, cancel: threading.Event, workspace: str | None) -> str:
        with self._lock:
            if self._closed:
                raise ToolError("The python tool is closed.")
            if cancel.is_set():  # cancelled while an earlier call was still stopping
                self._notes.append("The previous python call was cancelled before it ran.")
                return ""
            if workspace != self._key and (self._kernel is not None or self._parked):
                self._switch(workspace)
            self._key = workspace
            notes, self._notes = self._notes, []
            kernel = self._kernel
            if kernel is not None and not kernel.alive():
                reason = kernel.death_reason()
                fresh = self._replace(workspace)
                notes.append(
                    f"The Python kernel died between calls ({reason}); variables were lost; {fresh}."
                )
            if self._kernel is None:
                self._kernel = self._acquire(workspace)
            kernel = self._kernel
            header = "" if self._announced else self._header(kernel)
            self._announced = True
            result = kernel.execute(
                code,
                timeout=self.cell_timeout,
                grace=self.interrupt_grace,
                cancel=cancel,
                max_output=self.max_output,
            )
            body = self._render(result, kernel.workspace)
            status = self._recover(result, kernel, workspace)
            if cancel.is_set():
                # nobody awaits this result any more: tell the next call what happened
                if header:
                    self._announced = False
                if status:
                    what = status
                elif result.status == "cancelled":
                    what = "It was interrupted; variables are kept."
                else:
                    what = "It had finished, but its output was not read."
                self._notes = [*notes, f"The previous python call was cancelled. {what}", *self._notes]
                return ""
            text = "\n".join(part for part in [header, *notes, body, status] if part)
            if result.status != "ok" or status:
                raise ToolError(text)
            return text

    def _switch(self, workspace: str | None) -> None:
        """Another workspace than the last call's: its own kernel and notes (never one folder's
        session, variables and files, for another's code). The least recently used of those
        kept beyond `_PARKED` is ended."""
        if self._kernel is not None or self._notes:  # notes to tell even when its kernel is gone
            self._parked[self._key] = (self._kernel, self._notes)
            self._parked.move_to_end(self._key)
        kernel, notes = self._parked.pop(workspace, (None, []))
        self._kernel, self._notes = kernel, notes
        self._announced = kernel is not None
        while len(self._parked) > _PARKED:
            _, (old, _) = self._parked.popitem(last=False)
            if old is not None:
                old.kill()

    def _recover(self, result: sb.ExecResult, kernel: sb.Kernel, workspace: str | None) -> str:
        """Restart or replace the kernel when needed; a sentence for the model."""
        if result.status != "died" and not kernel.alive():  # died just after the cell finished
            result.status, result.death = "died", kernel.death_reason()
        if result.exit_asked:  # the kernel shuts down after it answers: a fresh one now, not a death later
            fresh = self._replace(workspace)
            return f"exit() ended the Python session: its variables are gone; {fresh}."
        if result.status == "died":
            reason = f" ({result.death})" if result.death else ""
            fresh = self._replace(workspace)
            return f"The Python kernel died{reason}; variables were lost; {fresh}."
        if result.restart_needed:
            fresh = self._replace(workspace)
            what = "timed out" if result.status == "timeout" else "was cancelled"
            return (
                f"The cell {what} and the kernel did not respond to an interrupt within "
                f"{self.interrupt_grace:g} s, so it was restarted: the kernel state (variables, imports) was lost; "
                f"{fresh}."
            )
        limit = self.config.limits.processes
        # without a pids cgroup counting takes a /proc scan: redo it after a cell that looks wrong
        tasks = kernel.tasks(rescan=result.status != "ok" or result.duration > 0.5)
        if limit and tasks is not None and tasks >= limit * 0.9:
            fresh = self._replace(workspace)
            return (
                f"The sandbox is at its process limit ({tasks} of {limit} processes and threads), e.g. after a fork "
                f"bomb, so the kernel was restarted to free it: variables were lost; {fresh}."
            )
        if result.status == "timeout":
            return (
                f"Timed out after {self.cell_timeout:g} s: the cell was interrupted. The kernel and its variables "
                "are kept; make the code faster or work on less data."
            )
        return ""

    def _header(self, kernel: sb.Kernel) -> str:
        level = kernel.isolation
        what = {
            "bubblewrap": "bubblewrap sandbox (read-only system, only the workspace is writable, private /tmp)",
            "netns": "network namespace (no filesystem isolation)",
            "none": "no isolation beyond resource limits",
        }[level]
        if self.allow_network:
            net = "network allowed"
        elif level == "none":
            net = "network not isolated"
        else:
            net = "no network"
        procs = (
            ""
            if kernel.cgroup or kernel.user != "root"
            else "; no process limit (root without a pids cgroup)"
        )
        partly = (
            f"; the workspace holds over {sb.GRANT_ENTRIES:,} entries and only those met first are "
            f"writable for user {kernel.user}: keep the work in a smaller folder"
            if level == "bubblewrap" and kernel.workspace in sb.partly_shared
            else ""
        )
        return (
            f"[python kernel: {what}; {net}; user {kernel.user}{procs}; working directory {kernel.workspace}"
            f"{partly}]"
        )

    # -- rendering ---------------------------------------------------------------

    def _render(self, result: sb.ExecResult, workspace: str) -> str:
        parts: list[str] = []
        for out in result.outputs:
            if out.kind == "stdout":  # colour codes (a progress bar, a coloured log) are noise to the model
                parts.append(sb.strip_ansi(out.text).rstrip("\n"))
            elif out.kind == "stderr":
                parts.append("[stderr]\n" + sb.strip_ansi(out.text).rstrip("\n"))
            elif out.kind == "cut":
                parts.append(f"[... {int(out.text):,} characters of output cut ...]")
            elif out.kind in ("result", "display"):
                parts.extend(self._rich(out, workspace))
            elif out.kind == "error":
                parts.append(sb.trim_traceback(out.traceback, out.ename, out.evalue))
        if result.status == "died" and not parts:
            return ""
        text = "\n".join(p for p in parts if p)
        if not text and result.status == "ok":
            return "(no output)"
        limit = self.max_output
        if len(text) > limit + limit // 2:  # streams were capped as they came; values, displays, tracebacks here
            text = keep_ends(text, limit, "characters of output cut ...]")
        return text

    def _rich(self, out: sb.Output, workspace: str) -> list[str]:
        data = out.data
        lines: list[str] = []
        saved = False
        for mime, ext in _IMAGES.items():
            if mime in data:
                lines.append(self._save(data[mime], mime, "plot", ext, workspace))
                saved = True
                break
        plain = data.get("text/plain", "")
        plain = sb.strip_ansi(plain) if isinstance(plain, str) else ""
        if plain and _OBJECT_REPR.match(plain.strip()):
            plain = ""  # "<IPython.core.display.HTML object>" says nothing
        if not saved and not plain:
            for mime, ext in _RICH.items():
                if mime in data:
                    lines.append(self._save(data[mime], mime, "output", ext, workspace))
                    break
        if plain:
            if out.kind == "result":
                sep = "\n" if "\n" in plain else " "
                lines.insert(0, f"Out[{out.execution_count}]:{sep}{plain}")
            else:
                lines.insert(0, plain)
        return lines

    @staticmethod
    def _save(value: Any, mime: str, stem: str, ext: str, workspace: str) -> str:
        try:
            if isinstance(value, str) and (
                mime.startswith("image/") and mime != "image/svg+xml" or mime == "application/pdf"
            ):
                payload = base64.b64decode(value)
            elif isinstance(value, str):
                payload = value.encode("utf-8", "surrogateescape")
            else:
                import json

                payload = json.dumps(value, indent=1).encode()
            name = _write_new_output(workspace, stem, ext, payload)
        except (OSError, ValueError) as e:
            return f"[{mime} output could not be saved: {e}]"
        size = len(payload)
        shown = f"{size} bytes" if size < 2048 else f"{size / 1024:.1f} kB"
        return f"[{mime} saved to outputs/{name} ({shown})]"


_taken: dict[tuple[str, str, str], int] = {}  # (workspace, stem, extension): the last number written


def _write_new_output(workspace: str, stem: str, ext: str, payload: bytes) -> str:
    """Write `payload` to a new file `outputs/<stem>-<n>.<ext>` of the workspace; its name.

    This process writes what the sandboxed kernel produced, into a folder the
    kernel can change: nothing there is followed. `outputs` must be a real
    folder (not a link to one elsewhere), and the file is created new
    (`O_EXCL`: not through a link the kernel left under that name, dangling or not).
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    root = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            # The default mode (0o777 less the umask): with the workspace's default ACL, a
            # narrower mode would mask the kernel's own write access to the folder.
            os.mkdir("outputs", dir_fd=root)
        except FileExistsError:
            pass
        try:
            folder = os.open("outputs", os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=root)
        except OSError as e:
            raise OSError(e.errno, "outputs/ in the workspace is not a plain folder (a link?)") from None
        key = (workspace, stem, ext)
        try:
            # From after the last number this process took there: a folder holding thousands of
            # plots is not tried name by name from 1 for each new one (O_EXCL keeps it right).
            for n in range(_taken.get(key, 0) + 1, 100_000):
                name = f"{stem}-{n}.{ext}"
                try:
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o644, dir_fd=folder)
                except FileExistsError:
                    continue
                _taken[key] = n
                with os.fdopen(fd, "wb") as f:
                    f.write(payload)
                return name
            raise OSError(errno.EEXIST, f"outputs/ holds {stem}-1 to {stem}-99999 already")
        finally:
            os.close(folder)
    finally:
        os.close(root)


_PARKED = 4  # kernels of other workspaces one tool keeps (with their variables) beside its current one

OPTIONS = BUILTIN_OPTIONS["python"]


def make_tools(**options: Any) -> list[Tool]:
    """The built-in `python` tool; options it does not take are another built-in's."""
    kwargs = {k: options[k] for k in OPTIONS if options.get(k) is not None}
    # As the files tools do: with no workspace of its own or of the run, the current
    # directory (what `agent --workspace` defaults to), so that files one tool writes
    # the other finds. A PythonTool made directly keeps a temporary folder instead.
    return [PythonTool(**kwargs, current_dir_default=True)]
