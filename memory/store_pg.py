"""PostgreSQL + pgvector backend: one memory shared by every host that reaches the server.

A collection is one table `memory_<collection>` (text, metadata jsonb, source,
time, embedding vector(dim)) with an HNSW index on inner product, kept up to
date by PostgreSQL itself. Filtered searches use pgvector's iterative index
scan (`hnsw.iterative_scan = relaxed_order`), so a selective filter still
returns k rows. Embeddings are cached in `agent_embedding_cache`, shared by
all hosts.

```python
mem = VectorMemory.postgres("postgresql://user@db-host/agents", collection="team_notes")
```
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .embedders import EmbeddingCache
from .filters import Where, to_postgres
from .records import Hit, Record, VectorMemoryError, check_same_model, source_dict

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_LOCK_KEY = 0x6D656D6F7279  # pg_advisory_xact_lock key for schema changes ("memory")


def _vec(v: np.ndarray) -> str:
    return "[" + ",".join(map(repr, np.asarray(v, dtype=np.float32).astype(float).tolist())) + "]"


class PgVectorStore:
    """Records of one collection in a pgvector table; search by the server's HNSW index."""

    backend = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        collection: str = "memory",
        ef_search: int | None = 64,
        hnsw_m: int = 16,
        ef_construction: int = 64,
        connect_timeout: float = 10.0,
    ) -> None:
        try:
            import psycopg
        except ImportError as e:  # pragma: no cover - depends on the install
            raise VectorMemoryError(
                "the PostgreSQL backend needs psycopg (pip install 'agent-runtime[memory]')"
            ) from e
        if not _NAME.match(collection):
            raise VectorMemoryError(f"collection {collection!r}: use lowercase letters, digits and '_'")
        self.collection = collection
        self.table = f"memory_{collection}"
        self.hnsw = {"m": hnsw_m, "ef_construction": ef_construction}
        self._lock = threading.RLock()
        self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=int(connect_timeout))
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS agent_memory_meta "
                "(collection TEXT PRIMARY KEY, model TEXT NOT NULL, dim INTEGER NOT NULL)"
            )
            # The model's fingerprint (see bind_model), in a column that earlier versions do not read.
            self.conn.execute("ALTER TABLE agent_memory_meta ADD COLUMN IF NOT EXISTS model_print TEXT")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS agent_embedding_cache "
                "(model TEXT NOT NULL, hash BYTEA NOT NULL, vector BYTEA NOT NULL, PRIMARY KEY (model, hash))"
            )
        self.conn.execute(f"SET hnsw.ef_search = {int(ef_search or 64)}")
        self.conn.execute("SET hnsw.iterative_scan = relaxed_order")
        self.cache = _PgCache(self)
        self._dim: int | None = None
        self._closed = False

    # -- schema ------------------------------------------------------------------

    def model_info(self) -> tuple[str | None, int | None]:
        with self._lock:
            row = self.conn.execute(
                "SELECT model, dim FROM agent_memory_meta WHERE collection = %s", (self.collection,)
            ).fetchone()
        return (row[0], int(row[1])) if row else (None, None)

    def bind_model(self, model: str, dim: int, fingerprint: str | None = None) -> None:
        """Record the embedding model on first use; refuse a different one later (the
        fingerprint in its own column, which earlier versions do not read)."""
        with self._lock, self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            row = self.conn.execute(
                "SELECT model, dim, model_print FROM agent_memory_meta WHERE collection = %s", (self.collection,)
            ).fetchone()
            if row is None:
                self.conn.execute(
                    "INSERT INTO agent_memory_meta (collection, model, dim, model_print) VALUES (%s, %s, %s, %s)",
                    (self.collection, model, dim, fingerprint),
                )
                t = self.table
                self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {t} (id BIGSERIAL PRIMARY KEY, text TEXT NOT NULL, "
                    "metadata JSONB NOT NULL DEFAULT '{}', source_run TEXT, source_seq BIGINT, "
                    f"time DOUBLE PRECISION NOT NULL, embedding vector({int(dim)}) NOT NULL)"
                )
                self.conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {t}_hnsw ON {t} USING hnsw (embedding vector_ip_ops) "
                    f"WITH (m = {int(self.hnsw['m'])}, ef_construction = {int(self.hnsw['ef_construction'])})"
                )
                self.conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_time ON {t} (time)")
                self._dim = dim
                return
            stored, stored_dim, stored_print = row
            recorded = (stored, int(stored_dim), stored_print)
            check_same_model(f"collection {self.collection!r}", recorded, model, dim, fingerprint)
            if fingerprint and stored_print is None:  # recorded from now on (made before: checked by name once)
                self.conn.execute(
                    "UPDATE agent_memory_meta SET model_print = %s WHERE collection = %s",
                    (fingerprint, self.collection),
                )
        self._dim = dim

    def _ready(self) -> bool:
        """Whether the collection's table exists (it is made on the first write)."""
        if self._closed:
            raise VectorMemoryError(f"collection {self.collection!r} is closed")
        if self._dim is None:
            _, self._dim = self.model_info()
        return self._dim is not None

    # -- writes ------------------------------------------------------------------

    def insert(
        self, rows: Sequence[tuple[str, str, str | None, int | None, float]], vectors: np.ndarray
    ) -> list[int]:
        with self._lock, self.conn.transaction():
            self._ready()
            cur = self.conn.cursor()
            cur.executemany(
                f"INSERT INTO {self.table} (text, metadata, source_run, source_seq, time, embedding) "
                "VALUES (%s, %s::jsonb, %s, %s, %s, %s::vector) RETURNING id",
                [(*r, _vec(v)) for r, v in zip(rows, vectors, strict=True)],
                returning=True,
            )
            ids = []
            while True:
                ids.append(int(cur.fetchone()[0]))  # type: ignore[index]
                if not cur.nextset():
                    break
        return ids

    def update(
        self, record_id: int, text: str | None, metadata_json: str | None, vector: np.ndarray | None
    ) -> bool:
        sets, params = [], []
        if text is not None:
            sets.append("text = %s")
            params.append(text)
        if metadata_json is not None:
            sets.append("metadata = %s::jsonb")
            params.append(metadata_json)
        if vector is not None:
            sets.append("embedding = %s::vector")
            params.append(_vec(vector))
        with self._lock:
            if not self._ready():
                return False
            if not sets:
                return self.get(record_id) is not None
            cur = self.conn.execute(
                f"UPDATE {self.table} SET {', '.join(sets)} WHERE id = %s", (*params, record_id)
            )
            return cur.rowcount > 0

    def delete(self, ids: Sequence[int]) -> int:
        with self._lock:
            if not self._ready():
                return 0
            cur = self.conn.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s)", (list(ids),))
            return cur.rowcount

    # -- reads -------------------------------------------------------------------

    _COLS = "id, text, metadata, source_run, source_seq, time"

    def get(self, record_id: int) -> Record | None:
        return self.records([record_id]).get(record_id)

    def records(self, ids: Sequence[int]) -> dict[int, Record]:
        with self._lock:
            if not self._ready():
                return {}
            rows = self.conn.execute(
                f"SELECT {self._COLS} FROM {self.table} WHERE id = ANY(%s)", (list(ids),)
            ).fetchall()
        return {r[0]: _record(r) for r in rows}

    def count(self) -> int:
        with self._lock:
            if not self._ready():
                return 0
            return int(self.conn.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])  # type: ignore[index]

    def ids(self, where: Where | None = None) -> list[int]:
        sql, params = to_postgres(where)
        with self._lock:
            if not self._ready():
                return []
            return [
                r[0]
                for r in self.conn.execute(f"SELECT id FROM {self.table} WHERE {sql} ORDER BY id", params)
            ]

    def recent(self, limit: int, where: Where | None = None) -> list[Record]:
        sql, params = to_postgres(where)
        with self._lock:
            if not self._ready():
                return []
            rows = self.conn.execute(
                f"SELECT {self._COLS} FROM {self.table} WHERE {sql} ORDER BY time DESC, id DESC LIMIT %s",
                (*params, limit),
            ).fetchall()
        return [_record(r) for r in rows]

    def search(
        self, query: np.ndarray, k: int, where: Where | None = None, min_score: float | None = None
    ) -> list[Hit]:
        sql, params = to_postgres(where)
        q = _vec(np.asarray(query, dtype=np.float32).reshape(-1))
        with self._lock:
            if not self._ready() or k <= 0:
                return []
            rows = self.conn.execute(
                f"SELECT {self._COLS}, -(embedding <#> %s::vector) AS score FROM {self.table} "
                f"WHERE {sql} ORDER BY embedding <#> %s::vector LIMIT %s",
                (q, *params, q, k),
            ).fetchall()
        hits = [Hit(**_record(r).__dict__, score=float(r[6])) for r in rows]
        hits.sort(key=lambda h: (-h.score, h.id))  # relaxed_order may return rows slightly out of order
        if min_score is not None:
            hits = [h for h in hits if h.score >= min_score]
        return hits

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.conn.close()


class _PgCache:
    """The embedding cache in a shared table (same interface as `EmbeddingCache`)."""

    def __init__(self, store: PgVectorStore) -> None:
        self.store = store
        self._local = EmbeddingCache()  # no file: what is kept in this process only (queries)

    def get_many(self, model: str, hashes: list[bytes]) -> dict[bytes, bytes]:
        found = self._local.get_many(model, hashes)
        missing = [h for h in hashes if h not in found]
        if missing:
            with self.store._lock:
                rows = self.store.conn.execute(
                    "SELECT hash, vector FROM agent_embedding_cache WHERE model = %s AND hash = ANY(%s)",
                    (model, missing),
                ).fetchall()
            found.update((bytes(h), bytes(v)) for h, v in rows)
        return found

    def put_many(self, model: str, items: list[tuple[bytes, bytes]], *, persist: bool = True) -> None:
        if not persist:  # queries: one process's, not rows in the shared table for good
            self._local.put_many(model, items)
            return
        with self.store._lock, self.store.conn.transaction():
            self.store.conn.cursor().executemany(
                "INSERT INTO agent_embedding_cache (model, hash, vector) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [(model, h, v) for h, v in items],
            )


def _record(row: Sequence[Any]) -> Record:
    meta = row[2]
    if isinstance(meta, str):
        meta = json.loads(meta)
    return Record(
        id=int(row[0]), text=row[1], metadata=meta or {}, source=source_dict(row[3], row[4]), time=row[5]
    )
