"""Workspace file tools: confinement, atomic writes, edits, listing and search."""

import os
import socket
import stat

import pytest
from helpers import call

from agent import Agent, ToolError
from agent.builtins import builtin_tools
from agent.llm import ScriptedLLM
from tools import files
from tools.files import FileTools, Workspace, make_tools


@pytest.fixture
def ws(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text("alpha\nbeta\ngamma\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("def main():\n    print('hello')\n    return 0\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET\n")
    return root


@pytest.fixture
def ft(ws):
    return FileTools(ws)


def refused(fn, **kwargs) -> str:
    with pytest.raises(ToolError) as info:
        fn(**kwargs)
    return str(info.value)


# -- escapes -------------------------------------------------------------------


def test_dotdot_escape_is_refused(ft):
    msg = refused(ft.read_file, path="../outside/secret.txt")
    assert "escapes the workspace" in msg and "'..'" in msg
    assert "escapes" in refused(ft.read_file, path="src/../../outside/secret.txt")
    assert "escapes" in refused(ft.write_file, path="../outside/new.txt", content="x")
    assert not (ft.workspace.root.parent / "outside" / "new.txt").exists()
    # `..` that stays inside is fine
    assert "alpha" in ft.read_file(path="src/../notes.txt")


def test_absolute_path_outside_is_refused_and_inside_is_allowed(ft, ws, tmp_path):
    msg = refused(ft.read_file, path=str(tmp_path / "outside" / "secret.txt"))
    assert "absolute path" in msg and "outside the workspace" in msg
    assert "outside the workspace" in refused(ft.read_file, path="/etc/passwd")
    assert "alpha" in ft.read_file(path=str(ws / "notes.txt"))


def test_symlink_to_outside_file_is_refused(ft, ws, tmp_path):
    os.symlink(tmp_path / "outside" / "secret.txt", ws / "link.txt")
    msg = refused(ft.read_file, path="link.txt")
    assert "symlink" in msg and "outside the workspace" in msg
    assert "symlink" in refused(ft.write_file, path="link.txt", content="overwritten")
    assert "symlink" in refused(ft.edit_file, path="link.txt", old="TOP", new="NOT")
    assert (tmp_path / "outside" / "secret.txt").read_text() == "TOP SECRET\n"


def test_symlink_to_outside_directory_is_refused_at_any_component(ft, ws, tmp_path):
    os.symlink(tmp_path / "outside", ws / "linkdir")
    assert "symlink" in refused(ft.read_file, path="linkdir/secret.txt")
    assert "symlink" in refused(ft.list_files, path="linkdir")
    assert "symlink" in refused(ft.search_files, pattern="SECRET", path="linkdir")
    assert "symlink" in refused(ft.write_file, path="linkdir/new.txt", content="x")
    assert "symlink" in refused(ft.write_file, path="linkdir/deeper/new.txt", content="x")
    assert sorted(os.listdir(tmp_path / "outside")) == ["secret.txt"]
    # listing the workspace shows the link without following it; search skips it
    assert "linkdir -> (symlink outside the workspace)" in ft.list_files(path=".")
    assert "No matches" in ft.search_files(pattern="SECRET")


def test_dangling_symlink_pointing_outside_cannot_be_written_through(ft, ws, tmp_path):
    target = tmp_path / "outside" / "created-by-model.txt"
    os.symlink(target, ws / "dangling")
    assert "symlink" in refused(ft.write_file, path="dangling", content="x")
    assert not target.exists()


def test_symlink_inside_the_workspace_is_followed(ft, ws):
    os.symlink(ws / "notes.txt", ws / "alias.txt")
    assert "beta" in ft.read_file(path="alias.txt")
    ft.edit_file(path="alias.txt", old="beta", new="BETA")
    assert os.path.islink(ws / "alias.txt")  # the link survives; its target changed
    assert (ws / "notes.txt").read_text() == "alpha\nBETA\ngamma\n"


def test_symlink_loops_are_refused(ft, ws):
    os.symlink(ws / "loop_b", ws / "loop_a")
    os.symlink(ws / "loop_a", ws / "loop_b")
    assert "symlink loop" in refused(ft.read_file, path="loop_a")
    assert "symlink loop" in refused(ft.read_file, path="loop_a/x.txt")
    assert "symlink loop" in refused(ft.write_file, path="loop_a", content="x")
    assert "loop" in refused(ft.write_file, path="loop_a/x.txt", content="x")


def test_dev_zero_through_a_symlink_is_refused(ft, ws):
    os.symlink("/dev/zero", ws / "zero")
    msg = refused(ft.read_file, path="zero")
    assert "outside the workspace" in msg
    assert "outside" in refused(ft.read_file, path="/dev/zero")


def test_fifo_is_refused_without_blocking(ft, ws):
    os.mkfifo(ws / "pipe")
    msg = refused(ft.read_file, path="pipe")
    assert "FIFO" in msg and "not a regular file" in msg
    assert "FIFO" in refused(ft.write_file, path="pipe", content="x")
    assert "(a FIFO (named pipe))" in ft.list_files(path=".")
    assert "No matches" in ft.search_files(pattern="anything")


def test_socket_is_refused(ft, ws, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        monkeypatch.chdir(ws)  # a short relative path: AF_UNIX paths are limited to ~108 bytes
        sock.bind("sock")
        assert "socket" in refused(ft.read_file, path="sock")
    finally:
        sock.close()


def test_a_file_too_large_to_read_whole_is_read_and_searched_in_parts(ws):
    with open(ws / "sparse.bin", "wb") as f:
        f.truncate(3_000_000)  # sparse zeros: quick to make, and binary
    assert "binary" in refused(FileTools(ws).read_file, path="sparse.bin")
    with open(ws / "big.log", "w") as f:  # 3 MB of text: over the 2 MB whole-file limit
        f.writelines(f"line {n} of the log\n" for n in range(1, 150_001))
    ft = FileTools(ws)
    part = ft.read_file(path="big.log", start_line=12345, end_line=12346)
    assert part.splitlines() == [
        "big.log (lines 12345-12346; a large file, read in parts)",
        "12345| line 12345 of the log",
        "12346| line 12346 of the log",
        "[the file goes on; read_file with start_line=12347 to continue]",
    ]
    assert "past the end of 'big.log', which has 150000 lines" in refused(
        ft.read_file, path="big.log", start_line=150_001
    )
    assert ft.search_files(pattern="line 123456 ", glob="*.log") == "big.log:123456: line 123456 of the log"
    # an edit reads the whole file: up to what write_file may write (5 MB), past the read limit
    assert "Edited" in ft.edit_file(path="big.log", old="line 7 of", new="line seven of")
    small = FileTools(ws, max_read_bytes=10, max_write_bytes=10)
    assert "10-byte limit" in refused(small.edit_file, path="notes.txt", old="alpha", new="x")


def test_binary_file_is_refused(ft, ws):
    (ws / "blob.bin").write_bytes(b"\x89PNG\x00\x01\x02")
    assert "binary" in refused(ft.read_file, path="blob.bin")
    assert "binary" in refused(ft.edit_file, path="blob.bin", old="PNG", new="x")


def test_directory_and_missing_paths_have_clear_messages(ft):
    assert "a directory" in refused(ft.read_file, path="src")
    assert "No such file" in refused(ft.read_file, path="nope.txt")
    assert "empty" in refused(ft.read_file, path="")
    assert "is a file" in refused(ft.write_file, path="notes.txt/x", content="x")


# -- read ----------------------------------------------------------------------


def test_read_file_numbers_lines_and_reports_total(ft, ws):
    (ws / "long.txt").write_text("".join(f"line {i}\n" for i in range(1, 21)))
    out = ft.read_file(path="long.txt", start_line=5, end_line=7)
    assert out.splitlines()[0] == "long.txt (lines 5-7 of 20)"
    assert out.splitlines()[1:4] == ["5| line 5", "6| line 6", "7| line 7"]
    assert "start_line=8" in out
    whole = ft.read_file(path="long.txt")
    assert "(lines 1-20 of 20)" in whole and "more lines" not in whole
    assert "past the end" in refused(ft.read_file, path="long.txt", start_line=30)
    assert "before start_line" in refused(ft.read_file, path="long.txt", start_line=5, end_line=2)


def test_a_read_stops_at_a_line_under_the_result_cap_and_says_where_to_go_on(ft, ws):
    # 500 lines of 100 characters: more than a result may hold (the loop would cut lines out of
    # the middle, unsaid); the read ends at a whole line and points at the next one.
    (ws / "wide.txt").write_text("".join(f"{i:03d} " + "x" * 96 + "\n" for i in range(1, 501)))
    out = ft.read_file(path="wide.txt")
    assert len(out) <= files.READ_CHARS + 200
    first, *rows, footer = out.splitlines()
    shown = int(rows[-1].split("|")[0])
    assert first == f"wide.txt (lines 1-{shown} of 500)" and shown < 500
    assert footer == f"[{500 - shown} more lines; read_file with start_line={shown + 1} to continue]"
    assert len(rows) == shown  # every line up to it, none cut


def test_read_file_keeps_undecodable_bytes_through_an_edit(ft, ws):
    (ws / "latin.txt").write_bytes(b"caf\xe9 au lait\nsecond\n")
    ft.edit_file(path="latin.txt", old="second", new="2nd")
    assert (ws / "latin.txt").read_bytes() == b"caf\xe9 au lait\n2nd\n"


# -- write ---------------------------------------------------------------------


def test_write_file_is_atomic_and_creates_parents(ft, ws):
    out = ft.write_file(path="deep/er/new.md", content="# Title\nbody\n")
    assert out.startswith("Created deep/er/new.md")
    assert (ws / "deep" / "er" / "new.md").read_text() == "# Title\nbody\n"
    os.chmod(ws / "notes.txt", 0o640)
    assert ft.write_file(path="notes.txt", content="replaced\n").startswith("Overwrote notes.txt")
    assert (ws / "notes.txt").read_text() == "replaced\n"
    assert stat.S_IMODE(os.stat(ws / "notes.txt").st_mode) == 0o640  # mode kept
    leftovers = [p for p in ws.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_failed_write_leaves_the_old_content_and_no_temp_file(ft, ws, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", boom)
    # the model is told what failed, not the name of a temporary file it never asked for
    assert (
        refused(ft.write_file, path="notes.txt", content="half-written")
        == "Cannot write 'notes.txt': disk full."
    )
    assert (ws / "notes.txt").read_text() == "alpha\nbeta\ngamma\n"
    assert sorted(p.name for p in ws.iterdir()) == ["notes.txt", "src"]
    monkeypatch.setattr(files.os, "mkdir", boom)
    assert (
        refused(ft.write_file, path="new/a.txt", content="x")
        == "Cannot create the folder for 'new/a.txt': disk full."
    )


def test_write_size_limit(ws):
    small = FileTools(ws, max_write_bytes=5)
    assert "5-byte limit" in refused(small.write_file, path="x.txt", content="123456")


def test_a_file_too_long_to_read_whole_can_still_be_edited_up_to_the_write_limit(ws):
    tools = FileTools(ws, max_read_bytes=100, max_write_bytes=1000)
    tools.write_file(path="big.txt", content="line\n" * 100 + "the end\n")  # 508 bytes
    assert "read in parts" in tools.read_file(path="big.txt")  # over the read limit: shown in parts
    assert "Edited" in tools.edit_file(path="big.txt", old="the end", new="THE END")
    assert (ws / "big.txt").read_text().endswith("THE END\n")
    tools.write_file(path="big.txt", content="x" * 1000)
    (ws / "big.txt").write_text("x" * 1001)  # over what write_file would write: refused, said so
    assert "1,001 bytes, over the 1,000-byte limit" in refused(
        tools.edit_file, path="big.txt", old="x", new="y"
    )


# -- edit ----------------------------------------------------------------------


def test_edit_file_unique_missing_and_multiple(ft, ws):
    out = ft.edit_file(path="src/app.py", old="print('hello')", new="print('bye')")
    assert out == "Edited src/app.py: replaced 1 occurrence; the new text is at line 2."
    assert "print('bye')" in (ws / "src" / "app.py").read_text()
    msg = refused(ft.edit_file, path="src/app.py", old="print('nope')", new="x")
    assert "not found" in msg
    (ws / "dup.txt").write_text("x = 1\nx = 1\nx = 1\n")
    msg = refused(ft.edit_file, path="dup.txt", old="x = 1", new="x = 2")
    assert "occurs 3 times" in msg and "exactly once" in msg
    assert (ws / "dup.txt").read_text() == "x = 1\nx = 1\nx = 1\n"
    assert "empty" in refused(ft.edit_file, path="dup.txt", old="", new="y")
    for folder in ("newdir/", "src/.", "."):  # a folder's name is no file to write
        assert "names a folder, not a file" in refused(ft.write_file, path=folder, content="x")
    assert not (ws / "newdir").exists() and (ws / "src").is_dir()
    (ws / "run.txt").write_text("aaa\n")
    assert "occurs 2 times" in refused(
        ft.edit_file, path="run.txt", old="aa", new="b"
    )  # overlapping: ambiguous


def test_edit_file_keeps_line_endings_and_says_where_the_change_is(ft, ws):
    (ws / "crlf.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    out = ft.edit_file(path="crlf.txt", old="two", new="two\nTWO-B")  # one line becomes two
    assert (ws / "crlf.txt").read_bytes() == b"one\r\ntwo\r\nTWO-B\r\nthree\r\n"
    assert out.endswith("the new text is at lines 2-3.")
    (ws / "lines.txt").write_text("l1\nl2\nl3\nl4\n")
    assert ft.edit_file(path="lines.txt", old="\nl3", new="\nL3").endswith("the new text is at line 3.")
    assert ft.edit_file(path="lines.txt", old="l2\n", new="").endswith(
        "removed the text (it began on line 2)."
    )
    assert (ws / "lines.txt").read_text() == "l1\nL3\nl4\n"


# -- list and search -------------------------------------------------------------


def test_list_files(ft, ws):
    (ws / ".git").mkdir()
    (ws / ".git" / "HEAD").write_text("ref")
    top = ft.list_files()
    assert "notes.txt  17 B" in top and "src/" in top and "src/app.py" not in top
    deep = ft.list_files(recursive=True)
    assert "src/app.py" in deep and ".git/HEAD" not in deep and "not descended into: .git" in deep
    assert ft.list_files(recursive=True, pattern="*.py").splitlines()[1:2] == ["src/app.py  44 B"]
    assert "not a directory" in refused(ft.list_files, path="notes.txt")


def test_list_files_is_capped(ft, ws, monkeypatch):
    monkeypatch.setattr(files, "MAX_LIST_ENTRIES", 3)
    for i in range(6):
        (ws / f"f{i}.txt").write_text("x")
    out = ft.list_files()
    assert "5 more entries not shown" in out  # 8 entries, 3 shown


def test_search_files(ft, ws, monkeypatch):
    assert ft.search_files(pattern="beta") == "notes.txt:2: beta"
    assert ft.search_files(pattern="BETA").startswith("No matches")
    assert ft.search_files(pattern="BETA", ignore_case=True) == "notes.txt:2: beta"
    assert ft.search_files(pattern=r"^\s+return \d", regex=True) == "src/app.py:3: return 0"
    assert ft.search_files(pattern="a", glob="*.py", path="src").splitlines()[0].startswith("src/app.py:1:")
    assert ft.search_files(pattern="gamma", path="notes.txt") == "notes.txt:3: gamma"
    assert ft.search_files(pattern="main", glob="src/*.py").startswith("src/app.py:1:")  # a glob with a path
    # `**/` is any folders, none included: the top of the workspace too
    assert ft.search_files(pattern="beta", glob="**/*.txt") == "notes.txt:2: beta"
    assert ft.search_files(pattern="main", glob="**/src/**/*.py").startswith("src/app.py:1:")
    assert ft.search_files(pattern="main", glob="src/**/app.py").startswith("src/app.py:1:")
    (ws / "pkg" / "tests").mkdir(parents=True)
    (ws / "pkg" / "tests" / "t.py").write_text("main = 1\n")
    assert "pkg/tests/t.py:1:" in ft.search_files(pattern="main", glob="**/tests/**/*.py")  # each **/ alike
    listed = ft.list_files(pattern="**/*.py", recursive=True) + ft.list_files(
        pattern="**/*.txt", recursive=True
    )
    assert "app.py" in listed and "notes.txt" in listed
    assert ft.search_files(pattern="nowhere") == "No matches for 'nowhere' in the workspace."
    assert "Invalid regular expression" in refused(ft.search_files, pattern="(", regex=True)
    monkeypatch.setattr(files, "MAX_SEARCH_MATCHES", 2)
    out = ft.search_files(pattern="a")
    assert len([line for line in out.splitlines() if ":" in line and not line.startswith("[")]) == 2
    assert "more matches not shown" in out


# -- factory, effects, approval, workspace from the run ----------------------------


def test_effects_and_approval_option(ws):
    tools = {t.name: t for t in make_tools(workspace=ws, needs_approval_for_writes=True, unknown_option=1)}
    assert set(tools) == {"read_file", "write_file", "edit_file", "list_files", "search_files"}
    assert tools["write_file"].effects == {"writes"} and tools["edit_file"].effects == {"writes"}
    assert tools["write_file"].needs_approval and tools["edit_file"].needs_approval
    for name in ("read_file", "list_files", "search_files"):
        assert tools[name].effects == {"reads"} and tools[name].read_only and not tools[name].needs_approval
    plain = {t.name: t for t in make_tools(workspace=ws)}
    assert not plain["write_file"].needs_approval
    assert isinstance(FileTools(Workspace(ws)).workspace, Workspace)


def test_writes_wait_for_approval(ws, run_dir):
    llm = ScriptedLLM([call("write_file", path="new.txt", content="hi"), "done"])
    agent = Agent(
        llm,
        tools=make_tools(workspace=ws, needs_approval_for_writes=True),
        run_dir=run_dir,
        approver=lambda request: False,
    )
    result = agent.run_sync("write a file")
    refused_result = next(e for e in result.events if e.type == "tool_result")
    assert refused_result.error_kind == "refused"
    assert not (ws / "new.txt").exists()


def test_registry_and_workspace_from_the_run(ws, run_dir):
    assert [t.name for t in builtin_tools(["files"], workspace=ws)][0] == "read_file"
    llm = ScriptedLLM([call("write_file", path="out/result.txt", content="42\n"), "written"])
    result = Agent(llm, tools=["files"], workspace=ws, run_dir=run_dir).run_sync("save 42")
    assert result.ok
    assert (ws / "out" / "result.txt").read_text() == "42\n"


def test_agent_escape_attempt_gets_an_error_then_succeeds(ws, run_dir):
    llm = ScriptedLLM(
        [
            call("read_file", path="../outside/secret.txt"),
            call("read_file", path="notes.txt"),
            "The second line is beta.",
        ]
    )
    # guards=None: this checks the tool's own confinement (the default guards would block the escape first)
    result = Agent(llm, tools=make_tools(workspace=ws), run_dir=run_dir, guards=None).run_sync(
        "What is on line 2?"
    )
    assert result.status == "completed" and result.answer == "The second line is beta."
    first, second = [e for e in result.events if e.type == "tool_result"]
    assert first.is_error and first.error_kind == "exception"
    assert "escapes the workspace" in first.content and "TOP SECRET" not in first.content
    assert not second.is_error and "2| beta" in second.content
    # the model saw the refusal as an observation before its next step
    seen = llm.requests[1].messages[-1]
    assert seen.role == "tool" and "escapes the workspace" in seen.content


def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_followed(ws, tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "s.txt").write_text("HOST SECRET\n")
    (ws / "d").mkdir()
    (ws / "d" / "s.txt").write_text("harmless\n")
    workspace = Workspace(ws)
    checked = workspace.resolve

    def check_then_swap(path, **kwargs):  # the race, made certain: the swap lands right after the check
        if (ws / "d").is_symlink():  # the real folder is back for each check
            os.unlink(ws / "d")
            os.rename(ws / "d.moved", ws / "d")
        real = checked(path, **kwargs)
        os.rename(ws / "d", ws / "d.moved")
        os.symlink(outside, ws / "d")
        return real

    monkeypatch.setattr(workspace, "resolve", check_then_swap)
    with pytest.raises(ToolError, match="changed while it was being used"):
        workspace.read_text("d/s.txt")
    with pytest.raises(ToolError, match="changed while it was being used"):
        workspace.write_text("d/pwn.txt", "written")
    assert sorted(p.name for p in outside.iterdir()) == ["s.txt"]
    tools = FileTools(workspace)
    with pytest.raises(ToolError, match="changed while it was being used"):  # not even the names
        tools.list_files(path="d")


def test_new_files_get_the_mode_any_new_file_gets(ws, ft):
    ft.write_file(path="made_by_tool.txt", content="x")
    with open(ws / "made_by_open.txt", "w") as f:
        f.write("x")
    assert stat.S_IMODE(os.stat(ws / "made_by_tool.txt").st_mode) == stat.S_IMODE(
        os.stat(ws / "made_by_open.txt").st_mode
    )
    os.chmod(ws / "made_by_tool.txt", 0o640)
    ft.write_file(path="made_by_tool.txt", content="y")  # an existing file keeps its mode
    assert stat.S_IMODE(os.stat(ws / "made_by_tool.txt").st_mode) == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")
def test_an_edit_keeps_the_files_owner_and_acl(ws, ft):
    path = ws / "theirs.txt"
    path.write_text("hello\n")
    os.chown(path, 1000, 1000)
    os.chmod(path, 0o640)
    try:  # a named user's entry, as the sandbox gives its kernel user: u::rw-, u:65534:rw-, g::r--, m::rw-, o::---
        entries = [
            (1, 6, 0xFFFFFFFF),
            (2, 6, 65534),
            (4, 4, 0xFFFFFFFF),
            (16, 6, 0xFFFFFFFF),
            (32, 0, 0xFFFFFFFF),
        ]
        acl = (2).to_bytes(4, "little") + b"".join(
            t.to_bytes(2, "little") + p.to_bytes(2, "little") + i.to_bytes(4, "little") for t, p, i in entries
        )
        os.setxattr(path, "system.posix_acl_access", acl)
    except OSError:
        acl = None  # no ACLs on this filesystem: the owner and mode are still checked
    before = os.stat(path)
    assert "Edited" in ft.edit_file(path="theirs.txt", old="hello", new="bye")
    after = os.stat(path)
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    if acl is not None:
        assert os.getxattr(path, "system.posix_acl_access") == acl


def test_edit_file_matches_lines_of_a_crlf_file_as_read_file_shows_them(ws, ft):
    (ws / "win.py").write_bytes(b"def a():\r\n    return 1\r\n\r\nprint(a())\r\n")
    out = ft.edit_file(path="win.py", old="def a():\n    return 1", new="def a():\n    return 2")
    assert "lines 1-2" in out
    assert (ws / "win.py").read_bytes() == b"def a():\r\n    return 2\r\n\r\nprint(a())\r\n"


def test_every_files_tool_numbers_lines_alike(ws, ft):
    (ws / "ff.py").write_text("a = 1\n\x0c\nb = 2\nc = 3\u2028d = 4\ne = 5\n")  # a form feed, a U+2028
    assert "ff.py:5: e = 5" in ft.search_files(pattern="e = 5")
    assert "\n5| e = 5" in ft.read_file(path="ff.py")
    assert "at line 5." in ft.edit_file(path="ff.py", old="e = 5", new="e = 6")
    (ws / "win.txt").write_bytes(b"one\r\ntwo\r\n")
    assert ft.read_file(path="win.txt").splitlines()[1:] == ["1| one", "2| two"]


def test_a_missing_workspace_is_made_and_a_file_in_its_place_refused(tmp_path):
    tools = FileTools(
        tmp_path / "new" / "work"
    )  # as Agent(tools=["files"], workspace="work") in a fresh folder
    assert "Created notes.txt" in tools.write_file(path="notes.txt", content="hi\n")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        FileTools(tmp_path / "a_file")


def test_a_pattern_that_backtracks_without_end_is_stopped_and_the_process_keeps_going(ft, ws, monkeypatch):
    import threading
    import time

    monkeypatch.setattr(files, "REGEX_BUDGET", 0.5)
    (ws / "log.txt").write_text("a" * 60 + "!\n")
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:  # another thread, as the event loop is: it must keep running during the match
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.05)

    ticker = threading.Thread(target=tick)
    ticker.start()
    started = time.monotonic()
    try:
        message = refused(ft.search_files, pattern="(a|aa)+$", regex=True)
    finally:
        stop.set()
        ticker.join()
    assert "took over 0.5 s to match and was stopped" in message
    # the other thread ran while the pattern was matched (no bound on elapsed time: no timed assertion)
    assert len([t for t in ticks if t > started]) >= 3
    assert ft.search_files(pattern="a+!", regex=True).startswith("log.txt:1:")  # a sane pattern still works


def test_names_and_text_that_are_not_utf8_can_be_given_back_as_the_model_saw_them(ws, run_dir):
    (ws / "latin.txt").write_bytes(b"caf\xe9 au lait\n")
    os.close(os.open(os.fsencode(ws) + b"/bad\xffname.txt", os.O_CREAT | os.O_WRONLY, 0o644))
    llm = ScriptedLLM(
        [
            call("read_file", path="latin.txt"),
            call("list_files"),
            call("edit_file", path="latin.txt", old="caf\\xe9 au lait", new="caf\\xe9 noir"),
            call("read_file", path="bad\\xffname.txt"),
            call("edit_file", path="latin.txt", old="caf\u00e9", new="x"),  # the character, not the byte
            "done",
        ]
    )
    result = Agent(llm, tools=make_tools(workspace=ws), run_dir=run_dir, guards=None).run_sync("edit")
    seen = [e.content for e in result.events if e.type == "tool_result"]
    assert "caf\\xe9 au lait" in seen[0] and "bad\\xffname.txt" in seen[1]  # how the model is shown them
    assert seen[2].startswith("Edited latin.txt") and (ws / "latin.txt").read_bytes() == b"caf\xe9 noir\n"
    assert "the file is empty" in seen[3]
    assert "The file is not UTF-8: write its other bytes as they were shown, such as \\xe9." in seen[4]


def test_second_review_edge_cases_of_edits_searches_and_large_files(ws, monkeypatch):
    ft = FileTools(ws)
    crlf = ws / "crlf.txt"
    crlf.write_bytes(b"one\r\ntwo\r\nthree\r\n")
    ft.edit_file(path="crlf.txt", old="\nthree", new="\nTHREE")  # old starts inside a CRLF: no \r\r\n
    assert crlf.read_bytes() == b"one\r\ntwo\r\nTHREE\r\n"
    mixed = ws / "mixed.txt"
    mixed.write_bytes(b"a\nb\nc\nd\ne\r\nf\r\n")  # mostly LF, with CRLF lines at the end
    ft.edit_file(path="mixed.txt", old="e\nf", new="E\nF")
    assert mixed.read_bytes() == b"a\nb\nc\nd\nE\r\nF\r\n"
    # plain text is found with string operations: the regex budget is no limit on reading files
    monkeypatch.setattr(files, "REGEX_BUDGET", 1e-9)
    assert ft.search_files(pattern="gamma") == "notes.txt:3: gamma"
    assert "was stopped" in refused(ft.search_files, pattern="gam+a", regex=True)
    # a large file: a line with no end is read in part, and no call returns the whole file
    (ws / "one-line.log").write_bytes(b"x" * 3_000_000)
    out = ft.read_file(path="one-line.log")
    assert out.splitlines()[1].startswith("1| xxx") and len(out) < 10_000
    (ws / "many.log").write_text("".join(f"row {n}\n" for n in range(1, 400_001)))
    part = ft.read_file(path="many.log", start_line=1, end_line=10**9)
    assert len(part.splitlines()) == 502 and "start_line=501 to continue" in part
    # bytes that are not UTF-8, as the model writes them: a new file in such a folder, new text, a search
    os.mkdir(os.fsencode(ws) + b"/bad\xffdir")
    ft.write_file(path="bad\\xffdir/new.txt", content="hello")
    assert os.path.exists(os.fsencode(ws) + b"/bad\xffdir/new.txt") and not (ws / "bad\\xffdir").exists()
    (ws / "latin.txt").write_bytes(b"caf\xe9\nfoo\n")
    ft.edit_file(path="latin.txt", old="foo", new="caf\\xe9 again")
    assert (ws / "latin.txt").read_bytes() == b"caf\xe9\ncaf\xe9 again\n"
    assert ft.search_files(pattern="caf\\xe9 again", glob="latin.txt").startswith("latin.txt:2:")


def test_edits_at_once_all_land_and_a_change_from_outside_is_not_overwritten(ws, ft, monkeypatch):
    import threading

    n = 30
    (ws / "f.txt").write_text("".join(f"line{i}\n" for i in range(n)) + "x" * 500_000 + "\n")
    threads = [
        threading.Thread(
            target=ft.edit_file, kwargs={"path": "f.txt", "old": f"line{i}\n", "new": f"EDITED{i}\n"}
        )
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (ws / "f.txt").read_text().count("EDITED") == n  # of 50 such edits 9 had landed: each wrote over the others

    # another program (the python tool's code) writes the file while the edit is under way
    real_read = files.Workspace.read_text

    def read_then_changed(self, path, **kwargs):
        got = real_read(self, path, **kwargs)
        (ws / "notes.txt").write_text("alpha\nbeta\ngamma\nwritten meanwhile\n")
        return got

    monkeypatch.setattr(files.Workspace, "read_text", read_then_changed)
    assert "changed while it was being edited" in refused(
        ft.edit_file, path="notes.txt", old="beta", new="BETA"
    )
    assert (ws / "notes.txt").read_text().endswith("written meanwhile\n")
    monkeypatch.setattr(files.Workspace, "read_text", real_read)

    # ... or while the edited text is being written out, after the first check
    real_fsync = files.os.fsync

    def fsync_while_appended(fd):
        with open(ws / "notes.txt", "a") as f:
            f.write("appended meanwhile\n")
        monkeypatch.setattr(files.os, "fsync", real_fsync)
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync_while_appended)
    assert "changed while it was being edited" in refused(
        ft.edit_file, path="notes.txt", old="gamma", new="GAMMA"
    )
    assert (ws / "notes.txt").read_text().endswith("appended meanwhile\n")  # kept, not written over
    assert not [p for p in ws.iterdir() if p.name.endswith(".tmp")]  # and the edit's temporary file gone


def test_a_newline_in_a_name_is_listed_escaped_and_read_back(ws, ft):
    name = "real.txt  1 B\nsecrets.env  12.0 KB\nimportant.py"
    (ws / name).write_text("x\n")
    listing = ft.list_files()
    assert "real.txt  1 B\\x0asecrets.env  12.0 KB\\x0aimportant.py  2 B" in listing
    assert not any(line.startswith(("secrets.env", "important.py")) for line in listing.splitlines())
    assert ft.search_files(pattern="x", glob="real*").splitlines() == [
        "real.txt  1 B\\x0asecrets.env  12.0 KB\\x0aimportant.py:1: x"
    ]
    shown = "real.txt  1 B\\x0asecrets.env  12.0 KB\\x0aimportant.py"
    assert ft.read_file(path=shown).startswith(shown + " (lines 1-1 of 1)")


@pytest.mark.parametrize(
    "tool, args",
    [
        ("write_file", {"path": "n.txt", "content": "caf\ud800e"}),  # JSON's "\ud800", as the model may send
        ("read_file", {"path": "\ud800"}),
        ("write_file", {"path": "x\ud800.txt", "content": "x"}),
        ("edit_file", {"path": "notes.txt", "old": "beta", "new": "b\udbffeta"}),
    ],
)
def test_a_lone_surrogate_is_a_tool_error(ws, ft, tool, args):
    assert "lone UTF-16 surrogate" in refused(getattr(ft, tool), **args)
    assert (ws / "notes.txt").read_text() == "alpha\nbeta\ngamma\n"


def test_a_tree_thousands_of_folders_deep_is_listed_and_searched_to_a_depth(ws, ft):
    os.mkdir(ws / "deep")
    fd = os.open(ws / "deep", os.O_RDONLY)
    try:
        for _ in range(1500):  # fwalk recursed (RecursionError), a descriptor a level
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(fd)
        fd = -1
        out = ft.list_files(path="deep", recursive=True)
        assert out.startswith(f"deep: {files.MAX_WALK_DEPTH} entries")
        assert f"[not descended below {files.MAX_WALK_DEPTH} levels of folders, at deep/d/d/" in out
        assert "not descended below" in ft.search_files(pattern="zzz", path="deep")
    finally:  # shutil.rmtree (pytest's clean-up) recurses as fwalk did: take the tree down from below
        if fd >= 0:
            os.close(fd)
        depth, folder = 0, ws / "deep"
        while (folder / "d").is_dir():
            folder, depth = folder / "d", depth + 1
        for level in range(depth, -1, -1):  # at most 3,000 characters of path: within PATH_MAX
            os.rmdir(ws / "deep" / "/".join(["d"] * level))


def test_a_file_that_is_not_utf8_shows_bytes_and_backslashes_apart_and_takes_them_back(ws, run_dir):
    (ws / "l.txt").write_bytes(b"caf\xe9 and the text \\xe9\n")
    llm = ScriptedLLM(
        [
            call("read_file", path="l.txt"),
            call("search_files", pattern="the text"),
            # written back whole, as read_file showed it: \xe9 the byte, \\xe9 the four characters
            call("write_file", path="l.txt", content="caf\\xe9 and the text \\\\xe9\nmore\n"),
            call("edit_file", path="l.txt", old="more", new="\\xe8 and \\\\xe8"),
            call("write_file", path="new.py", content="print('\\xe9')\n"),  # a new file: as written
            "done",
        ]
    )
    result = Agent(llm, tools=make_tools(workspace=ws), run_dir=run_dir, guards=None).run_sync("edit")
    read, found, *_ = [e.content for e in result.events if e.type == "tool_result"]
    assert "not UTF-8: its other bytes are shown as \\xe9, the text \\xe9 as \\\\xe9" in read
    assert "1| caf\\xe9 and the text \\\\xe9" in read  # were alike: "caf\xe9 and the text \xe9"
    assert found == "l.txt:1: caf\\xe9 and the text \\\\xe9"
    assert (ws / "l.txt").read_bytes() == b"caf\xe9 and the text \\xe9\n\xe8 and \\xe8\n"
    assert (ws / "new.py").read_bytes() == b"print('\\xe9')\n"
