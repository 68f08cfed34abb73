"""Tools written by users: signatures, pydantic fields, methods of agents, and clear refusals."""

from __future__ import annotations  # every annotation below is a string, resolved by the tool

from typing import Annotated

import pytest
from pydantic import BaseModel, Field

from agent import Agent, AgentError, Tool, tool
from agent.llm import ScriptedLLM
from agent.testing import call


def _results(agent: Agent, task: str = "go") -> list[str]:
    return [e.content for e in agent.run_sync(task).events if e.type == "tool_result"]


def test_pydantic_field_constraints_and_descriptions_reach_the_schema_and_are_enforced():
    @tool
    def pick(
        n: Annotated[int, Field(ge=1, le=10, description="How many")] = 1,
        m: int = Field(5, ge=1),
        k: int = 2,
    ) -> int:
        """Pick things.

        Args:
            n: Ignored: the field's own description wins.
            k: How many to keep.
        """
        return n + m + k

    props = pick.schema()["function"]["parameters"]["properties"]
    assert (props["n"]["minimum"], props["n"]["maximum"], props["n"]["description"]) == (1, 10, "How many")
    assert props["m"]["minimum"] == 1 and props["k"]["description"] == "How many to keep."
    assert pick.validate({}).m == 5
    agent = Agent(ScriptedLLM([call("pick", n=11, m=0), call("pick", n=2), "ok"]), tools=[pick], run_dir=None)
    first, second = _results(agent)
    assert "n:" in first and "m:" in first and second == "9"


class Shop(Agent):
    class Order(BaseModel):
        item: str
        qty: int

    @tool
    def place(self, order: Order, rush: bool = False) -> str:
        """Place an order."""
        return f"{order.qty} x {order.item}" + (" (rush)" if rush else "")


def test_a_model_nested_in_the_agent_class_types_a_tool_method_under_string_annotations():
    props = Shop.place.schema()["function"]["parameters"]["properties"]
    assert props["rush"]["type"] == "boolean" and "$ref" in str(props["order"])
    llm = ScriptedLLM(
        [
            call("place", order={"item": "apple", "qty": 2}, rush="maybe"),
            call("place", order={"item": "apple", "qty": 2}),
            "ok",
        ]
    )
    first, second = _results(Shop(llm, run_dir=None))
    assert "rush" in first and second == "2 x apple"


def test_a_type_that_resolves_nowhere_is_refused_naming_the_parameter():
    with pytest.raises(TypeError, match=r"parameter 'order' \(Missing\) does not resolve"):

        @tool
        def place(order: Missing) -> str:  # noqa: F821
            """Place."""


def test_tool_methods_that_would_replace_an_agent_method_or_the_answer_tool_are_refused():
    with pytest.raises(TypeError, match=r"would replace Agent.observe.*@tool\(name='observe'\)"):

        class Robot(Agent):
            @tool
            def observe(self, sensor: str) -> str:
                """Read a sensor."""
                return "clear"

    @tool
    def final_answer(answer: str, confidence: float) -> str:
        """Answer with a confidence."""
        return "recorded"

    with pytest.raises(AgentError, match="a tool is named 'final_answer'"):
        Agent(ScriptedLLM([]), tools=[final_answer], run_dir=None)


def test_tool_methods_clash_override_and_static_tools_like_tool_functions(tmp_path):
    class MyFiles(Agent):
        tools = ["files"]

        @tool
        def read_file(self, path: str) -> str:
            """Read from our database."""
            return "mine"

    with pytest.raises(AgentError, match="two tools share the name 'read_file'"):
        MyFiles(ScriptedLLM([]), workspace=tmp_path, run_dir=None)

    class Two(Agent):
        @tool(name="find")
        def find_a(self, q: str) -> str:
            """A."""

        @tool(name="find")
        def find_b(self, q: str) -> str:
            """B."""

    with pytest.raises(AgentError, match="two tools share the name 'find'"):
        Two(ScriptedLLM([]), run_dir=None)

    class Static(Agent):
        @tool
        @staticmethod
        def now() -> str:
            """The time."""
            return "noon"

    assert _results(Static(ScriptedLLM([call("now"), "ok"]), run_dir=None)) == ["noon"]

    class Base(Agent):
        @tool
        def search(self, q: str) -> str:
            """Search."""
            return q

    class Child(Base):
        def search(self, q: str) -> str:
            return "child " + q

    with pytest.raises(TypeError, match="Child.search overrides the tool 'search' of Base without @tool"):
        Child(ScriptedLLM([]), run_dir=None)


def test_a_plain_function_may_name_its_first_parameter_cls_and_call_scripts_an_argument_called_name():
    @tool
    def label(cls: str, name: str) -> str:
        """Label a name with a class."""
        return f"{cls}: {name}"

    assert list(label.schema()["function"]["parameters"]["properties"]) == ["cls", "name"]
    assert _results(
        Agent(ScriptedLLM([call("label", cls="spam", name="Ann"), "ok"]), tools=[label], run_dir=None)
    ) == ["spam: Ann"]


def test_models_and_bytes_inside_a_result_reach_the_model_as_json_and_text():
    class Item(BaseModel):
        name: str
        price: float

    @tool
    def items() -> list[Item]:
        """List items."""
        return [Item(name="x", price=1.5)]

    @tool
    def best() -> dict:
        """Best item."""
        return {"best": Item(name="x", price=1.5), "raw": b"\xffab"}

    @tool
    def raw() -> bytes:
        """Raw bytes."""
        return b"hello\n"

    class Blob(BaseModel):
        name: str
        data: bytes

    @tool
    def blob() -> Blob:
        """A model holding bytes that are not UTF-8 (pydantic cannot write them as JSON)."""
        return Blob(name="img", data=b"\x89PNG")

    @tool
    def blobs() -> dict:
        """The same model inside a dict."""
        return {"blob": Blob(name="img", data=b"\x89PNG")}

    script = [call("items"), call("best"), call("raw"), call("blob"), call("blobs"), "ok"]
    agent = Agent(ScriptedLLM(script), tools=[items, best, raw, blob, blobs], run_dir=None)
    assert _results(agent) == [
        '[{"name": "x", "price": 1.5}]',
        '{"best": {"name": "x", "price": 1.5}, "raw": "\\xffab"}',
        "hello\n",
        '{"name": "img", "data": "\\x89PNG"}',  # not the tool's error
        '{"blob": {"name": "img", "data": "\\x89PNG"}}',  # not Python's repr
    ]


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: Agent(ScriptedLLM(["x"]), answer_schema=list[str], run_dir=None),
            "answer_schema must be a pydantic model class",
        ),
        (lambda: Agent("Qwen/Qwen3-8B", run_dir=None), "the model must be an agent.llm backend"),
        (
            lambda: Agent(ScriptedLLM([]), tools="python", run_dir=None),
            r"tools must be a list \(tools=\['python'\]\)",
        ),
        (lambda: ScriptedLLM("hello"), r"ScriptedLLM takes a list of turns"),
    ],
)
def test_misconfigurations_are_refused_in_one_line_that_says_what_to_do(make, message):
    with pytest.raises((AgentError, TypeError), match=message):
        make()


def _described_params(fn) -> dict[str, str]:
    props = fn.schema()["function"]["parameters"]["properties"]
    return {name: prop.get("description", "") for name, prop in props.items()}


def test_numpy_and_sphinx_docstrings_document_the_parameters_as_google_ones_do():
    @tool
    def forecast(city: str, days: int = 1, hours: int = 0) -> str:
        """Get the forecast.

        Parameters
        ----------
        city : str
            The city's name,
            in English.
        days, hours : int, optional
            How far ahead.

        Returns
        -------
        str
            Not a parameter.
        """
        return city

    @tool
    def convert(amount: float, currency: str) -> float:
        """Convert money.

        :param float amount: How much,
            before fees.
        :param currency: ISO code.
        :type currency: str
        :returns: the amount
        """
        return amount

    @tool
    def notes(city: str) -> str:
        """Look up notes.

        Args:
            city: The city.

        Note:
            Not about the city.
        """
        return city

    @tool
    def météo(ville: str) -> str:  # a name in any script is a name
        """Le temps.

        :arg ville: La ville.
        """
        return ville

    assert forecast.description == "Get the forecast."
    assert _described_params(forecast) == {
        "city": "The city's name, in English.",
        "days": "How far ahead.",
        "hours": "How far ahead.",
    }
    assert convert.description == "Convert money."
    assert _described_params(convert) == {"amount": "How much, before fees.", "currency": "ISO code."}
    assert _described_params(notes) == {"city": "The city."}
    assert météo.description == "Le temps." and _described_params(météo) == {"ville": "La ville."}
    Agent(ScriptedLLM(["x"]), tools=[météo], run_dir=None)


class _Ping(BaseModel):
    host: str


def test_a_tool_class_that_no_model_could_call_is_refused_when_the_agent_takes_it():
    from agent.tool import Tool

    class Nameless(Tool):
        Args = _Ping

        async def run(self, args):
            return "up"

    class NoArgs(Tool):
        name = "ping"

        async def run(self, args):
            return "up"

    class Spaced(Tool):
        name = "ping host"
        Args = _Ping

        async def run(self, args):
            return "up"

    class Computed(Tool):  # the argument model from a property, as validation reads it: fine
        name = "computed"

        @property
        def args_model(self):
            return _Ping

        async def run(self, args):
            return "up"

    Agent(ScriptedLLM(["x"]), tools=[Computed], run_dir=None)

    for klass, message in (
        (Nameless, "tool class Nameless has no name"),
        (NoArgs, r"tool 'ping' \(NoArgs\) has no argument model; define `class Args"),
        (Spaced, r"tool name 'ping host' \(Spaced\): use 1-64 letters"),
    ):
        with pytest.raises((TypeError, ValueError), match=message):
            Agent(ScriptedLLM(["x"]), tools=[klass], run_dir=None)
    with pytest.raises(ValueError, match=r"tool class Wipe: unknown effects \['deletes'\]"):

        class Wipe(Tool):
            name = "wipe"
            Args = _Ping
            effects = {"writes", "deletes"}

            async def run(self, args):
                return "gone"


def test_a_tool_class_with_a_plain_def_run_runs_once_where_its_blocking_flag_says():
    import threading

    from agent.tool import Tool

    seen: list[tuple[str, str]] = []

    class Ping(Tool):
        name = "ping"
        Args = _Ping

        def run(self, args):
            seen.append((args.host, threading.current_thread().name))  # the side effect: once per call
            return f"{args.host} up"

    class QuickPing(Ping):
        name = "quick_ping"
        blocking = False

    class Delegating(Tool):
        name = "delegating"
        Args = _Ping

        def run(self, args):  # hands back a coroutine: awaited
            return self._ping(args.host)

        async def _ping(self, host):
            return f"{host} reached"

    llm = ScriptedLLM(
        [call("ping", host="a"), call("quick_ping", host="b"), call("delegating", host="c"), "ok"]
    )
    agent = Agent(llm, tools=[Ping, QuickPing, Delegating], run_dir=None)
    assert _results(agent) == ["a up", "b up", "c reached"]
    assert [host for host, _ in seen] == ["a", "b"]
    (_, ping_thread), (_, quick_thread) = seen
    assert ping_thread != threading.main_thread().name and quick_thread == threading.main_thread().name


def test_an_agent_subclass_that_skips_super_init_gets_told_so_and_leaks_no_coroutine(recwarn):
    import gc

    class Forgetful(Agent):
        def __init__(self, topic: str) -> None:
            self.topic = topic

    agent = Forgetful("weather")
    for start in (lambda: agent.run_sync("go"), lambda: agent.resume_sync("last")):
        with pytest.raises(AgentError, match=r"Forgetful.__init__ must call super\(\).__init__"):
            start()
    with pytest.raises(AgentError, match="must call super"):
        agent._new_run()
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_tool_class_without_args_takes_the_model_its_run_is_annotated_with():
    from agent.tool import Tool

    class Ping(Tool):  # this module's annotations are strings: resolved in the module
        name = "ping"

        async def run(self, args: _Ping) -> str:
            return f"{args.host} up"

    assert Ping.Args is _Ping
    agent = Agent(
        ScriptedLLM([call("ping", host=7), call("ping", host="a"), "ok"]), tools=[Ping], run_dir=None
    )
    invalid, answer = _results(agent)
    assert "host" in invalid and answer == "a up"


def test_the_table_of_built_in_tool_names_matches_what_each_factory_makes(tmp_path):
    from agent.builtins import REGISTRY, TOOL_NAMES, builtin_tools, builtins_for

    assert set(TOOL_NAMES) == set(REGISTRY)
    for name, made in TOOL_NAMES.items():
        assert tuple(t.name for t in builtin_tools([name], workspace=tmp_path)) == made
    assert builtins_for(["read_file", "python", "final_answer", "my_own"]) == [
        "python"
    ]  # a lone read_file: a script's
    assert builtins_for([*TOOL_NAMES["files"], "web_search"]) == ["files"]


def test_the_table_of_built_in_options_matches_the_factories_and_typos_are_refused():
    import inspect

    import tools.files
    import tools.python_tool
    import tools.web
    from agent.builtins import OPTIONS

    def parameters(fn):
        return {n for n, p in inspect.signature(fn).parameters.items() if p.kind is not p.VAR_KEYWORD}

    assert OPTIONS["python"] == parameters(tools.python_tool.PythonTool) - {"current_dir_default"}
    assert OPTIONS["files"] == parameters(tools.files.make_tools)
    # The web tools' hooks for tests (resolver, clock, sleep) are no options of a built-in.
    assert OPTIONS["web"] == parameters(tools.web.WebTools) - {"resolver", "clock", "sleep"}
    assert OPTIONS["web"] == parameters(tools.web.make_tools) | tools.web.OPTIONS
    for options in ({"allow_netwrok": True}, {"web": {"allow_private": True}}):
        with pytest.raises(AgentError, match=r"mean nothing to the built-in tools; they take one flat dict"):
            Agent(ScriptedLLM(["x"]), tools=["files"], tool_options=options, run_dir=None)
    Agent(
        ScriptedLLM(["x"]), tools=["files"], tool_options={"allow_network": True}, run_dir=None
    )  # python's: fine


def test_built_in_tools_declare_their_effects_and_the_readers_are_rerun_after_a_crash(tmp_path):
    from agent import Agent
    from agent.llm import ScriptedLLM

    class Configured(Tool):
        name = "configured"
        description = "Effects chosen when made."

        class Args(BaseModel):
            pass

        def __init__(self):
            self.effects = frozenset({"reads"})

        async def run(self, args):
            return "ok"

    agent = Agent(ScriptedLLM([]), tools=["files", "web"], workspace=tmp_path, run_dir=None, guards=None)
    assert all(t.effects_declared for t in agent.tool_list), [
        t.name for t in agent.tool_list if not t.effects_declared
    ]
    readers = {t.name for t in agent.tool_list if t.safe_to_rerun}
    assert {
        "read_file",
        "list_files",
        "search_files",
        "find_in_page",
    } <= readers and "write_file" not in readers
    assert Configured().effects_declared and Configured().safe_to_rerun


def test_unusual_signatures_work_or_are_refused_with_the_fix_named(run_dir):
    import functools

    @tool
    def scale(x: float, /, factor: float = 2.0) -> float:
        """Scale x."""
        return x * factor

    @tool
    def render(json: str, copy: bool = False, schema: str = "") -> str:  # names BaseModel has methods for
        """Render."""
        return f"{json}|{copy}|{schema}"

    def power(base: int, exp: int) -> int:
        """Raise base to exp."""
        return base**exp

    class Shelf:
        @tool
        @staticmethod
        def shelve(item: str) -> str:
            """Shelve an item."""
            return f"shelved {item}"

    square = tool(functools.partial(power, exp=2), name="square")
    assert square.description == "Raise base to exp."  # the function's docstring, not partial's
    assert set(render.schema()["function"]["parameters"]["properties"]) == {"json", "copy", "schema"}
    llm = ScriptedLLM(
        [
            call("scale", x=3, factor=4),
            call("render", json="{}", copy=True),
            call("square", base=5),
            call("shelve", item="x"),
            "done",
        ]
    )
    result = Agent(llm, tools=[scale, render, square, Shelf.shelve], run_dir=run_dir).run_sync("go")
    assert [e.content for e in result.events if e.type == "tool_result"] == [
        "12.0",
        "{}|True|",
        "25",
        "shelved x",
    ]
    with pytest.raises(TypeError, match=r"no __name__ to name the tool by: pass one, tool\(fn, name=...\)"):
        tool(functools.partial(power, exp=2))
    with pytest.raises(TypeError, match="cannot make a tool of the classmethod"):
        tool(classmethod(power))
    with pytest.raises(TypeError, match="cannot be named '_token'.*rename it"):

        @tool
        def fetch(_token: str) -> str:
            """Fetch."""
            return ""


def test_a_tool_call_records_its_arguments_as_json_whatever_their_types(run_dir):
    import datetime

    @tool(blocking=False)
    def plain(n: int, flag: bool = False, note: str | None = None) -> str:
        """Strings, numbers and flags."""
        return "ok"

    @tool(blocking=False)
    def typed(when: datetime.date, ratio: float, tags: list[str]) -> str:
        """Values whose JSON form is not the value itself."""
        return "ok"

    class Named(BaseModel):
        the_name: str = Field(serialization_alias="name")

    class Renamed(Tool):
        name = "renamed"
        description = "A field serialized under another name."
        Args = Named

        async def run(self, args: Named) -> str:
            return "ok"

    llm = ScriptedLLM(
        [
            call("plain", n="3", flag="true"),
            call("typed", when="2026-01-02", ratio=1, tags=["a"]),
            call("renamed", the_name="x"),
            "done",
        ]
    )
    result = Agent(llm, tools=[plain, typed, Renamed()], run_dir=run_dir, guards=None).run_sync("go")
    recorded = [e.arguments for e in result.events if e.type == "tool_call"]
    assert recorded == [
        {"n": 3, "flag": True, "note": None},  # validated: the int and the bool, not the strings sent
        {"when": "2026-01-02", "ratio": 1.0, "tags": ["a"]},  # the date as JSON text, not a date
        {"name": "x"},  # under its alias, as the model is shown the schema (and guards look)
    ]
    assert type(recorded[1]["when"]) is str and type(recorded[1]["ratio"]) is float


# -- a review's reproductions: building on the API ------------------------------------------------


def test_an_aliased_argument_is_recorded_and_judged_under_its_alias(run_dir):
    from guards import default_pipeline

    fetched = []

    class Fetch(Tool):
        name = "fetch"
        description = "Fetch a URL."
        effects = frozenset({"network"})

        class Args(BaseModel):
            target: str = Field(alias="url")

        async def run(self, args: Args) -> str:
            fetched.append(args.target)
            return "page"

    # The metadata address: the network rule reads the argument named "url", and got "target".
    metadata = "http://169.254.169.254/latest/meta-data/"
    llm = ScriptedLLM([call("fetch", url="https://example.com/"), call("fetch", url=metadata), "ok"])
    result = Agent(llm, tools=[Fetch()], guards=[default_pipeline()], run_dir=run_dir).run_sync("t")
    [recorded] = [e for e in result.events if e.type == "tool_call"]  # the blocked one is not recorded
    assert recorded.arguments == {"url": "https://example.com/"} and fetched == ["https://example.com/"]
    assert any(e.type == "guard_verdict" and e.action == "block" and e.stage == "tool_call" for e in result.events)


def test_cancel_when_a_call_is_announced_keeps_the_tool_from_starting(run_dir):
    ran = []

    @tool(effects={"writes"})
    def rm(target: str) -> str:
        """Delete a target."""
        ran.append(target)
        return "deleted"

    class Watching(Agent):
        def on_event(self, event):
            if event.type == "tool_call":
                self.cancel()

    result = Watching(ScriptedLLM([call("rm", target="abc"), "ok"]), tools=[rm], run_dir=run_dir).run_sync("t")
    assert result.status == "cancelled" and ran == []  # it ran, and then the run ended
    said = next(e for e in result.events if e.type == "tool_result")
    assert said.error_kind == "interrupted" and "cancelled before this call started" in said.content


def test_a_hook_that_returns_an_invalid_event_fails_the_run_naming_it(run_dir):
    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    class Broken(Agent):
        def observe(self, result):
            return result.model_copy(update={"content": {"said": result.content}})  # not a str

    result = Broken(ScriptedLLM([call("echo", text="x"), "ok"]), tools=[echo], run_dir=run_dir).run_sync("t")
    assert result.status == "failed"
    assert "Broken.observe() returned a ToolResult that is not valid: content" in result.error

    class Dicts(Agent):  # calls given as dicts are read as calls
        def act(self, response):
            calls = [{"id": c.id, "name": c.name, "arguments": {"text": "changed"}} for c in response.tool_calls]
            return response.model_copy(update={"tool_calls": calls})

    result = Dicts(ScriptedLLM([call("echo", text="x"), "ok"]), tools=[echo], run_dir=run_dir).run_sync("t")
    assert result.ok and next(e for e in result.events if e.type == "tool_result").content == "changed"


def test_an_async_non_blocking_tool_keeps_its_timeout(run_dir):
    import asyncio
    import time

    @tool(blocking=False, timeout=0.2)
    async def wait() -> str:
        """Wait."""
        await asyncio.sleep(3)
        return "done"

    started = time.monotonic()
    result = Agent(ScriptedLLM([call("wait"), "ok"]), tools=[wait], run_dir=run_dir).run_sync("t")
    assert time.monotonic() - started < 2  # ran the whole 3 s
    assert next(e for e in result.events if e.type == "tool_result").error_kind == "timeout"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"timeout": "5"}, "timeout must be a positive number of seconds or None"),
        ({"timeout": 0}, "timeout must be a positive number of seconds or None"),
        ({"needs_approval": "no"}, "needs_approval must be True or False"),
        ({"effects": "writes"}, "effects is a set of names"),
    ],
)
def test_tool_options_no_call_could_use_are_refused_when_the_agent_takes_the_tool(options, message):
    with pytest.raises((TypeError, ValueError), match=message):  # by @tool, or by the agent at the latest

        @tool(**options)
        def f() -> str:
            """F."""
            return "x"

        Agent(ScriptedLLM(["ok"]), tools=[f], run_dir=None)


def test_a_method_tool_taken_from_its_class_is_refused(run_dir):
    class Store:
        def __init__(self):
            self.items = []

        @tool
        def add_item(self, item: str) -> str:
            """Add an item."""
            self.items.append(item)
            return "added"

    with pytest.raises(TypeError, match="a method taken from its class"):
        Agent(ScriptedLLM(["ok"]), tools=[Store.add_item], run_dir=run_dir)
    store = Store()
    Agent(ScriptedLLM([call("add_item", item="z"), "ok"]), tools=[store.add_item], run_dir=run_dir).run_sync("t")
    assert store.items == ["z"]


def test_max_seconds_of_nan_is_refused():
    with pytest.raises(AgentError, match="max_seconds must be a positive number"):
        Agent(ScriptedLLM(["ok"]), max_seconds=float("nan"), run_dir=None)


def test_an_enum_in_a_tool_result_reaches_the_model_as_its_value():
    import enum

    from agent.tool import render_output

    class Color(enum.Enum):
        BLUE = "blue"
        ONE = 1

    class Mode(str, enum.Enum):  # noqa: UP042 - the mixin users write (str() gives "Mode.FAST")
        FAST = "fast"

    # Was "Color.BLUE" and {"c": "Color.BLUE", ...}: a name no tool argument takes.
    assert render_output(Color.BLUE) == "blue" and render_output(Mode.FAST) == "fast"
    assert render_output({"c": Color.BLUE, "n": Color.ONE, "m": Mode.FAST}) == '{"c": "blue", "n": 1, "m": "fast"}'


def test_an_agent_whose_init_skipped_the_base_says_so_from_cancel_and_close_too():
    class Forgot(Agent):
        def __init__(self) -> None:  # no super().__init__(...)
            self.notes = []

    agent = Forgot()
    for method in (agent.cancel, agent.close):  # were AttributeErrors about _cancels and _loop
        with pytest.raises(AgentError, match=r"Forgot.__init__ must call super\(\).__init__"):
            method()


def test_a_class_tool_with_an_async_run_keeps_its_timeout_when_not_blocking(run_dir):
    import asyncio
    import time

    class Wait(Tool):
        name = "wait"
        description = "Wait."
        blocking = False  # declared quick: an async run may still await forever
        timeout = 0.2

        class Args(BaseModel):
            pass

        async def run(self, args: Args) -> str:
            await asyncio.sleep(3)
            return "done"

    started = time.monotonic()
    result = Agent(ScriptedLLM([call("wait"), "ok"]), tools=[Wait()], run_dir=run_dir).run_sync("t")
    assert time.monotonic() - started < 2
    assert next(e for e in result.events if e.type == "tool_result").error_kind == "timeout"
