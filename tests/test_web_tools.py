"""Web tools against a real HTTP server on 127.0.0.1; nothing here reaches the internet."""

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import call

from agent import Agent, ToolError
from agent.builtins import builtin_tools
from agent.llm import ScriptedLLM
from tools.web import (
    BM25,
    DDGSBackend,
    LocalDocsBackend,
    RateLimiter,
    RateLimitError,
    SearchError,
    SearchResult,
    SearxngBackend,
    WebSearch,
    WebTools,
    blocked_reason,
    html_to_lines,
    make_tools,
    system_resolver,
)

PARAGRAPHS = 120
MAGIC_AT = 100  # the paragraph that holds the magic word


def page_html() -> str:
    paras = "\n".join(
        f"<p>Paragraph number {i}.{' The magic word is xyzzy.' if i == MAGIC_AT else ''}</p>"
        for i in range(1, PARAGRAPHS + 1)
    )
    return f"""<!doctype html>
<html><head><title>Test  Page</title>
<style>body {{ color: red }}</style>
<script>var hidden = "SCRIPTTEXT";</script></head>
<body>
<nav><a href="/">NAVTEXT home</a></nav>
<h1>Welcome</h1>
<p>Start here: see the <a href="/other.html">other page</a> for more.</p>
<ul><li>first item</li><li>second item</li></ul>
{paras}
</body></html>"""


class Handler(BaseHTTPRequestHandler):
    server: "LocalServer"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str | None, headers: dict | None = None):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):  # noqa: C901
        url = urlsplit(self.path)
        path = url.path
        with self.server.lock:
            self.server.hits[path] += 1
            self.server.hosts.append(self.headers.get("Host"))
        port = self.server.server_address[1]
        if path == "/page.html":
            self._send(200, page_html().encode(), "text/html; charset=utf-8")
        elif path == "/other.html":
            self._send(200, b"<html><title>Other</title><p>The other page.</p></html>", "text/html")
        elif path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])
            target = "/page.html" if n <= 1 else f"/redirect/{n - 1}"
            self._send(302, b"", None, {"Location": target})
        elif path == "/loop":
            self._send(302, b"", None, {"Location": "/loop"})
        elif path == "/to-localhost":
            self._send(302, b"", None, {"Location": f"http://localhost:{port}/page.html"})
        elif path == "/big":
            self._send(200, b"x" * 1000, "text/plain", {"Content-Length": "3000000"})
        elif path == "/big-stream":  # no Content-Length: the size is only known while reading
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            try:
                for _ in range(50):
                    self.wfile.write(b"y" * 4096)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/image.png":
            self._send(200, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png")
        elif path == "/mislabeled.txt":
            self._send(200, b"looks like text\x00\x01\x02 but is not", "text/plain")
        elif path == "/data.json":
            self._send(200, json.dumps({"name": "widget", "tags": ["a", "b"]}).encode(), "application/json")
        elif path == "/notes.md":
            self._send(200, b"# Release notes\n\n- fixed the parser\n- added find\n", "text/markdown")
        elif path == "/utf16.txt":
            self._send(200, "Grüße aus Köln".encode("utf-16"), "text/plain; charset=utf-16")
        elif path == "/legacy.html":  # no charset anywhere, and not UTF-8
            self._send(200, "<html><title>Menu</title><p>Café naïve</p></html>".encode("cp1252"), "text/html")
        elif path == "/feed.xml":
            body = '<?xml version="1.0" encoding="ISO-8859-1"?><note>Straße</note>'.encode("latin-1")
            self._send(200, body, "application/xml")
        elif path == "/bom.txt":
            self._send(200, "\ufeffBOM text".encode(), "text/plain")
        elif path == "/host":
            self._send(200, f"Host: {self.headers.get('Host')}".encode(), "text/plain")
        elif path == "/search":
            query = parse_qs(url.query)
            q = query.get("q", [""])[0]
            with self.server.lock:
                self.server.queries.append((q, query.get("format", [""])[0]))
            if q == "limited":
                self._send(429, b"slow down", "text/plain", {"Retry-After": "7"})
                return
            results = [
                {"title": f"Result one for {q}", "url": "https://one.example/", "content": "first snippet"},
                {"title": "Result two", "url": "https://two.example/", "content": "second snippet"},
                {"title": "no url, skipped"},
                {"title": "Result three", "url": "https://three.example/", "content": ""},
            ]
            body = json.dumps({"query": q, "number_of_results": 3, "results": results}).encode()
            self._send(200, body, "application/json")
        else:
            self._send(404, b"not found", "text/plain")


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: Counter[str] = Counter()
        self.hosts: list[str | None] = []
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server():
    srv = LocalServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def web(tmp_path):
    return WebTools(search_backends=[FakeBackend("unused")], allow_private=True, cache_dir=tmp_path / "cache")


def refused(fn, **kwargs) -> str:
    with pytest.raises(ToolError) as info:
        fn(**kwargs)
    return str(info.value)


class FakeBackend:
    """A scripted SearchBackend: each call pops the next item (a result list or an exception)."""

    def __init__(self, name, script=None, *, min_interval=0.0, log=None):
        self.name = name
        self.min_interval = min_interval
        self.script = list(script or [])
        self.calls: list[str] = []
        self.log = log

    def search(self, query, max_results):
        self.calls.append(query)
        if self.log is not None:
            self.log.append(f"{self.name}:{query}")
        item = self.script.pop(0) if len(self.script) > 1 else (self.script[0] if self.script else [])
        if isinstance(item, Exception):
            raise item
        return item


# -- address checks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{port}/page.html", "loopback"),
        ("http://localhost:{port}/page.html", "loopback"),
        ("http://[::1]:{port}/page.html", "loopback"),
        ("http://[::ffff:127.0.0.1]:{port}/", "loopback"),
        ("http://2130706433:{port}/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.1/admin", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0:{port}/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://100.64.0.1/", "non-public"),
    ],
)
def test_private_addresses_are_refused_before_connecting(server, url, reason):
    tools = WebTools(search_backends=[FakeBackend("x")], cache=False)
    msg = refused(tools.open_url, url=url.format(port=server.server_address[1]))
    assert msg.startswith("Refused:") and f"a {reason} address" in msg and "public" in msg
    assert sum(server.hits.values()) == 0


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x", "javascript:alert(1)", "data:text/plain,hi"]
)
def test_only_http_and_https(url):
    tools = WebTools(search_backends=[FakeBackend("x")], cache=False, allow_private=True)
    assert "only http and https" in refused(tools.open_url, url=url)


def test_blocked_reason_allows_public_addresses():
    import ipaddress

    assert blocked_reason(ipaddress.ip_address("93.184.216.34")) is None
    assert blocked_reason(ipaddress.ip_address("2606:4700::1111")) is None


def test_hostname_is_resolved_and_the_request_pinned_to_the_checked_address(server):
    port = server.server_address[1]

    def resolver(host, port_):
        return ["127.0.0.1"] if host == "docs.test" else system_resolver(host, port_)

    strict = WebTools(search_backends=[FakeBackend("x")], cache=False, resolver=resolver)
    msg = refused(strict.open_url, url=f"http://docs.test:{port}/host")
    assert "'docs.test' resolves to 127.0.0.1, a loopback address" in msg
    assert sum(server.hits.values()) == 0
    lenient = WebTools(search_backends=[FakeBackend("x")], cache=False, resolver=resolver, allow_private=True)
    out = lenient.open_url(url=f"http://docs.test:{port}/host")
    # it connected to 127.0.0.1 but kept the name the URL gave
    assert f"L1: Host: docs.test:{port}" in out and f"URL: http://docs.test:{port}/host" in out


def test_every_redirect_hop_is_checked(server):
    # 127.0.0.1 is explicitly allowed; the redirect to `localhost` is a new host and is checked again.
    tools = WebTools(search_backends=[FakeBackend("x")], cache=False, allowed_hosts=["127.0.0.1"])
    assert "Title: Test Page" in tools.open_url(url=f"{server.base}/page.html")
    msg = refused(tools.open_url, url=f"{server.base}/to-localhost")
    assert "localhost" in msg and "loopback" in msg
    assert server.hits["/to-localhost"] == 1 and server.hits["/page.html"] == 1


# -- fetching and reading pages ------------------------------------------------------


def test_open_url_shows_a_numbered_window(server, web):
    out = web.open_url(url=f"{server.base}/page.html")
    lines = out.splitlines()
    assert lines[0] == "Title: Test Page"
    assert lines[1] == f"URL: {server.base}/page.html"
    total = len(web.page.lines)
    assert lines[2] == f"Lines 1-80 of {total}; open_url with start_line=81 for more"
    body = lines[4:]
    assert len(body) == 80 and body[0] == "L1: # Welcome"
    assert body[1] == f"L2: Start here: see the [other page]({server.base}/other.html) for more."
    assert body[2:4] == ["L3: - first item", "L4: - second item"]
    assert body[4] == "L5: Paragraph number 1."
    for dropped in ("SCRIPTTEXT", "NAVTEXT", "color: red"):
        assert dropped not in out


def test_scrolling_reuses_the_page(server, web):
    web.open_url(url=f"{server.base}/page.html")
    total = len(web.page.lines)
    out = web.open_url(start_line=81)
    assert f"Lines 81-{total} of {total}; end of page" in out
    assert "L81: Paragraph number 77." in out and "L80:" not in out
    again = web.open_url(url=f"{server.base}/page.html", start_line=90)
    assert "L90: Paragraph number 86." in again
    assert server.hits["/page.html"] == 1  # scrolling did not fetch again
    web.open_url(reload=True)  # ... and reload does, for a page that may have changed
    assert server.hits["/page.html"] == 2 and [p.url for p in web.pages].count(f"{server.base}/page.html") == 1
    assert "past the end" in refused(web.open_url, start_line=total + 1)


def test_find_in_page_gives_line_numbers(server, web):
    assert "No page is open" in refused(web.find_in_page, pattern="x")
    assert "No page is open" in refused(web.open_url)
    web.open_url(url=f"{server.base}/page.html")
    out = web.find_in_page(pattern="XYZZY")
    n = MAGIC_AT + 4
    assert out.splitlines()[0].startswith("1 matches for 'XYZZY' in Test Page")
    assert f"L{n}: Paragraph number {MAGIC_AT}. The magic word is xyzzy." in out
    assert f"    L{n - 1}: Paragraph number {MAGIC_AT - 1}." in out  # context
    assert "L12-L15" in out  # how to cite
    assert web.page.lines[n - 1].endswith("xyzzy.")
    window = web.open_url(start_line=n)
    assert window.splitlines()[4] == f"L{n}: Paragraph number {MAGIC_AT}. The magic word is xyzzy."
    assert "No matches" in web.find_in_page(pattern="nowhere to be found")
    assert web.find_in_page(pattern=r"number 1[01]\.$", regex=True).startswith("2 matches")
    # A match over many lines shows its ends and where it runs, not every line it spans.
    spanning = web.find_in_page(pattern=r"number 20\.[\s\S]*number 80\.", regex=True)
    lines = spanning.splitlines()
    assert lines[0].startswith("1 matches") and len(lines) < 15, spanning
    assert any(line.startswith("[... the match runs on to L") for line in lines)
    assert "Paragraph number 20." in spanning and "Paragraph number 80." in spanning
    assert "Paragraph number 50." not in spanning
    web.page.lines.append("a" * 60 + "!")
    import tools.web

    tools.web.REGEX_BUDGET = 0.3
    try:
        assert "was stopped" in refused(web.find_in_page, pattern="(a|aa)+$", regex=True)  # no freeze
    finally:
        tools.web.REGEX_BUDGET = 5.0


def test_page_stack_keeps_history(server, web):
    web.open_url(url=f"{server.base}/page.html")
    web.open_url(url=f"{server.base}/other.html")
    assert [p.title for p in web.pages] == ["Test Page", "Other"]
    assert "The other page" in web.find_in_page(pattern="other page")
    web.open_url(url=f"{server.base}/page.html")  # back to the first: from the stack, not the network
    assert [p.title for p in web.pages] == ["Other", "Test Page"]
    assert server.hits["/page.html"] == 1


def test_redirect_chain_and_limit(server, web):
    out = web.open_url(url=f"{server.base}/redirect/3")
    assert f"URL: {server.base}/page.html" in out and f"(redirected from {server.base}/redirect/3)" in out
    assert [server.hits[f"/redirect/{i}"] for i in (3, 2, 1)] == [1, 1, 1]
    msg = refused(web.open_url, url=f"{server.base}/loop")
    assert "Too many redirects (more than 5)" in msg
    assert server.hits["/loop"] == 6


def test_size_cap(server, tmp_path):
    tools = WebTools(
        search_backends=[FakeBackend("x")], cache=False, allow_private=True, max_page_bytes=50_000
    )
    assert "3,000,000 bytes, over the 50,000-byte page limit" in refused(
        tools.open_url, url=f"{server.base}/big"
    )
    assert "larger than the 50,000-byte page limit" in refused(
        tools.open_url, url=f"{server.base}/big-stream"
    )


def test_binaries_are_refused(server, web):
    msg = refused(web.open_url, url=f"{server.base}/image.png")
    assert "image/png content" in msg and "cannot show" in msg
    assert "binary content" in refused(web.open_url, url=f"{server.base}/mislabeled.txt")
    assert "HTTP 404" in refused(web.open_url, url=f"{server.base}/missing")


def test_json_and_markdown(server, web):
    out = web.open_url(url=f"{server.base}/data.json")
    assert 'L2:   "name": "widget",' in out and "Title: data.json" in out
    md = web.open_url(url=f"{server.base}/notes.md")
    assert "Title: Release notes" in md and "L3: - fixed the parser" in md


def test_html_extraction_details():
    title, lines = html_to_lines(
        "<title>T</title><h2>Sub</h2><ol><li>a</li><li>b <a href='x.html'>link</a></li></ol>"
        "<a href='javascript:void(0)'>js</a><pre>  keep\n    indent</pre><table><tr><td>1</td><td>2</td></tr></table>",
        "http://h.example/dir/",
    )
    assert title == "T"
    assert lines == [
        "## Sub",
        "1. a",
        "2. b [link](http://h.example/dir/x.html)",
        "js",
        "  keep",
        "    indent",
        "1 | 2",
    ]


# -- search --------------------------------------------------------------------


def test_searxng_backend_on_the_local_server(server):
    backend = SearxngBackend(server.base)
    results = backend.search("python asyncio", 2)
    assert results == [
        SearchResult(
            title="Result one for python asyncio", url="https://one.example/", snippet="first snippet"
        ),
        SearchResult(title="Result two", url="https://two.example/", snippet="second snippet"),
    ]
    assert server.queries == [("python asyncio", "json")]
    with pytest.raises(RateLimitError) as info:
        backend.search("limited", 5)
    assert info.value.retry_after == 7.0
    with pytest.raises(SearchError, match="could not reach"):
        SearxngBackend("http://127.0.0.1:9", timeout=2).search("x", 1)


def test_web_search_tool_output_and_cache(server, tmp_path):
    tools = WebTools(search_backends=[SearxngBackend(server.base)], cache_dir=tmp_path)
    first = tools.web_search(query="  local   search ", max_results=3)
    assert first.splitlines()[0] == "Results for 'local search' (from searxng):"
    assert "1. Result one for local search\n   https://one.example/\n   first snippet" in first
    assert "3. Result three" in first
    second = tools.web_search(query="local search", max_results=3)
    assert "(from searxng, cached)" in second
    assert server.hits["/search"] == 1  # the second call did not reach the server
    fresh = WebTools(search_backends=[SearxngBackend(server.base)], cache_dir=tmp_path)
    assert "cached" in fresh.web_search(query="local search", max_results=3)  # the cache is on disk
    assert server.hits["/search"] == 1
    fresh.web_search(query="local search", max_results=2)  # a different key
    assert server.hits["/search"] == 2
    assert (tmp_path / "web_search.sqlite").exists()


def test_fallback_after_backoff_on_rate_limits(server):
    log: list = []
    limited = FakeBackend("flaky", [RateLimitError("rate limited")], log=log)
    tools = WebTools(
        search_backends=[limited, SearxngBackend(server.base)],
        cache=False,
        retries=2,
        backoff=1.0,
        sleep=lambda s: log.append(("sleep", s)),
    )
    out = tools.web_search(query="q")
    assert "(from searxng)" in out and "[flaky failed (rate limited)]" in out
    # three tries with exponential backoff between them, then the next backend
    assert log[:5] == ["flaky:q", ("sleep", 1.0), "flaky:q", ("sleep", 2.0), "flaky:q"]
    assert server.hits["/search"] == 1


def test_retry_after_hint_and_success_on_retry():
    sleeps: list[float] = []
    backend = FakeBackend("b", [RateLimitError("slow", retry_after=5.0), [SearchResult(title="t", url="u")]])
    engine = WebSearch([backend], retries=2, sleep=sleeps.append)
    outcome = engine.search("q", 3)
    assert outcome.backend == "b" and [r.title for r in outcome.results] == ["t"]
    assert sleeps == [5.0] and len(backend.calls) == 2


def test_every_backend_failing_is_one_clear_error():
    class Buggy:
        name = "buggy"

        def search(self, query, max_results):
            raise RuntimeError("oops")

    tools = WebTools(search_backends=[FakeBackend("a", [SearchError("offline")]), Buggy()], cache=False)
    msg = refused(tools.web_search, query="q")
    assert (
        msg
        == "Web search failed: every search backend failed: a failed (offline); buggy failed (RuntimeError: oops)"
    )


def test_empty_results_fall_through_and_are_not_cached(tmp_path):
    empty = FakeBackend("empty", [[]])
    tools = WebTools(search_backends=[empty], cache_dir=tmp_path)
    assert tools.web_search(query="q") == "No results for 'q' (empty found nothing)."
    tools.web_search(query="q")
    assert len(empty.calls) == 2


def test_rate_limiter_spacing_with_a_fake_clock():
    now = [100.0]
    sleeps: list[float] = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2.0, clock=lambda: now[0], sleep=sleep)
    assert limiter.wait() == 0.0  # the first call goes at once
    assert limiter.wait() == 2.0
    now[0] += 5.0  # long enough ago: no wait
    assert limiter.wait() == 0.0
    now[0] += 0.5
    limiter.wait()
    assert sleeps == [2.0, 1.5]


def test_rate_limiter_spaces_backend_calls():
    log: list = []
    now = [0.0]

    def sleep(seconds):
        log.append(("sleep", seconds))
        now[0] += seconds

    backend = FakeBackend("slow", [[SearchResult(title="t", url="u")]], min_interval=3.0, log=log)
    engine = WebSearch([backend], clock=lambda: now[0], sleep=sleep)
    engine.search("one", 1)
    engine.search("two", 1)
    engine.search("three", 1)
    assert log == ["slow:one", ("sleep", 3.0), "slow:two", ("sleep", 3.0), "slow:three"]


def test_ddgs_backend_maps_results_and_rate_limits(monkeypatch):
    import ddgs
    from ddgs.exceptions import DDGSException, RatelimitException

    seen = {}

    class FakeDDGS:
        def __init__(self, proxy=None, timeout=None):
            seen["timeout"] = timeout

        def text(self, query, **kwargs):
            seen.update(kwargs, query=query)
            if query == "limited":
                raise RatelimitException("202 Ratelimit")
            if query == "nothing":
                raise DDGSException("No results found.")
            return [
                {"title": "A", "href": "https://a.example/", "body": "about a"},
                {"title": "no link"},
            ]

    monkeypatch.setattr(ddgs, "DDGS", FakeDDGS)
    backend = DDGSBackend(region="wt-wt")
    assert backend.search("x", 4) == [SearchResult(title="A", url="https://a.example/", snippet="about a")]
    assert seen["max_results"] == 4 and seen["region"] == "wt-wt" and seen["backend"] == "auto"
    with pytest.raises(RateLimitError):
        backend.search("limited", 4)
    assert backend.search("nothing", 4) == []


def test_bm25_ranks_by_term_frequency_and_rarity():
    docs = [["cat", "sat", "mat"], ["cat", "cat", "cat", "dog"], ["dog", "bird"], ["fish"]]
    bm = BM25(docs)
    scores = bm.scores(["cat"])
    assert scores[1] > scores[0] > 0 and scores[2] == scores[3] == 0
    assert bm.idf("fish") > bm.idf("cat")
    both = bm.scores(["cat", "bird"])
    assert max(range(4), key=both.__getitem__) == 2  # the rare term outweighs three common ones


def test_local_docs_backend(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "asyncio.md").write_text(
        "# Asyncio guide\n\nThe asyncio event loop runs coroutines.\nEach event loop has one thread.\n"
    )
    (docs / "rust.txt").write_text("Rust ownership and borrowing rules.\n")
    (docs / "tasks.html").write_text(
        "<html><title>Tasks</title><script>rust rust rust rust</script><p>asyncio tasks wrap coroutines.</p></html>"
    )
    (docs / "cooking.md").write_text("# Bread\nFlour, water and salt.\n")
    (docs / "image.png").write_bytes(b"\x89PNG asyncio")
    local = LocalDocsBackend(docs)
    results = local.search("asyncio event loop", 5)
    assert [r.title for r in results] == ["Asyncio guide", "Tasks"]
    assert results[0].url == (docs / "asyncio.md").as_uri()
    assert "event loop" in results[0].snippet
    assert [r.title for r in local.search("rust", 5)] == ["rust"]  # script text is not indexed
    assert local.search("quantum", 5) == []
    (docs / "more.md").write_text("# Loops\nevent loop event loop event loop\n")
    assert local.search("event loop", 1)[0].title == "Loops"  # the index follows the folder
    # as the offline fallback of the tool set
    tools = WebTools(
        search_backends=[FakeBackend("web", [SearchError("no internet")]), "local"],
        docs_dir=docs,
        cache=False,
    )
    out = tools.web_search(query="bread flour")
    assert "(from local)" in out and "1. Bread" in out and "web failed (no internet)" in out
    # a result opens with open_url, as the search's answer says; nothing else local does
    page = tools.open_url(url=(docs / "cooking.md").as_uri())
    assert "Title: Bread" in page and "L2: Flour, water and salt." in page
    assert "Title: Tasks" in tools.open_url(url=(docs / "tasks.html").as_uri())
    (tmp_path / "private.md").write_text("# Not a doc\n")
    for url in ((tmp_path / "private.md").as_uri(), (docs / "image.png").as_uri(), "file:///etc/passwd"):
        assert "not a document of the local search folder" in refused(tools.open_url, url=url)
    no_docs = WebTools(search_backends=[FakeBackend("web")], cache=False)
    assert "only http and https" in refused(no_docs.open_url, url=(docs / "cooking.md").as_uri())


def test_open_url_takes_exactly_the_local_searchs_documents_without_walking_its_folder(tmp_path):
    docs = tmp_path / "docs"
    (docs / "guide" / ".hidden").mkdir(parents=True)
    (docs / "guide" / "a.md").write_text("# A\n")
    (docs / "guide" / ".hidden" / "b.md").write_text("# B\n")
    (docs / ".dot.md").write_text("# dot file, shown\n")
    (docs / "big.txt").write_text("x" * 300)
    (docs / "notes.TXT").write_text("upper-case extension\n")
    (docs / "image.png").write_bytes(b"png")
    (tmp_path / "outside.md").write_text("# outside\n")
    (docs / "link.md").symlink_to(tmp_path / "outside.md")
    (docs / "linked").symlink_to(docs / "guide", target_is_directory=True)
    os.mkfifo(docs / "pipe.md")
    local = LocalDocsBackend(docs, max_file_bytes=200)
    candidates = [p for p in docs.rglob("*")] + [
        docs / "linked" / "a.md",
        tmp_path / "outside.md",
        docs / "missing.md",
        docs,
        Path("/etc/passwd"),
    ]
    assert (
        {p for p in candidates if local.holds(p)}
        == local.documents()
        == {docs / "guide" / "a.md", docs / ".dot.md", docs / "notes.TXT"}
    )
    odd = docs / os.fsdecode(b"caf\xe9.md")  # a name that is not UTF-8
    odd.write_text("# Caf\n")
    found = WebTools(search_backends=["local"], docs_dir=docs, cache=False).open_url(url=odd.as_uri())
    assert "Title: Caf" in found


# -- registry, effects, lazy import, an agent run ----------------------------------------


def test_registry_and_effects(tmp_path):
    tools = {
        t.name: t for t in builtin_tools(["web"], cache_dir=tmp_path, allow_private=True, workspace=tmp_path)
    }
    assert set(tools) == {"web_search", "open_url", "find_in_page"}
    assert tools["web_search"].effects == {"network"} and tools["open_url"].effects == {"network"}
    assert not tools["open_url"].read_only and tools["find_in_page"].read_only
    assert tools["open_url"].safe_to_rerun
    made = make_tools(search_backends=[FakeBackend("x")], cache=False, window=10, nonsense=True)
    assert [t.name for t in made] == ["web_search", "open_url", "find_in_page"]
    with pytest.raises(ValueError, match="docs_dir"):
        WebTools(search_backends=["local"])


def test_import_tools_stays_light():
    code = (
        "import sys, tools\n"
        "heavy = [m for m in ('httpx', 'ddgs', 'tools.web', 'tools.files') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert tools.WebTools.__module__ == 'tools.web' and 'ddgs' not in sys.modules\n"
        "assert tools.Workspace.__module__ == 'tools.files'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_agent_reads_a_page_and_cites_lines(server, tmp_path, run_dir):
    web = WebTools(search_backends=[FakeBackend("x")], cache=False, allow_private=True)
    llm = ScriptedLLM(
        [
            call("open_url", url=f"{server.base}/page.html"),
            call("find_in_page", pattern="magic word"),
            f"The magic word is xyzzy (L{MAGIC_AT + 4}).",
        ]
    )
    # guards=None: the default network policy rightly refuses loopback, where this test's server lives
    result = Agent(llm, tools=web.tools(), run_dir=run_dir, guards=None).run_sync("What is the magic word?")
    assert result.ok
    opened, found = [e for e in result.events if e.type == "tool_result"]
    assert not opened.is_error and opened.content.startswith("Title: Test Page")
    assert f"L{MAGIC_AT + 4}: Paragraph number {MAGIC_AT}. The magic word is xyzzy." in found.content


def test_find_in_page_matches_a_phrase_the_line_wrapping_split():
    from tools.web import Page, html_to_lines

    title, lines = html_to_lines("<p>" + "x" * 150 + " machine learning rocks " + "tail " * 40 + "</p>")
    web = WebTools(search_backends=[FakeBackend("x")], cache=False)
    web.pages.append(Page(url="http://example.test/", title=title, lines=lines, content_type="text/html"))
    split = next(n for n, line in enumerate(lines, 1) if line.rstrip().endswith("machine"))
    assert "learning" not in lines[split - 1]  # the wrap really falls inside the phrase
    out = web.find_in_page(pattern="Machine  Learning")
    assert out.startswith("1 matches") and f"L{split}:" in out and f"L{split + 1}:" in out


@pytest.mark.parametrize(
    "path, text",
    [
        ("/utf16.txt", "Grüße aus Köln"),  # was refused as binary (UTF-16 is full of NUL bytes)
        ("/legacy.html", "Café naïve"),  # undeclared windows-1252, as browsers read it
        ("/feed.xml", "Straße"),  # the encoding only in the XML declaration
        ("/bom.txt", "L1: BOM text"),  # the byte order mark is not text
    ],
)
def test_pages_are_decoded_as_a_browser_would(server, web, path, text):
    out = web.open_url(url=f"{server.base}{path}")
    assert text in out and "\ufffd" not in out and "\ufeff" not in out


def test_hostile_markup_stays_linear_and_every_part_of_a_long_line_can_be_found():
    from tools.web import _Extractor, html_to_lines, text_to_lines

    parser = _Extractor("http://h/")
    parser.feed("<a href=/x>t<p>para</p>" * 5000)  # 5,000 links never closed
    parser.close()
    assert len(parser._links) <= 8 and len(parser.blocks) == 10_000  # no list that grows with the page
    _, lines = html_to_lines("<p>" + "w" * 1_000_000 + "</p>")  # a megabyte-long word
    assert max(map(len, lines)) <= 2_000 and sum(map(len, lines)) >= 1_000_000
    assert max(map(len, text_to_lines("x" * 1_000_000))) <= 2_000
    _, lines = html_to_lines("<pre>" + "D" * 1000 + "END</pre>")  # a long line of code: split, not cut
    assert "".join(lines).endswith("END") and "[...]" not in "".join(lines)
    _, lines = html_to_lines('<p>see <a href="https://example.com/' + "p" * 300 + '">the page</a></p>')
    assert any(("p" * 300) in line for line in lines)  # a long URL stays whole: the model can copy it
    _, lines = html_to_lines("<p>bell\x07 \x1b[31mred\x1b[0m \x1b]0;title\x07text</p>")  # terminal tricks
    assert lines == ["bell red text"]
    assert text_to_lines("a\x1b[2Jb\x00c") == ["abc"]
    _, lines = html_to_lines("<ol>" * 100_000 + "<li>deep")  # lists nested past any reader's sense
    assert lines == ["  " * 8 + "1. deep"]


@pytest.mark.parametrize(
    "content_type, charset, body, first",
    [
        ("text/html", "idna", b"<p>hi</p>", "hi"),  # codecs that are no charset raised UnicodeError
        ("text/html", "undefined", b"<p>hi</p>", "hi"),
        ("text/html", None, b"<meta charset=undefined><p>hi</p>", "hi"),
        # nested past the JSON parser: as text (cut into lines of 2,000 characters)
        ("application/json", None, b"[" * 200_000 + b"]" * 200_000, "[" * 2000),
    ],
)
def test_pages_with_odd_charsets_or_nesting_are_read_as_text(content_type, charset, body, first):
    from tools.web import Fetched, to_page

    page = to_page(Fetched("http://e.test/x", content_type, charset, body, []), "http://e.test/x")
    assert page.lines[0] == first


def test_a_server_that_connects_but_never_answers_is_told_apart_from_one_that_cannot_be_reached(tmp_path):
    import socket

    from tools.web import WebTools

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts (the kernel completes the handshake), never answers
    web = WebTools(
        search_backends=[FakeBackend("unused")], allow_private=True, cache_dir=tmp_path, timeout=0.5
    )
    try:
        message = refused(web.open_url, url=f"http://127.0.0.1:{listener.getsockname()[1]}/slow")
    finally:
        listener.close()
    assert "did not answer in time: connected, but no response came within 0.5 s" in message


def test_second_review_edge_cases_of_page_text_and_local_documents(tmp_path):
    from tools.web import LocalDocsBackend, WebTools, html_to_lines, text_to_lines

    _, lines = html_to_lines("<p>" + " ".join(["w" * 1999] * 50) + "</p>")  # long words, each under the cap
    assert all(len(line) <= 2_000 for line in lines) and sum(line.count("w") for line in lines) == 1999 * 50
    _, lines = html_to_lines("<pre>" + "x" * 315 + " longidentifier_name = 1</pre>")
    assert lines[-1] == "longidentifier_name = 1"  # cut at a space: the name stays whole
    assert html_to_lines("<p>one\x0ctwo</p>")[1] == ["one two"] and text_to_lines("a\x0bb") == ["a b"]
    assert text_to_lines("keep \x1b]stray\nthe rest") == ["keep stray", "the rest"]  # an unended OSC
    docs = tmp_path / "docs"
    (docs / ".hidden").mkdir(parents=True)
    (docs / "guide.md").write_text("# Guide\nhello\n")
    (docs / ".hidden" / "secret.md").write_text("# Hidden\n")
    os.mkfifo(docs / "pipe.md")  # would block a reader
    local = LocalDocsBackend(docs)
    assert [p.name for p, _, _ in local._files()] == ["guide.md"]
    web = WebTools(search_backends=[local], cache=False)
    assert "Title: Guide" in web.open_url(url=(docs / "guide.md").as_uri())
    for name in (".hidden/secret.md", "pipe.md"):
        assert "not a document of the local search folder" in refused(
            web.open_url, url=(docs / name).as_uri()
        )


def test_a_server_that_trickles_its_answer_is_cut_off_at_the_fetchs_deadline():
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def trickle():  # a header byte every 0.05 s: each read well within the timeout, the answer never whole
        conn, _ = listener.accept()
        conn.recv(4096)
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 800:
                conn.send(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass
        finally:
            conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    tools = WebTools(allow_private=True, timeout=0.5, cache=False, retries=0)  # a 2 s deadline
    try:
        message = refused(tools.open_url, url=f"http://127.0.0.1:{port}/")
    finally:
        listener.close()
    assert message == f"Timed out fetching http://127.0.0.1:{port}/: no whole answer within 2 s."


def test_a_page_too_slow_to_parse_is_cut_with_a_note_and_chunks_read_as_the_whole(monkeypatch):
    import tools.web
    from tools.web import _PARSE_CHUNK, html_to_lines

    # Parsing goes in chunks; one that ends inside a tag, a character reference, a comment
    # or a script gives what feeding the whole page at once gives.
    pad = "<p>" + "x" * (_PARSE_CHUNK - 12) + "</p>"
    tricky = "<p>fish &amp; chips</p><!-- a <p>comment</p> --><script>var a = '<p>no</p>';</script><p>end</p>"
    pages = [pad[: len(pad) - shift] + "</p>" + tricky + "<p>tail</p>" for shift in range(0, len(tricky), 7)]
    chunked = [html_to_lines(page, "http://h/", seconds=None) for page in pages]
    monkeypatch.setattr(tools.web, "_PARSE_CHUNK", 10 * len(pages[0]))  # each page in one piece
    assert chunked == [html_to_lines(page, "http://h/", seconds=None) for page in pages]
    monkeypatch.undo()
    for _, lines in chunked:
        assert lines[-3:] == ["fish & chips", "end", "tail"]  # no comment, no script

    # Past its time the parse stops at the end of a chunk, and says how much it read.
    page = "<p>first</p>" + "<li>item</li>" * 20_000 + "<p>last</p>"
    _, lines = html_to_lines(page, seconds=0)
    assert lines[0] == "first" and "last" not in lines
    assert lines[-1].startswith("[The rest of this page was not read: its HTML took more than 0 s to parse.")
    assert f"first {_PARSE_CHUNK:,} of {len(page):,} characters" in lines[-1]
    _, lines = html_to_lines(page)  # a page this size parses well within the default limit
    assert lines[-1] == "last" and len(lines) == 20_002


def test_a_page_title_is_a_line_however_long_the_pages_is():
    title, lines = html_to_lines("<html><head><title>" + "T" * 300_000 + "</title></head><p>body</p></html>")
    assert len(title) == 300 and title.endswith("…") and lines == ["body"]
    assert html_to_lines("<title>  A short   title </title><p>x</p>")[0] == "A short title"
    assert html_to_lines("<title>" + "T" * 300 + "</title><p>x</p>")[0] == "T" * 300  # not cut: no "…"
