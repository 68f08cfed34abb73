"""Sandboxed Jupyter kernels: isolation, resource limits, a warm pool, execution.

Each kernel runs in the strongest isolation this machine offers:

- ``bubblewrap``: a private mount namespace with a read-only view of the system
  and the Python installation, the workspace as the only writable host path, a
  private ``/tmp``, and private pid, ipc, uts and network namespaces (the
  network is shared only when allowed). When the host runs as root the kernel
  drops to an unprivileged user (``nobody``) inside the sandbox.
- ``netns``: ``unshare`` gives the kernel private network, pid and mount
  namespaces (no network, cannot see or signal host processes); the
  filesystem is the host's.
- ``none``: only the resource limits below.

Every level sets rlimits (CPU seconds, address space, file size, open files)
and bounds the number of processes with a pids cgroup when one is writable (as
root RLIMIT_NPROC is ignored), else with RLIMIT_NPROC. Kernels are started by a
small launcher that sets PR_SET_PDEATHSIG, from one long-lived thread, so no
kernel outlives the host even when it is SIGKILLed; an atexit hook kills the
rest on a normal exit or Ctrl-C.

Nothing heavy is imported here: jupyter_client and zmq load when the first
kernel starts.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import hmac
import json
import os
import queue
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._terminal import ESCAPES

ISOLATION_LEVELS = ("bubblewrap", "netns", "none")

# Environment variables whose names look like secrets are not passed to kernels, nor
# those whose values do: a URL with a password in it (DATABASE_URL, SENTRY_DSN) or a
# token in a well-known format (GitHub, OpenAI-style, Slack, AWS, Google).
SECRET_ENV = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|PRIVATE|AUTH|COOKIE|SESSION|DSN|CONN(?:ECTION)?_?STR"
    r"|(?:^|_)PAT(?:$|_)",
    re.I,
)
SECRET_VALUE = re.compile(
    # a URL with a password (the user may be empty: redis://:pw@host), a key of a known service,
    # a connection string's key or password (Azure's AccountKey=, ODBC's Pwd=)
    r"://[^/\s:@]*:[^/\s@]+@|\b(?:gh[pousr]_|github_pat_|sk-|xox[abprs]-|AKIA|ASIA|AIza)[A-Za-z0-9_\-]{12,}"
    r"|(?i:\b(?:AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd)=[^;\s]+)"
)


class SandboxError(RuntimeError):
    """A kernel could not be started or isolation is not available."""


@dataclass(frozen=True)
class Limits:
    """Resource limits applied to every kernel (0 disables one)."""

    cpu_seconds: int = 1800  # CPU time of the kernel process over its whole life
    memory_mb: int = 4096  # address space of each process
    processes: int = 128  # tasks (processes and threads) in the sandbox
    file_size_mb: int = 512  # largest file the kernel may write
    open_files: int = 1024
    tmp_mb: int = 512  # size of the private /tmp (bubblewrap)


@dataclass(frozen=True)
class SandboxConfig:
    isolation: str = "auto"  # "auto" | "bubblewrap" | "netns" | "none"
    allow_network: bool = False
    limits: Limits = field(default_factory=Limits)
    run_as: str | None = "nobody"  # unprivileged user for bubblewrap kernels when the host is root
    startup_timeout: float = 60.0


# ---------------------------------------------------------------------------
# Small helpers run in child processes (as source text: they must start fast
# and import nothing from this project).

# Sets the cgroup, the rlimits and PR_SET_PDEATHSIG, then execs the isolation
# wrapper; with "init" it forks the kernel and reaps children until it exits.
_LAUNCHER = r"""
import ctypes, json, os, resource, signal, sys
spec = json.loads(sys.argv[1])
def deathsig():
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
if spec.get("cgroup"):
    try:
        with open(spec["cgroup"], "w") as f:
            f.write(str(os.getpid()))
    except OSError as e:
        sys.stderr.write("sandbox: cannot join the pids cgroup: %s\n" % e)
for name, value in spec.get("rlimits", []):
    res = getattr(resource, name)
    soft, hard = resource.getrlimit(res)
    new_hard = value if hard == resource.RLIM_INFINITY else min(value, hard)
    extra = 5 if name == "RLIMIT_CPU" else 0
    try:
        resource.setrlimit(res, (new_hard, new_hard + extra if hard == resource.RLIM_INFINITY else new_hard))
    except (ValueError, OSError):
        resource.setrlimit(res, (new_hard, hard))
deathsig()
if os.getppid() != spec["parent"]:
    os._exit(70)
argv = spec["argv"]
if not spec.get("init"):
    os.execv(argv[0], argv)
signal.signal(signal.SIGINT, signal.SIG_IGN)
me = os.getpid()
# A subreaper: a process that leaves the kernel's session (setsid, a double fork) and is
# orphaned becomes this one's child, not init's, so it stays in the tree the host kills.
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
def below():
    kids = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], list(kids.get(me, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out
def cleanup(signum, frame):
    # the host died: take down everything this sandbox started, then go
    procs = spec.get("cgroup")
    for _ in range(50):
        try:
            with open(procs) as f:
                pids = [int(x) for x in f.read().split() if int(x) != me]
        except (TypeError, OSError):
            pids = below()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    try:
        os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(137)
signal.signal(signal.SIGTERM, cleanup)
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != spec["parent"]:
    os._exit(70)
child = os.fork()
if child == 0:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    deathsig()
    if os.getppid() != me:
        os._exit(70)
    os.execv(argv[0], argv)
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        os._exit(0)
    except InterruptedError:
        continue
    if pid == child:
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
"""

# Runs inside the sandbox: drop privileges (as root), then start ipykernel with
# the kernel and stdout/stderr classes below.
# - Speed: every message the kernel publishes, and every flush of stdout or
#   stderr (ipykernel does three of each per cell, even when nothing was
#   written), is a round trip to its IOPub thread; those round trips were most
#   of a trivial cell's time. Flushes with nothing pending are skipped, and the
#   busy status and the echo of the code are not sent: the host reads neither.
# - Output of C code and child processes goes to the file descriptors, which
#   are a pipe read by a thread. ipykernel does not wait for that thread, so
#   such output could come after later prints, or after the cell's end (and be
#   lost). Here every write and flush first takes what waits in the pipe.
_KERNEL_MAIN = r"""
import codecs, fcntl, os, select, struct, sys, termios, threading, time, types
uid, gid = int(os.environ.pop("AGENT_SANDBOX_UID", "-1")), int(os.environ.pop("AGENT_SANDBOX_GID", "-1"))
if uid >= 0:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
os.environ.pop("JPY_PARENT_PID", None)
if sys.path and sys.path[0] == "":
    del sys.path[0]
from ipykernel import iostream, ipkernel, kernelapp
import re

def _escaped(text):
    # an undecodable byte kept as a surrogate (os.listdir, surrogateescape) shows as \xff, others as \udXXX
    return re.sub("[\ud800-\udfff]", lambda m: "\\x%02x" % (ord(m.group()) - 0xDC00) if m.group() >= "\udc80" and m.group() <= "\udcff" else "\\u%04x" % ord(m.group()), text)

class Kernel(ipkernel.IPythonKernel):
    def _publish_execute_input(self, *args, **kwargs):
        pass

    def _publish_status(self, status, *args, **kwargs):
        if status != "busy":
            super()._publish_status(status, *args, **kwargs)

class OutStream(iostream.OutStream):
    def __init__(self, *args, **kwargs):
        # held while output moves from the pipe into the stream (reentrant: a signal handler may print)
        self._fd_lock = threading.RLock()
        self._fd_decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._fd_checked = 0.0
        super().__init__(*args, **kwargs)

    def _watch_pipe_fd(self):
        try:
            os.set_blocking(self._fid, False)
            readable = select.poll()
            readable.register(self._fid, select.POLLIN)
            while self._should_watch:
                readable.poll()
                with self._fd_lock:
                    try:
                        data = os.read(self._fid, 65536)
                    except BlockingIOError:  # taken by a write or flush meanwhile
                        continue
                    if not data or not self._should_watch:
                        return
                    self._take(data)
        except Exception:
            self._exc = sys.exc_info()

    def _take(self, data):
        iostream.OutStream.write(self, self._fd_decoder.decode(data))
        os.write(self._original_stdstream_copy, data)

    def _take_pipe(self):
        if self._should_watch and self._is_master_process():  # a forked child has no reader thread
            self._fd_checked = time.monotonic()
            with self._fd_lock:
                unread = struct.unpack("i", fcntl.ioctl(self._fid, termios.FIONREAD, b"0000"))[0]
                if unread:
                    self._take(os.read(self._fid, unread))

    def write(self, string):
        if isinstance(string, str) and not string.isascii():
            try:
                string.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate (a file name that is not UTF-8) would take
                string = _escaped(string)  # the whole cell's output with it when the message is sent
        # a check costs a system call: in a burst of prints, check once per 50 us
        if time.monotonic() - self._fd_checked > 50e-6:
            self._take_pipe()
        return super().write(string)

    def flush(self):
        self._take_pipe()
        if self._flush_pending or self._subprocess_flush_pending or self.echo is not None:
            super().flush()

sys.modules["agent_sandbox_kernel"] = types.ModuleType("agent_sandbox_kernel")
sys.modules["agent_sandbox_kernel"].Kernel = Kernel
sys.modules["agent_sandbox_kernel"].OutStream = OutStream
kernelapp.launch_new_instance()
"""

_KERNEL_ARGS = [
    "--IPKernelApp.log_level=CRITICAL",
    "--IPKernelApp.kernel_class=agent_sandbox_kernel.Kernel",
    "--IPKernelApp.outstream_class=agent_sandbox_kernel.OutStream",
    # a 0.5 ms sleep before each reply, against a flush race our client does not have:
    # it waits for the idle status, which comes after all of the cell's output
    "--IPythonKernel._execute_sleep=0",
    "--InteractiveShell.xmode=Plain",
    "--InteractiveShell.colors=nocolor",
    "--HistoryManager.enabled=False",
]


# ---------------------------------------------------------------------------
# Isolation detection


_detect_lock = threading.Lock()
_available: dict[str, tuple[bool, str]] = {}


def _is_root() -> bool:
    return os.geteuid() == 0


def _probe(level: str) -> tuple[bool, str]:
    if level == "none":
        return True, ""
    if level == "bubblewrap":
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            return False, "bwrap is not installed (apt-get install bubblewrap)"
        argv = _bwrap_argv(bwrap, workspace=None, rundir=None, allow_network=False, drop=None, tmp_mb=16)
        argv += [sys.executable, "-I", "-S", "-c", "pass"]
    else:
        unshare = shutil.which("unshare")
        if unshare is None:
            return False, "unshare is not installed (util-linux)"
        argv = _unshare_argv(unshare, allow_network=False) + [sys.executable, "-I", "-S", "-c", "pass"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    if done.returncode != 0:
        return False, done.stderr.decode(errors="replace").strip()[:300] or f"exit code {done.returncode}"
    return True, ""


def isolation_status(level: str) -> tuple[bool, str]:
    """Whether an isolation level works here, and why not (probed once)."""
    if level not in ISOLATION_LEVELS:
        raise ValueError(f"unknown isolation {level!r}; use one of {', '.join(ISOLATION_LEVELS)} or 'auto'")
    with _detect_lock:
        if level not in _available:
            _available[level] = _probe(level)
        return _available[level]


def available_isolation() -> list[str]:
    """The isolation levels that work on this machine, strongest first."""
    return [level for level in ISOLATION_LEVELS if isolation_status(level)[0]]


def resolve_isolation(requested: str) -> str:
    if requested == "auto":
        for level in ISOLATION_LEVELS:
            if isolation_status(level)[0]:
                return level
        return "none"
    ok, why = isolation_status(requested)
    if not ok:
        raise SandboxError(f"isolation {requested!r} is not available here: {why}")
    return requested


# ---------------------------------------------------------------------------
# Command lines


def _python_paths() -> list[str]:
    """Directories the kernel's interpreter needs, read-only."""
    paths: list[str] = []
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.dirname(sys.executable)),
    ]
    candidates += [p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p)]
    for p in candidates:
        for q in (p, os.path.realpath(p)):
            if os.path.isdir(q) and q not in paths:
                paths.append(q)
    # drop paths inside others, and system paths bound anyway
    system = ("/usr", "/etc")
    out = []
    for p in sorted(paths, key=len):
        if any(p == s or p.startswith(s + "/") for s in system):
            continue
        if any(p == q or p.startswith(q + "/") for q in out):
            continue
        out.append(p)
    return out


def _bwrap_argv(
    bwrap: str,
    *,
    workspace: str | None,
    rundir: str | None,
    allow_network: bool,
    drop: tuple[int, int] | None,
    tmp_mb: int,
) -> list[str]:
    argv = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not allow_network:
        argv.append("--unshare-net")
    if not _is_root():
        argv.append("--unshare-user")
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--cap-drop", "ALL"]
    if drop is not None:
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    # (dest, args) mount operations, applied parents first
    mounts: list[tuple[str, list[str]]] = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            mounts.append((top, ["--symlink", os.readlink(top), top]))
        elif os.path.isdir(top):
            mounts.append((top, ["--ro-bind", top, top]))
    for path in ["/usr", "/etc", *_python_paths()]:
        mounts.append((path, ["--ro-bind", path, path]))
    if drop is None and _is_root():
        # the kernel keeps uid 0 (without capabilities): hide what root owns in /etc
        for secret in ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers"):
            if os.path.exists(secret):
                mounts.append((secret, ["--ro-bind", "/dev/null", secret]))
    mounts.append(("/proc", ["--proc", "/proc"]))
    mounts.append(("/dev", ["--dev", "/dev"]))
    tmp = ["--tmpfs", "/tmp"]
    if tmp_mb:
        tmp = ["--size", str(tmp_mb * 1024 * 1024), *tmp]
    mounts.append(("/tmp", ["--perms", "1777", *tmp]))
    for path in (rundir, workspace):
        if path:
            mounts.append((path, ["--bind", path, path]))
    mounts.sort(key=lambda m: (m[0].count("/"), m[0]))
    # Parents of a mount point inside a host bind exist already; elsewhere (the new
    # root, the private /tmp) bwrap would make them 0700, which `nobody` cannot enter.
    host_binds: list[str] = []
    made: set[str] = set()
    for dest, args in mounts:
        parts = dest.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/" + "/".join(parts[:i])
            if parent in made or any(parent == b or parent.startswith(b + "/") for b in host_binds):
                continue
            argv += ["--perms", "0755", "--dir", parent]
            made.add(parent)
        argv += args
        if "--bind" in args or "--ro-bind" in args:
            host_binds.append(dest)
    if workspace:
        argv += ["--chdir", workspace]
    return argv + ["--"]


def _unshare_argv(unshare: str, *, allow_network: bool) -> list[str]:
    argv = [unshare]
    if not _is_root():
        argv += ["--user", "--map-root-user"]
    if not allow_network:
        argv.append("--net")
    return argv + ["--pid", "--fork", "--kill-child", "--mount-proc", "--"]


def kernel_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The host environment without secrets, plus kernel settings."""
    env = {k: v for k, v in os.environ.items() if not SECRET_ENV.search(k) and not SECRET_VALUE.search(v)}
    # PYTEST_CURRENT_TEST makes ipykernel leave the file descriptors alone (no output of child processes)
    for k in ("JPY_PARENT_PID", "JPY_SESSION_NAME", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTEST_CURRENT_TEST"):
        env.pop(k, None)
    env.update(
        PYTHONFAULTHANDLER="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        MALLOC_ARENA_MAX="2",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------
# Workspace access for the unprivileged kernel user: POSIX ACLs


_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 1, 2, 4, 8, 16, 32
_ACL_UNDEF = 0xFFFFFFFF


def _acl_read(path: str, name: str, mode: int) -> dict[tuple[int, int], int]:
    entries: dict[tuple[int, int], int] = {}
    try:
        raw = os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        raw = b""
    for off in range(4, len(raw) - 7, 8):
        tag, perm, ident = struct.unpack_from("<HHI", raw, off)
        entries[(tag, ident)] = perm
    if not entries:
        entries = {
            (_ACL_USER_OBJ, _ACL_UNDEF): (mode >> 6) & 7,
            (_ACL_GROUP_OBJ, _ACL_UNDEF): (mode >> 3) & 7,
            (_ACL_OTHER, _ACL_UNDEF): mode & 7,
        }
    return entries


def _acl_write(path: str, name: str, entries: dict[tuple[int, int], int]) -> None:
    data = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, p, ident) for (tag, ident), p in sorted(entries.items())
    )
    os.setxattr(path, name, data, follow_symlinks=False)


def _acl_grant_one(path: str, uid: int, is_dir: bool, perm: int | None = None) -> None:
    """Give `uid` an entry in the path's ACL (and a directory's default ACL): read and write
    (and search, for a directory), or `perm` (0: a denial that the other bits do not undo)."""
    mode = os.lstat(path).st_mode
    names = ["system.posix_acl_access"] + (["system.posix_acl_default"] if is_dir else [])
    for name in names:
        entries = _acl_read(path, name, mode)
        entries[(_ACL_USER, uid)] = perm if perm is not None else 7 if is_dir else (6 | ((mode >> 6) & 1))
        group_class = 0
        for (tag, _), p in entries.items():
            if tag in (_ACL_USER, _ACL_GROUP, _ACL_GROUP_OBJ):
                group_class |= p
        entries[(_ACL_MASK, _ACL_UNDEF)] = group_class
        _acl_write(path, name, entries)


def _acl_revoke_one(path: str, uid: int, is_dir: bool) -> None:
    """Take `uid`'s entries out; with no other named entry left, the ACL goes and the mode's
    group bits are the owning group's again (the mask had shown as them)."""
    st = os.lstat(path)
    for name in ["system.posix_acl_access"] + (["system.posix_acl_default"] if is_dir else []):
        entries = _acl_read(path, name, st.st_mode)
        if entries.pop((_ACL_USER, uid), None) is None:
            continue
        if any(tag in (_ACL_USER, _ACL_GROUP) for tag, _ in entries):
            _acl_write(path, name, entries)
            continue
        os.removexattr(path, name, follow_symlinks=False)
        if name == "system.posix_acl_access":  # the owning group's access as it was in effect
            group = entries.get((_ACL_GROUP_OBJ, _ACL_UNDEF), 7) & entries.get((_ACL_MASK, _ACL_UNDEF), 7)
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o070 | group << 3)


_granted: set[tuple[str, int]] = set()  # (workspace, uid): undone when the process exits


def _private(name: str, mode: int) -> bool:
    """Not for the kernel's user: hidden entries (`.env`, `.ssh`, `.git`, ...) and what its
    owner keeps from others (a key file at 0600, a folder at 0700)."""
    return name.startswith(".") or not mode & (0o001 if stat.S_ISDIR(mode) else 0o004)


def _denied(path: str, name: str, mode: int) -> bool:
    """A private entry the kernel's user must not read even where its mode lets anyone: a
    hidden file (`.env` at 0644) or folder (`.git`, whose config may hold a token), but not
    the folder the kernel's Python runs from (a project's `.venv`)."""
    if not name.startswith("."):
        return False
    if not stat.S_ISDIR(mode):
        return True
    real = os.path.realpath(path)
    return not any(needed == real or needed.startswith(real + os.sep) for needed in _runtime())


@functools.cache
def _runtime() -> frozenset[str]:
    """Where the kernel's Python is: it must stay readable to the kernel's user."""
    return frozenset(os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, os.path.dirname(sys.executable)))


# Workspaces with more entries than grant_access walks: what it did not reach is not writable
# for the kernel's user (the python tool says so).
partly_shared: set[str] = set()
GRANT_ENTRIES = 20_000


def _entries(
    workspace: str, max_entries: int, cut: Callable[[], None] | None = None
) -> Iterator[tuple[str, str, os.stat_result, list[str]]]:
    """(path, name, lstat, the walk's list of folders to enter) of what is below `workspace`,
    links left out, at most `max_entries` (`cut` is called when there were more); a caller
    may take a folder out of the list."""
    count = 0
    for root, dirs, files in os.walk(workspace):
        for name in dirs + files:
            count += 1
            if count > max_entries:
                if cut is not None:
                    cut()
                return
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISLNK(st.st_mode):
                yield path, name, st, dirs


# Folders of the system, and the ones holding other users' files: never a workspace, which
# the kernel's user is let write (a workspace of `/`, the working directory of many
# containers, would open the whole host to it).
_SYSTEM_FOLDERS = frozenset(
    {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
     "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/tmp"}
)  # fmt: skip
_SYSTEM_TREES = ("/boot/", "/dev/", "/etc/", "/proc/", "/sys/", "/usr/")


def _refuse_system_folder(workspace: str) -> None:
    real = os.path.realpath(workspace)
    if real in _SYSTEM_FOLDERS or real.startswith(_SYSTEM_TREES):
        raise SandboxError(
            f"the workspace is {real}, a folder of the system: the python tool's code may write in its "
            "workspace, so it does not run there; give it a project folder (--workspace DIR, or "
            "Agent(workspace=DIR))"
        )


def grant_access(workspace: str, uid: int, max_entries: int | None = None) -> bool:
    """Let `uid` read and write the workspace (and, by default ACLs, what is later created
    in it), but nothing private in it (see `_private`); a hidden file or folder gets an
    entry that denies it even what its mode lets anyone do (see `_denied`). Undone when
    the process exits (`revoke_access`).

    Folders it may write, it may also rename entries in, private ones included: keep what
    the kernel must not touch out of the workspace."""
    if (workspace, uid) in _granted:
        return True
    try:
        _acl_grant_one(workspace, uid, True)
    except OSError:
        return False
    _granted.add((workspace, uid))
    from .files import WRITING

    limit = GRANT_ENTRIES if max_entries is None else max_entries
    for path, name, st, dirs in _entries(workspace, limit, cut=lambda: partly_shared.add(workspace)):
        if WRITING.fullmatch(name):  # a file the files tools are writing: denied, it would carry that
            continue  # to its real name
        denied = False
        if _private(name, st.st_mode):
            if name in dirs:
                dirs.remove(name)  # nothing below a private folder is shared
            denied = _denied(path, name, st.st_mode)
            if not denied:
                continue
        try:
            _acl_grant_one(path, uid, stat.S_ISDIR(st.st_mode), 0 if denied else None)
        except OSError:
            continue
    return True


@atexit.register
def revoke_access(workspace: str | None = None) -> None:
    """Undo what grant_access did, for one workspace or all (at exit; a killed process
    leaves it). Entries that files made since then took from a folder's default ACL go
    too. Another process that shares the workspace loses its kernel's access as well."""
    for root, uid in list(_granted):
        if workspace is not None and root != workspace:
            continue
        _granted.discard((root, uid))
        partly_shared.discard(root)
        for path, name, st, dirs in _entries(root, 40_000):
            # A private folder is left out, unless it was made after the grant (.pytest_cache, by
            # another program): it took the kernel's entry from its parent's default ACL, and so
            # did what was made in it. One the grant denied (entry 0) holds nothing it shared.
            if (
                name in dirs
                and _private(name, st.st_mode)
                and not _acl_read(path, "system.posix_acl_access", st.st_mode).get((_ACL_USER, uid))
            ):
                dirs.remove(name)
            try:
                _acl_revoke_one(path, uid, stat.S_ISDIR(st.st_mode))
            except OSError:
                pass
        try:
            _acl_revoke_one(root, uid, True)
        except OSError:
            pass


def _user_ids(name: str | None) -> tuple[int, int] | None:
    if not name or not _is_root():
        return None
    try:
        import pwd

        entry = pwd.getpwnam(name)
    except (KeyError, ImportError):
        return None
    return entry.pw_uid, entry.pw_gid


# ---------------------------------------------------------------------------
# pids cgroup


class _Cgroups:
    """Per-kernel pids cgroups (v2 when it has the pids controller, else v1)."""

    def __init__(self) -> None:
        self.base: str | None = None
        self.version = 0
        self.why = ""
        self._setup()

    def _setup(self) -> None:
        if os.environ.get("AGENT_SANDBOX_NO_CGROUP"):
            self.why = "disabled by AGENT_SANDBOX_NO_CGROUP"
            return
        v1 = v2 = None
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    left, _, right = line.partition(" - ")
                    fields, rfields = left.split(), right.split()
                    if len(rfields) < 3:
                        continue
                    if rfields[0] == "cgroup2" and v2 is None:
                        v2 = fields[4]
                    elif rfields[0] == "cgroup" and "pids" in rfields[2].split(","):
                        v1 = fields[4]
        except OSError:
            pass
        if v2 is not None:
            try:
                with open(os.path.join(v2, "cgroup.controllers")) as f:
                    has_pids = "pids" in f.read().split()
                if has_pids:
                    base = os.path.join(v2, "agent-sandbox")
                    with open(os.path.join(v2, "cgroup.subtree_control"), "w") as f:
                        f.write("+pids")
                    os.makedirs(base, exist_ok=True)
                    with open(os.path.join(base, "cgroup.subtree_control"), "w") as f:
                        f.write("+pids")
                    self.base, self.version = base, 2
            except OSError as e:
                self.why = f"cgroup v2: {e}"
        if self.base is None and v1 is not None:
            try:
                base = os.path.join(v1, "agent-sandbox")
                os.makedirs(base, exist_ok=True)
                probe = os.path.join(base, f"probe-{os.getpid()}")
                os.mkdir(probe)
                os.rmdir(probe)
                self.base, self.version = base, 1
            except OSError as e:
                self.why = f"cgroup v1: {e}"
        if self.base is None:
            self.why = self.why or "no pids cgroup is mounted"
            return
        for name in os.listdir(self.base):  # leftovers of hosts that were killed
            path = os.path.join(self.base, name)
            m = re.match(r"k-(\d+)-", name)
            if not m or not os.path.isdir(path) or _pid_alive(int(m.group(1))):
                continue  # another live host's kernel
            self._kill(path)
            try:
                os.rmdir(path)
            except OSError:
                pass

    def create(self, name: str, max_tasks: int) -> str | None:
        if self.base is None:
            return None
        path = os.path.join(self.base, name)
        try:
            os.mkdir(path)
            if max_tasks:
                with open(os.path.join(path, "pids.max"), "w") as f:
                    f.write(str(max_tasks))
        except OSError:
            return None
        return path

    @staticmethod
    def procs(path: str) -> list[int]:
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    @staticmethod
    def current(path: str) -> int | None:
        try:
            with open(os.path.join(path, "pids.current")) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def _kill(self, path: str) -> None:
        if self.version == 2:
            try:
                with open(os.path.join(path, "cgroup.kill"), "w") as f:
                    f.write("1")
            except OSError:
                pass
        for _ in range(50):
            pids = self.procs(path)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)

    def remove(self, path: str) -> None:
        self._kill(path)
        for _ in range(100):
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


_cgroups: _Cgroups | None = None


def cgroups() -> _Cgroups:
    global _cgroups
    with _detect_lock:
        if _cgroups is None:
            _cgroups = _Cgroups()
        return _cgroups


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _tasks_of_uid(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}")
            if st.st_uid == uid:
                count += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            pass
    return count


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _kill_below(pid: int) -> None:
    """SIGKILL every process below `pid`, a subreaper launcher (orphans stay below it).
    They are stopped first, until no new one appears (a stopped process cannot fork, and
    none dies, so none is orphaned out of the tree), then killed."""
    stopped: set[int] = set()
    for _ in range(50):
        below = [p for p in descendants(pid)[1:] if p not in stopped]
        if not below:
            break
        for p in below:
            try:
                os.kill(p, signal.SIGSTOP)
            except OSError:
                pass
            stopped.add(p)
    for p in stopped:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


# ---------------------------------------------------------------------------
# The spawner: one long-lived thread forks every kernel, so PR_SET_PDEATHSIG
# (which fires when the *thread* that forked a child exits) means "the host died".


class _Spawner:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[dict[str, Any], list[Any]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="agent-sandbox-spawner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            kwargs, box = self._jobs.get()
            try:
                box.append(subprocess.Popen(**kwargs))
            except BaseException as e:  # handed back to the caller
                box.append(e)
            box[0].set()

    def popen(self, **kwargs: Any) -> subprocess.Popen[bytes]:
        done = threading.Event()
        box: list[Any] = [done]
        self._jobs.put((kwargs, box))
        done.wait()
        result = box[1]
        if isinstance(result, BaseException):
            raise result
        return result


_spawner: _Spawner | None = None
_owner_pid = os.getpid()
_pools: weakref.WeakSet[KernelPool] = weakref.WeakSet()
_live: set[Kernel] = set()
_live_lock = threading.Lock()
_atexit_registered = False


def _spawn(**kwargs: Any) -> subprocess.Popen[bytes]:
    global _spawner, _atexit_registered
    with _live_lock:
        if _spawner is None:
            _spawner = _Spawner()
        if not _atexit_registered:
            atexit.register(shutdown_all)
            _atexit_registered = True
    return _spawner.popen(**kwargs)


def shutdown_all() -> None:
    """Kill every kernel this process started (runs at exit)."""
    if os.getpid() != _owner_pid:
        return  # a forked child: the kernels belong to its parent
    for pool in list(_pools):
        pool.closed = True
    with _live_lock:
        kernels = list(_live)
    for k in kernels:
        k.kill()


# ---------------------------------------------------------------------------
# Results


@dataclass
class Output:
    kind: str  # "stdout" | "stderr" | "result" | "display" | "error"
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ename: str = ""
    evalue: str = ""
    traceback: list[str] = field(default_factory=list)
    execution_count: int | None = None


@dataclass
class ExecResult:
    status: str = "ok"  # "ok" | "error" | "timeout" | "cancelled" | "died" | "lost"
    outputs: list[Output] = field(default_factory=list)
    execution_count: int | None = None
    restart_needed: bool = False  # did not answer an interrupt
    exit_code: int | None = None
    death: str = ""  # why the kernel died, from its log
    cut: int = 0  # characters of stream output cut
    duration: float = 0.0
    exit_asked: bool = False  # the cell called exit() or quit(): the kernel shuts down


class _Collector:
    """Outputs in order, with stream text capped (head and tail kept)."""

    def __init__(self, max_chars: int) -> None:
        self.max = max(1000, max_chars)
        self.outputs: list[Output] = []
        self.kept = 0
        self.cut = 0  # not yet reported
        self.total_cut = 0
        self.tail: deque[tuple[str, str]] = deque()
        self.tail_len = 0

    def stream(self, name: str, text: str) -> None:
        head_budget = self.max // 2
        if self.kept < head_budget:
            take = text[: head_budget - self.kept]
            self._append(name, take)
            self.kept += len(take)
            text = text[len(take) :]
            if not text:
                return
        self.tail.append((name, text))
        self.tail_len += len(text)
        budget = self.max - head_budget
        while self.tail_len > budget and self.tail:
            n, t = self.tail[0]
            over = self.tail_len - budget
            if len(t) <= over:
                self.tail.popleft()
                self.tail_len -= len(t)
                self.cut += len(t)
            else:
                self.tail[0] = (n, t[over:])
                self.tail_len -= over
                self.cut += over

    def _append(self, name: str, text: str) -> None:
        if self.outputs and self.outputs[-1].kind == name:
            self.outputs[-1].text += text
        else:
            self.outputs.append(Output(kind=name, text=text))

    def flush_tail(self) -> None:
        if self.cut:
            self.outputs.append(Output(kind="cut", text=str(self.cut)))
            self.total_cut += self.cut
            self.cut = 0
        for name, text in self.tail:
            self._append(name, text)
        self.tail.clear()
        self.tail_len = 0

    def add(self, out: Output) -> None:
        if self.tail:
            self.flush_tail()
        self.outputs.append(out)

    def clear(self) -> None:
        """`clear_output()`: what was shown is gone, the note of what was cut from it too."""
        self.outputs.clear()
        self.tail.clear()
        self.kept = self.tail_len = self.cut = 0


# ---------------------------------------------------------------------------
# One kernel


class Kernel:
    """A sandboxed ipykernel process and a blocking client connected to it."""

    def __init__(self, config: SandboxConfig, isolation: str, workspace: str | None) -> None:
        self.config = config
        self.isolation = isolation
        self.id = uuid.uuid4().hex[:12]
        self.temp_workspace = workspace is None
        self.workspace = workspace or ""
        self.rundir = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: Any = None
        self.cgroup: str | None = None
        self.user: str = ""  # who the kernel runs as
        self.started = 0.0
        self.ready_time = 0.0
        self._log: Any = None
        self._dead = False
        self._lock = threading.Lock()
        self._signer: Any = None  # HMAC of the connection key, copied for each message
        self._poller: Any = None  # iopub and shell
        self._pids_fd: int | None = None  # the cgroup's pids.current, kept open
        self._tasks_seen: tuple[float, int | None] = (0.0, None)  # last /proc scan (no cgroup)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        try:
            self._launch()
            self._wait_ready(self.config.startup_timeout)
        except BaseException:
            self.kill()
            raise
        self.ready_time = time.monotonic() - t0

    def _launch(self) -> None:
        try:
            import jupyter_client  # noqa: F401
        except ImportError:
            raise SandboxError(
                "jupyter_client and ipykernel are not installed: pip install 'agent-runtime[tools]'"
            ) from None
        cfg, limits = self.config, self.config.limits
        if not self.temp_workspace:
            _refuse_system_folder(self.workspace)
        _remove_stale_dirs()
        self.rundir = tempfile.mkdtemp(prefix=f"agent-kernel-{os.getpid()}-")
        if self.temp_workspace:
            self.workspace = tempfile.mkdtemp(prefix=f"agent-workspace-{os.getpid()}-")
        ids = _user_ids(cfg.run_as) if self.isolation == "bubblewrap" else None
        if ids is not None and not grant_access(self.workspace, ids[0]):
            if self.temp_workspace:
                os.chmod(self.workspace, 0o777)
            else:
                ids = None  # no ACLs on this filesystem: keep the host user
        if ids is not None:
            os.chown(self.rundir, *ids)
        self.user = (cfg.run_as or "") if ids is not None else _current_user()

        connection = os.path.join(self.rundir, "kernel.json")
        key = uuid.uuid4().hex
        info = {
            "transport": "ipc",
            "ip": os.path.join(self.rundir, "k"),
            "shell_port": 1,
            "iopub_port": 2,
            "stdin_port": 3,
            "control_port": 4,
            "hb_port": 5,
            "key": key,
            "signature_scheme": "hmac-sha256",
            "kernel_name": "python3",
        }
        with open(connection, "w") as f:
            json.dump(info, f)
        if ids is not None:
            os.chown(connection, *ids)
        os.chmod(connection, 0o600)

        if self.isolation == "bubblewrap":
            home = "/tmp"
        else:
            home = os.path.join(self.rundir, "home")
            os.makedirs(home)
            if ids is not None:
                os.chown(home, *ids)
        extra = {
            "HOME": home,
            "IPYTHONDIR": os.path.join(home, ".ipython"),
            "MPLCONFIGDIR": os.path.join(home, ".matplotlib"),
        }
        if ids is not None:
            extra.update(AGENT_SANDBOX_UID=str(ids[0]), AGENT_SANDBOX_GID=str(ids[1]))
        env = kernel_env(extra)

        kernel_cmd = [
            sys.executable,
            "-Xfrozen_modules=off",
            "-c",
            # Named, so that its frames (the stdout wrapper's, in a traceback of a print
            # interrupted by the timeout) are told apart from code the model runs with exec.
            f"exec(compile({_KERNEL_MAIN!r}, '<agent-sandbox>', 'exec'))",
            "-f",
            connection,
            *_KERNEL_ARGS,
        ]
        init = False
        if self.isolation == "bubblewrap":
            wrapper = _bwrap_argv(
                shutil.which("bwrap") or "bwrap",
                workspace=self.workspace,
                rundir=self.rundir,
                allow_network=cfg.allow_network,
                drop=ids,
                tmp_mb=limits.tmp_mb,
            )
            argv = wrapper + kernel_cmd
        elif self.isolation == "netns":
            init_cmd = [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _LAUNCHER,
                json.dumps({"argv": kernel_cmd, "init": True, "parent": 0}),
            ]
            # inside the pid namespace the init's parent is 0 (outside the namespace)
            argv = (
                _unshare_argv(shutil.which("unshare") or "unshare", allow_network=cfg.allow_network)
                + init_cmd
            )
        else:
            argv = kernel_cmd
            init = True

        rlimits = []
        if limits.cpu_seconds:
            rlimits.append(("RLIMIT_CPU", limits.cpu_seconds))
        if limits.memory_mb:
            rlimits.append(("RLIMIT_AS", limits.memory_mb * 1024 * 1024))
        if limits.file_size_mb:
            rlimits.append(("RLIMIT_FSIZE", limits.file_size_mb * 1024 * 1024))
        if limits.open_files:
            rlimits.append(("RLIMIT_NOFILE", limits.open_files))
        cg = cgroups()
        if limits.processes:
            self.cgroup = cg.create(f"k-{os.getpid()}-{self.id}", limits.processes)
            uid = ids[0] if ids is not None else os.getuid()
            if self.cgroup is None and uid != 0:
                # RLIMIT_NPROC counts every process of the user, so leave room for the ones running now
                rlimits.append(("RLIMIT_NPROC", _tasks_of_uid(uid) + limits.processes))
        spec = {
            "argv": argv,
            "init": init,
            "parent": os.getpid(),
            "rlimits": rlimits,
            "cgroup": os.path.join(self.cgroup, "cgroup.procs") if self.cgroup else None,
        }
        self._log = open(os.path.join(self.rundir, "kernel.log"), "wb")
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(spec)]
        self.started = time.monotonic()
        with _live_lock:
            _live.add(self)
        self.proc = _spawn(
            args=launcher,
            env=env,
            cwd=self.workspace,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
            close_fds=True,
        )

        import zmq
        from jupyter_client import BlockingKernelClient

        self.client = BlockingKernelClient(context=_zmq_context())
        self.client.load_connection_info(info)
        self.client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)
        self._signer = hmac.new(key.encode(), digestmod=hashlib.sha256)
        # Cells already answered, and what they printed after that (a thread, a callback):
        # shown with the next cell's output instead of dropped.
        self._earlier: deque[str] = deque(maxlen=8)
        self._late: list[str] = []
        self._poller = zmq.Poller()
        self._poller.register(self.client.iopub_channel.socket, zmq.POLLIN)
        self._poller.register(self.client.shell_channel.socket, zmq.POLLIN)

    def _wait_ready(self, timeout: float) -> None:
        """Until a kernel_info request is answered on shell *and* seen on iopub."""
        from queue import Empty

        kc = self.client
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = kc.kernel_info()
            until = time.monotonic() + 0.5
            replied = False
            while time.monotonic() < until:
                if self.proc is not None and self.proc.poll() is not None:
                    raise SandboxError(
                        f"the kernel exited during startup: {self.log_tail() or self.proc.returncode}"
                    )
                try:
                    msg = kc.iopub_channel.get_msg(timeout=0.05)
                    if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status":
                        replied = True
                except Empty:
                    pass
                try:
                    kc.shell_channel.get_msg(timeout=0)
                except Empty:
                    pass
                if replied:
                    self._drain(0.05)
                    return
        raise SandboxError(f"the kernel did not start within {timeout:.0f} s: {self.log_tail()}")

    def _drain(self, settle: float) -> None:
        """Drop what is waiting on every channel, until none has anything for `settle` seconds."""
        kc = self.client
        for channel in (kc.iopub_channel, kc.shell_channel, kc.control_channel):
            while channel.socket.poll(int(settle * 1000)):
                channel.socket.recv_multipart()

    def alive(self) -> bool:
        return not self._dead and self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 600) -> str:
        try:
            with open(os.path.join(self.rundir, "kernel.log"), "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - chars))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def death_reason(self) -> str:
        tail = self.log_tail(4000)
        for pattern in (r"Fatal Python error: [^\n]+", r"MemoryError[^\n]*", r"Killed[^\n]*"):
            m = re.search(pattern, tail)
            if m:
                return m.group(0).strip()
        code = self.proc.returncode if self.proc is not None else None
        if code is None:
            return ""
        signo = code - 128 if 128 < code < 193 else -code if code < 0 else 0
        if signo:
            try:
                name = signal.Signals(signo).name
            except ValueError:
                name = f"signal {signo}"
            meaning = _SIGNAL_MEANING.get(name)
            return f"killed by {name}" + (f": {meaning}" if meaning else "")
        return f"exit code {code}"

    def tasks(self, *, rescan: bool = True) -> int | None:
        """Processes and threads in the sandbox (None when unknown).

        With a pids cgroup this is one read of an open file. Without one it
        scans /proc, which takes milliseconds; `rescan=False` then returns the
        last count when it is under a second old.
        """
        if self.cgroup:
            try:
                if self._pids_fd is None:
                    self._pids_fd = os.open(os.path.join(self.cgroup, "pids.current"), os.O_RDONLY)
                return int(os.pread(self._pids_fd, 32, 0))
            except (OSError, ValueError):
                return None
        proc = self.proc
        if proc is None:
            return None
        seen_at, count = self._tasks_seen
        if not rescan and time.monotonic() - seen_at < 1.0:
            return count
        total = 0
        for pid in descendants(proc.pid):
            try:
                total += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
        self._tasks_seen = (time.monotonic(), total)
        return total

    def host_pids(self) -> list[int]:
        """Host pids of the sandbox's processes (the launcher, wrappers, kernel, children)."""
        pids: set[int] = set()
        if self.proc is not None and self.proc.poll() is None:
            pids.update(descendants(self.proc.pid))
        if self.cgroup:
            pids.update(cgroups().procs(self.cgroup))
        return sorted(pids)

    def chdir(self, workspace: str) -> None:
        """Move a pooled kernel to the session's workspace (no mount namespace to change)."""
        _refuse_system_folder(workspace)  # as start() does: the other way a kernel gets a workspace
        old, was_temp = self.workspace, self.temp_workspace
        code = f"import os as _os\n_os.chdir({workspace!r})\ndel _os"
        result = self.execute(
            code, timeout=10, grace=2, cancel=threading.Event(), max_output=2000, silent=True
        )
        if result.status != "ok":
            raise SandboxError(f"could not enter the workspace {workspace}: {_error_text(result)}")
        self.workspace, self.temp_workspace = workspace, False
        if was_temp and old:
            shutil.rmtree(old, ignore_errors=True)

    def kill(self) -> None:
        """Stop the kernel and everything it started; remove its files. Idempotent."""
        with self._lock:
            if self._dead and self.proc is None:
                return
            self._dead = True
            client, self.client = self.client, None
            if client is not None:
                try:
                    client.stop_channels()
                except Exception:
                    pass
            proc, self.proc = self.proc, None
            if proc is not None:
                if not self.cgroup and self.isolation == "none":
                    _kill_below(proc.pid)  # no cgroup to empty: what left the session is found by its parents
                for kill in (proc.kill, lambda: os.killpg(proc.pid, signal.SIGKILL)):
                    try:
                        kill()
                    except OSError:
                        pass
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            if self._pids_fd is not None:
                os.close(self._pids_fd)
                self._pids_fd = None
            if self.cgroup:
                cgroups().remove(self.cgroup)
            if self._log is not None:
                self._log.close()
                self._log = None
            if self.rundir:
                shutil.rmtree(self.rundir, ignore_errors=True)
            if self.temp_workspace and self.workspace:
                shutil.rmtree(self.workspace, ignore_errors=True)
        with _live_lock:
            _live.discard(self)

    # -- execution -------------------------------------------------------------

    def interrupt(self) -> None:
        kc = self.client
        if kc is None:
            return
        msg = kc.session.msg("interrupt_request", content={})
        kc.control_channel.send(msg)

    def execute(
        self,
        code: str,
        *,
        timeout: float | None,
        grace: float,
        cancel: threading.Event,
        max_output: int,
        silent: bool = False,
    ) -> ExecResult:
        """Run `code`; on timeout or cancel, interrupt and wait `grace` seconds."""
        t0 = time.monotonic()
        result = ExecResult()
        if not self.alive():
            return self._died(result, t0)
        kc = self.client
        collector = _Collector(max_output)
        msg_id = kc.execute(code, silent=silent, store_history=not silent, allow_stdin=False)
        deadline = t0 + timeout if timeout else None
        interrupted_at: float | None = None
        reply = idle = False
        reply_at = 0.0
        iopub, shell = kc.iopub_channel.socket, kc.shell_channel.socket
        last_check = t0
        while not (reply and idle):
            now = time.monotonic()
            if interrupted_at is None:
                if cancel.is_set():
                    result.status = "cancelled"
                elif deadline is not None and now >= deadline:
                    result.status = "timeout"
                if result.status in ("cancelled", "timeout"):
                    interrupted_at = now
                    try:
                        self.interrupt()
                    except Exception:
                        result.restart_needed = True
                        break
            elif now - interrupted_at > grace:
                result.restart_needed = True
                break
            if reply and now - reply_at > 2.0:
                break  # the idle status was lost; the reply is what counts
            events = dict(self._poller.poll(50))
            if not events or now - last_check > 0.5:
                last_check = now
                if self.proc is None or self.proc.poll() is not None:
                    collector.flush_tail()
                    result.outputs = collector.outputs
                    return self._died(result, t0)
            if iopub in events:
                idle = self._read_iopub(msg_id, collector, result) or idle
            if shell in events:
                got = self._read_shell(msg_id, result)
                if got and not reply:
                    reply, reply_at = True, time.monotonic()
        if reply or idle:
            self._read_iopub(msg_id, collector, result)  # late stream output
        collector.flush_tail()
        result.outputs = collector.outputs
        result.cut = collector.total_cut
        result.duration = time.monotonic() - t0
        self._earlier.append(msg_id)
        try:
            self._replies(kc.iopub_channel.socket, "")  # what waits: an earlier cell's late printing kept
            self._drain(0)
        except Exception:
            pass
        if self._late:  # printed by earlier cells after they ended: shown now, first
            late, self._late = "".join(self._late), []
            note = "[printed by an earlier cell after it had ended]\n"
            result.outputs.insert(0, Output(kind="stdout", text=note + late[-max(max_output, 1000) :]))
        return result

    def _replies(self, socket: Any, msg_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(type, content) of each message waiting on `socket` that answers `msg_id`.

        Parsed here rather than by jupyter_client, which also parses the date in
        every header and was four times slower. A message that is malformed or
        wrongly signed can only come from code in the sandbox, and is dropped.
        """
        import zmq

        out = []
        while True:
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                start = frames.index(b"<IDS|MSG>") + 1
                signature, header, parent, metadata, content = frames[start : start + 5]
            except ValueError:
                continue
            mac = self._signer.copy()
            for part in (header, parent, metadata, content):
                mac.update(part)
            if not hmac.compare_digest(mac.hexdigest().encode(), signature):
                continue
            try:
                parent_id = json.loads(parent).get("msg_id")
                if parent_id != msg_id and parent_id not in self._earlier:
                    continue
                kind, body = json.loads(header)["msg_type"], json.loads(content)
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
                continue
            if parent_id != msg_id:  # an earlier cell's, after it was answered: only its printing counts
                if kind == "stream" and isinstance(body, dict) and isinstance(body.get("text"), str):
                    self._late.append(body["text"])
                continue
            if isinstance(kind, str) and isinstance(body, dict):
                out.append((kind, body))

    def _read_iopub(self, msg_id: str, collector: _Collector, result: ExecResult) -> bool:
        # The cell's code can sign messages of its own (it holds the kernel's session): each
        # field is taken only with the type the protocol gives it, and dropped otherwise.
        idle = False
        for kind, content in self._replies(self.client.iopub_channel.socket, msg_id):
            if kind == "status":
                if content.get("execution_state") == "idle":
                    idle = True
            elif kind == "stream":
                name = "stderr" if content.get("name") == "stderr" else "stdout"
                collector.stream(name, _str_field(content, "text"))
            elif kind == "execute_result":
                result.execution_count = _count_field(content)
                collector.add(
                    Output(kind="result", data=_data_field(content), execution_count=result.execution_count)
                )
            elif kind in ("display_data", "update_display_data"):
                collector.add(Output(kind="display", data=_data_field(content)))
            elif kind == "error":
                traceback = content.get("traceback")
                collector.add(
                    Output(
                        kind="error",
                        ename=_str_field(content, "ename"),
                        evalue=_str_field(content, "evalue"),
                        traceback=[t for t in traceback if isinstance(t, str)] if isinstance(traceback, list) else [],
                    )
                )
            elif kind == "clear_output":
                collector.clear()
        return idle

    def _read_shell(self, msg_id: str, result: ExecResult) -> bool:
        got = False
        for _, content in self._replies(self.client.shell_channel.socket, msg_id):
            got = True
            result.execution_count = _count_field(content, result.execution_count)
            payload = content.get("payload")
            if isinstance(payload, list) and any(isinstance(p, dict) and p.get("source") == "ask_exit" for p in payload):
                result.exit_asked = True
            if content.get("status") == "error" and result.status == "ok":
                result.status = "error"
            elif content.get("status") == "aborted" and result.status == "ok":
                result.status = "error"
        return got

    def _died(self, result: ExecResult, t0: float) -> ExecResult:
        proc = self.proc
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
            result.exit_code = proc.returncode
        result.status = "died"
        result.death = self.death_reason()
        result.duration = time.monotonic() - t0
        return result


_SIGNAL_MEANING = {
    "SIGSEGV": "segmentation fault",
    "SIGBUS": "bus error",
    "SIGABRT": "aborted",
    "SIGKILL": "killed, e.g. out of memory or by a kill",
    "SIGXCPU": "CPU time limit reached",
    "SIGXFSZ": "file size limit reached",
}


_stale_checked = False


def _remove_stale_dirs() -> None:
    """Once per process: remove the run and temporary workspace folders of hosts that died."""
    global _stale_checked
    if _stale_checked:
        return
    _stale_checked = True
    tmp = tempfile.gettempdir()
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        m = re.match(r"agent-(kernel|workspace)-(\d+)-", name)
        if m and not _pid_alive(int(m.group(2))):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


def _error_text(result: ExecResult) -> str:
    for out in result.outputs:
        if out.kind == "error":
            return f"{out.ename}: {out.evalue}"
    return result.status


def _current_user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())


_zmq_ctx: Any = None


def _zmq_context() -> Any:
    global _zmq_ctx
    with _live_lock:
        if _zmq_ctx is None:
            import zmq

            _zmq_ctx = zmq.Context()
        return _zmq_ctx


# ---------------------------------------------------------------------------
# The pool


@dataclass
class _Slot:
    idle: list[Kernel] = field(default_factory=list)
    starting: int = 0
    waiters: int = 0
    prefetched: int = 0
    uses: int = 0  # sessions that asked for a kernel here (one asking again after a restart counts once)
    last_owner: int | None = None
    error: str = ""
    filling: bool = False


class KernelPool:
    """Warm kernels, started in the background, handed out one per session.

    Kernels are keyed by their configuration. Under bubblewrap the workspace
    is bound into the sandbox when it starts, so a session with its own
    workspace needs a kernel made for it: `prefetch()` starts one as soon as
    the tool is created, and a workspace used more than once is kept warm.
    Kernels for the other levels (and sessions without a workspace) come
    from one shared key and move to the session's workspace when handed out.
    """

    def __init__(self, size: int = 2, max_keys: int = 3) -> None:
        self.size = size
        self.max_keys = max_keys
        self.closed = False
        self._slots: OrderedDict[tuple[Any, ...], _Slot] = OrderedDict()
        self._cond = threading.Condition()
        _pools.add(self)

    @staticmethod
    def key(config: SandboxConfig, isolation: str, workspace: str | None) -> tuple[Any, ...]:
        return (config, isolation, workspace if isolation == "bubblewrap" else None)

    def _slot(self, key: tuple[Any, ...]) -> _Slot:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        self._slots.move_to_end(key)
        while len(self._slots) > self.max_keys:
            old_key, old = next(iter(self._slots.items()))
            if old.waiters or old.starting or old.prefetched:
                break
            del self._slots[old_key]
            for k in old.idle:
                threading.Thread(target=k.kill, daemon=True).start()
        return slot

    def _spare(self, key: tuple[Any, ...], slot: _Slot) -> int:
        generic = key[2] is None
        return self.size if (generic or slot.uses >= 2) else 0

    def _target(self, key: tuple[Any, ...], slot: _Slot) -> int:
        return slot.waiters + slot.prefetched + self._spare(key, slot)

    def _kick(self, key: tuple[Any, ...], slot: _Slot) -> None:
        if self.closed or slot.filling:
            return
        if len(slot.idle) + slot.starting >= self._target(key, slot):
            return
        slot.filling = True
        threading.Thread(target=self._fill, args=(key,), name="agent-sandbox-fill", daemon=True).start()

    def _fill(self, key: tuple[Any, ...]) -> None:
        config, isolation, workspace = key
        while True:
            with self._cond:
                slot = self._slots.get(key) or self._slot(key)
                if self.closed or len(slot.idle) + slot.starting >= self._target(key, slot):
                    slot.filling = False
                    return
                slot.starting += 1
            kernel = Kernel(config, isolation, workspace)
            error = ""
            try:
                kernel.start()
            except Exception as e:
                error = str(e) or type(e).__name__
            with self._cond:
                slot.starting -= 1
                if error:
                    slot.error = error
                    slot.filling = False
                    self._cond.notify_all()
                    return
                if self.closed:
                    slot.filling = False
                    kernel.kill()
                    return
                slot.error = ""
                slot.idle.append(kernel)
                self._cond.notify_all()

    def prefetch(self, config: SandboxConfig, isolation: str, workspace: str | None) -> None:
        """Start a kernel for a session that will ask for one soon."""
        key = self.key(config, isolation, workspace)
        with self._cond:
            slot = self._slot(key)
            slot.prefetched += 1
            self._kick(key, slot)

    def cancel_prefetch(self, config: SandboxConfig, isolation: str, workspace: str | None) -> None:
        key = self.key(config, isolation, workspace)
        victims: list[Kernel] = []
        with self._cond:
            slot = self._slots.get(key)
            if slot is not None and slot.prefetched:
                slot.prefetched -= 1
                extra = len(slot.idle) - self._target(key, slot)
                victims = [slot.idle.pop() for _ in range(max(0, extra))]
        for k in victims:
            k.kill()

    def warm(self, config: SandboxConfig, isolation: str, workspace: str | None = None) -> None:
        """Start filling the pool for these settings (returns at once)."""
        key = self.key(config, isolation, workspace)
        with self._cond:
            slot = self._slot(key)
            slot.uses = max(slot.uses, 2)
            self._kick(key, slot)

    def idle_count(self, config: SandboxConfig, isolation: str, workspace: str | None = None) -> int:
        with self._cond:
            slot = self._slots.get(self.key(config, isolation, workspace))
            return len(slot.idle) if slot else 0

    def wait_warm(
        self, config: SandboxConfig, isolation: str, workspace: str | None = None, timeout: float = 60
    ) -> bool:
        key = self.key(config, isolation, workspace)
        deadline = time.monotonic() + timeout
        with self._cond:
            while time.monotonic() < deadline:
                slot = self._slots.get(key)
                if slot is not None and len(slot.idle) >= max(1, self._target(key, slot) - slot.waiters):
                    return True
                self._cond.wait(0.1)
        return False

    def acquire(
        self,
        config: SandboxConfig,
        isolation: str,
        workspace: str | None,
        *,
        prefetched: bool = False,
        timeout: float | None = None,
        owner: object | None = None,
    ) -> Kernel:
        """A ready kernel for these settings (blocking), moved to `workspace`. `owner` (the
        session asking): a workspace is kept warm once a second session uses it, not when one
        session gets a fresh kernel after its first died."""
        if self.closed:
            raise SandboxError("the kernel pool is shut down")
        key = self.key(config, isolation, workspace)
        timeout = timeout if timeout is not None else config.startup_timeout + 10
        deadline = time.monotonic() + timeout
        kernel: Kernel | None = None
        with self._cond:
            slot = self._slot(key)
            if owner is None or id(owner) != slot.last_owner:
                slot.uses += 1
            slot.last_owner = id(owner) if owner is not None else None
            if prefetched and slot.prefetched:
                slot.prefetched -= 1
            slot.waiters += 1
            slot.error = ""
            try:
                while kernel is None:
                    while slot.idle:
                        candidate = slot.idle.pop(0)
                        if candidate.alive():
                            kernel = candidate
                            break
                        threading.Thread(target=candidate.kill, daemon=True).start()
                    if kernel is not None:
                        break
                    if slot.error and not slot.starting:
                        raise SandboxError(f"could not start a Python kernel: {slot.error}")
                    self._kick(key, slot)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise SandboxError(f"no Python kernel was ready within {timeout:.0f} s")
                    self._cond.wait(min(left, 0.5))
            finally:
                slot.waiters -= 1
            self._kick(key, slot)  # refill in the background
        if workspace is not None and kernel.workspace != workspace:
            try:
                kernel.chdir(workspace)
            except BaseException:
                kernel.kill()
                raise
        return kernel

    def shutdown(self) -> None:
        with self._cond:
            self.closed = True
            kernels = [k for slot in self._slots.values() for k in slot.idle]
            self._slots.clear()
        for k in kernels:
            k.kill()


_pool: KernelPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> KernelPool:
    """The process-wide pool (created on first use; size from AGENT_SANDBOX_POOL_SIZE, default 2)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.closed:
            size = int(os.environ.get("AGENT_SANDBOX_POOL_SIZE", "2"))
            _pool = KernelPool(size=size)
        return _pool


def configure_pool(size: int | None = None, max_keys: int | None = None) -> KernelPool:
    """Change the warm pool's size (kernels kept ready per configuration)."""
    pool = get_pool()
    with pool._cond:
        if size is not None:
            pool.size = size
        if max_keys is not None:
            pool.max_keys = max_keys
    return pool


# ---------------------------------------------------------------------------
# Turning kernel output into text for a model

# Terminal escapes, and control characters other than tab and newline.
_ANSI = re.compile(ESCAPES + r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_INTERNAL = re.compile(
    r"[/\\](IPython|ipykernel|traitlets|zmq|tornado|jupyter_client|asyncio|runpy)[/\\]|<frozen |site-packages[/\\]ipykernel"
    r"|<agent-sandbox>"
)


def strip_ansi(text: str) -> str:
    """Text as a terminal would leave it: no control sequences, and of a line that
    carriage returns write over (a progress bar), only what was written last."""
    if "\r" in text:
        text = "\n".join(_last_written(line) for line in text.replace("\r\n", "\n").split("\n"))
    return _ANSI.sub("", text)


def _last_written(line: str) -> str:
    """What a terminal shows of a line carriage returns write over: its last non-empty
    part (a progress bar's last state; a line that ends in \\r stays)."""
    if "\r" not in line:
        return line
    parts = [p for p in line.split("\r") if p]
    return parts[-1] if parts else ""


def _str_field(content: dict[str, Any], key: str) -> str:
    value = content.get(key)
    return value if isinstance(value, str) else ""


def _count_field(content: dict[str, Any], default: int | None = None) -> int | None:
    value = content.get("execution_count", default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _data_field(content: dict[str, Any]) -> dict[str, Any]:
    """A display's mime bundle: text values as text, JSON values (application/json) as they are."""
    data = content.get("data")
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and (isinstance(v, str) or k.endswith("json"))}


def trim_traceback(lines: list[str], ename: str, evalue: str, max_frames: int = 8) -> str:
    """A plain traceback without colour codes or IPython/ipykernel frames."""
    text = strip_ansi("\n".join(line.rstrip("\n") for line in lines))
    if not text.strip():
        return f"{ename}: {evalue}"
    out_lines = text.splitlines()
    header: list[str] = []
    frames: list[list[str]] = []
    tail: list[str] = []
    for line in out_lines:
        if line.startswith("Traceback") or set(line.strip()) == {"-"}:
            if not header:
                header.append("Traceback (most recent call last):")
            continue
        if line.startswith("  ") and not line.startswith("    ") and not tail:
            frames.append([line])
        elif line.startswith("    ") and frames and not tail:
            frames[-1].append(line)
        else:
            tail.append(line)
    frames = [f for f in frames if not _INTERNAL.search(f[0])]
    omitted = 0
    if len(frames) > max_frames:
        omitted = len(frames) - max_frames
        frames = frames[:1] + frames[-(max_frames - 1) :]
    body: list[str] = list(header) if frames else []
    for i, frame in enumerate(frames):
        if omitted and i == 1:
            body.append(f"  ... {omitted} more frames ...")
        body.extend(frame)
    body.extend(tail)
    result = "\n".join(body).strip("\n")
    return result or f"{ename}: {evalue}"
