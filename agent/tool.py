"""The `Tool` abstraction and the `@tool` decorator.

A tool has a name, a description, a pydantic model of its arguments and a
declaration of what it does to the world (its effects). The loop validates
arguments against the model, so a tool body only ever sees valid input.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import inspect
import math
import re
import sys
import typing
import warnings
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticSerializationError

Effect = Literal["reads", "writes", "network", "executes"]
EFFECTS: frozenset[str] = frozenset({"reads", "writes", "network", "executes"})


class ToolError(Exception):
    """Raise inside a tool to show the model a plain error message."""


class ToolBlocked(ToolError):
    """Raise inside a tool when a guard refused what it was to do (an event it emitted
    through `tool_context().emit`, such as a memory write): the result has `error_kind`
    "blocked", and is not judged again when a guard did refuse an event of this call.
    Raised without such a refusal, its text is judged as any output of the tool."""


@dataclass
class ToolContext:
    """What a running tool may know about its run, and how it reports events.

    `emit` puts an event on the run's bus (guards judge it first) and returns
    the decision, so a tool that writes memory can be refused by a guard.
    """

    run_id: str
    step: int
    call_id: str
    workspace: Path | None
    emit: Callable[[Any], Awaitable[Any]]


# The call running now, as the loop sets it: (run, step, call id). The ToolContext is
# made when a tool asks for it; most tools never do, and the loop sets one per call.
_context: ContextVar[tuple[Any, int, str] | None] = ContextVar("agent_tool_context", default=None)


def tool_context() -> ToolContext | None:
    """The context of the tool call running now, or None outside a run."""
    current = _context.get()
    if current is None:
        return None
    run, step, call_id = current
    return ToolContext(run.run_id, step, call_id, run.agent.workspace, run.emit_for(call_id))


class Tool(ABC):
    """Base class for tools. Subclass it for tools that keep state.

    ```python
    class Counter(Tool):
        name = "count"
        description = "Add `step` to a counter and return the new value."

        class Args(BaseModel):
            step: int = 1

        def __init__(self) -> None:
            self.value = 0

        async def run(self, args: Args) -> int:
            self.value += args.step
            return self.value
    ```

    `run` may also be a plain `def`: it then runs on a worker thread (on the
    event loop with `blocking = False`), as a sync `@tool` function does.
    """

    name: str = ""
    description: str = ""
    Args: ClassVar[type[BaseModel]]
    effects: frozenset[str] = frozenset({"reads"})
    timeout: float | None = 60.0
    needs_approval: bool = False
    max_retries: int = 3
    # False declares a call quick and free of I/O: the loop runs it without a
    # timeout (nothing could interrupt it anyway), and a sync @tool function
    # (or a plain `def run` of a subclass) runs on the event loop instead of a
    # worker thread.
    blocking: bool = True

    @property
    def runs_inline(self) -> bool:
        """Whether a call runs to its end on the event loop without awaiting anything: a
        sync `run` declared quick (`blocking = False`). The loop arms no timeout for such
        a call (nothing could interrupt it); an `async def run` always gets one."""
        return not self.blocking and getattr(type(self).run, "_sync_run", False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if isinstance(own.get("effects"), (set, list, tuple)):
            cls.effects = frozenset(own["effects"])
        if isinstance(own.get("effects"), frozenset):
            _check_effects(own["effects"], f"tool class {cls.__name__}")
        run = own.get("run")
        if "Args" not in own and not hasattr(cls, "Args") and callable(run):
            cls._args_from_annotation(run)
        if inspect.isgeneratorfunction(run) or inspect.isasyncgenfunction(run):
            raise TypeError(f"{cls.__name__}.run is a generator; a tool's run returns its result")
        plain = callable(run) and not isinstance(run, (staticmethod, classmethod))
        if plain and not inspect.iscoroutinefunction(run):
            # A plain `def run`: the loop awaits run(), so it is wrapped; as a sync
            # @tool function, it runs on a worker thread unless `blocking = False`.
            cls.run = _awaitable_run(run)  # type: ignore[method-assign]

    @classmethod
    def _args_from_annotation(cls, run: Callable[..., Any]) -> None:
        """`async def run(self, args: Ping)` with no `Args`: `Ping` is the argument model."""
        try:
            params = list(inspect.signature(run).parameters.values())
            annotation = params[1].annotation if len(params) > 1 else None
            if isinstance(annotation, str):
                module = sys.modules.get(cls.__module__)
                annotation = get_type_hints(run, vars(module) if module else None).get(params[1].name)
        except Exception:  # an annotation that does not resolve here: check_tool asks for `Args`
            return
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            cls.Args = annotation

    @property
    def args_model(self) -> type[BaseModel]:
        return self.Args

    @property
    def read_only(self) -> bool:
        """True when the tool only reads: such calls may run concurrently."""
        return self.effects <= {"reads"}

    _safe_to_rerun: bool | None = None
    _effects_declared: bool | None = None  # set by @tool; a class declares them by setting `effects`

    @property
    def effects_declared(self) -> bool:
        """Whether the tool's author said what it does. Undeclared, a tool counts as
        read-only for running calls together, but not where a wrong guess could
        repeat or let through a side effect (resume, a guard that fails)."""
        if self._effects_declared is not None:
            return self._effects_declared
        return "effects" in vars(self) or any(
            "effects" in vars(c) for c in type(self).__mro__ if c is not Tool
        )

    @property
    def safe_to_rerun(self) -> bool:
        """Whether a call a crash interrupted may run again on resume. Unless a
        class or instance declares it, only a tool declared to only read is (a
        write may have taken effect)."""
        declared = self._safe_to_rerun
        return self.read_only and self.effects_declared if declared is None else declared

    @safe_to_rerun.setter
    def safe_to_rerun(self, value: bool | None) -> None:
        self._safe_to_rerun = value

    @abstractmethod
    async def run(self, args: Any) -> Any:
        """Do the work with validated `args`; the return value becomes the observation."""

    async def aclose(self) -> None:  # noqa: B027
        """Release what the tool holds (kernels, clients). Optional: most tools hold nothing."""

    def validate(self, arguments: dict[str, Any]) -> BaseModel:
        # model_validate() without its Python wrapper, which passes seven
        # keyword arguments through: this runs for every tool call.
        return self.args_model.__pydantic_validator__.validate_python(arguments)

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-tool schema the model is shown (built once: it is slow)."""
        cached = self.__dict__.get("_schema")
        if cached is not None and cached[0] is self.args_model:
            return cached[1]
        params = self.args_model.model_json_schema()
        params.pop("title", None)
        schema = {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": params,
            },
        }
        self.__dict__["_schema"] = (self.args_model, schema)
        return schema

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} effects={sorted(self.effects)}>"


def _awaitable_run(run: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Awaitable[Any]]:
    """A sync `Tool.run` as the coroutine method the loop awaits."""

    @functools.wraps(run)
    async def wrapper(self: Tool, args: Any) -> Any:
        if self.blocking:
            from .threads import run_blocking

            value = await run_blocking(run, self, args)
        else:
            value = run(self, args)
        # A `def run` that hands back a coroutine (it delegates to an async helper) is awaited.
        return await value if inspect.isawaitable(value) else value

    wrapper._sync_run = True  # type: ignore[attr-defined]  # see Tool.runs_inline
    return wrapper


def check_tool(t: Tool) -> None:
    """Refuse a tool that no model could call: no name, a name the APIs reject, no
    argument model, effects the runtime does not know. Names are set on the class or
    in `__init__`, so this checks the instance, when an agent takes the tool."""
    kind = type(t).__name__
    name = getattr(t, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f'tool class {kind} has no name; set `name = "..."` in the class')
    if not _TOOL_NAME.fullmatch(name):
        raise ValueError(
            f"tool name {name!r} ({kind}): use 1-64 letters, digits, '_' or '-', without spaces or dots"
        )
    args = getattr(t, "args_model", None)  # what validation and the schema use (Args, unless overridden)
    if not (isinstance(args, type) and issubclass(args, BaseModel)):
        raise TypeError(
            f"tool {name!r} ({kind}) has no argument model; define `class Args(BaseModel): ...` in the class "
            "(an empty one for a tool without arguments)"
        )
    _check_effects(t.effects, f"tool {name!r}")
    timeout = t.timeout
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
    ):
        raise ValueError(
            f"tool {name!r}: timeout must be a positive number of seconds or None, not {timeout!r}"
        )
    for flag in ("needs_approval", "blocking"):
        if not isinstance(getattr(t, flag, False), bool):
            raise TypeError(f"tool {name!r}: {flag} must be True or False, not {getattr(t, flag)!r}")
    if isinstance(t, FunctionTool) and t._takes_self and t._bound is None:
        raise TypeError(
            f"tool {name!r} is a method taken from its class: it has no `self` to run with; give the "
            f"instance's method (`{name}` of an object, e.g. `store.{name}`), or the object's tools"
        )


def _check_effects(effects: Any, what: str) -> None:
    if isinstance(effects, str):  # effects="writes": a set of its letters otherwise
        raise TypeError(
            f"{what}: effects is a set of names, e.g. {{{effects!r}}}, not the string {effects!r}"
        )
    unknown = set(effects) - EFFECTS
    if unknown:
        raise ValueError(f"{what}: unknown effects {sorted(unknown)}; use {sorted(EFFECTS)}")


# Letters of any script: local models take `météo`; OpenAI's API wants ASCII.
_TOOL_NAME = re.compile(r"[\w-]{1,64}")


class FunctionTool(Tool):
    """A tool made from a typed function by `@tool`."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        effects: set[str] | frozenset[str] | None = None,
        timeout: float | None = 60.0,
        needs_approval: bool = False,
        safe_to_rerun: bool | None = None,
        max_retries: int = 3,
        blocking: bool = True,
        namespace: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(fn, staticmethod):
            fn = fn.__func__
        if isinstance(fn, classmethod):
            raise TypeError(
                f"@tool cannot make a tool of the classmethod {fn.__func__.__qualname__}; make it a plain "
                "function or an instance method (a class-level value it needs can be read from the class)"
            )
        name = name or getattr(fn, "__name__", None)
        if not name:
            raise TypeError(f"{fn!r:.60} has no __name__ to name the tool by: pass one, tool(fn, name=...)")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"tool {name!r} is a generator; a tool returns its result "
                "(collect what it yields into a list or a string and return that)"
            )
        self.fn = fn
        self.name = name
        described = fn.func if isinstance(fn, functools.partial) else fn  # not partial's own docstring
        summary, param_docs = _parse_docstring(inspect.getdoc(described) or "")
        self.description = description or summary or self.name
        _check_effects(effects if effects is not None else (), f"tool {self.name!r}")  # as given: a str too
        self.effects = frozenset(effects) if effects is not None else frozenset({"reads"})
        self._effects_declared = effects is not None
        self.timeout = timeout
        self.needs_approval = needs_approval
        self.safe_to_rerun = safe_to_rerun
        self.max_retries = max_retries
        self.blocking = blocking
        self._bound: Any = None
        self._takes_self = _first_param_is_self(fn)
        self.Args = _args_model(  # type: ignore[misc]
            fn, self.name, param_docs, skip_first=self._takes_self, namespace=namespace
        )
        self._is_async = inspect.iscoroutinefunction(fn)
        # Parameters before a `/`: passed by position (a keyword would be refused).
        kinds = [p.kind for p in inspect.signature(fn).parameters.values()][int(self._takes_self) :]
        self._positional = kinds.count(inspect.Parameter.POSITIONAL_ONLY)

    def __get__(self, obj: Any, owner: type | None = None) -> FunctionTool:
        # A @tool-decorated method: each instance gets a copy bound to itself.
        if obj is None or not self._takes_self:
            return self
        bound = obj.__dict__.get(f"__tool_{self.name}")
        if bound is None:
            bound = copy.copy(self)
            bound._bound = obj
            obj.__dict__[f"__tool_{self.name}"] = bound
        return bound

    async def run(self, args: BaseModel) -> Any:
        # `Args` is made by `_args_model`: its instance dict holds exactly the parameters.
        kwargs = args.__dict__
        call_args: tuple[Any, ...] = (self._bound,) if self._takes_self else ()
        if self._positional:
            values = list(kwargs.values())  # in the signature's order, as `_args_model` made them
            call_args += tuple(values[: self._positional])
            kwargs = dict(zip(list(kwargs)[self._positional :], values[self._positional :], strict=True))
        if self._is_async:
            return await self.fn(*call_args, **kwargs)
        if not self.blocking:
            return self.fn(*call_args, **kwargs)
        from .threads import run_blocking  # loaded with the first blocking call, not with the package

        return await run_blocking(self.fn, *call_args, **kwargs)

    @property
    def runs_inline(self) -> bool:
        return not self.blocking and not self._is_async

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (handy in tests)."""
        if self._takes_self and self._bound is not None:
            return self.fn(self._bound, *args, **kwargs)
        return self.fn(*args, **kwargs)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    effects: set[str] | frozenset[str] | None = None,
    timeout: float | None = 60.0,
    needs_approval: bool = False,
    safe_to_rerun: bool | None = None,
    max_retries: int = 3,
    blocking: bool = True,
) -> Any:
    """Turn a typed function (sync or async) into a `Tool`.

    The docstring up to its first section (`Args:`, `Returns:`, ...) becomes
    the description, and its parameter section documents the parameters, in
    Google (`Args:`), NumPy (`Parameters` over dashes) or Sphinx (`:param x:`)
    style. A parameter may also carry pydantic constraints and a
    description: `n: Annotated[int, Field(ge=1, description="...")]` or
    `n: int = Field(1, ge=1)`. Effects default to read-only; a tool
    that is not read-only is assumed unsafe to re-run after a crash unless
    `safe_to_rerun=True`.

    A sync function runs on a worker thread, so a slow call never stalls the
    run and its timeout holds. `blocking=False` declares a function quick and
    free of I/O (arithmetic, formatting, a lookup in memory): it then runs
    directly on the event loop, which saves the thread hand-off (0.1-0.3 ms
    per call), and no timeout is armed for it.
    """

    # Where the decorator is written: a class body's namespace (a model nested in the
    # class) or a function's locals, for annotations that name them.
    namespace = sys._getframe(1).f_locals  # read only, and only while the tool is made

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(
            f,
            name=name,
            description=description,
            effects=effects,
            timeout=timeout,
            needs_approval=needs_approval,
            safe_to_rerun=safe_to_rerun,
            max_retries=max_retries,
            blocking=blocking,
            namespace=namespace,
        )

    return wrap(fn) if fn is not None else wrap


def format_validation_error(tool_name: str, err: ValidationError) -> str:
    """A retry prompt the model can act on: one line per wrong field."""
    import json

    lines = [f"Invalid arguments for tool '{tool_name}':"]
    for e in err.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"]) or "(arguments)"
        got = e.get("input")
        got_text = json.dumps(got, default=str)[:80] if e["type"] != "missing" else ""
        lines.append(f"- {where}: {e['msg']}" + (f" (got {got_text})" if got_text else ""))
    lines.append("Call the tool again with corrected arguments.")
    return "\n".join(lines)


OUTPUT_LIMIT = 20_000  # characters of one tool result a run without a context budget shows the model


def render_output(value: Any, limit: int | None = OUTPUT_LIMIT) -> str:
    """Turn a tool's return value into the text the model sees (see `model_text`)."""
    if type(value) is str and value.isascii() and (limit is None or len(value) <= limit):
        return value  # most results: nothing to clean or cut
    if isinstance(value, enum.Enum):  # Color.BLUE (or a str enum, which str() writes so): its value
        return render_output(value.value, limit)
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bytes, bytearray)):
        text = _bytes_text(value)
    else:
        import json

        try:
            if isinstance(value, BaseModel):
                try:
                    text = value.model_dump_json()
                except PydanticSerializationError:  # bytes that are not UTF-8, say: as below
                    text = json.dumps(value.model_dump(), default=_jsonable, ensure_ascii=False)
            else:
                text = json.dumps(value, default=_jsonable, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    return model_text(text, limit)


def _jsonable(value: Any) -> Any:
    """JSON for what json cannot write: models as their JSON, bytes as text, the rest as str()."""
    if isinstance(value, BaseModel):
        try:
            return value.model_dump(mode="json")
        except (PydanticSerializationError, UnicodeDecodeError):  # bytes not UTF-8: written here
            return value.model_dump()
    if isinstance(value, (bytes, bytearray)):
        return _bytes_text(value)
    if isinstance(value, enum.Enum):  # not "Color.BLUE": the value a model can use
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _bytes_text(value: bytes | bytearray) -> str:
    """Bytes as text; what is not UTF-8 is kept as escapes, which `model_text` shows as \\xNN."""
    return bytes(value).decode("utf-8", "surrogateescape")


def model_text(text: str, limit: int | None = OUTPUT_LIMIT) -> str:
    """`text` as events carry it: valid Unicode, and at most about `limit` characters.

    Bytes a tool decoded with surrogateescape (a file that is not UTF-8, a
    file name) show as `\\xNN`: a lone surrogate cannot be written as UTF-8,
    so the log, a guard or the model's server would fail on it. A longer text
    keeps its head and its tail, where errors and summaries tend to be, with a
    note of what was cut between them.
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode(
                "utf-8", "surrogateescape" if _escaped_bytes_only(text) else "backslashreplace"
            )
            text = text.decode("utf-8", "backslashreplace")
    if limit is not None and len(text) > limit:
        text = keep_ends(text, limit, "characters cut here; ask for a narrower result]")
    return text


def keep_ends(text: str, limit: int, note: str) -> str:
    """`text` cut to about `limit` characters: two thirds from its head, a third from its
    tail, and between them a line `[... N <note>` saying how many characters were left out."""
    head, tail = limit * 2 // 3, limit // 3
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n[... {len(text) - head - tail:,} {note}\n{text[len(text) - tail :]}"


def _escaped_bytes_only(text: str) -> bool:
    """Whether every lone surrogate in `text` is a byte surrogateescape kept (U+DC80-U+DCFF)."""
    return all(not ("\ud800" <= c <= "\udfff") or "\udc80" <= c <= "\udcff" for c in text)


# Section titles of Google-style ("Args:") and NumPy-style ("Parameters" over a
# line of dashes) docstrings; the parameter sections are the ones read.
_TITLES = (
    "Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters|Returns?|Yields?|"
    "Raises|Examples?|Notes?|Warnings?|See Also|Attributes|References|Todo"
)
_PARAM_TITLES = frozenset(
    ("Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments", "Other Parameters")
)
_GOOGLE_SECTION = re.compile(rf"^({_TITLES}):[ \t]*$", re.M)
_NUMPY_SECTION = re.compile(rf"^({_TITLES})[ \t]*\n[ \t]*-{{3,}}[ \t]*$", re.M)
_GOOGLE_PARAM = re.compile(r"^\s+(\*{0,2}\w+)\s*(?:\([^)]*\))?:\s*(.*)$")  # "    name (type): text"
_NUMPY_PARAM = re.compile(r"^(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?::.*)?$")  # "name : type", "a, b : int"
_SPHINX_FIELD = re.compile(r"^:(\w+)(?:\s+([^:]*?))?\s*:\s*(.*)$")  # ":param int name: text"
_SPHINX_PARAM_KINDS = ("param", "parameter", "arg", "argument", "key", "keyword")
_SPHINX_PARAM = re.compile(rf"^:(?:{'|'.join(_SPHINX_PARAM_KINDS)})\s", re.M)


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """A docstring's summary and its notes on each parameter.

    Reads Google style (`Args:` with `name: text` lines), NumPy style
    (`Parameters` over dashes, `name : type` lines with the text indented
    below) and Sphinx style (`:param name: text`).
    """
    if _NUMPY_SECTION.search(doc):
        return _sections(doc, _NUMPY_SECTION, _numpy_params)
    if _SPHINX_PARAM.search(doc):
        return _sphinx(doc)
    return _sections(doc, _GOOGLE_SECTION, _google_params)


def _sections(
    doc: str, header: re.Pattern[str], read: Callable[[str, dict[str, str]], None]
) -> tuple[str, dict[str, str]]:
    parts = header.split(doc)
    params: dict[str, str] = {}
    for title, body in zip(parts[1::2], parts[2::2], strict=False):
        if title in _PARAM_TITLES:
            read(body, params)
    return parts[0].strip(), params


def _google_params(body: str, params: dict[str, str]) -> None:
    current = None
    for line in body.splitlines():
        m = _GOOGLE_PARAM.match(line)
        if m and (len(line) - len(line.lstrip())) <= 4:
            current = m.group(1).lstrip("*")
            params[current] = m.group(2).strip()
        elif current and line.strip():
            params[current] += " " + line.strip()


def _numpy_params(body: str, params: dict[str, str]) -> None:
    names: list[str] = []
    lines = body.splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    for line in lines:
        if not line.strip():
            continue
        m = _NUMPY_PARAM.match(line[indent:]) if len(line) - len(line.lstrip()) == indent else None
        if m:  # "name : type" at the section's indent: a new parameter
            names = [n.strip().lstrip("*") for n in m.group(1).split(",")]
            for n in names:
                params[n] = ""
        else:  # the indented text under it
            for n in names:
                params[n] = f"{params[n]} {line.strip()}".lstrip()


def _sphinx(doc: str) -> tuple[str, dict[str, str]]:
    params: dict[str, str] = {}
    summary: list[str] = []
    current: str | None = None
    in_fields = False
    for line in doc.splitlines():
        m = _SPHINX_FIELD.match(line)
        if m:
            in_fields = True
            kind, arg, text = m.groups()
            current = None
            if kind in _SPHINX_PARAM_KINDS and arg:
                current = arg.split()[-1].lstrip("*")  # ":param int name:" names the last word
                params[current] = text.strip()
        elif not in_fields:
            summary.append(line)
        elif current and line.strip() and line[:1].isspace():
            params[current] += " " + line.strip()
    return "\n".join(summary).strip(), params


def _first_param_is_self(fn: Callable[..., Any]) -> bool:
    """Whether `fn` is a method written in a class body, taking the instance first."""
    params = list(inspect.signature(fn).parameters)
    owner = getattr(fn, "__qualname__", "").rpartition(".")[0]
    in_class = bool(owner) and not owner.endswith("<locals>")
    return in_class and bool(params) and params[0] in ("self", "cls")


def _hints(fn: Callable[..., Any], name: str, namespace: dict[str, Any] | None) -> dict[str, Any]:
    """The parameters' types, `Annotated` metadata kept; a name that resolves nowhere is an error."""
    try:
        return get_type_hints(fn, localns=namespace, include_extras=True)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    scope = {**getattr(fn, "__globals__", {}), **(namespace or {})}
    for pname, param in inspect.signature(fn).parameters.items():
        annotation = param.annotation
        if annotation is inspect.Parameter.empty:
            continue
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, scope)  # what typing does with a string annotation
            except Exception as e:
                raise TypeError(
                    f"tool {name!r}: the type of parameter {pname!r} ({param.annotation}) does not resolve "
                    f"({type(e).__name__}: {e}); define it before the tool, where the tool's module can see it"
                ) from None
        hints[pname] = annotation
    return hints


def _described(annotation: Any) -> bool:
    """Whether `Annotated[..., Field(description=...)]` describes the parameter itself."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in typing.get_args(annotation)[1:])


def _args_model(
    fn: Callable[..., Any],
    name: str,
    docs: dict[str, str],
    *,
    skip_first: bool,
    namespace: dict[str, Any] | None = None,
) -> type[BaseModel]:
    sig = inspect.signature(fn)
    hints = _hints(fn, name, namespace)
    fields: dict[str, Any] = {}
    for i, (pname, param) in enumerate(sig.parameters.items()):
        if skip_first and i == 0:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {name!r}: *args and **kwargs cannot be described to a model")
        if pname.startswith("_") or pname == "model_config":
            raise TypeError(
                f"tool {name!r}: a parameter cannot be named {pname!r} (pydantic, which checks the "
                "arguments, keeps such names for itself); rename it"
            )
        annotation = hints.get(pname, Any)
        doc = {} if _described(annotation) or pname not in docs else {"description": docs[pname]}
        if isinstance(param.default, FieldInfo):  # `n: int = Field(1, ge=1)`: the user's field, as given
            info = param.default
            if doc and not info.description:
                info = copy.copy(info)
                info.description = doc["description"]
            fields[pname] = (annotation, info)
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, Field(default, **doc))
    model_name = "".join(part.title() for part in re.split(r"[_\W]+", name) if part) + "Args"
    with warnings.catch_warnings():
        # A parameter named `json`, `copy`, `schema`...: the arguments are read from the
        # instance's dict, never as attributes, so BaseModel's methods of those names are no matter.
        warnings.filterwarnings("ignore", r"Field name .* shadows an attribute in parent", UserWarning)
        return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)  # type: ignore[call-overload]
