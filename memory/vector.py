"""`VectorMemory`: texts with metadata, searched by meaning.

```python
from memory import VectorMemory

mem = VectorMemory("notes.db")                      # all-MiniLM-L6-v2, one SQLite file
i = mem.add("The staging DB password rotates on Mondays", {"tags": ["ops"]})
mem.search("when does the password change?", k=3, where={"tags": {"$contains": "ops"}})

shared = VectorMemory.postgres("postgresql://host/db", collection="team")  # pgvector, many hosts
```

The embedded default keeps everything in one SQLite file (WAL mode, safe for
several processes) with an exact or HNSW index beside it; the PostgreSQL
backend keeps it in a pgvector table. Both give the same results through the
same API. Embeddings are cached by content hash, per model.
"""

from __future__ import annotations

import math
import numbers
import time as _time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .embedders import CachedEmbedder, Embedder, resolve_embedder
from .filters import Where
from .records import Hit, Record, VectorMemoryError, dump_metadata, has_lone_surrogate, normalize_source

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Hit", "Record", "VectorMemory", "VectorMemoryError"]


class VectorMemory:
    """A semantic memory over one store (SQLite by default, or PostgreSQL)."""

    def __init__(
        self,
        path: str | Path,
        embedder: Embedder | str | Path | None = None,
        *,
        name: str | None = None,
        ann_threshold: int = 20_000,
        hnsw_m: int = 48,
        ef_construction: int = 160,
        ef_search: int | None = None,
        threads: int | None = None,
        cache_embeddings: bool = True,
    ) -> None:
        from .store_sqlite import SqliteStore

        if not str(path).strip():
            raise VectorMemoryError("VectorMemory needs a file path (e.g. 'notes.db'), not an empty string")
        store = SqliteStore(
            path,
            ann_threshold=ann_threshold,
            hnsw_m=hnsw_m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            threads=threads,
        )
        self._setup(store, embedder, name or Path(path).stem, cache_embeddings)

    @classmethod
    def postgres(
        cls,
        dsn: str,
        embedder: Embedder | str | Path | None = None,
        *,
        collection: str = "memory",
        name: str | None = None,
        ef_search: int | None = None,
        cache_embeddings: bool = True,
    ) -> VectorMemory:
        """A memory in PostgreSQL + pgvector, shared by every host that can reach the server."""
        from .store_pg import PgVectorStore

        self = cls.__new__(cls)
        self._setup(
            PgVectorStore(dsn, collection=collection, ef_search=ef_search),
            embedder,
            name or collection,
            cache_embeddings,
        )
        return self

    @classmethod
    def from_store(
        cls,
        store: Any,
        embedder: Embedder | str | Path | None = None,
        *,
        name: str = "memory",
        cache_embeddings: bool = True,
    ) -> VectorMemory:
        self = cls.__new__(cls)
        self._setup(store, embedder, name, cache_embeddings)
        return self

    def _setup(self, store: Any, embedder: Any, name: str, cache_embeddings: bool) -> None:
        self.store = store
        self.name = name
        self._raw_embedder = embedder
        self._embedder: Embedder | None = None
        self._cache_embeddings = cache_embeddings
        self._bound = False

    def __repr__(self) -> str:
        return f"VectorMemory({self.name!r}, backend={self.store.backend!r})"

    # -- embedding -------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            inner = resolve_embedder(self._raw_embedder)
            cache = getattr(self.store, "cache", None)
            self._embedder = (
                CachedEmbedder(inner, cache) if self._cache_embeddings and cache is not None else inner
            )
        return self._embedder

    def _bind(self) -> None:
        if not self._bound:
            emb = self.embedder
            self.store.bind_model(emb.name, emb.dim, getattr(emb, "fingerprint", None))
            self._bound = True

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.embed(list(texts))

    # -- writes ------------------------------------------------------------------

    def add(
        self,
        text: str,
        metadata: dict[str, Any] | None = None,
        source: Any = None,
        *,
        time: float | None = None,
        vector: np.ndarray | None = None,
    ) -> int:
        """Store one text; returns its id."""
        vectors = None if vector is None else vector.reshape(1, -1)
        return self.add_many([text], [metadata], [source], times=[time], vectors=vectors)[0]

    def add_many(
        self,
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        sources: Sequence[Any] | None = None,
        *,
        times: Sequence[float | None] | None = None,
        vectors: np.ndarray | None = None,
        batch_size: int = 10_000,
    ) -> list[int]:
        """Store many texts (embedded in batches, or with precomputed unit `vectors`).

        Every text, metadata dict, source and time is checked before anything is
        embedded or written, so a bad item stores nothing. Each batch is one
        transaction: a process killed midway keeps the batches written before.
        """
        import numpy as np

        if isinstance(texts, (str, bytes)):
            raise VectorMemoryError("add_many takes a list of texts, not one string; use add(text)")
        texts = list(texts)
        n = len(texts)
        for label, seq in (("metadatas", metadatas), ("sources", sources), ("times", times)):
            if seq is not None and len(seq) != n:
                raise VectorMemoryError(f"{label} has {len(seq)} items for {n} texts")
        for t in texts:
            _check_text(t)
        now = _time.time()
        rows = []
        for i, text in enumerate(texts):
            run, seq = normalize_source(sources[i] if sources is not None else None)
            when = _check_time(times[i] if times is not None else None, now)
            rows.append(
                (text, dump_metadata(metadatas[i] if metadatas is not None else None), run, seq, when)
            )
        self._bind()
        dim = self.embedder.dim
        if vectors is not None:
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.shape != (n, dim):
                raise VectorMemoryError(f"vectors must have shape ({n}, {dim}), not {vectors.shape}")
            if not np.isfinite(vectors).all():
                raise VectorMemoryError("vectors hold NaN or infinite values")
        ids: list[int] = []
        for s in range(0, n, batch_size):
            vecs = (
                vectors[s : s + batch_size]
                if vectors is not None
                else self.embedder.embed(texts[s : s + batch_size])
            )
            ids.extend(self.store.insert(rows[s : s + batch_size], vecs))
        return ids

    def update(self, id: int, text: str | None = None, metadata: dict[str, Any] | None = None) -> bool:
        """Change a record's text (re-embedded) and/or replace its metadata. False if it is gone."""
        vector = None
        if text is not None:
            _check_text(text)
            self._bind()
            vector = self.embedder.embed([text])[0]
        meta = dump_metadata(metadata) if metadata is not None else None
        id = int(id)
        return self.store.update(id, text, meta, vector) if _storable(id) else False

    def delete(self, id: int | Sequence[int]) -> bool | int:
        """Delete one record (True if it existed) or a list of them (how many existed)."""
        if isinstance(id, Iterable) and not isinstance(id, (str, bytes)):  # a list, set, range, array
            return self.store.delete([i for i in map(int, id) if _storable(i)])
        id = int(id)
        return _storable(id) and self.store.delete([id]) == 1

    # -- reads -------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 5,
        where: Where | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """The k records nearest in meaning to `query` (cosine score, best first)."""
        _check_text(query, "search takes a query string", "the query")
        k = _check_search(k, min_score)
        if k <= 0:
            return []
        self._bind()
        return self.store.search(self.embedder.embed_query(query), k, where, min_score)

    def search_vector(
        self, vector: np.ndarray, k: int = 5, where: Where | None = None, min_score: float | None = None
    ) -> list[Hit]:
        """Like `search`, with a unit query vector of the memory's model."""
        import numpy as np

        k = _check_search(k, min_score)
        if k <= 0:
            return []
        self._bind()
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape != (self.embedder.dim,) or not np.isfinite(vector).all():
            raise VectorMemoryError(
                f"the query vector must be {self.embedder.dim} finite numbers (the memory's model), "
                f"not shape {vector.shape}"
            )
        return self.store.search(vector, k, where, min_score)

    def get(self, id: int) -> Record | None:
        id = int(id)
        return self.store.get(id) if _storable(id) else None

    def count(self) -> int:
        return self.store.count()

    def __len__(self) -> int:
        return self.count()

    def ids(self, where: Where | None = None) -> list[int]:
        """Ids of all records (matching `where`), oldest id first."""
        return self.store.ids(where)

    def records(self, ids: Sequence[int]) -> list[Record]:
        found = self.store.records([i for i in map(int, ids) if _storable(i)])
        return [found[i] for i in ids if i in found]

    def recent(self, limit: int = 10, where: Where | None = None) -> list[Record]:
        """The newest records by time."""
        limit = _check_search(limit, None, "limit")
        if limit <= 0:
            return []
        return self.store.recent(limit, where)

    # -- lifetime ------------------------------------------------------------------

    def flush(self) -> None:
        """Persist the approximate index now (SQLite backend)."""
        flush = getattr(self.store, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> VectorMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_text(text: Any, must: str = "texts must be strings", what: str = "a text to store") -> None:
    if not isinstance(text, str):
        raise VectorMemoryError(f"{must}, not {type(text).__name__}")
    if not text.strip():  # no meaning to store or to look for: any record would match at random
        raise VectorMemoryError(f"{what} cannot be empty ({text!r}): there is nothing to embed")
    if has_lone_surrogate(text):
        raise VectorMemoryError(
            f"text {text[:40]!r}... holds a lone surrogate, which cannot be stored as UTF-8"
        )


def _check_time(when: Any, now: float) -> float:
    """A record's time: seconds since the epoch (None: now). NumPy numbers are numbers."""
    if when is None:
        return now
    if isinstance(when, bool) or not isinstance(when, numbers.Real) or not math.isfinite(when):
        raise VectorMemoryError(f"time must be seconds since the epoch (a finite number), not {when!r}")
    return float(when)


def _check_search(k: Any, min_score: Any, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise VectorMemoryError(f"{name} must be a whole number, 0 or more, not {k!r}")
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, numbers.Real)):
        raise VectorMemoryError(f"min_score must be a number, not {min_score!r}")
    return min(int(k), 2**62)  # "all of them": no store holds more, and SQLite's integers end at 2**63


def _storable(id: int) -> bool:
    """Whether an id fits the stores' 64-bit integers (a bigger one names no record)."""
    return -(2**63) <= id < 2**63
