"""Web tools: `web_search`, `open_url` and `find_in_page`.

Search goes through a list of `SearchBackend`s, tried in order: each call is
spaced by a per-backend rate limiter, retried with exponential backoff when the
backend says it is rate-limited, and answered from an on-disk cache when the
same backend has answered the same query before. Backends: `DDGSBackend`
(the `ddgs` metasearch package, imported only when used), `SearxngBackend`
(the JSON API of a SearXNG instance) and `LocalDocsBackend` (BM25 over a local
folder of text, markdown and HTML files; it works without internet).

`open_url` fetches http(s) pages with httpx under limits (timeouts, size,
redirects, content types) and refuses private, loopback, link-local and
reserved addresses unless `allow_private=True`. The host is resolved and the
request is sent to the checked address (so DNS cannot change its answer in
between), and every redirect hop is checked again. HTML becomes numbered lines
of readable text; the model sees a window of them and can scroll and search.
Opened pages form a stack, like a browser's history, per `WebTools` instance.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import json
import math
import os
import re
import socket
import sqlite3
import stat
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urljoin, urlsplit

import httpx
from pydantic import BaseModel

from agent.builtins import OPTIONS as BUILTIN_OPTIONS
from agent.tool import Tool, ToolError, tool

from ._patterns import Pattern, escape
from ._terminal import ESCAPES

DEFAULT_WINDOW = 80
DEFAULT_MAX_PAGE_BYTES = 5_000_000
DEFAULT_MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = 15.0
WRAP_WIDTH = 160
MAX_PAGES = 20
MAX_FIND_MATCHES = 20
MAX_TITLE = 300  # characters of a page title shown
MAX_MATCH_LINES = 10  # lines of one find_in_page match shown whole; a longer one shows its ends
REGEX_BUDGET = 5.0  # seconds for a find_in_page pattern's matching (see tools._patterns)
USER_AGENT = "Mozilla/5.0 (compatible; agent-runtime/0.1; +https://github.com/)"

# -- search ------------------------------------------------------------------


class SearchResult(BaseModel):
    """One search hit."""

    title: str
    url: str
    snippet: str = ""


class SearchOutcome(BaseModel):
    """What a search returned, which backend answered, and what failed first."""

    query: str
    backend: str | None
    results: list[SearchResult]
    cached: bool = False
    notes: list[str] = []


class SearchError(Exception):
    """A backend could not answer (unreachable, refused, bad response)."""


class RateLimitError(SearchError):
    """A backend asked us to slow down; `retry_after` is its hint in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@runtime_checkable
class SearchBackend(Protocol):
    """A search engine. Raise `RateLimitError` when throttled, `SearchError` on other failures.

    Optional attributes: `min_interval` (seconds between calls, default 1.0)
    and `cacheable` (whether results go to the on-disk cache, default True).
    """

    name: str

    def search(self, query: str, max_results: int) -> list[SearchResult]: ...


class RateLimiter:
    """Keeps at least `min_interval` seconds between calls (thread-safe)."""

    def __init__(
        self,
        min_interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._sleep = sleep
        self._last: float | None = None
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until the next call may go; returns how long it waited."""
        with self._lock:
            waited = 0.0
            if self._last is not None:
                delay = self._last + self.min_interval - self._clock()
                if delay > 0:
                    self._sleep(delay)
                    waited = delay
            self._last = self._clock()
            return waited


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "agent-runtime"


class SearchCache:
    """Search results on disk (SQLite), keyed by backend, query and result count."""

    def __init__(
        self, path: str | os.PathLike[str], *, ttl: float = 86_400.0, clock: Callable[[], float] = time.time
    ):
        self.path = Path(path)
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._ready = False

    @staticmethod
    def key(backend: str, query: str, max_results: int) -> str:
        raw = json.dumps([backend, query, max_results], ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5.0)
        if not self._ready:
            conn.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, created REAL, body TEXT)")
            self._ready = True
        return conn

    def get(self, backend: str, query: str, max_results: int) -> list[SearchResult] | None:
        try:
            with self._lock, closing(self._connect()) as conn:
                row = conn.execute(
                    "SELECT created, body FROM results WHERE key = ?",
                    (self.key(backend, query, max_results),),
                ).fetchone()
        except (sqlite3.Error, OSError):
            return None
        if row is None or self._clock() - row[0] > self.ttl:
            return None
        try:
            return [SearchResult.model_validate(r) for r in json.loads(row[1])]
        except ValueError:
            return None

    def put(self, backend: str, query: str, max_results: int, results: list[SearchResult]) -> None:
        body = json.dumps([r.model_dump() for r in results], ensure_ascii=False)
        try:
            with self._lock, closing(self._connect()) as conn, conn:
                conn.execute(
                    "INSERT OR REPLACE INTO results (key, created, body) VALUES (?, ?, ?)",
                    (self.key(backend, query, max_results), self._clock(), body),
                )
        except (sqlite3.Error, OSError):
            pass  # the cache is best-effort


class DDGSBackend:
    """Search through the `ddgs` package (`DDGS().text(...)`), imported on first use."""

    name = "ddgs"
    min_interval = 2.0

    def __init__(
        self,
        *,
        backend: str = "auto",
        region: str = "us-en",
        safesearch: str = "moderate",
        timeout: int = 10,
        proxy: str | None = None,
    ) -> None:
        self.backend = backend
        self.region = region
        self.safesearch = safesearch
        self.timeout = timeout
        self.proxy = proxy

    def search(self, query: str, max_results: int) -> list[SearchResult]:
        try:
            from ddgs import DDGS
            from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException
        except ImportError:
            raise SearchError(
                "the ddgs package is not installed (pip install 'agent-runtime[tools]')"
            ) from None
        try:
            rows = DDGS(proxy=self.proxy, timeout=self.timeout).text(
                query,
                max_results=max_results,
                backend=self.backend,
                region=self.region,
                safesearch=self.safesearch,
            )
        except RatelimitException as e:
            raise RateLimitError(f"rate limited: {e}") from None
        except TimeoutException as e:
            raise SearchError(f"timed out: {e}") from None
        except DDGSException as e:
            text = str(e)
            if "no results" in text.lower():
                return []
            if "ratelimit" in text.lower() or "429" in text:
                raise RateLimitError(f"rate limited: {text}") from None
            raise SearchError(text or type(e).__name__) from None
        results = []
        for row in rows or []:
            url = row.get("href") or row.get("url") or ""
            if url:
                results.append(
                    SearchResult(
                        title=str(row.get("title") or url), url=url, snippet=str(row.get("body") or "")
                    )
                )
        return results[:max_results]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class SearxngBackend:
    """Search through a SearXNG instance's JSON API (`/search?q=...&format=json`).

    The instance must allow the `json` format (`search.formats` in its settings.yml).
    """

    min_interval = 1.0

    def __init__(
        self,
        base_url: str,
        *,
        name: str = "searxng",
        timeout: float = 10.0,
        categories: str | None = "general",
        language: str | None = None,
        trust_env: bool = False,
    ) -> None:
        if not base_url:
            raise ValueError("SearxngBackend needs the URL of a SearXNG instance")
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.timeout = timeout
        self.categories = categories
        self.language = language
        self.trust_env = trust_env

    def search(self, query: str, max_results: int) -> list[SearchResult]:
        params = {"q": query, "format": "json"}
        if self.categories:
            params["categories"] = self.categories
        if self.language:
            params["language"] = self.language
        try:
            with httpx.Client(
                timeout=self.timeout, trust_env=self.trust_env, follow_redirects=True
            ) as client:
                response = client.get(
                    f"{self.base_url}/search", params=params, headers={"Accept": "application/json"}
                )
        except httpx.HTTPError as e:
            raise SearchError(f"could not reach SearXNG at {self.base_url}: {e}") from None
        if response.status_code == 429:
            raise RateLimitError("rate limited (HTTP 429)", _retry_after(response.headers.get("retry-after")))
        if response.status_code == 403:
            raise SearchError(
                f"SearXNG at {self.base_url} refused the JSON format (HTTP 403); enable 'json' in search.formats"
            )
        if response.status_code >= 400:
            raise SearchError(f"SearXNG at {self.base_url} answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise SearchError(f"SearXNG at {self.base_url} did not answer JSON") from None
        rows = data.get("results") if isinstance(data, dict) else None
        results = []
        for row in rows or []:
            if isinstance(row, dict) and row.get("url"):
                results.append(
                    SearchResult(
                        title=str(row.get("title") or row["url"]),
                        url=str(row["url"]),
                        snippet=str(row.get("content") or ""),
                    )
                )
        return results[:max_results]


_TOKEN = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class BM25:
    """Okapi BM25 over tokenized documents."""

    def __init__(self, docs: Sequence[Sequence[str]], *, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self.tfs = [Counter(d) for d in docs]
        self.lengths = [len(d) for d in docs]
        self.n = len(docs)
        self.avgdl = (sum(self.lengths) / self.n) if self.n else 0.0
        self.df: Counter[str] = Counter()
        for tf in self.tfs:
            self.df.update(tf.keys())

    def idf(self, term: str) -> float:
        df = self.df.get(term, 0)
        return math.log(1.0 + (self.n - df + 0.5) / (df + 0.5))

    def scores(self, query: Iterable[str]) -> list[float]:
        terms = list(dict.fromkeys(query))
        out = []
        for tf, length in zip(self.tfs, self.lengths, strict=True):
            score = 0.0
            norm = self.k1 * (1 - self.b + self.b * length / self.avgdl) if self.avgdl else self.k1
            for term in terms:
                f = tf.get(term, 0)
                if f:
                    score += self.idf(term) * f * (self.k1 + 1) / (f + norm)
            out.append(score)
        return out


@dataclass
class _Doc:
    path: Path
    title: str
    lines: list[str]


class LocalDocsBackend:
    """Offline search: BM25 over a folder of .txt, .md, .rst and .html files.

    The index is rebuilt when files are added, removed or changed. Result URLs
    are `file://` URIs; the snippet is the passage that matches best.
    """

    name = "local"
    min_interval = 0.0
    cacheable = False
    EXTENSIONS = frozenset({".txt", ".md", ".markdown", ".rst", ".html", ".htm"})

    def __init__(self, docs_dir: str | os.PathLike[str], *, max_file_bytes: int = 2_000_000) -> None:
        self.root = Path(docs_dir).resolve()
        self.max_file_bytes = max_file_bytes
        self._signature: tuple[Any, ...] | None = None
        self._docs: list[_Doc] = []
        self._bm25: BM25 | None = None
        self._lock = threading.Lock()

    def documents(self) -> set[Path]:
        """The files the search reads (and open_url may open): its extensions and sizes,
        regular files only, no links, nothing under a hidden folder."""
        return {path for path, _, _ in self._files()}

    def holds(self, path: Path) -> bool:
        """Whether `path` (absolute, normalized) is one of `documents()`, found without
        walking the folder."""
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return False
        if not parts or any(p.startswith(".") for p in parts[:-1]) or path.suffix.lower() not in self.EXTENSIONS:
            return False
        here = self.root
        for part in parts:  # a link on the way is no document: the walk follows none
            here = here / part
            try:
                st = os.lstat(here)
            except OSError:
                return False
            if stat.S_ISLNK(st.st_mode):
                return False
        return stat.S_ISREG(st.st_mode) and st.st_size <= self.max_file_bytes

    def _files(self) -> list[tuple[Path, float, int]]:
        found = []
        if not self.root.is_dir():
            return found
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.suffix.lower() not in self.EXTENSIONS or path.is_symlink():
                    continue
                st = path.stat()
                if stat.S_ISREG(st.st_mode) and st.st_size <= self.max_file_bytes:  # not a FIFO: it would block
                    found.append((path, st.st_mtime, st.st_size))
        return found

    def _load(self, path: Path) -> _Doc:
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix.lower() in (".html", ".htm"):
            title, lines = html_to_lines(text, path.as_uri())
        else:
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            title = next((line.lstrip("#").strip() for line in lines if line.startswith("#")), "")
        return _Doc(path, title or path.stem, lines)

    def _index(self) -> None:
        files = self._files()
        signature = tuple(files)
        if signature == self._signature:
            return
        self._docs = [self._load(path) for path, _, _ in files]
        self._bm25 = BM25([tokenize(d.title + "\n" + "\n".join(d.lines)) for d in self._docs])
        self._signature = signature

    def search(self, query: str, max_results: int) -> list[SearchResult]:
        with self._lock:
            self._index()
            docs, bm25 = self._docs, self._bm25
        if not docs or bm25 is None:
            return []
        terms = tokenize(query)
        scores = bm25.scores(terms)
        ranked = sorted(
            (i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], str(docs[i].path))
        )
        return [
            SearchResult(
                title=docs[i].title, url=docs[i].path.as_uri(), snippet=self._snippet(docs[i], set(terms))
            )
            for i in ranked[:max_results]
        ]

    @staticmethod
    def _snippet(doc: _Doc, terms: set[str], limit: int = 240) -> str:
        best, best_hits = "", -1
        for i in range(len(doc.lines)):
            passage = " ".join(doc.lines[i : i + 2])
            hits = len(terms & set(tokenize(passage)))
            if hits > best_hits:
                best, best_hits = passage, hits
        return best if len(best) <= limit else best[: limit - 3].rstrip() + "..."


class WebSearch:
    """Backends tried in order, with a cache, per-backend rate limits and backoff."""

    def __init__(
        self,
        backends: Sequence[SearchBackend],
        *,
        cache: SearchCache | None = None,
        retries: int = 2,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not backends:
            raise ValueError("WebSearch needs at least one backend")
        self.backends = list(backends)
        self.cache = cache
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self.limiters = [
            RateLimiter(float(getattr(b, "min_interval", 1.0)), clock=clock, sleep=sleep)
            for b in self.backends
        ]

    def search(self, query: str, max_results: int = 5) -> SearchOutcome:
        query = " ".join(query.split())
        if not query:
            raise SearchError("the query is empty")
        if self.cache is not None:
            for backend in self.backends:
                if getattr(backend, "cacheable", True):
                    hit = self.cache.get(backend.name, query, max_results)
                    if hit is not None:
                        return SearchOutcome(query=query, backend=backend.name, results=hit, cached=True)
        notes: list[str] = []
        failed = 0
        for backend, limiter in zip(self.backends, self.limiters, strict=True):
            try:
                results = self._call(backend, limiter, query, max_results)[:max_results]
            except Exception as e:  # SearchError, or a backend's own bug: try the next one
                failed += 1
                reason = str(e) if isinstance(e, SearchError) else f"{type(e).__name__}: {e}"
                notes.append(f"{backend.name} failed ({reason})")
                continue
            if not results:
                notes.append(f"{backend.name} found nothing")
                continue
            if self.cache is not None and getattr(backend, "cacheable", True):
                self.cache.put(backend.name, query, max_results, results)
            return SearchOutcome(query=query, backend=backend.name, results=results, notes=notes)
        if failed == len(self.backends):
            raise SearchError("every search backend failed: " + "; ".join(notes))
        return SearchOutcome(query=query, backend=None, results=[], notes=notes)

    def _call(
        self, backend: SearchBackend, limiter: RateLimiter, query: str, max_results: int
    ) -> list[SearchResult]:
        attempt = 0
        while True:
            limiter.wait()
            try:
                return list(backend.search(query, max_results))
            except RateLimitError as e:
                if attempt >= self.retries:
                    raise
                delay = max(self.backoff * 2**attempt, e.retry_after or 0.0)
                self._sleep(min(delay, self.max_backoff))
                attempt += 1


# -- pages -------------------------------------------------------------------

_DROP = frozenset(
    {"script", "style", "nav", "noscript", "template", "svg", "iframe", "canvas", "select", "button"}
)
_VOID = frozenset(
    {"br", "hr", "img", "input", "meta", "link", "base", "area", "col", "embed", "source", "wbr"}
)
_BLOCK = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote", "figure",
        "figcaption", "address", "details", "summary", "dl", "dt", "dd", "table", "thead", "tbody", "tfoot",
        "caption", "form", "fieldset", "legend", "center", "body", "html",
    }
)  # fmt: skip
_HEADINGS = {f"h{i}": i for i in range(1, 7)}


class _Extractor(HTMLParser):
    """Readable text from HTML: headings, paragraphs, list items, links as [text](url)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base_url
        self.title = ""
        self.blocks: list[tuple[str, str, bool]] = []  # (prefix, text, preformatted)
        self._buf: list[str] = []
        self._prefix = ""
        self._drop = 0
        self._in_title = False
        self._pre = 0
        self._lists: list[list[Any]] = []  # [ordered, counter]
        self._links: list[tuple[int, str | None]] = []
        self._cells = 0

    # blocks
    def _flush(self) -> None:
        text = "".join(self._buf)
        self._buf.clear()
        # Links left open carry over into the next block. Only the last few: a page of
        # never-closed <a> tags would have each block rebuild all of them (quadratic time).
        self._links = [(0, href) for _, href in self._links[-_OPEN_LINKS:]]
        if self._pre:
            lines = text.split("\n")
            while lines and not lines[0].strip():
                lines.pop(0)
            while lines and not lines[-1].strip():
                lines.pop()
            for line in lines:
                self.blocks.append(("", line.rstrip().expandtabs(4), True))
            return
        text = " ".join(text.split())
        if text:
            self.blocks.append((self._prefix, text, False))
            self._prefix = _indent(len(self._lists))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP:
            if tag not in _VOID:
                self._drop += 1
            return
        if self._drop:
            return
        if tag == "title":
            self._in_title = True
        elif tag == "base":
            href = dict(attrs).get("href")
            if href:
                self.base = urljoin(self.base, href)
        elif tag in _HEADINGS:
            self._flush()
            self._prefix = "#" * _HEADINGS[tag] + " "
        elif tag in ("ul", "ol"):
            self._flush()
            self._lists.append([tag == "ol", 0])
        elif tag == "li":
            self._flush()
            depth = max(len(self._lists), 1)
            marker = "- "
            if self._lists and self._lists[-1][0]:
                self._lists[-1][1] += 1
                marker = f"{self._lists[-1][1]}. "
            self._prefix = _indent(depth - 1) + marker
        elif tag == "pre":
            self._flush()
            self._pre += 1
        elif tag == "br":
            if self._pre:
                self._buf.append("\n")
            else:
                self._flush()
        elif tag == "hr":
            self._flush()
        elif tag == "tr":
            self._flush()
            self._cells = 0
        elif tag in ("td", "th"):
            if self._cells:
                self._buf.append(" | ")
            self._cells += 1
        elif tag == "a":
            self._links.append((len(self._buf), dict(attrs).get("href")))
        elif tag in _BLOCK:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP:
            return
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP:
            if self._drop:
                self._drop -= 1
            return
        if self._drop:
            return
        if tag == "title":
            self._in_title = False
        elif tag == "a":
            if self._links:
                start, href = self._links.pop()
                text = " ".join("".join(self._buf[start:]).split())
                target = self._link_target(href)
                if text and target:
                    self._buf[start:] = [f"[{text}]({target})"]
        elif tag in _HEADINGS or tag == "li":
            self._flush()
            self._prefix = _indent(len(self._lists))
        elif tag in ("ul", "ol"):
            self._flush()
            if self._lists:
                self._lists.pop()
            self._prefix = _indent(len(self._lists))
        elif tag == "pre":
            self._flush()
            self._pre = max(0, self._pre - 1)
        elif tag == "tr" or tag in _BLOCK:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._drop:
            return
        data = _CONTROL.sub("", data).translate(_BREAKS)
        if self._in_title:
            if len(self.title) <= MAX_TITLE:  # a page's title is a line, not a page (one more: a cut shows)
                self.title += data[: MAX_TITLE + 1 - len(self.title)]
            return
        self._buf.append(data)

    def _link_target(self, href: str | None) -> str | None:
        if not href:
            return None
        href = href.strip()
        if href.startswith("#") or href.lower().startswith(("javascript:", "data:", "vbscript:")):
            return None
        return urljoin(self.base, href)

    def close(self) -> None:
        super().close()
        self._flush()


# Terminal escapes and control characters (ESC, BEL, ...) in a page: noise, or tricks, for the model.
_CONTROL = re.compile(ESCAPES + r"|[\x00-\x08\x0e-\x1f\x7f]")  # vertical tab and form feed: see _BREAKS
_BREAKS = str.maketrans("\x0b\x0c", "  ")  # vertical tab, form feed: spaces between words
_OPEN_LINKS = 8  # unclosed <a> tags carried from one block to the next
_LONGEST_WORD = 2_000  # characters; a longer run without spaces (minified code, base64) is cut into pieces


def _pieces(word: str, size: int) -> str:
    return word if len(word) <= size else " ".join(word[i : i + size] for i in range(0, len(word), size))


MAX_INDENT = 8  # list levels shown as indentation; deeper lists stay at this depth


def _indent(levels: int) -> str:
    """Two spaces a list level, up to MAX_INDENT levels: a page of a million nested
    lists must not make each line megabytes long (nor each tag quadratic to read)."""
    return "  " * min(levels, MAX_INDENT)


def _wrap(prefix: str, text: str, width: int = WRAP_WIDTH) -> list[str]:
    if len(prefix) + len(text) <= width:
        return [prefix + text]
    if len(text) > _LONGEST_WORD:
        # Long words are kept whole (a URL stays copyable), up to a point: a megabyte-long
        # "word" would be one line that no window or search result could show in part.
        text = " ".join(_pieces(word, _LONGEST_WORD) for word in text.split(" "))
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=prefix,
        subsequent_indent=" " * len(prefix),
        break_long_words=False,
        break_on_hyphens=False,
    ) or [prefix]


def _split_code_line(text: str, width: int) -> list[str]:
    """A long line of code in pieces of at most `width`, cut after a space where there is one
    in the piece's second half (a name stays whole, so find_in_page finds it)."""
    pieces: list[str] = []
    while len(text) > width:
        cut = text.rfind(" ", width // 2, width)
        cut = cut + 1 if cut >= 0 else width
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


PARSE_SECONDS = 5.0  # reading one page's HTML; html.parser takes about 11 s for a 5 MB page of tags
_PARSE_CHUNK = 65_536  # characters fed to the parser at a time: the time limit is checked between them


def html_to_lines(
    html: str, base_url: str = "", *, seconds: float | None = PARSE_SECONDS
) -> tuple[str, list[str]]:
    """The title and the readable lines of an HTML document.

    Parsing stops after `seconds` (None: no limit) at the end of the chunk it is in: a
    page of a million tags takes Python's parser longer than its fetch was allowed. The
    lines then end with a note of how much of the page was read.
    """
    parser = _Extractor(base_url)
    deadline = time.monotonic() + seconds if seconds is not None else None
    read = len(html)
    for start in range(0, len(html), _PARSE_CHUNK):
        parser.feed(html[start : start + _PARSE_CHUNK])
        if deadline is not None and time.monotonic() > deadline and start + _PARSE_CHUNK < len(html):
            read = start + _PARSE_CHUNK
            break
    parser.close()
    lines: list[str] = []
    for prefix, text, pre in parser.blocks:
        if pre:  # code keeps its lines; a long one is split, so that all of it can be found and shown
            lines.extend(_split_code_line(text, 2 * WRAP_WIDTH))
        else:
            lines.extend(_wrap(prefix, text))
    if read < len(html):
        lines.append(
            f"[The rest of this page was not read: its HTML took more than {seconds:g} s to parse. "
            f"The lines above are from its first {read:,} of {len(html):,} characters.]"
        )
    title = " ".join(parser.title.split())
    return (title[: MAX_TITLE - 1] + "…" if len(title) > MAX_TITLE else title), lines


def text_to_lines(text: str) -> list[str]:
    text = _CONTROL.sub("", text).translate(_BREAKS)
    lines: list[str] = []
    for line in text.splitlines():
        line = line.rstrip().expandtabs(4)
        if len(line) <= WRAP_WIDTH:
            lines.append(line)
        else:
            indent = len(line) - len(line.lstrip())
            lines.extend(_wrap(line[:indent], line[indent:]))
    while lines and not lines[-1]:
        lines.pop()
    return lines


@dataclass
class Page:
    """An opened page: its final URL, title and readable lines."""

    url: str
    title: str
    lines: list[str]
    content_type: str
    requested_url: str = ""
    redirects: list[str] = field(default_factory=list)


# -- fetching ----------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


def blocked_reason(ip: IPAddress) -> str | None:
    """Why an address must not be fetched from (None when it is public)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-public"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_TEXT_TYPES = frozenset(
    {"application/json", "application/xhtml+xml", "application/xml", "application/markdown"}
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _allowed_type(mime: str) -> bool:
    return (
        mime.startswith("text/")
        or mime in _TEXT_TYPES
        or (mime.startswith("application/") and mime.endswith(("+json", "+xml")))
    )


@dataclass
class Fetched:
    url: str
    content_type: str
    charset: str | None
    body: bytes
    redirects: list[str]


class Fetcher:
    """GET an http(s) URL safely: address checks on every hop, size and time limits."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed_hosts: Iterable[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_PAGE_BYTES,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        resolver: Resolver | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.allow_private = allow_private
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.resolver = resolver or system_resolver
        self.user_agent = user_agent

    def check(self, url: str) -> tuple[httpx.URL, list[str] | None]:
        """Parse and vet a URL; returns it and the addresses to connect to (None: connect by name)."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as e:
            raise ToolError(f"Invalid URL {url!r}: {e}") from None
        if parsed.scheme not in ("http", "https"):
            shown = parsed.scheme or "none"
            raise ToolError(
                f"Refused: only http and https URLs can be opened (this one's scheme is {shown!r})."
            )
        host = parsed.host
        if not host:
            raise ToolError(f"Invalid URL {url!r}: it has no host.")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if host.lower() in self.allowed_hosts or f"{host.lower()}:{port}" in self.allowed_hosts:
            return parsed, None
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = self.resolver(host, port)
            except (OSError, UnicodeError) as e:
                raise ToolError(f"Could not resolve the host {host!r}: {e}") from None
        if not addresses:
            raise ToolError(f"Could not resolve the host {host!r}.")
        if not self.allow_private:
            for address in addresses:
                try:
                    ip = ipaddress.ip_address(address.split("%")[0])
                except ValueError:
                    raise ToolError(
                        f"Refused: {host!r} resolves to an unreadable address {address!r}."
                    ) from None
                reason = blocked_reason(ip)
                if reason:
                    via = "" if address == host else f"{host!r} resolves to "
                    raise ToolError(
                        f"Refused: {url} is not a public address ({via}{address}, a {reason} address). "
                        "open_url only fetches public web pages."
                    )
        return parsed, addresses

    def fetch(self, url: str) -> Fetched:
        limit = max(self.timeout * 4, self.timeout)
        deadline = time.monotonic() + limit
        # httpx's timeouts are per read: a server that sends a byte now and then could hold the
        # fetch (and its thread) for ever. At the deadline every socket it opened is shut, which
        # ends whatever read is waiting.
        sockets: list[socket.socket] = []
        expired = threading.Event()

        def trace(event: str, info: dict[str, Any]) -> None:
            if event.endswith(("connect_tcp.complete", "start_tls.complete")):
                stream = info.get("return_value")
                sock = stream.get_extra_info("socket") if stream is not None else None
                if sock is not None:
                    sockets.append(sock)

        def stop() -> None:
            expired.set()
            for sock in sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(limit, stop)
        timer.daemon = True
        timer.start()
        try:
            return self._fetch(url, deadline, trace)
        except ToolError:
            if expired.is_set():
                raise ToolError(f"Timed out fetching {url}: no whole answer within {limit:g} s.") from None
            raise
        finally:
            timer.cancel()

    def _fetch(self, url: str, deadline: float, trace: Callable[[str, dict[str, Any]], None]) -> Fetched:
        redirects: list[str] = []
        current = url
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
            while True:
                parsed, addresses = self.check(current)
                response = self._send(client, parsed, addresses, trace)
                try:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        if len(redirects) >= self.max_redirects:
                            raise ToolError(
                                f"Too many redirects (more than {self.max_redirects}) starting from {url}."
                            )
                        redirects.append(current)
                        current = str(parsed.join(response.headers["location"]))
                        continue
                    return self._read(response, current, redirects, deadline)
                finally:
                    response.close()

    def _send(
        self,
        client: httpx.Client,
        url: httpx.URL,
        addresses: list[str] | None,
        trace: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> httpx.Response:
        headers = {
            "User-Agent": self.user_agent,
            "Accept": "text/html,text/plain,text/markdown,application/json;q=0.9,*/*;q=0.1",
        }
        if addresses is None:
            targets: list[tuple[httpx.URL, dict[str, Any]]] = [(url, {})]
        else:
            # Connect to the checked address itself, so the name cannot resolve differently now.
            headers["Host"] = url.netloc.decode("ascii")
            extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
            targets = [(url.copy_with(host=a.split("%")[0]), extensions) for a in addresses]
        last: Exception | None = None
        for target, extensions in targets:
            if trace is not None:
                extensions = {**extensions, "trace": trace}
            request = client.build_request("GET", target, headers=headers, extensions=extensions)
            try:
                return client.send(request, stream=True)
            except httpx.ConnectError as e:
                last = e
            except httpx.ConnectTimeout:
                raise ToolError(f"Timed out connecting to {url} (limit {self.timeout:g} s).") from None
            except httpx.TimeoutException:  # connected; the server sent no answer in time
                raise ToolError(
                    f"{url} did not answer in time: connected, but no response came within {self.timeout:g} s "
                    "between bytes."
                ) from None
            except httpx.HTTPError as e:
                raise ToolError(f"Could not fetch {url}: {type(e).__name__}: {e}") from None
        raise ToolError(f"Could not connect to {url}: {last}")

    def _read(self, response: httpx.Response, url: str, redirects: list[str], deadline: float) -> Fetched:
        if response.status_code >= 400:
            raise ToolError(f"HTTP {response.status_code} {response.reason_phrase} for {url}.")
        content_type = response.headers.get("content-type", "")
        mime = content_type.split(";")[0].strip().lower()
        if mime and not _allowed_type(mime):
            raise ToolError(
                f"Refused: {url} is {mime} content, which open_url cannot show "
                "(it reads HTML, plain text, markdown and JSON)."
            )
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise ToolError(
                f"Refused: {url} is {int(declared):,} bytes, over the {self.max_bytes:,}-byte page limit."
            )
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise ToolError(f"Refused: {url} is larger than the {self.max_bytes:,}-byte page limit.")
                if time.monotonic() > deadline:
                    raise ToolError(f"Refused: {url} took too long to download.")
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise ToolError(f"Timed out reading {url} (limit {self.timeout:g} s between bytes).") from None
        except httpx.HTTPError as e:
            raise ToolError(f"Could not read {url}: {type(e).__name__}: {e}") from None
        body = b"".join(chunks)
        wide = _wide_encoding(response.charset_encoding, body)  # UTF-16 and UTF-32 text is full of NULs
        if not wide and b"\x00" in body[:8192]:
            raise ToolError(
                f"Refused: {url} is binary content (it contains NUL bytes); open_url only shows text."
            )
        return Fetched(url, mime, response.charset_encoding, body, redirects)


_META_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([\w-]+)""", re.I)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]+encoding=["']([\w.-]+)["']""")
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def _wide_encoding(charset: str | None, body: bytes) -> bool:
    """Whether the text is UTF-16 or UTF-32, as its header or byte order mark says."""
    if charset and charset.lower().replace("_", "-").startswith(("utf-16", "utf-32")):
        return True
    return any(body.startswith(bom) for bom, name in _BOMS if name != "utf-8-sig")


def _decode(fetched: Fetched) -> str:
    """The text of a page, read as a browser would: a byte order mark first, then the
    declared charset (header, <meta>, <?xml?>), then UTF-8, then windows-1252."""
    body = fetched.body
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body.decode(name, errors="replace")
    charset = fetched.charset
    if charset is None:
        m = _META_CHARSET.search(body[:4096]) if "html" in fetched.content_type else None
        m = m or _XML_ENCODING.search(body[:512])
        charset = m.group(1).decode("ascii") if m else None
    if charset is not None:
        try:
            return body.decode(charset, errors="replace")
        except (LookupError, UnicodeError):  # unknown, or a codec that is no charset ("idna", "undefined")
            pass
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:  # undeclared and not UTF-8: most such pages are windows-1252
        return body.decode("cp1252", errors="replace")


def to_page(fetched: Fetched, requested_url: str) -> Page:
    text = _decode(fetched)
    mime = fetched.content_type
    looks_html = not mime and text.lstrip()[:200].lower().startswith(("<!doctype html", "<html"))
    title = ""
    if "html" in mime or looks_html:
        title, lines = html_to_lines(text, fetched.url)
    elif "json" in mime:
        try:
            lines = text_to_lines(json.dumps(json.loads(text), indent=2, ensure_ascii=False))
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes: as text
            lines = text_to_lines(text)
    else:
        lines = text_to_lines(text)
        if mime in ("text/markdown", "text/x-markdown", "application/markdown"):
            title = next((line.lstrip("#").strip() for line in lines if line.startswith("# ")), "")
    if not title:
        path = httpx.URL(fetched.url).path.rstrip("/")
        title = path.rsplit("/", 1)[-1] or fetched.url
    return Page(fetched.url, title, lines, mime or "unknown", requested_url, fetched.redirects)


# -- the tools ---------------------------------------------------------------


def _make_backend(spec: SearchBackend | str, *, searxng_url: str | None, docs_dir: Any) -> SearchBackend:
    if not isinstance(spec, str):
        return spec
    name = spec.lower()
    if name in ("ddgs", "duckduckgo"):
        return DDGSBackend()
    if name == "searxng":
        url = searxng_url or os.environ.get("SEARXNG_URL")
        if not url:
            raise ValueError("the 'searxng' search backend needs searxng_url (or SEARXNG_URL)")
        return SearxngBackend(url)
    if name in ("local", "docs"):
        if docs_dir is None:
            raise ValueError("the 'local' search backend needs docs_dir")
        return LocalDocsBackend(docs_dir)
    raise ValueError(f"unknown search backend {spec!r}; use 'ddgs', 'searxng', 'local' or a SearchBackend")


class WebTools:
    """`web_search`, `open_url` and `find_in_page`, sharing one page stack.

    ```python
    web = WebTools(search_backends=["ddgs", "local"], docs_dir="docs/")
    agent = Agent(tools=web.tools())
    ```
    """

    def __init__(
        self,
        *,
        search_backends: Sequence[SearchBackend | str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache: bool = True,
        cache_ttl: float = 86_400.0,
        allow_private: bool = False,
        allowed_hosts: Iterable[str] = (),
        docs_dir: str | os.PathLike[str] | None = None,
        searxng_url: str | None = None,
        window: int = DEFAULT_WINDOW,
        max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 1.0,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if search_backends is None:
            search_backends = ["ddgs"]
            if searxng_url or os.environ.get("SEARXNG_URL"):
                search_backends.append("searxng")
            if docs_dir is not None:
                search_backends.append("local")
        backends = [_make_backend(b, searxng_url=searxng_url, docs_dir=docs_dir) for b in search_backends]
        store = None
        if cache:
            store = SearchCache(Path(cache_dir or default_cache_dir()) / "web_search.sqlite", ttl=cache_ttl)
        self.search_engine = WebSearch(
            backends, cache=store, retries=retries, backoff=backoff, clock=clock, sleep=sleep
        )
        self.fetcher = Fetcher(
            allow_private=allow_private,
            allowed_hosts=allowed_hosts,
            timeout=timeout,
            max_bytes=max_page_bytes,
            max_redirects=max_redirects,
            resolver=resolver,
        )
        self.window = window
        self.max_page_bytes = max_page_bytes
        self.pages: list[Page] = []  # the page stack; the last one is current
        self._lock = threading.Lock()

    def tools(self) -> list[Tool]:
        return [self.web_search, self.open_url, self.find_in_page]

    @property
    def page(self) -> Page | None:
        return self.pages[-1] if self.pages else None

    # -- web_search ---------------------------------------------------------

    @tool(effects={"network"}, safe_to_rerun=True)
    def web_search(self, query: str, max_results: int = 5) -> str:
        """Search the web. Returns numbered results with title, URL and snippet; open one with open_url.

        Args:
            query: What to search for.
            max_results: How many results to return (1-20).
        """
        max_results = min(max(max_results, 1), 20)
        try:
            outcome = self.search_engine.search(query, max_results)
        except SearchError as e:
            raise ToolError(f"Web search failed: {e}") from None
        return format_results(outcome)

    # -- open_url -------------------------------------------------------------

    @tool(effects={"network"}, safe_to_rerun=True)
    def open_url(self, url: str | None = None, start_line: int = 1, reload: bool = False) -> str:
        """Open a web page (http or https, or a file:// result of the local search) and show its readable text as numbered lines, a window at a time.

        Args:
            url: The page to open. Omit it to scroll the page that is open now.
            start_line: The first line to show; use it to scroll (the output says where the next window starts).
            reload: Fetch the page again though it is open already (it may have changed since).
        """
        if start_line < 1:
            raise ToolError("start_line must be 1 or more (lines are numbered from 1).")
        page = self._find_page(url)
        stale = None
        if reload and page is not None:  # the open page (or the one url names), fetched anew
            stale, url, page = page, page.requested_url or page.url, None
        if page is None:
            assert url is not None
            fetched = self._local_doc(url) if url.lower().startswith("file:") else self.fetcher.fetch(url)
            page = to_page(fetched, url)
        with self._lock:
            for gone in (page, stale):
                if gone in self.pages:
                    self.pages.remove(gone)
            self.pages.append(page)
            del self.pages[:-MAX_PAGES]
        return self.render(page, start_line)

    def _local_doc(self, url: str) -> Fetched:
        """A document of the local search's folder, by the file:// URL a search result gave."""
        local = next((b for b in self.search_engine.backends if isinstance(b, LocalDocsBackend)), None)
        if local is None:
            raise ToolError(
                "Refused: only http and https URLs can be opened (file:// only for results of the local search)."
            )
        try:
            # %FF of a file name that is not UTF-8 is the byte it stands for, as Path.as_uri() wrote it
            path = Path(os.path.normpath(unquote(urlsplit(url).path, errors="surrogateescape")))
        except ValueError as e:
            raise ToolError(f"Cannot open {url}: {e}.") from None
        if not local.holds(path):
            raise ToolError(f"Refused: {url} is not a document of the local search folder.")
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise ToolError(f"Refused: {url} is not a regular file.")
                body = f.read(self.max_page_bytes + 1)
        except OSError as e:
            raise ToolError(f"Cannot open {url}: {e.strerror or e}.") from None
        if len(body) > self.max_page_bytes:
            raise ToolError(f"Refused: {url} is over the {self.max_page_bytes:,}-byte page limit.")
        kind = {".html": "text/html", ".htm": "text/html", ".md": "text/markdown", ".markdown": "text/markdown"}
        return Fetched(path.as_uri(), kind.get(path.suffix.lower(), "text/plain"), None, body, [])

    def _find_page(self, url: str | None) -> Page | None:
        with self._lock:
            if url is None:
                if not self.pages:
                    raise ToolError("No page is open yet; give open_url a url.")
                return self.pages[-1]
            for page in reversed(self.pages):
                if url in (page.url, page.requested_url):
                    return page
        return None

    def render(self, page: Page, start_line: int = 1) -> str:
        total = len(page.lines)
        head = [f"Title: {page.title}", f"URL: {page.url}"]
        if page.redirects:
            head.append(f"(redirected from {page.redirects[0]})")
        if total == 0:
            return "\n".join([*head, "(the page has no readable text)"])
        if start_line > total:
            raise ToolError(f"start_line {start_line} is past the end of the page, which has {total} lines.")
        end = min(total, start_line + self.window - 1)
        more = f"; open_url with start_line={end + 1} for more" if end < total else "; end of page"
        head.append(f"Lines {start_line}-{end} of {total}{more}")
        body = [f"L{n}: {page.lines[n - 1]}" for n in range(start_line, end + 1)]
        return "\n".join([*head, "", *body])

    # -- find_in_page ---------------------------------------------------------

    @tool(effects={"reads"})
    def find_in_page(self, pattern: str, regex: bool = False) -> str:
        """Find text in the open page; shows each match with its line number so you can cite lines like L12-L15.

        Args:
            pattern: Text to find (case-insensitive).
            regex: Treat pattern as a regular expression.
        """
        page = self.page
        if page is None:
            raise ToolError("No page is open; open one with open_url first.")
        if not pattern:
            raise ToolError("The pattern is empty.")
        # Plain text matches across the line wrapping of a paragraph: any run of spaces and line breaks
        # between its words matches any other. A regex sees lines (^ and $ at each), and \s spans them.
        source = pattern if regex else r"\s+".join(escape(word) for word in pattern.split())
        rx = Pattern(
            source or escape(pattern), ignore_case=True, multiline=True, budget=REGEX_BUDGET, shown=pattern
        )
        spans = _find_spans(rx, page.lines, "\n" if regex else " ")
        if not spans:
            return f"No matches for {pattern!r} in {page.url} ({len(page.lines)} lines)."
        hits = sorted(spans)
        shown = hits[:MAX_FIND_MATCHES]
        out = [f"{len(hits)} matches for {pattern!r} in {page.title} ({page.url}), {len(page.lines)} lines:"]

        def row(i: int) -> str:
            return f"L{i}: {page.lines[i - 1]}"

        for n in shown:
            last = spans[n]
            lo, hi = max(1, n - 1), min(len(page.lines), last + 1)
            if last - n < MAX_MATCH_LINES:
                out.extend(row(i) for i in range(n, last + 1))
            else:  # a match over many lines (a pattern like "a[\s\S]*b"): its ends, and where it runs
                out.extend(row(i) for i in range(n, n + 3))
                out.append(f"[... the match runs on to L{last}; L{n}-L{last} in all]")
                out.extend(row(i) for i in range(last - 1, last + 1))
            context = ["    " + row(i) for i in range(lo, hi + 1) if not n <= i <= last]
            if context:
                out.extend(context)
        if len(hits) > len(shown):
            out.append(f"[... {len(hits) - len(shown)} more matches; make the pattern more specific]")
        out.append(
            "Cite lines as L<n> or a range such as L12-L15; open_url with start_line=<n> shows more around a match."
        )
        return "\n".join(out)


def _find_spans(rx: Pattern, lines: Sequence[str], joint: str) -> dict[int, int]:
    """First line -> last line of each match of `rx` in `lines`, read as one text
    whose lines (their indentation dropped) are joined by `joint`."""
    starts: list[int] = []
    parts: list[str] = []
    pos = 0
    for line in lines:
        text = line.strip()
        starts.append(pos)
        parts.append(text)
        pos += len(text) + 1
    flow = joint.join(parts)
    spans: dict[int, int] = {}
    for m in rx.finditer(flow):
        if m.end() == m.start():  # an empty match (a pattern like "x*") says nothing
            continue
        first = bisect.bisect_right(starts, m.start())
        last = bisect.bisect_right(starts, m.end() - 1)
        spans[first] = max(spans.get(first, first), last)
    return spans


def format_results(outcome: SearchOutcome) -> str:
    if not outcome.results:
        why = f" ({'; '.join(outcome.notes)})" if outcome.notes else ""
        return f"No results for {outcome.query!r}{why}."
    source = outcome.backend + (", cached" if outcome.cached else "")
    lines = [f"Results for {outcome.query!r} (from {source}):"]
    for i, r in enumerate(outcome.results, 1):
        lines.append(f"{i}. {r.title}\n   {r.url}")
        if r.snippet:
            lines.append(f"   {' '.join(r.snippet.split())}")
    if outcome.notes:
        lines.append(f"[{'; '.join(outcome.notes)}]")
    return "\n".join(lines)


# The `tool_options` make_tools passes on to WebTools (its own parameters aside).
OPTIONS = BUILTIN_OPTIONS["web"] - {"search_backends", "cache_dir", "allow_private", "docs_dir"}


def make_tools(
    search_backends: Sequence[SearchBackend | str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_private: bool = False,
    docs_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> list[Tool]:
    """The web tools (the `"web"` built-in). Options it does not take are another built-in's.

    Also understood: searxng_url, allowed_hosts, cache, cache_ttl, window,
    max_page_bytes, max_redirects, timeout, retries, backoff.
    """
    extra = {k: v for k, v in options.items() if k in OPTIONS}
    return WebTools(
        search_backends=search_backends,
        cache_dir=cache_dir,
        allow_private=allow_private,
        docs_dir=docs_dir,
        **extra,
    ).tools()
