"""The research example, offline: local documents, a page served on loopback, memory."""

import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from test_examples import load

from agent.llm import ScriptedLLM
from agent.testing import call
from memory.embedders import HashingEmbedder


def test_research_agent_searches_reads_cites_and_remembers(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "runlog.md").write_text("# Run log\n\nEvery run writes its events as JSON lines.\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "runlog.html").write_text(
        "<html><head><title>Run log</title></head><body><h1>Run log</h1>"
        "<p>Each event is one JSON line.</p><p>The log is flushed after every event.</p></body></html>"
    )
    handler = lambda *a, **kw: SimpleHTTPRequestHandler(*a, directory=str(site), **kw)  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/runlog.html"
    example = load("research_agent")
    llm = ScriptedLLM(
        [
            "1. search\n2. read\n3. save\n4. answer",
            call("web_search", query="run log events"),
            call("open_url", url=url),
            call("find_in_page", pattern="flushed"),
            call("memory_save", text="The run log is flushed after every event."),
            "The log is flushed after every event (runlog.html L4).",
        ]
    )
    try:
        agent = example.make_agent(
            llm,
            docs_dir=str(docs),
            memory_path=str(tmp_path / "notes.db"),
            web_options={"allow_private": True, "cache_dir": str(tmp_path / "cache")},
            embedder=HashingEmbedder(),
            run_dir=tmp_path / "runs",
            replan_every=0,
            guards=None,  # the default network policy refuses loopback, where the test's page is served
        )
        result = agent.run_sync("Is the run log flushed after every event?")
    finally:
        server.shutdown()
    assert result.ok, result.error
    outputs = {e.name: e for e in result.events if e.type == "tool_result"}
    assert all(not o.is_error for o in outputs.values()), {k: v.content for k, v in outputs.items()}
    assert "runlog.md" in outputs["web_search"].content
    assert "flushed after every event" in outputs["open_url"].content
    assert "L" in outputs["find_in_page"].content and "flushed" in outputs["find_in_page"].content
    assert agent.memory.count() == 1
