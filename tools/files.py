"""Workspace file tools: read, write, edit, list and search files.

Every path the model gives is resolved inside one workspace root and refused,
with a message the model can act on, when it would leave that root: `..`
escapes, absolute paths elsewhere, symlinks (at any component) that point
outside, symlink loops, device files, FIFOs and sockets, and files over the
size limit.

```python
from tools.files import make_tools

agent = Agent(tools=make_tools(workspace="project", needs_approval_for_writes=True))
```

Where the workspace comes from: the `workspace` option when given (resolved
once, when the tools are made). Without it, each call uses the workspace of the
run that calls it (`Agent(workspace=...)`, seen through `tool_context()`), and
outside a run, or when the agent has none, the current directory at the time
of the call. So `Agent(tools=["files"], workspace="project")` confines the
tools to `project`.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from agent.tool import Tool, ToolError, tool, tool_context

from ._patterns import Pattern

DEFAULT_MAX_READ_BYTES = 2_000_000
MAX_WALK_DEPTH = 100  # folders below a listed or searched one
MAX_STREAM_BYTES = 1_000_000_000  # a larger text file is read in parts, line by line, up to this size
MAX_STREAM_LINE = 1 << 20  # bytes of one line of such a file that are kept
DEFAULT_MAX_WRITE_BYTES = 10_000_000
DEFAULT_READ_LINES = 500  # lines shown when no end_line is given
# Characters of numbered lines one read shows: under the loop's cap on a result (20,000), which
# would cut lines out of the middle with no word of which; the read stops at a line instead,
# and says where to go on.
READ_CHARS = 16_000
MAX_LINE_CHARS = 2_000
MAX_LIST_ENTRIES = 500
MAX_SEARCH_MATCHES = 100
REGEX_BUDGET = 10.0  # seconds for all of a search's matching: a pattern that backtracks without end is stopped
# Directories a recursive listing or search does not descend into (they can
# still be listed or searched by naming them as `path`).
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", ".venv", "node_modules", ".mypy_cache", ".ruff_cache"}
)

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _describe_mode(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


class Workspace:
    """A directory the file tools are confined to.

    The root is resolved (symlinks followed) once, here. `resolve()` turns a
    path the model gave into a real path inside the root or raises `ToolError`
    saying why not.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
        max_write_bytes: int = DEFAULT_MAX_WRITE_BYTES,
    ) -> None:
        real = Path(os.path.realpath(root))
        if not real.exists():  # made on first use, as the python tool and `agent --workspace` make it
            real.mkdir(parents=True, exist_ok=True)
        if not real.is_dir():
            raise ValueError(f"workspace {str(root)!r} is not a directory")
        self.root = real
        self.max_read_bytes = max_read_bytes
        self.max_write_bytes = max_write_bytes

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- resolving paths ---------------------------------------------------

    def _inside(self, path: Path) -> bool:
        return path == self.root or path.is_relative_to(self.root)

    def relative(self, real: Path) -> str:
        """How a real path inside the workspace is shown to the model."""
        rel = real.relative_to(self.root).as_posix()
        return rel if rel != "." else "."

    def shown(self, real: Path) -> str:
        """`relative`, with a control character in a name (a newline) as `\\x0a`: as the
        model is shown a path, one entry on one line (`resolve` reads it back)."""
        return _shown(self.relative(real))

    def _unescaped_path(self, path: str) -> str:
        """`path` with its \\xNN escapes read as bytes where that names what exists: the
        file itself, or (for a new file) the folder it goes in."""
        raw = _CONTROL_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), _unescaped(path))
        if raw == path:
            return path

        def exists(p: str) -> bool:
            return os.path.lexists(p if os.path.isabs(p) else self.root / p)

        if exists(raw) and not exists(path):
            return raw
        folder, raw_folder = os.path.dirname(path), os.path.dirname(raw)
        if raw_folder and not exists(path) and exists(raw_folder) and not exists(folder):
            return raw
        return path

    def resolve(self, path: str, *, must_exist: bool = True) -> Path:
        """The real path of `path` (relative to the root, or absolute inside it).

        Raises `ToolError` when the path leaves the workspace by any route, is
        a symlink loop, or (with `must_exist`) does not exist.
        """
        if not path or not path.strip():
            raise ToolError("The path is empty; give a path relative to the workspace root.")
        if "\x00" in path:
            raise ToolError("The path contains a NUL character.")
        if "\\x" in path:  # a name that is not UTF-8, as the model was shown it (bad\xffname.txt)
            path = self._unescaped_path(path)
        _check_encodable(path, "The path")
        given = Path(path)
        candidate = given if given.is_absolute() else self.root / given
        real = Path(os.path.realpath(candidate))
        if not self._inside(real):
            lexical = Path(os.path.normpath(candidate))
            if given.is_absolute() and not self._inside(lexical):
                raise ToolError(
                    f"Refused: the absolute path {path!r} is outside the workspace ({self.root}). "
                    "Use a path relative to the workspace root."
                )
            if not self._inside(lexical):
                raise ToolError(
                    f"Refused: {path!r} escapes the workspace with '..'. Stay inside the workspace root."
                )
            raise ToolError(
                f"Refused: {path!r} goes through a symlink that points outside the workspace "
                f"(to {str(real)!r}). Only files inside the workspace can be used."
            )
        try:
            os.stat(real)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ToolError(
                    f"Refused: {path!r} is a symlink loop (a link that points back to itself)."
                ) from None
            if isinstance(e, FileNotFoundError):
                if must_exist:
                    raise ToolError(
                        f"No such file or directory: {path!r} (use list_files to see what exists)."
                    ) from None
                self._check_parent(real, path)
                return real
            if isinstance(e, NotADirectoryError):
                raise ToolError(
                    f"{path!r} is not valid: a component of it is a file, not a directory."
                ) from None
            raise ToolError(f"Cannot use {path!r}: {e.strerror}.") from None
        return real

    def _check_parent(self, real: Path, path: str) -> None:
        """For a path that does not exist yet: its existing ancestors must be directories."""
        parent = real.parent
        while not parent.exists():
            parent = parent.parent
        try:
            st = os.stat(parent)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ToolError(f"Refused: {path!r} goes through a symlink loop.") from None
            raise ToolError(f"Cannot use {path!r}: {e.strerror}.") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ToolError(f"Cannot create {path!r}: {self.relative(parent)!r} is a file, not a directory.")

    def regular_file(self, path: str, *, limit: int | None = None) -> tuple[Path, os.stat_result]:
        """Resolve `path` to an existing regular file within the read size limit (or `limit`)."""
        real = self.resolve(path)
        st = os.stat(real)
        if not stat.S_ISREG(st.st_mode):
            kind = _describe_mode(st.st_mode)
            hint = " (use list_files for directories)" if stat.S_ISDIR(st.st_mode) else ""
            raise ToolError(
                f"Refused: {path!r} is {kind}, not a regular file; only regular files can be read{hint}."
            )
        self._check_size(path, st.st_size, limit)
        return real, st

    def stream_lines(self, path: str) -> tuple[Path, Iterator[str]]:
        """The lines of a large text file (up to MAX_STREAM_BYTES), read as they are taken,
        numbered as `text_lines` numbers them."""
        real, f = self._open_regular(path, MAX_STREAM_BYTES)
        if _is_binary(f.read(8192)):
            f.close()
            raise _binary(path)
        f.seek(0)

        def lines() -> Iterator[str]:
            with f:
                while raw := f.readline(MAX_STREAM_LINE):
                    if len(raw) == MAX_STREAM_LINE and not raw.endswith(b"\n"):
                        # A line longer than a megabyte: its start is kept, the rest passed over,
                        # so memory stays bounded and the lines after it keep their numbers.
                        while (rest := f.readline(MAX_STREAM_LINE)) and not rest.endswith(b"\n"):
                            pass
                    line = raw.decode("utf-8", errors="surrogateescape")
                    line = line[:-1] if line.endswith("\n") else line
                    yield line[:-1] if line.endswith("\r") else line

        return real, lines()

    def _check_size(self, path: str, size: int, limit: int | None = None) -> None:
        if size > (limit or self.max_read_bytes):
            if limit:
                raise ToolError(f"Refused: {path!r} is {size:,} bytes, over the {limit:,}-byte limit of these tools.")
            raise TooLarge(
                f"Refused: {path!r} is {size:,} bytes, over the {self.max_read_bytes:,}-byte limit for reading "
                "it whole. Read it in parts with read_file's start_line and end_line, or find the part you need "
                "with search_files."
            )

    # -- opening without following symlinks ---------------------------------
    #
    # resolve() checks a path, and the file is opened a moment later: a
    # directory on the way swapped for a symlink in between (by the python
    # tool's own code, say) would lead outside. So files are opened from the
    # root one real component at a time, following no symlink, and a path
    # that changed fails instead.

    def _walk_to(self, real_dir: Path, path: str, *, create: bool = False) -> int:
        """A descriptor of `real_dir` (resolved, inside the root), reached without following a symlink."""
        nofollow = getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in real_dir.relative_to(self.root).parts:
                if create:
                    try:
                        os.mkdir(part, dir_fd=fd)
                    except FileExistsError:
                        pass
                    except OSError as e:  # read-only, full, not permitted
                        raise ToolError(f"Cannot create the folder for {path!r}: {e.strerror or e}.") from None
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                        raise ToolError(f"Refused: {path!r} changed while it was being used; try again.") from None
                    raise ToolError(f"Cannot use {path!r}: {e.strerror}.") from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_file(self, real: Path, path: str, flags: int) -> int:
        """Open the resolved file `real` as `_walk_to` reaches directories."""
        parent = self._walk_to(real.parent, path)
        try:
            return os.open(real.name, flags | getattr(os, "O_NOFOLLOW", 0), dir_fd=parent)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ToolError(f"Refused: {path!r} changed while it was being used; try again.") from None
            raise ToolError(f"Cannot open {path!r}: {e.strerror}.") from None
        finally:
            os.close(parent)

    def walk(self, real_dir: Path, path: str, too_deep: list[str] | None = None) -> Any:
        """`os.walk(real_dir)` (resolved, inside the root) that follows no symlink on
        the way in or below: (directory as a real path, its subdirectories, its files).

        It goes MAX_WALK_DEPTH folders down at most (each level holds a descriptor and
        a frame of the walk: a tree thousands deep would exhaust both); the folders
        it did not go into are added to `too_deep`."""
        top = self._walk_to(real_dir, path)
        try:
            for dirpath, dirnames, filenames, _ in os.fwalk(".", dir_fd=top):
                if dirnames and dirpath.count("/") >= MAX_WALK_DEPTH:
                    if too_deep is not None:
                        too_deep.append(str(real_dir / dirpath))
                    dirnames.clear()
                yield str(real_dir / dirpath), dirnames, filenames
        finally:
            os.close(top)

    def read_bytes(self, path: str, *, limit: int | None = None) -> tuple[Path, bytes]:
        """The bytes of a regular file (up to the read limit, or `limit`), read without
        following a swapped-in symlink."""
        real, f = self._open_regular(path, limit)
        with f:
            data = f.read((limit or self.max_read_bytes) + 1)
        self._check_size(path, len(data), limit)
        return real, data

    def _open_regular(self, path: str, limit: int | None = None) -> tuple[Path, BinaryIO]:
        """`regular_file`, opened for reading without following a swapped-in symlink, and
        checked again once open (a FIFO swapped in would block a plain read)."""
        real, _ = self.regular_file(path, limit=limit)
        fd = self._open_file(real, path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        f = os.fdopen(fd, "rb")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # changed since it was checked
                raise ToolError(f"Refused: {path!r} is {_describe_mode(st.st_mode)}, not a regular file.")
            self._check_size(path, st.st_size, limit)
        except BaseException:
            f.close()
            raise
        return real, f

    def read_text(self, path: str, *, limit: int | None = None) -> tuple[Path, str]:
        """The text of a file; binary files are refused. Undecodable bytes survive a round trip."""
        real, data = self.read_bytes(path, limit=limit)
        if _is_binary(data):
            raise _binary(path)
        return real, data.decode("utf-8", errors="surrogateescape")

    # -- writing -------------------------------------------------------------

    def write_text(
        self, path: str, content: str, *, unchanged: tuple[int, int, int] | None = None
    ) -> tuple[Path, bool]:
        """Write `content` atomically; returns the real path and whether the file is new.
        `unchanged`: the file's `_version` the content was made from; should the file differ
        from it just before the new one takes its place, nothing is written (ToolError)."""
        _check_encodable(content, "The content")
        data = content.encode("utf-8", errors="surrogateescape")
        if len(data) > self.max_write_bytes:
            raise ToolError(
                f"Refused: the content is {len(data):,} bytes, over the {self.max_write_bytes:,}-byte limit."
            )
        real = self.resolve(path, must_exist=False)
        old: os.stat_result | None = None
        try:
            old = os.stat(real)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(old.st_mode):
                raise ToolError(
                    f"Refused: {path!r} is {_describe_mode(old.st_mode)}; only regular files can be written."
                )
        parent = self._walk_to(real.parent, path, create=True)
        try:
            _atomic_write(parent, real.name, data, old, unchanged)
        except _ChangedMeanwhile:
            raise ToolError(CHANGED_MEANWHILE.format(name=path)) from None
        except OSError as e:
            raise ToolError(f"Cannot write {path!r}: {e.strerror or e}.") from None
        finally:
            os.close(parent)
        return real, old is None


class TooLarge(ToolError):
    """A file over the whole-file read limit: `Workspace.stream_lines` reads it in parts."""


def text_lines(text: str) -> list[str]:
    """The lines of `text` as editors, tracebacks and `edit_file` number them: split at
    "\n" only (str.splitlines also splits at form feeds, lone "\r", U+2028 and more),
    without the "\r" of a CRLF line end, and no empty line after a final newline."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _line_ends_as_here(new: str, text: str, at: int) -> str:
    """`new`, put into `text` at `at`, with its line breaks ending as the line there
    ends (CRLF or LF), so an edit does not mix them; a break right after a \\r already in
    the text stays a bare \\n (that \\r is its first half)."""
    if "\n" not in new:
        return new
    end = text.find("\n", at)
    if end < 0:
        end = text.rfind("\n", 0, at)
    if end <= 0 or text[end - 1] != "\r":  # an LF line (or a file with one line)
        return new
    out: list[str] = []
    before = text[at - 1] if at > 0 else ""
    for ch in new:
        if ch == "\n" and before != "\r":
            out.append("\r")
        out.append(ch)
        before = ch
    return "".join(out)


_LITERAL_BYTE = re.compile(r"\\x[89a-fA-F][0-9a-fA-F]")
_RAW_OR_LITERAL = re.compile(r"\\(\\x[89a-fA-F][0-9a-fA-F])|\\x([89a-fA-F][0-9a-fA-F])")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_ESCAPE = re.compile(r"\\x([01][0-9a-fA-F]|7[fF])")


# Edits of one file by several calls at once (threads of one agent, agents sharing a
# workspace) take turns, so none is lost: a lock per file, from a fixed set.
_EDIT_LOCKS = [threading.Lock() for _ in range(64)]


def _edit_lock(real: Path) -> threading.Lock:
    return _EDIT_LOCKS[hash(str(real)) % len(_EDIT_LOCKS)]


CHANGED_MEANWHILE = (
    "{name!r} changed while it was being edited, and the edit was not made; "
    "read it again and redo the edit on what it holds now."
)


def _version(real: Path) -> tuple[int, int, int] | None:
    """What tells a file's content changed: inode (an atomic replace), size, modification time."""
    try:
        return _version_of(os.stat(real))
    except OSError:
        return None


def _version_of(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


class _ChangedMeanwhile(Exception):
    """The file is no longer the version an edit was made from (see `Workspace.write_text`)."""


def _check_encodable(text: str, what: str) -> None:
    """Refuse text with a lone surrogate (JSON's "\\ud800"): no file or name holds one.
    (Bytes that are not UTF-8 come as surrogateescape characters, and are written back.)"""
    try:
        text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError as e:
        raise ToolError(
            f"{what} holds an invalid character ({text[e.start]!r} at {e.start}: a lone UTF-16 surrogate); "
            "write the text without it."
        ) from None


def _shown(rel: str) -> str:
    """A path as listed: a control character in a name (a newline) written as \\x0a, so
    that one entry stays one line; `resolve` reads it back."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", rel) if _CONTROL.search(rel) else rel


def _too_deep_note(ws: Workspace, folders: list[str]) -> str:
    first = ws.shown(Path(folders[0]))
    return (
        f"[not descended below {MAX_WALK_DEPTH} levels of folders, at {first}"
        + (f" and {len(folders) - 1} more" if len(folders) > 1 else "")
        + "; list or search a deeper path]"
    )


def _unescaped(text: str) -> str:
    """`\\xe9` as written by the model back to the byte it stands for (a surrogateescape
    character), so that names and text that are not UTF-8 can be given back; `\\\\xe9`
    (how `_bytes_shown` shows those four characters in such a file) back to `\\xe9`."""
    return _RAW_OR_LITERAL.sub(lambda m: m.group(1) or chr(0xDC00 + int(m.group(2), 16)), text)


_NOT_UTF8 = "; not UTF-8: its other bytes are shown as \\xe9, the text \\xe9 as \\\\xe9"


def _bytes_shown(text: str) -> str:
    """Text of a file that is not UTF-8 as the model is shown it: its other bytes become
    `\\xe9` (when the tool's result is made), so the four characters `\\xe9` written in
    it are shown as `\\\\xe9`; `_unescaped` reads both back. Other text is as it is."""
    return _LITERAL_BYTE.sub(r"\\\g<0>", text) if _has_raw_bytes(text) else text


def _replaces_raw_bytes(ws: Workspace, path: str) -> bool:
    """Whether `path` is a text file that is not UTF-8 (whose bytes the model saw as \\xe9)."""
    try:
        _, text = ws.read_text(path, limit=max(ws.max_read_bytes, ws.max_write_bytes))
    except ToolError:  # new, binary, too large, not a regular file: written as given
        return False
    return _has_raw_bytes(text)


def _has_raw_bytes(text: str) -> bool:
    return not text.isascii() and any("\udc80" <= c <= "\udcff" for c in text)


def _glob(rel: str, name: str, pattern: str) -> bool:
    """Whether a file matches a glob: by its name, or by its path from the workspace root when
    the pattern holds a '/'. `**/` stands for any folders, none included: `**/*.py` matches
    `app.py` as well as `src/app.py`."""
    if "/" not in pattern:
        return fnmatch.fnmatch(name, pattern)
    return any(fnmatch.fnmatch(rel, form) for form in _folder_forms(pattern))


def _folder_forms(pattern: str) -> Iterator[str]:
    """`pattern` with each `**/` kept or dropped, every way (up to four of them: 16 forms)."""
    at = pattern.find("**/")
    if at < 0 or pattern.count("**/") > 4:
        yield pattern
        return
    for rest in _folder_forms(pattern[at + 3 :]):
        yield pattern[: at + 3] + rest
        yield pattern[:at] + rest


def _is_binary(data: bytes) -> bool:
    return b"\x00" in data[:8192]


def _binary(path: str) -> ToolError:
    return ToolError(
        f"Refused: {path!r} looks like a binary file (it contains NUL bytes); these tools only handle text."
    )


# The temporary name a file is written under before it is renamed into place (see
# `_atomic_write`): hidden, but no hidden file of the user's (the sandbox tells them apart).
WRITING = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def _atomic_write(
    parent: int,
    name: str,
    data: bytes,
    old: os.stat_result | None,
    unchanged: tuple[int, int, int] | None = None,
) -> None:
    """Write to a temp file in the directory `parent` (a descriptor), then rename it over `name`.

    A new file is created with mode 0o666 and left to the umask, or to the
    directory's default ACL, as any new file there is: the python tool's
    kernel keeps the access such an ACL gives it. A new hidden file (`.env`) is
    private: 0600, with no entry from the folder's ACL. A file that existed
    (`old`) keeps its mode, its owner (as far as this process may give it) and
    its ACL; its new text is written while only its owner may read it.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    private = old is not None or name.startswith(".")  # no one else reads it while it is written
    for _ in range(100):
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"  # as WRITING matches it
        try:
            fd = os.open(tmp, flags, 0o600 if private else 0o666, dir_fd=parent)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - a hundred clashes of a random name
        raise ToolError(f"Cannot write {name!r}: no free temporary name.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if old is not None:
                _keep_owner_and_acl(f.fileno(), parent, name, old)
                os.fchmod(f.fileno(), stat.S_IMODE(old.st_mode))  # after the ACL: the mode sets its mask
            elif private:  # a new hidden file: nothing from the folder's default ACL
                _drop_acl(f.fileno())
            os.fsync(f.fileno())
        # Checked last, so that a write by another program meanwhile is seen.
        if unchanged is not None and _version_of(os.stat(name, dir_fd=parent, follow_symlinks=False)) != unchanged:
            raise _ChangedMeanwhile
        os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=parent)
        except FileNotFoundError:
            pass
        raise


def _keep_owner_and_acl(fd: int, parent: int, name: str, old: os.stat_result) -> None:
    """Give the new file `fd` the owner and access ACL of the one it replaces, and no other
    (an edit by a root agent must not take a file from its owner, nor open it to the
    sandbox's user through the folder's default ACL)."""
    if hasattr(os, "fchown") and (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
        try:
            os.fchown(fd, old.st_uid, old.st_gid)
        except PermissionError:  # not root: the group only, if it is one of ours
            try:
                os.fchown(fd, -1, old.st_gid)
            except PermissionError:
                pass
    if not hasattr(os, "getxattr"):  # no POSIX ACLs here (macOS, Windows)
        return
    acl = None
    try:
        src = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), dir_fd=parent)
        try:
            acl = os.getxattr(src, "system.posix_acl_access")
        finally:
            os.close(src)
    except OSError:  # none, or no ACLs on this filesystem
        pass
    if acl is None:  # what the new file took from the folder's default ACL: the old one had none
        _drop_acl(fd)
        return
    try:
        os.setxattr(fd, "system.posix_acl_access", acl)
    except OSError:
        pass


def _drop_acl(fd: int) -> None:
    if hasattr(os, "removexattr"):
        try:
            os.removexattr(fd, "system.posix_acl_access")
        except OSError:  # none, or no ACLs here
            pass


def _numbered(lines: Iterable[tuple[int, str]], width: int) -> tuple[list[str], int]:
    """The lines as shown, `N| text`, up to READ_CHARS characters (one line at least), and
    the number of the last one shown."""
    rows: list[str] = []
    size = last = 0
    for n, line in lines:
        row = f"{n:>{width}}| {_clip(_bytes_shown(line))}"
        if rows and size + len(row) + 1 > READ_CHARS:
            break
        rows.append(row)
        size += len(row) + 1
        last = n
    return rows, last


def _clip(line: str, limit: int = MAX_LINE_CHARS) -> str:
    return line if len(line) <= limit else line[:limit] + f" [... {len(line) - limit} more characters]"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


class FileTools:
    """The file tools over one workspace (or the run's workspace, see the module docs).

    `tools()` returns `read_file`, `write_file`, `edit_file`, `list_files` and
    `search_files`. The writing tools declare the `writes` effect, and with
    `needs_approval_for_writes=True` each of their calls waits for the agent's
    approver.
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str] | Workspace | None = None,
        *,
        needs_approval_for_writes: bool = False,
        max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
        max_write_bytes: int = DEFAULT_MAX_WRITE_BYTES,
    ) -> None:
        self.max_read_bytes = max_read_bytes
        self.max_write_bytes = max_write_bytes
        self.needs_approval_for_writes = needs_approval_for_writes
        if workspace is None or isinstance(workspace, Workspace):
            self._fixed = workspace
        else:
            self._fixed = Workspace(workspace, max_read_bytes=max_read_bytes, max_write_bytes=max_write_bytes)
        self._by_root: dict[Path, Workspace] = {}

    @property
    def workspace(self) -> Workspace:
        """The workspace of this call: fixed, else the run's, else the current directory."""
        if self._fixed is not None:
            return self._fixed
        ctx = tool_context()
        root = Path(ctx.workspace) if ctx is not None and ctx.workspace is not None else Path.cwd()
        ws = self._by_root.get(root)
        if ws is None:
            try:
                ws = Workspace(root, max_read_bytes=self.max_read_bytes, max_write_bytes=self.max_write_bytes)
            except ValueError as e:
                raise ToolError(str(e)) from None
            self._by_root[root] = ws
        return ws

    def tools(self) -> list[Tool]:
        found: list[Tool] = [
            self.read_file,
            self.write_file,
            self.edit_file,
            self.list_files,
            self.search_files,
        ]
        for t in (self.write_file, self.edit_file):
            t.needs_approval = self.needs_approval_for_writes
        return found

    # -- the tools ------------------------------------------------------------

    @tool(effects={"reads"})
    def read_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> str:
        """Read a text file in the workspace, with numbered lines.

        Args:
            path: File path relative to the workspace root.
            start_line: First line to show (1-based). Defaults to 1.
            end_line: Last line to show (inclusive). Defaults to 500 lines after start_line.
        """
        ws = self.workspace
        start = 1 if start_line is None else start_line
        if start < 1:
            raise ToolError("start_line must be 1 or more (lines are numbered from 1).")
        try:
            real, text = ws.read_text(path)
        except TooLarge:
            return self._read_part(path, start, end_line)
        lines = text_lines(text)
        total = len(lines)
        if total == 0:
            return f"{ws.shown(real)}: the file is empty (0 lines)."
        if start > total:
            raise ToolError(f"start_line {start} is past the end of {path!r}, which has {total} lines.")
        if end_line is not None and end_line < start:
            raise ToolError(f"end_line {end_line} is before start_line {start}.")
        end = min(total, end_line if end_line is not None else start + DEFAULT_READ_LINES - 1)
        rows, end = _numbered(((n, lines[n - 1]) for n in range(start, end + 1)), len(str(end)))
        body = "\n".join(rows)
        header = f"{ws.shown(real)} (lines {start}-{end} of {total}{_NOT_UTF8 if _has_raw_bytes(text) else ''})"
        footer = ""
        if end < total:
            footer = f"\n[{total - end} more lines; read_file with start_line={end + 1} to continue]"
        return f"{header}\n{body}{footer}"

    def _read_part(self, path: str, start: int, end_line: int | None) -> str:
        """A line range of a file too large to read whole, read line by line."""
        if end_line is not None and end_line < start:
            raise ToolError(f"end_line {end_line} is before start_line {start}.")
        # At most DEFAULT_READ_LINES lines a call: end_line=10**9 is no way to load the whole file.
        end = min(end_line if end_line is not None else start + DEFAULT_READ_LINES - 1, start + DEFAULT_READ_LINES - 1)
        ws = self.workspace
        real, lines = ws.stream_lines(path)
        shown: list[tuple[int, str]] = []
        n = 0
        for n, line in enumerate(lines, 1):  # noqa: B007 - n is the count after the loop
            if start <= n <= end:
                shown.append((n, line))
            elif n > end:
                break
        if not shown:
            raise ToolError(f"start_line {start} is past the end of {path!r}, which has {n} lines.")
        rows, last = _numbered(shown, len(str(shown[-1][0])))
        body = "\n".join(rows)
        footer = f"\n[the file goes on; read_file with start_line={last + 1} to continue]" if n > last else ""
        return f"{ws.shown(real)} (lines {start}-{last}; a large file, read in parts)\n{body}{footer}"

    @tool(effects={"writes"})
    def write_file(self, path: str, content: str) -> str:
        """Write a text file in the workspace, replacing it if it exists. Parent directories are created.

        Args:
            path: File path relative to the workspace root.
            content: The complete new content of the file.
        """
        ws = self.workspace
        if path.rstrip().endswith(("/", "\\", "/.")) or path.strip() in (".", ".."):
            raise ToolError(f"{path!r} names a folder, not a file; give the file's name (such as notes/todo.txt).")
        with _edit_lock(ws.resolve(path, must_exist=False)):
            if "\\x" in content and _replaces_raw_bytes(ws, path):
                # A file that is not UTF-8, written back as read_file showed it: \xe9 is the byte.
                content = _unescaped(content)
            real, created = ws.write_text(path, content)
        lines = len(text_lines(content))
        verb = "Created" if created else "Overwrote"
        return f"{verb} {ws.shown(real)} ({len(content.encode('utf-8', 'surrogateescape')):,} bytes, {lines} lines)."

    @tool(effects={"writes"})
    def edit_file(self, path: str, old: str, new: str) -> str:
        """Replace one exact piece of text in a file. `old` must occur exactly once; include surrounding lines to make it unique.

        Args:
            path: File path relative to the workspace root.
            old: The exact text to replace (whitespace and indentation matter).
            new: The text to put in its place.
        """
        if not old:
            raise ToolError("`old` is empty; give the exact text to replace.")
        ws = self.workspace
        target = ws.resolve(path)
        with _edit_lock(target):
            return self._edit(ws, path, target, old, new)

    @staticmethod
    def _edit(ws: Workspace, path: str, target: Path, old: str, new: str) -> str:
        # Any file write_file may write, edit_file may edit (it reads whole what it changes).
        before = _version(target)
        real, text = ws.read_text(path, limit=max(ws.max_read_bytes, ws.max_write_bytes))
        raw_bytes = _has_raw_bytes(text)
        if raw_bytes:  # not UTF-8: the model saw (and writes) the other bytes as \xe9
            old, new = _unescaped(old), _unescaped(new)
        count = text.count(old)
        if count == 0 and "\r\n" in text and "\n" in old and "\r\n" not in old:
            # CRLF lines: read_file shows them without the \r, so the model writes \n.
            old = old.replace("\n", "\r\n")
            count = text.count(old)
        if count == 1 and text.find(old, text.index(old) + 1) >= 0:  # "aa" in "aaa": two, overlapping
            count = 2
        if count == 0:
            hint = " The file is not UTF-8: write its other bytes as they were shown, such as \\xe9." if raw_bytes else ""
            raise ToolError(
                f"The text to replace was not found in {path!r}. Read the file and copy the exact text, "
                f"including whitespace and indentation.{hint}"
            )
        if count > 1:
            raise ToolError(
                f"The text to replace occurs {count} times in {path!r}; it must occur exactly once. "
                "Include more surrounding lines so it matches one place."
            )
        at = text.index(old)
        new = _line_ends_as_here(new, text, at)
        updated = text[:at] + new + text[at + len(old) :]
        if before is None:  # gone since: another program (the python tool's code) removed it
            raise ToolError(CHANGED_MEANWHILE.format(name=path))
        # Written only if the file is still the version read, checked just before the edited one
        # takes its place.
        ws.write_text(ws.relative(real), updated, unchanged=before)
        rel = ws.shown(real)
        # Where the new text's lines are: line breaks at its start or end are not lines of it.
        body = new.strip("\r\n")
        line_at = text.count("\n", 0, at) + 1
        if not body:
            return f"Edited {rel}: removed the text (it began on line {line_at})."
        first = line_at + new[: len(new) - len(new.lstrip("\r\n"))].count("\n")
        last = first + body.count("\n")
        where = f"line {first}" if first == last else f"lines {first}-{last}"
        return f"Edited {rel}: replaced 1 occurrence; the new text is at {where}."

    @tool(effects={"reads"})
    def list_files(self, path: str = ".", pattern: str | None = None, recursive: bool = False) -> str:
        """List files and directories in the workspace, with sizes.

        Args:
            path: Directory relative to the workspace root.
            pattern: Optional glob such as '*.py' (matched against names, or against relative paths if it contains '/').
            recursive: List subdirectories too.
        """
        ws = self.workspace
        real = ws.resolve(path)
        if not real.is_dir():
            raise ToolError(f"{path!r} is not a directory; use read_file for files.")
        entries: list[str] = []
        more = 0
        skipped: set[str] = set()
        too_deep: list[str] = []

        def matches(rel: str, name: str) -> bool:
            return pattern is None or _glob(rel, name, pattern)

        for dirpath, dirnames, filenames in ws.walk(real, path, too_deep):
            dirnames.sort()
            here = Path(dirpath)
            if recursive:
                for d in [d for d in dirnames if d in SKIP_DIRS]:
                    skipped.add(d)
                    dirnames.remove(d)
            for name in sorted([*dirnames, *filenames]):
                full = here / name
                rel = ws.relative(full)
                if not matches(rel, name):
                    continue
                if len(entries) >= MAX_LIST_ENTRIES:
                    more += 1
                    continue
                entries.append(self._entry(ws, full, rel))
            if not recursive:
                break
        shown = ws.shown(real)
        if not entries:
            what = f" matching {pattern!r}" if pattern else ""
            return f"{shown}: no entries{what}." + (f"\n{_too_deep_note(ws, too_deep)}" if too_deep else "")
        lines = [f"{shown}: {len(entries) + more} entries" + (f" matching {pattern!r}" if pattern else "")]
        lines += entries
        if more:
            lines.append(f"[... {more} more entries not shown; narrow with path or pattern]")
        if skipped:
            lines.append(f"[not descended into: {', '.join(sorted(skipped))}]")
        if too_deep:
            lines.append(_too_deep_note(ws, too_deep))
        return "\n".join(lines)

    @staticmethod
    def _entry(ws: Workspace, full: Path, rel: str) -> str:
        rel = _shown(rel)
        try:
            lst = os.lstat(full)
        except OSError:
            return f"{rel} (unreadable)"
        if stat.S_ISLNK(lst.st_mode):
            target = Path(os.path.realpath(full))
            if not ws._inside(target):
                return f"{rel} -> (symlink outside the workspace)"
            try:
                st = os.stat(target)
            except OSError:
                return f"{rel} -> (broken symlink)"
            suffix = "/" if stat.S_ISDIR(st.st_mode) else f"  {_size(st.st_size)}"
            return f"{rel} -> {ws.shown(target)}{suffix}"
        if stat.S_ISDIR(lst.st_mode):
            return f"{rel}/"
        if stat.S_ISREG(lst.st_mode):
            return f"{rel}  {_size(lst.st_size)}"
        return f"{rel}  ({_describe_mode(lst.st_mode)})"

    @tool(effects={"reads"})
    def search_files(
        self,
        pattern: str,
        path: str = ".",
        regex: bool = False,
        ignore_case: bool = False,
        glob: str | None = None,
    ) -> str:
        """Search text files in the workspace for a string or regular expression; returns `file:line: text` matches.

        Args:
            pattern: The text (or, with regex=true, the Python regular expression) to find.
            path: A directory to search recursively, or a single file.
            regex: Treat pattern as a regular expression.
            ignore_case: Match regardless of case.
            glob: Only search files whose names match this glob, such as '*.py'.
        """
        if not pattern:
            raise ToolError("The pattern is empty.")
        matcher = self._matcher(pattern, regex, ignore_case)
        ws = self.workspace
        real = ws.resolve(path)
        too_deep: list[str] = []
        if real.is_dir():
            files = self._walk_files(ws, real, glob, too_deep)
        else:
            files = iter([real])
        matches: list[str] = []
        more = 0
        skipped = 0
        for file in files:
            rel = ws.relative(file)
            try:
                try:
                    lines: Iterable[str] = text_lines(ws.read_text(rel)[1])
                except TooLarge:  # read line by line instead
                    lines = ws.stream_lines(rel)[1]
            except ToolError:
                skipped += 1
                continue
            for n, line in enumerate(lines, 1):
                if matcher(line):
                    if len(matches) >= MAX_SEARCH_MATCHES:
                        more += 1
                    else:
                        matches.append(f"{_shown(rel)}:{n}: {_clip(_bytes_shown(line.strip()), 300)}")
        deep = f"\n{_too_deep_note(ws, too_deep)}" if too_deep else ""
        if not matches:
            note = f" ({skipped} binary, oversized or special files skipped)" if skipped else ""
            where = "the workspace" if ws.relative(real) == "." else ws.shown(real)
            return f"No matches for {pattern!r} in {where}{note}.{deep}"
        out = "\n".join(matches)
        if more:
            out += f"\n[... {more} more matches not shown; narrow the pattern, path or glob]"
        if skipped:
            out += f"\n[{skipped} binary, oversized or special files skipped]"
        return out + deep

    @staticmethod
    def _matcher(pattern: str, regex: bool, ignore_case: bool) -> Callable[[str], bool]:
        """Whether a line matches. Plain text is found with string operations (nothing to
        backtrack; bytes written as \\xe9 stand for the byte, in a file that is not UTF-8);
        a regular expression runs on the `regex` engine, and its matching (not the reading
        of files) may take REGEX_BUDGET seconds in all."""
        if not regex:
            wanted = {pattern, _unescaped(pattern)}
            if ignore_case:
                folded = {w.casefold() for w in wanted}
                return lambda line: any(w in line.casefold() for w in folded)
            if len(wanted) == 1:
                return lambda line: pattern in line
            return lambda line: any(w in line for w in wanted)
        rx = Pattern(pattern, ignore_case=ignore_case, budget=REGEX_BUDGET)
        return lambda line: rx.search(line) is not None

    @staticmethod
    def _walk_files(ws: Workspace, root: Path, glob: str | None, too_deep: list[str] | None = None) -> Any:
        for dirpath, dirnames, filenames in ws.walk(root, ws.relative(root), too_deep):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for name in sorted(filenames):
                full = Path(dirpath) / name
                # as list_files: a glob with a '/' is matched against the path from the workspace root
                if glob is not None and not _glob(ws.relative(full), name, glob):
                    continue
                if os.path.islink(full) and not ws._inside(Path(os.path.realpath(full))):
                    continue
                yield full


def make_tools(
    workspace: str | os.PathLike[str] | Workspace | None = None,
    needs_approval_for_writes: bool = False,
    max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
    max_write_bytes: int = DEFAULT_MAX_WRITE_BYTES,
    **_options: Any,
) -> list[Tool]:
    """The file tools (the `"files"` built-in). Options they do not take are another built-in's.

    `workspace`: the root the tools are confined to; None means the run's
    workspace, or the current directory outside a run or without one.
    """
    return FileTools(
        workspace,
        needs_approval_for_writes=needs_approval_for_writes,
        max_read_bytes=max_read_bytes,
        max_write_bytes=max_write_bytes,
    ).tools()
