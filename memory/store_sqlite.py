"""The embedded store: one SQLite file in WAL mode per memory, plus an index beside it.

SQLite holds the truth: records (text, metadata JSON, source, time), their
vectors, and a change log that triggers fill on every vector insert, update
and delete. The change log's sequence number is the memory's *generation*.

Each process keeps an in-memory index (exact numpy below `ann_threshold`
records, faiss HNSW above) tagged with the generation it reflects. Before a
search the process replays the log entries it has not seen yet (writes by
other processes), so the index is updated incrementally, never rebuilt per
insert. The HNSW index is saved to `<file>.ann/<uid>-<generation>.faiss`
(+ `.npz` with labels and tombstones) atomically, on `flush()`/`close()`, at
exit, and every so many changes; a new process loads the newest file and
replays the log from its generation. If the log no longer reaches back that
far, or the file is damaged, the index is rebuilt from the records.

Writes are short `BEGIN IMMEDIATE` transactions with a busy timeout, so any
number of processes may read and write one file.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .embedders import EmbeddingCache
from .filters import Where, to_sqlite
from .index import ExactIndex, HnswIndex, Subset
from .records import Hit, Record, VectorMemoryError, check_same_model, source_dict

log = logging.getLogger(__name__)

SCHEMA_VERSION = "2"
# Vectors live in their own table: the records table stays small (about 100
# bytes a row instead of 1.6 kB), so fetching hits and scanning metadata for
# filters touch few pages even at a million records.
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        text TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        source_run TEXT,
        source_seq INTEGER,
        time REAL NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS vectors (id INTEGER PRIMARY KEY, vector BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS changes (gen INTEGER PRIMARY KEY AUTOINCREMENT, id INTEGER NOT NULL)",
    """CREATE TRIGGER IF NOT EXISTS vectors_added AFTER INSERT ON vectors
        BEGIN INSERT INTO changes (id) VALUES (new.id); END""",
    """CREATE TRIGGER IF NOT EXISTS vectors_moved AFTER UPDATE OF vector ON vectors
        BEGIN INSERT INTO changes (id) VALUES (new.id); END""",
    """CREATE TRIGGER IF NOT EXISTS vectors_deleted AFTER DELETE ON vectors
        BEGIN INSERT INTO changes (id) VALUES (old.id); END""",
    """CREATE TRIGGER IF NOT EXISTS records_deleted AFTER DELETE ON records
        BEGIN DELETE FROM vectors WHERE id = old.id; END""",
    # Metadata edits leave the change log alone (the vector did not move) and go
    # here: with the change log it says which records may match a filter anew.
    "CREATE TABLE IF NOT EXISTS edits (seq INTEGER PRIMARY KEY AUTOINCREMENT, id INTEGER NOT NULL)",
    """CREATE TRIGGER IF NOT EXISTS records_edited AFTER UPDATE OF metadata ON records
        BEGIN INSERT INTO edits (id) VALUES (new.id); END""",
    "CREATE INDEX IF NOT EXISTS records_time ON records (time)",
]

_FILE = re.compile(r"^(?P<uid>[0-9a-f]{32})-(?P<gen>\d{12})\.faiss$")
_CHUNK = 900  # ids per `IN (...)`: under SQLite's default limit of 999 variables
_FILTERS_CACHED = 8  # filters whose matching ids are kept between searches
_EXACT_AMONG = 30_000  # matches of a filter scored exactly in any case (a few ms at 384 dims)
_MAX_EF = 4096  # the widest restricted HNSW search


def _id_chunks(ids: Sequence[int]) -> Iterator[tuple[list[int], str]]:
    """`ids` in runs that fit one `IN (...)`, each with its `?,?,...` placeholders."""
    ids = list(ids)
    for s in range(0, len(ids), _CHUNK):
        part = ids[s : s + _CHUNK]
        yield part, ",".join("?" * len(part))


def _exact_limit(ef: int, m: int) -> int:
    """Most matches to score exactly rather than walk the graph restricted to them with `ef`.

    The walk computes about ef x M distances (M new neighbours per node it
    expands at level 0), each at a random place in memory; exact scoring
    computes one per match, in order.
    """
    return max(_EXACT_AMONG, ef * m)


def connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 60000")
    for _ in range(50):  # switching to WAL needs a moment without other writers
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError:
            time.sleep(0.1)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -32768")  # 32 MB of page cache
    conn.execute("PRAGMA mmap_size = 1073741824")  # read pages through mmap: no copy per read
    return conn


def _check_ours(path: Path) -> None:
    """Raise sqlite3.Error unless `path` is missing, empty, or a memory file (read only, changes nothing)."""
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return
    probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        # A database with no tables yet is new: another process opening the same new
        # file at this moment has switched it to WAL and not yet made the schema.
        if probe.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            return
        probe.execute("SELECT value FROM meta WHERE key = 'uid'").fetchall()
        schema = probe.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if schema is None:  # tables named like ours, made by someone else: touch nothing
            raise sqlite3.DatabaseError("it has no memory schema version")
        if schema[0] != SCHEMA_VERSION:
            raise _other_schema(path, schema[0])
        probe.execute("SELECT id, text, metadata, source_run, source_seq, time FROM records LIMIT 0").fetchall()
        probe.execute("SELECT id, vector FROM vectors LIMIT 0").fetchall()
    finally:
        probe.close()


def _other_schema(path: Path, found: str | None) -> VectorMemoryError:
    return VectorMemoryError(f"{path} has memory schema {found!r}; this version reads {SCHEMA_VERSION!r}")


_PARTIAL = re.compile(r"\.(?:faiss|npz)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")


def _sweep_partial_saves(folder: Path) -> None:
    """Remove the half-written files of index saves whose process died (each is up to an
    index's size). A live process's files are left alone; a reused pid keeps them a while."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        m = _PARTIAL.search(p.name)
        if m is None:
            continue
        try:
            os.kill(int(m["pid"]), 0)
        except ProcessLookupError:
            p.unlink(missing_ok=True)
        except (PermissionError, OverflowError, ValueError):  # someone else's live process, or no pid
            pass


class SqliteStore:
    """Records and vectors in one SQLite file; exact or HNSW search in process."""

    backend = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        ann_threshold: int = 20_000,
        hnsw_m: int = 48,
        ef_construction: int = 160,
        ef_search: int | None = None,
        save_every: int = 10_000,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ann_dir = self.path.with_name(self.path.name + ".ann")
        self.ann_threshold = ann_threshold
        self.hnsw_params = {"m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
        self.save_every = save_every
        self.threads = threads
        self._lock = threading.RLock()
        self._closed = False
        try:
            _check_ours(self.path)  # before connect() switches the file to WAL: a file not ours stays as it was
            self.conn = connect(self.path)
            with self._write():
                for statement in _SCHEMA:
                    self.conn.execute(statement)
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('uid', ?)", (uuid.uuid4().hex,))
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            self.uid = self._meta("uid")
            schema = self._meta("schema")
        except sqlite3.Error as e:
            conn = getattr(self, "conn", None)
            if conn is not None:
                conn.close()
            raise VectorMemoryError(
                f"{self.path} cannot be opened as a memory file ({e}); is it another program's database, "
                "damaged, or a folder?"
            ) from None
        if schema != SCHEMA_VERSION:
            self.conn.close()
            raise _other_schema(self.path, schema)
        self.cache = EmbeddingCache(connect=connect(self.path))
        self._index: ExactIndex | HnswIndex | None = None
        self._gen = 0  # generation the in-memory index reflects
        self._saved_gen = -1  # generation of the index file this process last wrote or read
        self._data_version: int | None = None
        self._needs_save = False
        # where-SQL and params -> the ids that match, ascending, and the index positions derived from them
        self._matches: dict[tuple[str, tuple[Any, ...]], _Matches] = {}
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            store = ref()
            if store is not None:
                store.close()

        self._atexit = close_at_exit
        atexit.register(close_at_exit)

    # -- plumbing --------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[None]:
        with self._lock:
            self._check_open()
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[None]:
        """One consistent snapshot for several statements."""
        with self._lock:
            self._check_open()
            if self.conn.in_transaction:
                yield
                return
            self.conn.execute("BEGIN")
            try:
                yield
            finally:
                self.conn.execute("COMMIT")

    def _check_open(self) -> None:
        if self._closed:
            raise VectorMemoryError(f"memory {self.path} is closed")

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _generation(self) -> int:
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    def model_info(self) -> tuple[str | None, int | None]:
        with self._lock:
            dim = self._meta("dim")
            return self._meta("model"), int(dim) if dim else None

    def bind_model(self, model: str, dim: int, fingerprint: str | None = None) -> None:
        """Record the embedding model on first use; refuse a different one later.

        The model's fingerprint (see `TransformersEmbedder.fingerprint`) goes in its
        own meta row, which earlier versions ignore: they still open the file.
        """
        with self._write():
            stored, stored_dim, stored_print = self._meta("model"), self._meta("dim"), self._meta("model_print")
            if stored is None:
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('model', ?)", (model,))
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(dim),))
            else:
                recorded = (stored, int(stored_dim or 0), stored_print)
                check_same_model(f"memory {self.path}", recorded, model, dim, fingerprint)
            if fingerprint and stored_print is None:  # recorded from now on (a memory made before: by name once)
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('model_print', ?)", (fingerprint,))

    # -- writes ----------------------------------------------------------------

    def insert(
        self,
        rows: Sequence[tuple[str, str, str | None, int | None, float]],
        vectors: np.ndarray,
    ) -> list[int]:
        """Insert `(text, metadata_json, source_run, source_seq, time)` rows with their vectors."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._write():
            before = self._generation()
            if self._index is not None and before != self._gen:
                self._catch_up(before)
            row = self.conn.execute(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0), "
                "COALESCE((SELECT MAX(id) FROM records), 0))"
            ).fetchone()
            first = int(row[0]) + 1
            ids = list(range(first, first + len(rows)))
            self.conn.executemany(
                "INSERT INTO records (id, text, metadata, source_run, source_seq, time) VALUES (?, ?, ?, ?, ?, ?)",
                [(i, *r) for i, r in zip(ids, rows, strict=True)],
            )
            self.conn.executemany(
                "INSERT INTO vectors (id, vector) VALUES (?, ?)",
                [(i, v.tobytes()) for i, v in zip(ids, vectors, strict=True)],
            )
            after = self._generation()
            self._maybe_prune(before, after)
        self._applied(after, upsert=(np.asarray(ids, dtype=np.int64), vectors))
        return ids

    def update(
        self, record_id: int, text: str | None, metadata_json: str | None, vector: np.ndarray | None
    ) -> bool:
        sets, params = [], []
        if text is not None:
            sets.append("text = ?")
            params.append(text)
        if metadata_json is not None:
            sets.append("metadata = ?")
            params.append(metadata_json)
        if not sets and vector is None:
            return self.get(record_id) is not None
        with self._write():
            before = self._generation()
            if self._index is not None and before != self._gen:
                self._catch_up(before)
            sets.append("id = id")  # a no-op that still counts the row
            changed = self.conn.execute(
                f"UPDATE records SET {', '.join(sets)} WHERE id = ?", (*params, record_id)
            ).rowcount
            if changed and vector is not None:
                self.conn.execute(
                    "UPDATE vectors SET vector = ? WHERE id = ?",
                    (np.asarray(vector, dtype=np.float32).tobytes(), record_id),
                )
            if changed and metadata_json is not None:  # the trigger logged it: keep the last 10k edits
                self.conn.execute("DELETE FROM edits WHERE seq <= (SELECT MAX(seq) FROM edits) - 10000")
            after = self._generation()
        if vector is not None and changed:
            self._applied(after, upsert=(np.asarray([record_id], dtype=np.int64), vector.reshape(1, -1)))
        else:
            self._applied(after)
        return bool(changed)

    def delete(self, ids: Sequence[int]) -> int:
        ids = [int(i) for i in ids]
        deleted = 0
        with self._write():
            before = self._generation()
            if self._index is not None and before != self._gen:
                self._catch_up(before)
            for part, marks in _id_chunks(ids):
                deleted += self.conn.execute(f"DELETE FROM records WHERE id IN ({marks})", part).rowcount
            after = self._generation()
            self._maybe_prune(before, after)  # deletes are changes too: a memory that churns trims its log
        self._applied(after, remove=ids)
        return deleted

    def _applied(
        self,
        gen: int,
        upsert: tuple[np.ndarray, np.ndarray] | None = None,
        remove: Sequence[int] | None = None,
    ) -> None:
        """Bring the in-memory index to `gen` with this process's own change."""
        with self._lock:
            if self._index is None:
                return
            if upsert is not None:
                self._index.upsert(*upsert)
            if remove:
                self._index.remove(remove)
            self._gen = gen

    def _maybe_prune(self, before: int, after: int) -> None:
        """Trim the change log now and then, never past the newest saved index file."""
        if before // 5000 == after // 5000:
            return
        saved = self._meta("ann_gen")
        keep_from = after - max(20_000, self.save_every * 2)
        count = int(self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        # The log is kept back to the saved index file for those who load it, while loading
        # it could still pay: not once the memory is below where any process loads one (see
        # _open_index), nor once more changes came after it than a rebuild costs (_catch_up
        # rebuilds then). A memory that shrank and stopped saving would otherwise keep its
        # whole log from that file on, growing without end.
        if saved is not None and count >= self.ann_threshold // 2 and after - int(saved) <= max(50_000, 2 * count):
            keep_from = min(keep_from, int(saved))
        if keep_from > 0:
            self.conn.execute("DELETE FROM changes WHERE gen < ?", (keep_from,))

    # -- reads -----------------------------------------------------------------

    def get(self, record_id: int) -> Record | None:
        with self._lock:
            self._check_open()
            found = self._records([record_id])
        return found.get(record_id)

    def count(self) -> int:
        with self._lock:
            self._check_open()
            if self._index is not None:
                self._sync()
                return len(self._index)
            return int(self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def ids(self, where: Where | None = None) -> list[int]:
        sql, params = to_sqlite(where)
        with self._lock:
            self._check_open()
            return [
                r[0] for r in self.conn.execute(f"SELECT id FROM records WHERE {sql} ORDER BY id", params)
            ]

    def records(self, ids: Sequence[int]) -> dict[int, Record]:
        with self._lock:
            self._check_open()
            return self._records(ids)

    def recent(self, limit: int, where: Where | None = None) -> list[Record]:
        sql, params = to_sqlite(where)
        with self._lock:
            self._check_open()
            rows = self.conn.execute(
                "SELECT id, text, metadata, source_run, source_seq, time FROM records "
                f"WHERE {sql} ORDER BY time DESC, id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [_record(r) for r in rows]

    def _records(self, ids: Sequence[int]) -> dict[int, Record]:
        return {i: _record(row) for i, row in self._rows(ids).items()}

    def _rows(self, ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        out: dict[int, tuple[Any, ...]] = {}
        for part, marks in _id_chunks(ids):
            for row in self.conn.execute(
                f"SELECT id, text, metadata, source_run, source_seq, time FROM records WHERE id IN ({marks})",
                part,
            ):
                out[row[0]] = row
        return out

    def search(
        self, query: np.ndarray, k: int, where: Where | None = None, min_score: float | None = None
    ) -> list[Hit]:
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        with self._lock:
            self._check_open()
            self._ensure_index()
            index = self._index
            assert index is not None
            if k <= 0 or len(index) == 0:
                return []
            if where:
                sql, params = to_sqlite(where)
                if isinstance(index, ExactIndex):
                    ids, scores = index.search_among(query, k, self._matches_of(sql, params).subset(index))
                else:
                    ids, scores = self._filtered_ann(index, query, k, sql, params)
            else:
                ids, scores = index.search(query, k)
            if min_score is not None:
                keep = scores >= min_score
                ids, scores = ids[keep], scores[keep]
            found = self._rows(ids.tolist())
        hits = []
        for i, s in zip(ids.tolist(), scores.tolist(), strict=True):
            row = found.get(i)
            if row is not None:  # deleted by another process a moment ago
                # Straight from the row: going through a Record cost about 4 µs a hit.
                hits.append(Hit(i, row[1], _metadata(row[2]), source_dict(row[3], row[4]), row[5], s))
        hits.sort(key=lambda h: (-h.score, h.id))
        return hits

    def _filtered_ann(
        self, index: HnswIndex, query: np.ndarray, k: int, sql: str, params: list[Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """HNSW with a filter: over-fetch once, then search among the matches only.

        Most filters match some of the nearest candidates: one over-fetch finds
        k matches. When it does not, the matches lie elsewhere in the graph
        (widening the search step by step cost up to a second at 1M records).
        Then the matches are scored exactly when that is cheaper than a graph
        walk restricted to them (faiss `IDSelectorBitmap` over their positions)
        with an ef scaled by how rare they were among the candidates.
        """
        fetch = max(20 * k, 200)
        ids, scores = index.search(query, fetch, ef=fetch)
        if (sql, tuple(params)) in self._matches:
            keep = self._matches_of(sql, params).contains(ids)
        else:
            keep = np.isin(ids, self._matching(sql, params, ids))
        passed = int(keep.sum())
        if passed >= k or len(ids) >= len(index):
            return ids[keep][:k], scores[keep][:k]
        subset = self._matches_of(sql, params).subset(index)
        # A walk that admits only matches keeps its ef nearest nodes, matches or not: to hold
        # about 4k matches it needs ef = 4k / (their share near the query). None among the
        # candidates means rarer than 1 in `fetch`.
        ef = min(max(fetch, 4 * k * fetch // max(passed, 1)), _MAX_EF)
        if len(subset) <= _exact_limit(ef, index.m):
            return index.exact_among(query, k, subset)
        found = index.search_among(query, k, subset, ef=ef)
        if len(found[0]) >= k:
            return found
        return index.exact_among(query, k, subset)

    def _matches_of(self, sql: str, params: list[Any]) -> _Matches:
        """The ids matching a filter: one scan of the table, then brought up to date from the logs."""
        key = (sql, tuple(params))
        with self._read():
            gen, edit = self.conn.execute(
                "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'changes'), "
                "(SELECT seq FROM sqlite_sequence WHERE name = 'edits')"
            ).fetchone()
            gen, edit = gen or 0, edit or 0
            found = self._matches.get(key)
            if found is not None and (found.gen, found.edit) != (gen, edit):
                changed = self._written_since(found.gen, found.edit, gen, edit)
                if changed is None:
                    del self._matches[key]
                    found = None
                else:
                    found.update(changed, self._matching(sql, params, changed), gen, edit)
            if found is None:
                if len(self._matches) >= _FILTERS_CACHED:
                    self._matches.pop(next(iter(self._matches)))
                rows = self.conn.execute(f"SELECT id FROM records WHERE {sql} ORDER BY id", params)
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64)
                found = self._matches[key] = _Matches(ids, gen, edit)
        return found

    def _written_since(self, gen: int, edit: int, now_gen: int, now_edit: int) -> np.ndarray | None:
        """Ids added, moved, deleted or edited since; None if the logs no longer reach back (or too many)."""
        for table, key, since, now in (("changes", "gen", gen, now_gen), ("edits", "seq", edit, now_edit)):
            if now == since:
                continue
            oldest = self.conn.execute(
                f"SELECT MIN({key}) FROM {table} WHERE {key} > ?", (since,)
            ).fetchone()[0]
            if oldest is None or oldest > since + 1:
                return None
        ids = np.fromiter(
            (
                r[0]
                for r in self.conn.execute(
                    "SELECT id FROM changes WHERE gen > ? UNION SELECT id FROM edits WHERE seq > ?",
                    (gen, edit),
                )
            ),
            dtype=np.int64,
        )
        return ids if len(ids) <= 50_000 else None

    def _matching(self, sql: str, params: list[Any], ids: np.ndarray) -> np.ndarray:
        """Those of `ids` whose records match."""
        found: list[int] = []
        for part, marks in _id_chunks(ids.tolist()):
            query = f"SELECT id FROM records WHERE id IN ({marks}) AND {sql}"
            found.extend(r[0] for r in self.conn.execute(query, (*part, *params)))
        return np.asarray(found, dtype=np.int64)

    # -- the index ---------------------------------------------------------------

    @property
    def index_kind(self) -> str | None:
        return self._index.kind if self._index is not None else None

    def _ensure_index(self) -> None:
        if self._index is None:
            self._open_index()
        else:
            self._sync()
        index = self._index
        if isinstance(index, ExactIndex) and len(index) >= self.ann_threshold:
            started = time.perf_counter()
            ids, vecs = index.all()
            ann = HnswIndex(index.dim, threads=self.threads, **self.hnsw_params)
            ann.upsert(ids, vecs)
            self._index = ann
            log.info("built an HNSW index of %d vectors in %.1f s", len(ann), time.perf_counter() - started)
            self._needs_save = True
        elif isinstance(index, HnswIndex):
            if len(index) < self.ann_threshold // 2:
                exact = ExactIndex(index.dim)
                exact.upsert(*index.live())
                self._index = exact
            elif index.dead_ratio > 0.25:
                self._index = index.compacted()
                self._needs_save = True
            elif self._gen - self._saved_gen >= max(self.save_every, len(index) // 10):
                self._needs_save = True
        if self._needs_save:
            self._save()

    def _sync(self) -> None:
        """Replay other processes' writes, if there were any since we last looked."""
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return
        with self._read():
            self._catch_up(self._generation())
            self._data_version = version

    def _catch_up(self, gen: int, *, reopen: bool = True) -> bool:
        """Apply the change log from our generation to `gen` (inside a transaction).

        When the log cannot bring the index up to date, the index is dropped and,
        with `reopen`, opened afresh; False says it was dropped. `_open_index`
        passes `reopen=False` and tries its next file: reopening from here would
        load the same stale file again, without end.
        """
        index = self._index
        if index is None or gen == self._gen:
            return True
        oldest = self.conn.execute("SELECT MIN(gen) FROM changes").fetchone()[0]
        changed: list[int] = []
        # The log must reach back to our generation (else the file was replaced, or pruned past us).
        stale = gen < self._gen or oldest is None or oldest > self._gen + 1
        if not stale:
            changed = [
                r[0] for r in self.conn.execute("SELECT DISTINCT id FROM changes WHERE gen > ?", (self._gen,))
            ]
            stale = len(changed) > max(50_000, len(index))  # a rebuild is cheaper
        if stale:
            self._index = None
            if reopen:
                self._open_index()
            return False
        for part, marks in _id_chunks(changed):
            rows = self.conn.execute(f"SELECT id, vector FROM vectors WHERE id IN ({marks})", part).fetchall()
            present = {r[0] for r in rows}
            index.remove([i for i in part if i not in present])
            if rows:
                index.upsert(
                    np.asarray([r[0] for r in rows], dtype=np.int64),
                    np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1),
                )
        self._gen = gen
        return True

    def _open_index(self) -> None:
        with self._read():
            gen = self._generation()
            count = int(self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
            _, dim = self.model_info()
            if dim is None:
                row = self.conn.execute("SELECT length(vector) FROM vectors LIMIT 1").fetchone()
                dim = row[0] // 4 if row else 0
            self._data_version = self.conn.execute("PRAGMA data_version").fetchone()[0]
            if count >= self.ann_threshold // 2:
                # A file newer than the newest save this database recorded was saved from
                # another copy of it (the .db restored from a backup, the folder kept): its
                # generations name other changes. It is skipped, and replaced at the next save.
                recorded = self._meta("ann_gen")
                newest = min(gen, int(recorded)) if recorded is not None else -1
                for path, file_gen in self._index_files():
                    if file_gen > newest:
                        continue
                    try:
                        started = time.perf_counter()
                        loaded = HnswIndex.load(self.ann_dir, path.stem, threads=self.threads)
                    except Exception as e:  # damaged or removed under us: try the next, else rebuild
                        log.warning("cannot load index %s: %s", path, e)
                        continue
                    if loaded.dim != dim:
                        continue
                    log.info(
                        "loaded %s (%d vectors) in %.2f s",
                        path.name,
                        len(loaded),
                        time.perf_counter() - started,
                    )
                    self._index, self._gen, self._saved_gen = loaded, file_gen, file_gen
                    if self._catch_up(gen, reopen=False):
                        return
            # Build from the records (in id order, so HNSW insertion order is stable).
            index: ExactIndex | HnswIndex
            if count >= self.ann_threshold:
                index = HnswIndex(dim, threads=self.threads, **self.hnsw_params)
            else:
                index = ExactIndex(dim)
            last = 0
            while True:
                rows = self.conn.execute(
                    "SELECT id, vector FROM vectors WHERE id > ? ORDER BY id LIMIT 50000", (last,)
                ).fetchall()
                if not rows:
                    break
                last = rows[-1][0]
                index.upsert(
                    np.asarray([r[0] for r in rows], dtype=np.int64),
                    np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim),
                )
            self._index, self._gen = index, gen
            self._needs_save = isinstance(index, HnswIndex)

    def _index_files(self) -> list[tuple[Path, int]]:
        """This memory's index files, newest first."""
        if not self.ann_dir.is_dir():
            return []
        found = []
        for p in self.ann_dir.iterdir():
            m = _FILE.match(p.name)
            if m and m["uid"] == self.uid and p.with_suffix(".npz").exists():
                found.append((p, int(m["gen"])))
        return sorted(found, key=lambda f: -f[1])

    def _save(self) -> None:
        """Persist the HNSW index at its generation; remove older files."""
        index = self._index
        self._needs_save = False
        if not isinstance(index, HnswIndex) or self._gen == self._saved_gen:
            return
        stem = f"{self.uid}-{self._gen:012d}"
        started = time.perf_counter()
        _sweep_partial_saves(self.ann_dir)
        index.save(self.ann_dir, stem)
        self._saved_gen = self._gen
        log.info("saved %s (%d vectors) in %.2f s", stem, len(index), time.perf_counter() - started)
        with self._write():
            saved = self._meta("ann_gen")
            if saved is None or int(saved) < self._gen:
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('ann_gen', ?)", (str(self._gen),))
        for path, file_gen in self._index_files():
            if file_gen < self._gen:
                for p in (path, path.with_suffix(".npz")):
                    p.unlink(missing_ok=True)

    def flush(self) -> None:
        """Save the approximate index now (it is otherwise saved now and then and at close)."""
        with self._lock:
            self._check_open()
            if isinstance(self._index, HnswIndex):
                self._sync()
                self._save()

    def index_info(self) -> dict[str, Any]:
        with self._lock:
            index = self._index
            return {
                "kind": index.kind if index is not None else None,
                "size": len(index) if index is not None else None,
                "generation": self._gen,
                "saved_generation": self._saved_gen,
                "dead": getattr(index, "_dead", 0),
            }

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                if isinstance(self._index, HnswIndex):
                    self._sync()
                    self._save()
            except Exception as e:  # never lose the records over the index cache
                log.warning("could not save the index of %s: %s", self.path, e)
            self._closed = True
            self._index = None
            self.conn.close()
            cache_conn = self.cache._conn
            if cache_conn is not None:
                cache_conn.close()
        atexit.unregister(self._atexit)


class _Matches:
    """The ids of the records that match one filter as of the logs' `gen` and `edit`, and their positions."""

    def __init__(self, ids: np.ndarray, gen: int, edit: int) -> None:
        self.ids = ids  # ascending
        self.gen, self.edit = gen, edit
        self._subset: Subset | None = None

    def update(self, changed: np.ndarray, matching: np.ndarray, gen: int, edit: int) -> None:
        """`changed` records were written since; of them, `matching` match now."""
        # Binary search in the sorted ids, not numpy's set operations (they hash both: ms at 100k ids).
        ids = np.delete(self.ids, np.searchsorted(self.ids, changed[self.contains(changed)]))
        matching = np.sort(matching)
        self.ids = np.insert(ids, np.searchsorted(ids, matching), matching)
        self.gen, self.edit = gen, edit
        self._subset = None

    def contains(self, ids: np.ndarray) -> np.ndarray:
        if len(self.ids) == 0:
            return np.zeros(len(ids), dtype=bool)
        at = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return self.ids[at] == ids

    def subset(self, index: ExactIndex | HnswIndex) -> Subset:
        subset = self._subset
        if subset is None or subset.index is not index or not subset.valid:
            subset = self._subset = Subset(index, index.positions(self.ids))
        return subset


def _metadata(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text and text != "{}" else {}


def _record(row: tuple[Any, ...]) -> Record:
    return Record(
        id=row[0],
        text=row[1],
        metadata=_metadata(row[2]),
        source=source_dict(row[3], row[4]),
        time=row[5],
    )
