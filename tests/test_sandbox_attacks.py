"""Hostile code through the python tool, run by a real Agent, at each isolation level.

Every attack must end in a clear observation, leave the host untouched where
the level promises it, and leave the agent working: a follow-up `print(1+1)`
answers `2`. Set SANDBOX_ATTACK_TABLE=path to write the outcomes as a table.
"""

import dataclasses
import os
import signal
import socket
import subprocess
import time
from types import SimpleNamespace

import pytest
from helpers import call

from agent import Agent
from agent.llm import ScriptedLLM
from tools import sandbox as sb
from tools.python_tool import PythonTool

pytest.importorskip("ipykernel")

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
LIMITS = sb.Limits(memory_mb=640, file_size_mb=8, processes=64, cpu_seconds=300)
ROOT_HOST = os.geteuid() == 0
FS_ISOLATED = {"bubblewrap"}
NET_ISOLATED = {"bubblewrap", "netns"}
PID_ISOLATED = {"bubblewrap", "netns"}
# Without a pids cgroup, only RLIMIT_NPROC bounds processes (ignored for root), and a
# process that leaves the session can only be found through a namespace.
NO_CGROUP = sb.cgroups().base is None
OUTCOMES: dict[str, dict[str, str]] = {}


def record(level: str, attack: str, outcome: str) -> None:
    OUTCOMES.setdefault(attack, {})[level] = outcome


@pytest.fixture(scope="module", autouse=True)
def outcome_table():
    yield
    path = os.environ.get("SANDBOX_ATTACK_TABLE")
    if path and OUTCOMES:
        levels = [lv for lv in sb.ISOLATION_LEVELS if any(lv in row for row in OUTCOMES.values())]
        lines = ["| attack | " + " | ".join(levels) + " |", "|---" * (len(levels) + 1) + "|"]
        for attack, row in OUTCOMES.items():
            lines.append(f"| {attack} | " + " | ".join(row.get(lv, "skipped") for lv in levels) + " |")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A host directory outside every workspace, with a readable secret in it."""
    d = tmp_path_factory.mktemp("host")
    os.chmod(d, 0o755)
    secret = d / "secret.txt"
    secret.write_text("TOP-SECRET-42")
    secret.chmod(0o644)
    return d


@pytest.fixture(scope="module", params=LEVELS)
def box(request, tmp_path_factory):
    level = request.param
    workspace = tmp_path_factory.mktemp(f"ws-{level}")
    pool = sb.KernelPool(size=1)
    tool = PythonTool(
        workspace=workspace, isolation=level, timeout=2, interrupt_grace=1, limits=LIMITS, pool=pool
    )
    pool.warm(tool.config, level, str(workspace))  # a spare kernel for quick recovery
    yield SimpleNamespace(level=level, tool=tool, workspace=workspace, pool=pool)
    tool.close()
    pool.shutdown()


async def attack(box, code: str, run_dir, tool: PythonTool | None = None, both: bool = False) -> str:
    """Run `code` through an agent, then follow-up cells; the first observation (without the header).

    The agent must keep working: the last follow-up answers. A kernel that dies a
    moment after its cell finished (killed with its parent) may instead be reported
    by a later cell; with `both`, the first follow-up waits 1.5 s (in a failing run
    without the wait, two quick follow-ups ran before the third reported it), and
    the follow-ups up to the one that reports it are joined to the result.
    """
    follow_ups = ["print(1+1)", "print(2+2)", "print(3+3)"]
    if both:  # the death comes a moment after the cell: the first follow-up waits for it
        follow_ups[0] = "import time; time.sleep(1.5); print(1+1)"
    llm = ScriptedLLM([call("python", code=code), *(call("python", code=c) for c in follow_ups), "done"])
    # guards=None: these attacks test the sandbox itself; the default guards
    # would block several of them (fork bomb, /etc/shadow) before they ran.
    agent = Agent(llm, tools=[tool or box.tool], run_dir=run_dir, guards=None)
    result = await agent.arun("attack")
    assert result.ok, result.error
    observations = [e for e in result.events if e.type == "tool_result"]
    assert len(observations) == 1 + len(follow_ups)
    last = observations[-1]
    assert not last.is_error and last.content.splitlines()[-1] == "6", last.content
    text = observations[0].content
    for follow, answer in zip(observations[1:-1], ("2", "4"), strict=True):
        if both and "The Python kernel died" in follow.content and "died" not in text:
            text += "\n" + follow.content
        else:
            assert not follow.is_error and follow.content.splitlines()[-1] == answer, follow.content
    return "\n".join(line for line in text.splitlines() if not line.startswith("[python kernel: "))


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


async def test_read_etc_shadow(box, run_dir):
    out = await attack(box, "print(open('/etc/shadow').read()[:40])", run_dir)
    if box.level in FS_ISOLATED or not ROOT_HOST:
        assert "PermissionError" in out
        record(box.level, "read /etc/shadow", "denied (PermissionError: kernel runs as nobody)")
    else:
        assert "root:" in out
        record(box.level, "read /etc/shadow", "READ (kernel runs as the host user, root)")


async def test_read_a_host_file_outside_the_workspace(box, host, run_dir):
    out = await attack(box, f"print(open({str(host / 'secret.txt')!r}).read())", run_dir)
    if box.level in FS_ISOLATED:
        assert "FileNotFoundError" in out and "TOP-SECRET" not in out
        record(box.level, "read a host file outside the workspace", "not visible (FileNotFoundError)")
    else:
        assert "TOP-SECRET-42" in out
        record(box.level, "read a host file outside the workspace", "READ (no filesystem isolation)")


async def test_write_outside_the_workspace(box, host, run_dir):
    target = host / f"pwned-{box.level}.txt"
    out = await attack(box, f"open({str(target)!r}, 'w').write('pwned')", run_dir)
    if box.level in FS_ISOLATED:
        assert "FileNotFoundError" in out and not target.exists()
        system = await attack(box, "open('/usr/pwned', 'w').write('x')", run_dir)
        assert "Read-only file system" in system or "PermissionError" in system
        assert not os.path.exists("/usr/pwned")
        record(box.level, "write outside the workspace", "denied (host dirs absent; system read-only)")
    else:
        assert target.read_text() == "pwned"
        target.unlink()
        record(box.level, "write outside the workspace", "WRITTEN (no filesystem isolation)")
    inside = await attack(box, "open('inside.txt', 'w').write('ok')", run_dir)
    assert "Out[" in inside and (box.workspace / "inside.txt").read_text() == "ok"


async def test_plant_a_link_where_the_host_saves_rich_output(box, host, run_dir):
    """The host process writes a cell's rich output (HTML, images) into the workspace's
    outputs/ folder, which the kernel can change: a link planted there must not carry
    that write to a host path (as root, anywhere)."""
    target = host / f"planted-{box.level}.html"
    display = "from IPython.display import HTML, display; display(HTML('<b>from the sandbox</b>'))"
    plant = f"import os; os.makedirs('outputs', exist_ok=True); os.symlink({str(target)!r}, 'outputs/output-1.html')"
    await attack(box, plant, run_dir)
    out = await attack(box, display, run_dir)
    assert not target.exists() and "saved to outputs/output-2.html" in out, out
    assert (box.workspace / "outputs" / "output-2.html").read_text() == "<b>from the sandbox</b>"
    swap = f"import os, shutil; shutil.rmtree('outputs'); os.symlink({str(host)!r}, 'outputs')"
    await attack(box, swap, run_dir)
    out = await attack(box, display, run_dir)
    assert "could not be saved" in out and "not a plain folder" in out, out
    assert not list(host.glob("output-*"))
    os.unlink(box.workspace / "outputs")
    record(box.level, "plant a link where the host saves output", "not followed (refused or a new name)")


@pytest.fixture(scope="module")
def server():
    """A TCP server on the host's loopback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


CONNECT = (
    "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n"
    "    print('CONNECTED')\nexcept OSError as e:\n    print('BLOCKED', type(e).__name__, e)"
)


async def test_reach_the_host_network(box, server, run_dir):
    out = await attack(box, CONNECT.format(port=server), run_dir)
    if box.level in NET_ISOLATED:
        assert out.startswith("BLOCKED")
        record(
            box.level, "connect to a server on the host's 127.0.0.1", "blocked (" + out.split(" ", 2)[1] + ")"
        )
    else:
        assert out == "CONNECTED"
        record(box.level, "connect to a server on the host's 127.0.0.1", "CONNECTED (no network namespace)")


async def test_network_can_be_allowed(box, server, run_dir, tmp_path):
    if box.level not in NET_ISOLATED:
        pytest.skip("the network is never isolated at this level")
    tool = PythonTool(
        workspace=tmp_path, isolation=box.level, allow_network=True, pool=box.pool, prefetch=False
    )
    try:
        out = await attack(box, CONNECT.format(port=server), run_dir, tool=tool)
    finally:
        await tool.aclose()
    assert out == "CONNECTED"
    record(box.level, "same, with allow_network=True", "connected")


async def test_fork_bomb(box, run_dir):
    if NO_CGROUP and ROOT_HOST and box.level != "bubblewrap":
        pytest.skip("root without a writable pids cgroup: nothing bounds the processes at this level")
    started = time.monotonic()
    out = await attack(box, "import os\nwhile True:\n    os.fork()", run_dir)
    # the bomb hits the pids limit; the kernel is recycled after the cell fails, or after the
    # timeout when the cell itself is stuck among its children
    assert "restarted" in out and ("process limit" in out or "did not respond" in out), out
    assert time.monotonic() - started < 30
    tasks = box.tool.kernel.tasks()
    assert tasks is None or tasks < LIMITS.processes // 2
    how = "pids cgroup" if box.tool.kernel.cgroup else "RLIMIT_NPROC"
    record(box.level, "fork bomb", f"stopped at {LIMITS.processes} tasks ({how}); kernel recycled")


async def test_send_junk_and_forged_messages_to_the_host(box, run_dir):
    # the kernel's sockets and key are within reach of the code it runs
    code = (
        "k = get_ipython().kernel\n"
        "k.iopub_socket.send_multipart([b'junk'])\n"
        "k.iopub_socket.send_multipart([b't', b'<IDS|MSG>', b'bad signature', b'{}', b'{}', b'{}', b'{}'])\n"
        "parts = [b'{', b'{}', b'{}', b'[1]']\n"
        "k.iopub_socket.send_multipart([b't', b'<IDS|MSG>', k.session.sign(parts), *parts])\n"
        "print('still here')"
    )
    out = await attack(box, code, run_dir)
    assert out == "still here", out
    # signed, answering this cell, with fields of the wrong types (or nested past any parser)
    code = (
        "k = get_ipython().kernel\n"
        "for kind, body in [('stream', {'name': 'stdout', 'text': 123}), ('execute_result', {'data': [1, 2]}),\n"
        "                   ('display_data', {'data': {'text/plain': 5}}), ('stream', {'name': 7, 'text': 'ok '}),\n"
        "                   ('error', {'ename': 1, 'evalue': None, 'traceback': [1, 2]})]:\n"
        "    k.session.send(k.iopub_socket, kind, body, parent=k.get_parent())\n"
        "parts = [b'{\"msg_type\": \"stream\"}', k.get_parent()['header'] and "
        "('{\"msg_id\": \"%s\"}' % k.get_parent()['header']['msg_id']).encode(), b'{}', b'[' * 100000]\n"
        "k.iopub_socket.send_multipart([b't', b'<IDS|MSG>', k.session.sign(parts), *parts])\n"
        "print('still here')"
    )
    out = await attack(box, code, run_dir)
    assert out.startswith("ok ") and out.endswith("still here") and "Error" not in out, out
    record(box.level, "send junk and forged messages to the host", "dropped; the cell's output is intact")


async def test_allocate_without_bound(box, run_dir):
    out = await attack(box, "blob = bytearray(64 * 1024**3)", run_dir)
    assert "MemoryError" in out
    out = await attack(box, "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024**2))", run_dir)
    assert "MemoryError" in out
    record(
        box.level, "allocate without bound", f"MemoryError at {LIMITS.memory_mb} MiB (RLIMIT_AS); kernel kept"
    )


async def test_python_infinite_loop(box, run_dir):
    out = await attack(box, "while True:\n    pass", run_dir)
    assert "Timed out after 2 s" in out and "KeyboardInterrupt" in out and "variables are kept" in out
    record(box.level, "infinite loop (Python)", "interrupted at the timeout; state kept")


async def test_c_level_infinite_loop(box, run_dir):
    out = await attack(box, "sum(range(10**14))", run_dir)
    assert "did not respond to an interrupt" in out and "restarted" in out
    record(
        box.level,
        "infinite loop in C (ignores interrupts)",
        "kernel restarted after timeout + grace; state lost",
    )


async def test_fill_the_disk(box, run_dir):
    code = "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'0' * 2**20)"
    out = await attack(box, code, run_dir)
    assert "File too large" in out
    big = box.workspace / "big.bin"
    assert big.stat().st_size <= LIMITS.file_size_mb * 2**20
    big.unlink()
    record(box.level, "fill the disk", f"OSError: File too large at {LIMITS.file_size_mb} MiB (RLIMIT_FSIZE)")


async def test_kill_the_parent(box, run_dir):
    code = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('parent', os.getppid())"
    out = await attack(box, code, run_dir, both=True)
    if box.level == "bubblewrap":
        assert "PermissionError" in out  # the parent is bwrap's init, running as root
        record(box.level, "os.kill(os.getppid(), SIGKILL)", "PermissionError (parent is bwrap's init)")
    elif box.level in PID_ISOLATED:
        # the namespace's init ignores signals from inside
        assert "parent 1" in out.splitlines() and "died" not in out
        record(box.level, "os.kill(os.getppid(), SIGKILL)", "no effect (parent is the namespace's init)")
    else:
        assert "The Python kernel died" in out and "a fresh kernel is ready" in out
        record(
            box.level,
            "os.kill(os.getppid(), SIGKILL)",
            "kills the launcher; the kernel dies with it and is replaced",
        )


async def test_kill_the_process_group(box, run_dir):
    out = await attack(box, "import os, signal\nos.killpg(os.getpgid(0), signal.SIGKILL)", run_dir, both=True)
    if box.level == "bubblewrap":
        # the group belongs to bwrap's init (root): nothing can be signalled
        assert "ProcessLookupError" in out or "PermissionError" in out
        error = next(
            line for line in out.splitlines() if line.endswith("No such process") or "denied" in line
        )
        record(box.level, "os.killpg(os.getpgid(0), SIGKILL)", "refused (" + error.split(":")[0] + ")")
    else:
        assert "The Python kernel died" in out and "a fresh kernel is ready" in out
        record(box.level, "os.killpg(os.getpgid(0), SIGKILL)", "kills its own sandbox only; kernel replaced")


async def test_kill_the_host_by_pid(box, run_dir):
    if box.level not in PID_ISOLATED:
        pytest.skip("no pid namespace: the kernel could signal the test runner")
    out = await attack(box, f"import os\nos.kill({os.getpid()}, 9)", run_dir)
    assert "ProcessLookupError" in out
    record(box.level, "os.kill(<host pid>, SIGKILL)", "ProcessLookupError (host pids are not visible)")


async def test_no_process_is_left_behind(box, run_dir, tmp_path):
    await _leaves_no_process(box, run_dir, tmp_path, LIMITS, cgroup=not NO_CGROUP or box.level in PID_ISOLATED)


async def test_no_process_is_left_behind_without_a_pids_cgroup(box, run_dir, tmp_path):
    # no pids cgroup nor pid namespace: the launcher is a subreaper, so the processes are found
    # below it, the daemon whose parent exited as well
    if box.level in PID_ISOLATED:
        pytest.skip("a pid namespace holds them all")
    await _leaves_no_process(box, run_dir, tmp_path, dataclasses.replace(LIMITS, processes=0), cgroup=False)


async def _leaves_no_process(box, run_dir, tmp_path, limits, *, cgroup):
    marker = str(800_000 + os.getpid() % 1000 * 10 + sb.ISOLATION_LEVELS.index(box.level) + 5 * (not cgroup))
    code = (
        "import os, subprocess\n"
        f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execvp('sleep', ['sleep', '{marker}'])\n"
        "if os.fork() == 0:  # a daemon: its parent exits, it is orphaned\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execvp('sleep', ['sleep', '{marker}'])\n"
        "    os._exit(0)\n"
        "print('spawned')"
    )
    tool = PythonTool(workspace=tmp_path, isolation=box.level, limits=limits, pool=box.pool, prefetch=False)
    out = await attack(box, code, run_dir, tool=tool)
    assert _last_line(out) == "spawned"
    deadline = time.monotonic() + 5
    while len(_pgrep(f"sleep {marker}")) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)  # the forked children may not have exec'd yet
    pids = tool.kernel_pids()
    sleeping = _pgrep(f"sleep {marker}")
    assert len(sleeping) == 3 and set(sleeping) <= set(pids)
    await tool.aclose()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (_pgrep(f"sleep {marker}") or any(_alive(p) for p in pids)):
        time.sleep(0.05)
    assert not _pgrep(f"sleep {marker}") and not any(_alive(p) for p in pids)
    how = "namespace/cgroup" if cgroup else "subreaper launcher, no cgroup"
    record(box.level, "leave daemonised processes behind", f"all killed at aclose ({how})")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _pgrep(pattern: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().replace(b"\0", b" ").decode(errors="replace").strip() == pattern and _alive(
                        int(entry)
                    ):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def test_host_is_unharmed():
    # after all of the above, this process and its children are fine
    assert subprocess.run(["true"]).returncode == 0
    assert os.kill(os.getpid(), 0) is None and signal.getsignal(signal.SIGINT) is not None
