"""The python tool: a persistent sandboxed kernel per session, its pool, limits and recovery."""

import asyncio
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import call

from agent import Agent
from agent.llm import ScriptedLLM
from agent.tool import ToolError
from tools import sandbox as sb
from tools.files import FileTools
from tools.python_tool import PythonTool, make_tools

pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
LEVELS = [
    pytest.param(
        level,
        id=level,
        marks=pytest.mark.skipif(
            not sb.isolation_status(level)[0], reason=f"{level}: {sb.isolation_status(level)[1]}"
        ),
    )
    for level in sb.ISOLATION_LEVELS
]
BEST = sb.available_isolation()[0]

# A 16x16 PNG drawn with the standard library, so the tests need no matplotlib.
PNG_CODE = """
import struct, zlib
from IPython.display import Image, display
def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
def make_png(values, size=16):
    rows = b"".join(
        b"\\x00" + b"".join(bytes((255, 255, 255) if size - y > values[x * len(values) // size] else (30, 90, 200))
                             for x in range(size))
        for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\\x89PNG\\r\\n\\x1a\\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")
"""


async def run(tool: PythonTool, code: str) -> str:
    try:
        return await tool.run(tool.Args(code=code))
    except ToolError as e:
        return f"ERROR: {e}"


@pytest.fixture(scope="module")
def pool():
    p = sb.KernelPool(size=1)
    yield p
    p.shutdown()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="module")
def py(pool, workspace):
    """One session shared by the tests below (its kernel starts while the first test runs)."""
    # kernels read the environment when they start, in the background
    os.environ["SANDBOX_TEST_API_KEY"] = "hunter2"
    os.environ["SANDBOX_TEST_PLAIN"] = "visible"
    tool = PythonTool(workspace=workspace, timeout=2, interrupt_grace=1, pool=pool)
    pool.warm(tool.config, tool.isolation, str(workspace))  # a spare, so recovery is quick
    yield tool
    tool.close()
    del os.environ["SANDBOX_TEST_API_KEY"], os.environ["SANDBOX_TEST_PLAIN"]


async def test_state_persists_and_outputs_are_shown(py, workspace):
    first = await run(py, "x = 20\nprint('hello')\nimport sys\nprint('warning', file=sys.stderr)\nx + 1")
    assert first.startswith("[python kernel: ")  # the isolation is reported once, in the first observation
    assert py.isolation in ("bubblewrap", "netns", "none")
    assert first.splitlines()[1:] == ["hello", "[stderr]", "warning", "Out[1]: 21"]
    second = await run(py, "x * 2")
    assert second == "Out[2]: 40"
    assert await run(py, "y = 1") == "(no output)"
    assert await run(py, "import os\nprint(os.getcwd())") == str(workspace)
    assert await run(py, r"print('\x1b[31mred\x1b[0m and plain')") == "red and plain"  # no colour codes
    bar = r"print('\x1b]0;title\x07', end=''); print('10%\r50%\r100%'); print('done\x07')"
    assert await run(py, bar) == "100%\ndone"  # no title sequence, bell, or overwritten progress


async def test_output_holding_bytes_that_are_not_utf8_is_shown_escaped_not_lost(py, workspace):
    # a folder listing with a file name that is not UTF-8: os.listdir gives it a lone surrogate
    code = "open(b'bad\\xffname.txt', 'w').write('x')\nimport os\nprint('before')\n"
    code += "print([f for f in os.listdir('.') if f.startswith('bad')][0])\nprint('after')"
    out = await run(py, code)
    assert out.splitlines()[-3:] == ["before", "bad\\xffname.txt", "after"], out
    os.unlink(os.fsencode(workspace) + b"/bad\xffname.txt")


async def test_traceback_is_trimmed(py):
    out = await run(py, "def inner():\n    return 1 / 0\n\ndef outer():\n    return inner()\n\nouter()")
    assert out.startswith("ERROR: Traceback (most recent call last):")
    assert "\x1b[" not in out
    assert "ipykernel" not in out and "IPython" not in out and "interactiveshell" not in out
    assert "in inner" in out and "return 1 / 0" in out
    assert out.rstrip().endswith("ZeroDivisionError: division by zero")
    syntax = await run(py, "x = = 1")
    assert "SyntaxError" in syntax and "\x1b[" not in syntax


async def test_output_is_capped(py):
    py.max_output = 2000
    try:
        out = await run(py, "print('a' * 100_000)\nprint('END')")
    finally:
        py.max_output = 10_000
    assert len(out) < 2500
    assert "characters of output cut" in out
    assert out.startswith("aaaa") and out.rstrip().endswith("END")
    py.max_output = 2000
    try:  # a value, a display and a traceback are capped as well
        for code in ("'v' * 50_000", "from IPython.display import display; display('d' * 50_000)", "raise ValueError('e' * 50_000)"):
            out = await run(py, code)
            assert len(out) < 2500 and "characters of output cut" in out, out[:200]
    finally:
        py.max_output = 10_000


async def test_output_cleared_by_the_cell_leaves_no_note_of_what_was_cut_from_it(py):
    code = "from IPython.display import clear_output\nfor i in range(3000): print('line', i)\nclear_output()\nprint('final')"
    out = await run(py, code)
    assert out.splitlines()[-1] == "final" and "cut" not in out


async def test_output_of_child_processes_keeps_its_place(py):
    # written to the file descriptors, not through sys.stdout: read from a pipe by another thread
    code = (
        "import os, subprocess\n"
        "for i in range(3):\n"
        "    subprocess.run(['echo', f'child {i}'])\n"
        "    print(f'parent {i}')\n"
        "os.write(1, 'ünïcode\\n'.encode())\n"
        "_ = os.system('echo last >&2')"
    )
    await run(py, "pass")  # the first observation starts with the isolation header
    for _ in range(3):
        out = await run(py, code)
        assert out.splitlines() == [
            *(f"{who} {i}" for i in range(3) for who in ("child", "parent")),
            "ünïcode",
            "[stderr]",
            "last",
        ]


async def test_process_count_follows_the_sandbox(py):
    await run(py, "pass")  # the session's kernel is running
    kernel = py.kernel
    before = kernel.tasks()
    await run(py, "import subprocess\n_sleeper = subprocess.Popen(['sleep', '60'])")
    try:
        assert kernel.tasks() == before + 1
        # the same count from a /proc scan, as on hosts without a pids cgroup
        cgroup, kernel.cgroup = kernel.cgroup, None
        try:
            scanned = kernel.tasks()
            assert scanned is not None and scanned >= before + 1
        finally:
            kernel.cgroup = cgroup
    finally:
        await run(py, "_sleeper.kill()\n_sleeper.wait()")
    assert kernel.tasks() == before


async def test_images_are_saved_in_the_workspace(py, workspace):
    out = await run(py, PNG_CODE + "display(Image(data=make_png([3, 9, 14, 6])))\nprint('drawn')")
    assert "[image/png saved to outputs/plot-" in out and "drawn" in out
    name = out.split("outputs/")[1].split(" ")[0]
    assert (workspace / "outputs" / name).read_bytes().startswith(b"\x89PNG")
    html = await run(py, "from IPython.display import HTML\nHTML('<b>bold</b>')")
    assert "[text/html saved to outputs/output-" in html
    # The kernel may write in the folder the host made for its outputs (a mode narrower than
    # the default masked its ACL entry to read-only).
    mine = await run(py, "open('outputs/mine.txt', 'w').write('ok')\nprint(open('outputs/mine.txt').read())")
    assert mine.splitlines()[-1] == "ok", mine


def test_a_system_folder_is_no_workspace_for_the_python_tool(tmp_path):
    for folder in ("/", "/etc/ssl", "/tmp"):
        llm = ScriptedLLM([call("python", code="print(1)"), "done"])
        agent = Agent(llm, tools=["python"], workspace=folder, guards=None, run_dir=tmp_path)
        [result] = [e.content for e in agent.run_sync("go").events if e.type == "tool_result"]
        assert f"the workspace is {folder}, a folder of the system" in result, result
    # A pooled kernel is started in a folder of its own and moved to the workspace (no
    # isolation, or netns): refused there as well.
    tool = PythonTool(workspace="/etc/ssl", isolation="none", pool=sb.KernelPool(size=0), prefetch=False)
    try:
        out = asyncio.run(run(tool, "import os\nprint(os.getcwd())"))
    finally:
        tool.close()
    assert "the workspace is /etc/ssl, a folder of the system" in out, out


async def test_secret_environment_variables_are_not_passed(py):
    out = await run(
        py, "import os\nprint(os.environ.get('SANDBOX_TEST_API_KEY'), os.environ.get('SANDBOX_TEST_PLAIN'))"
    )
    assert out.splitlines()[-1] == "None visible"  # after the kernel's header, when this call is its first
    env = sb.kernel_env()
    assert not any(
        k in env for k in ("OPENAI_API_KEY", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD")
    )
    secrets = {  # secrets in values, under names that do not say so
        "DATABASE_URL": "postgres://app:hunter2@db.internal:5432/prod",
        "SENTRY_DSN": "https://abc@o1.ingest.sentry.io/1",
        "GH_PAT": "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB",
        "DEPLOY_WITH": "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB",
        "REDIS_URL": "redis://:hunter2@redis:6379/0",  # a password without a user
        "STORAGE": "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=c2VjcmV0==;",
        "SQLSERVER": "Server=db;Database=app;User Id=sa;Password=Secret1;",
    }
    plain = {
        "HOMEPAGE": "https://example.com/a:b",
        "PATH_EXTRA": "/opt/x:/opt/y",
        "HTTP_PROXY": "http://proxy.internal:3128",
        "PS1": "user@host:~$ ",
    }
    import unittest.mock

    with unittest.mock.patch.dict(os.environ, {**secrets, **plain}):
        env = sb.kernel_env()
    assert not set(secrets) & set(env) and set(plain) <= set(env)


async def test_what_a_cell_prints_after_it_ended_comes_with_the_next_one(py):
    code = "import threading, time\nthreading.Timer(0.3, lambda: print('late line')).start()\nprint('on time')"
    assert (await run(py, code)).endswith("on time")
    await asyncio.sleep(1.5)  # the timer prints (and its output is flushed) while no cell runs
    out = await run(py, "print('second')")
    assert out == "[printed by an earlier cell after it had ended]\nlate line\nsecond", out
    during = "import threading, time\nthreading.Timer(0.2, lambda: print('printed meanwhile')).start()"
    await run(py, during)
    assert "printed meanwhile" in await run(py, "import time; time.sleep(0.5)")  # while a cell runs: its own


async def test_exit_in_a_cell_ends_the_session_and_says_so_at_once(py):
    out = await run(py, "gone = 1\nexit()")
    assert "exit() ended the Python session: its variables are gone" in out, out
    assert "NameError" in await run(py, "gone")  # the next call has a fresh kernel, not a dying one
    assert await run(py, "print(1 + 1)") == "2"


async def test_timeout_interrupts_and_keeps_state(py):
    await run(py, "kept = 'still here'")
    out = await run(py, "while True:\n    pass")
    assert "Timed out after 2 s" in out and "KeyboardInterrupt" in out and "variables are kept" in out
    assert (await run(py, "kept")).endswith("]: 'still here'")


async def test_a_cell_stopped_inside_a_print_shows_none_of_the_sandboxs_own_frames(pool, workspace):
    tool = PythonTool(workspace=workspace, timeout=2, interrupt_grace=2, pool=pool, prefetch=False)
    try:
        out = await run(tool, "while True:\n    print('x' * 100)")
    finally:
        tool.close()
    # interrupted in the sandbox's stdout wrapper (or, on a busy machine, restarted)
    assert ("Timed out after 2 s" in out or "restarted" in out) and "File <" not in out


async def test_unresponsive_kernel_is_restarted(py):
    await run(py, "lost = 1")
    started = time.monotonic()
    out = await run(py, "sum(range(10**13))")  # a C loop: ignores KeyboardInterrupt
    assert time.monotonic() - started < 2 + 1 + 10
    assert "did not respond to an interrupt" in out and "was restarted" in out and "lost" in out
    assert "NameError" in await run(py, "lost")
    assert await run(py, "print(1 + 1)") == "2"


@pytest.mark.parametrize(
    "code, reason",
    [
        ("import os\nos._exit(3)", "exit code 3"),
        ("import ctypes\nctypes.string_at(0)", "SIGSEGV: segmentation fault"),
    ],
    ids=["exit", "segfault"],
)
async def test_dead_kernel_is_replaced(py, code, reason):
    await run(py, "gone = 1")
    out = await run(py, code)
    assert "The Python kernel died" in out and reason in out
    assert "variables were lost" in out and "a fresh kernel is ready" in out
    assert "NameError" in await run(py, "gone")
    assert await run(py, "print(1 + 1)") == "2"


async def test_cancelled_call_interrupts_the_kernel(py):
    await run(py, "value = 5")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await py.run(py.Args(code="import time\ntime.sleep(30)"))
    out = await run(py, "value")
    assert "previous python call was cancelled" in out and "Out[" in out and out.endswith(" 5")


def test_successive_event_loops(pool, run_dir):
    tool = PythonTool(timeout=5, pool=pool)  # no workspace: a pooled kernel with a temporary one
    assert asyncio.run(run(tool, "n = 1")).endswith("(no output)")
    asyncio.run(run(tool, "n += 1"))
    agent = Agent(ScriptedLLM([call("python", code="n += 1\nn"), "done"]), tools=[tool], run_dir=run_dir)
    result = agent.run_sync("count")  # the agent's own event loop
    assert result.ok
    assert [e.content for e in result.events if e.type == "tool_result"] == ["Out[3]: 3"]
    result = agent.run_sync("again")  # same runner, next run
    temp_workspace = tool.workspace
    assert Path(temp_workspace).is_dir()
    agent.close()  # closes the tool: its kernel and temporary workspace go
    assert tool.kernel is None and not Path(temp_workspace).exists()


def test_pool_hands_out_warm_kernels_fast(pool):
    config = sb.SandboxConfig()
    pool.warm(config, BEST)
    assert pool.wait_warm(config, BEST, timeout=60)
    started = time.perf_counter()
    kernel = pool.acquire(config, BEST, None)
    elapsed = time.perf_counter() - started
    try:
        assert kernel.alive() and elapsed < 0.25, elapsed
    finally:
        kernel.kill()
    assert not kernel.alive() and not kernel.host_pids()


async def test_agent_writes_a_csv_reads_it_back_and_saves_a_plot(tmp_path, run_dir, pool):
    workspace = tmp_path / "ws"
    tool = PythonTool(workspace=workspace, pool=pool)
    write = (
        "import csv\nrows = [('city', 'rain_mm'), ('Oslo', 763), ('Bergen', 2250), ('Madrid', 436)]\n"
        "with open('rain.csv', 'w', newline='') as f:\n    csv.writer(f).writerows(rows)\nprint('wrote', len(rows) - 1)"
    )
    read = (
        "import csv\nwith open('rain.csv') as f:\n    data = [(r['city'], int(r['rain_mm'])) for r in csv.DictReader(f)]\n"
        "wettest = max(data, key=lambda r: r[1])\nprint(wettest[0], sum(v for _, v in data))"
    )
    plot = PNG_CODE + "display(Image(data=make_png([v for _, v in data])))"
    llm = ScriptedLLM(
        [
            call("python", code=write),
            call("python", code=read),
            call("python", code=plot),
            "Bergen is the wettest city; the chart is in outputs/.",
        ]
    )
    async with Agent(llm, tools=[tool], run_dir=run_dir, workspace=workspace) as agent:
        result = await agent.arun("Which city is wettest? Save the data as CSV and draw a chart.")
    assert result.ok, result.error
    observations = [e.content for e in result.events if e.type == "tool_result"]
    assert observations[0].endswith("wrote 3")
    assert observations[1] == "Bergen 3449"
    assert "[image/png saved to outputs/plot-1.png" in observations[2]
    assert (workspace / "rain.csv").read_text().splitlines()[1] == "Oslo,763"
    assert (workspace / "outputs" / "plot-1.png").read_bytes()[:4] == b"\x89PNG"
    assert tool.kernel is None  # the agent closed the tool


def test_builtin_name_and_factory(run_dir):
    assert [t.name for t in make_tools(workspace=None, allow_network=True, unknown_option=1)] == ["python"]
    tool = make_tools(allow_network=True, prefetch=False)[0]
    assert tool.effects == {"executes", "network"} and not tool.safe_to_rerun
    from tools import PythonTool as Exported

    assert Exported is PythonTool
    agent = Agent(ScriptedLLM(["ok"]), tools=["python"], run_dir=run_dir)
    assert [t.name for t in agent.tool_list] == ["python"]
    assert agent.tool_list[0].effects == {"executes"}
    agent.close()
    tool.close()


def test_python_and_files_without_a_workspace_share_the_current_directory(tmp_path, monkeypatch, run_dir, pool):
    monkeypatch.chdir(tmp_path)
    llm = ScriptedLLM(
        [
            call("write_file", path="hello.txt", content="from the files tool"),
            call("python", code="print(open('hello.txt').read())"),
            "ok",
        ]
    )
    agent = Agent(llm, tools=["python", "files"], run_dir=run_dir, guards=None, tool_options={"pool": pool})
    try:
        result = agent.run_sync("write, then read with python")
    finally:
        agent.close()
    outputs = [e.content for e in result.events if e.type == "tool_result"]
    assert outputs[1].splitlines()[-1] == "from the files tool", outputs


def test_one_python_tool_shared_by_agents_with_their_own_workspaces_keeps_them_apart(tmp_path, run_dir, pool):
    tool = PythonTool(pool=pool, prefetch=False)
    a, b = tmp_path / "a", tmp_path / "b"

    def agent(workspace, code):
        llm = ScriptedLLM([call("python", code=code), "ok"])
        result = Agent(llm, tools=[tool], workspace=workspace, run_dir=run_dir, guards=None).run_sync("go")
        return [e.content for e in result.events if e.type == "tool_result"][0].splitlines()[-1]

    try:
        assert agent(a, "import os; mine = 'A'; open('note.txt', 'w').write('a'); print(os.getcwd())") == str(a)
        assert agent(b, "import os; print(os.getcwd(), 'mine' in globals())") == f"{b} False"
        assert agent(a, "print(mine)") == "A"  # a's session came back as it was
    finally:
        tool.close()
    assert (a / "note.txt").exists() and not (b / "note.txt").exists()


def test_terminal_clean_up_keeps_what_a_terminal_would_show():
    assert sb.strip_ansi("1/10 files\r2/10 files\r10/10 files copied\r") == "10/10 files copied"  # ends in \r
    assert sb.strip_ansi("line1\r\nline2\r") == "line1\nline2"
    assert sb.strip_ansi("keep this\n\x1b]stray\nand all of this") == "keep this\nstray\nand all of this"
    long = "\r" + "x" * 100_000  # one pass over the text, not one per position
    assert sb.strip_ansi(long) == "x" * 100_000


def test_the_built_in_python_tool_warms_its_kernel_for_the_folder_it_will_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    [built_in] = make_tools(prefetch=False)
    assert built_in.current_dir_default and built_in._prefetch_target == str(tmp_path)
    assert PythonTool(prefetch=False)._prefetch_target is None  # made directly: a temporary folder


def test_importing_tools_loads_no_jupyter():
    code = (
        "import sys\nimport tools, tools.python_tool\nfrom tools import PythonTool\n"
        "print([m for m in ('jupyter_client', 'zmq', 'ipykernel') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


HOST_SCRIPT = """
import asyncio, json, sys, time
sys.path.insert(0, {root!r})
from tools import PythonTool
from tools.sandbox import KernelPool
tool = PythonTool(isolation={level!r}, pool=KernelPool(size=0), prefetch=False)
code = "import subprocess\\nsubprocess.Popen(['sleep', '{marker}'], start_new_session=True)\\nprint('ok')"
print(asyncio.run(tool.run(tool.Args(code=code))), file=sys.stderr)
print(json.dumps(tool.kernel_pids()), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize(
    "level, how",
    [*[pytest.param(p.values[0], "SIGKILL", id=f"{p.id}-SIGKILL", marks=p.marks) for p in LEVELS],
     pytest.param(BEST, "SIGINT", id=f"{BEST}-SIGINT")],
)  # fmt: skip
def test_no_kernel_outlives_its_host(level, how):
    if level == "none" and sb.cgroups().base is None:
        pytest.skip("without a pids cgroup or a pid namespace, a process that left the session is not found")
    marker = str(random.randint(700_000, 799_999))
    script = HOST_SCRIPT.format(root=str(ROOT), level=level, marker=marker)
    host = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([host.stdout], [], [], 90)
        assert ready, host.stderr.read() if host.poll() is not None else "the host did not start a kernel"
        line = host.stdout.readline()
        assert line, host.stderr.read()
        pids = json.loads(line)
        assert len(pids) >= 2 and all(_alive(p) for p in pids)
        # Popen returns once exec has begun; the new image's arguments show in
        # /proc a moment later, so give the child's cmdline a few seconds.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(f"sleep {marker}" in _cmdline(p) for p in pids):
            time.sleep(0.02)
        assert any(f"sleep {marker}" in _cmdline(p) for p in pids), [_cmdline(p) for p in pids]
        host.send_signal(getattr(signal, how))
        host.wait(timeout=20)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        left = [f"{p}: {_cmdline(p)}" for p in pids if _alive(p)]
        assert not left, left
        assert not any(f"sleep {marker}" in _cmdline(int(p)) for p in os.listdir("/proc") if p.isdigit())
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="grants are made for the kernel's user when running as root")
def test_the_kernel_user_gets_the_workspace_but_nothing_private_in_it_and_only_while_we_run():
    import shutil
    import tempfile

    base = tempfile.mkdtemp(dir="/tmp")  # outside pytest's folders, which nobody cannot enter
    os.chmod(base, 0o711)
    try:
        ws = Path(base) / "ws"
        (ws / "src").mkdir(parents=True)
        (ws / "data.csv").write_text("a,b\n")
        (ws / "src" / "main.py").write_text("print(1)\n")
        for path, text, mode in [
            (".env", "TOKEN=x\n", 0o644),  # hidden: kept from the kernel's user though anyone may read it
            ("notes.txt", "mine\n", 0o600),
            ("shared.txt", "ours\n", 0o644),
            ("report.txt", "draft\n", 0o640),
        ]:
            (ws / path).write_text(text)
            (ws / path).chmod(mode)
        (ws / ".ssh").mkdir(mode=0o700)
        (ws / ".ssh" / "id_rsa").write_text("KEY\n")
        (ws / "private").mkdir(mode=0o700)
        (ws / "private" / "plan.txt").write_text("plan\n")
        (ws / "private" / "plan.txt").chmod(0o644)
        (ws / ".secrets").mkdir(mode=0o755)  # a hidden folder anyone may enter
        (ws / ".secrets" / "prod.key").write_text("KEY\n")
        (ws / ".secrets" / "prod.key").chmod(0o644)
        modes = {p: p.stat().st_mode for p in ws.rglob("*")}

        def as_nobody(command: str) -> bool:
            run = subprocess.run(
                ["/bin/sh", "-c", command], user=65534, group=65534, extra_groups=[], capture_output=True
            )
            return run.returncode == 0

        if not sb.grant_access(str(ws), 65534):
            pytest.skip("no POSIX ACLs on /tmp here")
        try:
            assert as_nobody(f"echo more >> {ws}/data.csv && echo new > {ws}/src/new.py && cat {ws}/shared.txt")
            for private in (".env", "notes.txt", ".ssh/id_rsa", "private/plan.txt", ".secrets/prod.key"):
                assert not as_nobody(f"cat {ws}/{private}"), private
            assert (ws / "notes.txt").stat().st_mode == modes[ws / "notes.txt"]  # 0600 shows as 0600
            # an edit by the agent's own files tools keeps a file as private as it was
            files = FileTools(ws)
            files.edit_file(path="report.txt", old="draft", new="final")
            files.edit_file(path=".env", old="x", new="y")
            files.write_file(path="src/made.txt", content="new\n")  # a new file: the folder's default
            files.write_file(path=".env.local", content="TOKEN=z\n")  # a new hidden one: private
            assert not as_nobody(f"cat {ws}/.env.local")
            (ws / "plain.txt").write_text("kept\n")  # private, with no ACL of its own (made by another program)
            os.removexattr(ws / "plain.txt", "system.posix_acl_access")
            os.chmod(ws / "plain.txt", 0o640)
            files.edit_file(path="plain.txt", old="kept", new="still kept")  # not opened by the folder's ACL
            assert not as_nobody(f"cat {ws}/plain.txt") and (ws / "plain.txt").stat().st_mode & 0o777 == 0o640
            assert not as_nobody(f"cat {ws}/report.txt") and not as_nobody(f"cat {ws}/.env")
            assert as_nobody(f"echo more >> {ws}/src/made.txt")
            # another program makes a hidden folder meanwhile (pytest's .pytest_cache): it and what
            # is made in it take the kernel's entry from the workspace's default ACL
            (ws / ".cache" / "v").mkdir(parents=True)
            (ws / ".cache" / "v" / "nodeids").write_text("[]\n")
            assert as_nobody(f"cat {ws}/.cache/v/nodeids")  # it took the kernel user's entry
        finally:
            sb.revoke_access(str(ws))
        assert {p: p.stat().st_mode for p in modes} == modes  # as they were: no mask in the group bits
        for path in ("data.csv", "src/new.py", "src/made.txt", ".env", "report.txt", ".secrets", ".cache/v/nodeids"):
            assert not any("acl" in name for name in os.listxattr(ws / path)), path  # later files too
        assert not as_nobody(f"echo more >> {ws}/data.csv") and not as_nobody(f"echo more >> {ws}/src/made.txt")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_saved_outputs_take_the_next_free_number_without_trying_each_from_one(tmp_path, monkeypatch):
    from tools import python_tool

    (tmp_path / "outputs").mkdir()
    for n in range(1, 6):
        (tmp_path / "outputs" / f"plot-{n}.png").write_bytes(b"old")
    tried = []
    real_open = os.open
    monkeypatch.setattr(python_tool.os, "open", lambda name, *a, **k: tried.append(name) or real_open(name, *a, **k))
    assert python_tool._write_new_output(str(tmp_path), "plot", "png", b"new") == "plot-6.png"
    tried.clear()
    (tmp_path / "outputs" / "plot-3.png").unlink()  # a number freed later is not taken again
    assert python_tool._write_new_output(str(tmp_path), "plot", "png", b"new") == "plot-7.png"
    assert [t for t in tried if t.startswith("plot-")] == ["plot-7.png"]  # straight there


def test_a_workspace_is_kept_warm_for_a_second_session_not_for_one_kernels_restart(tmp_path):
    pool = sb.KernelPool(size=1)
    config, isolation, where = sb.SandboxConfig(), BEST, str(tmp_path)
    slot = lambda: pool._slots[pool.key(config, isolation, where)]  # noqa: E731
    session, other = object(), object()
    try:
        pool.acquire(config, isolation, where, owner=session).kill()
        pool.acquire(config, isolation, where, owner=session).kill()  # the same session, after a restart
        assert slot().uses == 1
        pool.acquire(config, isolation, where, owner=other).kill()
        assert slot().uses == 2  # a second session: worth keeping a spare for
    finally:
        pool.shutdown()


@pytest.mark.skipif(BEST != "bubblewrap" or os.geteuid() != 0, reason="grants are made under bubblewrap as root")
def test_a_workspace_too_big_to_share_whole_is_said_so_in_the_kernels_header(tmp_path, monkeypatch):
    monkeypatch.setattr(sb, "GRANT_ENTRIES", 50)  # as a workspace of more than 20,000 entries
    workspace = tmp_path / "big"
    workspace.mkdir()
    for i in range(60):
        (workspace / f"f{i:02d}.txt").write_text("x")
    tool = PythonTool(workspace=workspace, pool=sb.KernelPool(size=0), prefetch=False)
    try:
        out = asyncio.run(run(tool, "print('ok')"))
    finally:
        tool.close()
    assert "holds over 50 entries and only those met first are writable for user nobody" in out, out
