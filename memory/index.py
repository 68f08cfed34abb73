"""In-process vector indexes: exact (numpy) and approximate (faiss HNSW).

Both map record ids to unit vectors and answer top-k inner-product queries.
They are caches of the store: the store (SQLite) is the truth, and an index
is brought up to date from its change log (see `store_sqlite`).

faiss HNSW over float32 vectors was chosen after measuring it here against
usearch and against faiss over fp16 and 8-bit vectors (see
benchmarks/memory_bench.py --compare): usearch answered about half as fast at
equal recall, the smaller vectors saved 5% at 1M. The graph (M 48,
efConstruction 160) and the efSearch by size come from the same benchmark:
recall@10 of 0.95 or more at 100k and 1M. HNSW in faiss cannot remove
vectors, so a deleted or replaced vector becomes a tombstone: a bit cleared
in a bitmap that the search skips (`IDSelectorBitmap`), and the graph is
rebuilt from the live vectors once tombstones pass a quarter of it.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .embedders import cpu_budget


class _Positions(ABC):
    """What an index derives from where its vectors sit: record id -> position
    lookups, and a `version` that every write bumps, so a `Subset` built from
    older positions knows it is stale. Each index says where its live vectors
    sit (`_live`)."""

    version = 0
    _table: np.ndarray | None = None  # record id -> position (-1: absent); built on first use

    def _changed(self) -> None:
        self.version += 1
        self._table = None

    @abstractmethod
    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        """The record ids of the live vectors and their positions."""

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """The positions of the live vectors of those of `ids` that are here, ascending."""
        if self._table is None:
            live, positions = self._live()
            # Store ids are small, dense integers: a dense table is the fastest lookup.
            self._table = np.full(int(live.max()) + 1 if len(live) else 0, -1, dtype=np.int64)
            self._table[live] = positions
        ids = np.asarray(ids, dtype=np.int64)
        found = self._table[ids[(ids >= 0) & (ids < len(self._table))]]
        return np.sort(found[found >= 0])


class ExactIndex(_Positions):
    """All vectors in one matrix; a query is one matrix-vector product."""

    kind = "exact"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vecs = np.zeros((0, dim), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._n = 0
        self._pos: dict[int, int] = {}

    def __len__(self) -> int:
        return self._n

    def _grow(self, need: int) -> None:
        if need <= len(self._vecs):
            return
        cap = max(need, 2 * len(self._vecs), 1024)
        vecs = np.zeros((cap, self.dim), dtype=np.float32)
        vecs[: self._n] = self._vecs[: self._n]
        ids = np.zeros(cap, dtype=np.int64)
        ids[: self._n] = self._ids[: self._n]
        self._vecs, self._ids = vecs, ids

    def upsert(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vecs = np.asarray(vecs, dtype=np.float32).reshape(-1, self.dim)
        self._grow(self._n + len(ids))
        self._changed()
        for i, v in zip(ids.tolist(), vecs, strict=True):
            row = self._pos.get(i)
            if row is None:
                row = self._n
                self._n += 1
                self._pos[i] = row
                self._ids[row] = i
            self._vecs[row] = v

    def remove(self, ids: Any) -> None:
        self._changed()
        for i in np.asarray(ids, dtype=np.int64).tolist():
            row = self._pos.pop(i, None)
            if row is None:
                continue
            last = self._n - 1
            if row != last:
                moved = int(self._ids[last])
                self._vecs[row] = self._vecs[last]
                self._ids[row] = moved
                self._pos[moved] = row
            self._n = last

    def __contains__(self, record_id: int) -> bool:
        return record_id in self._pos

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        return self._ids[: self._n], np.arange(self._n, dtype=np.int64)

    def all(self) -> tuple[np.ndarray, np.ndarray]:
        return self._ids[: self._n], self._vecs[: self._n]

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _top(self._ids[: self._n], self._vecs[: self._n] @ query, k)

    def search_among(self, query: np.ndarray, k: int, subset: Subset) -> tuple[np.ndarray, np.ndarray]:
        """Top k of the rows in `subset` (from `positions`), exactly."""
        rows = subset.positions
        return _top(self._ids[rows], self._vecs[rows] @ query, k)


_MADV_HUGEPAGE, _MADV_COLLAPSE = 14, 25
_HUGE = 1 << 21


def huge_pages(regions: list[tuple[int, int]]) -> threading.Thread | None:
    """Ask Linux to back these `(address, bytes)` regions with 2 MB pages; best effort.

    A query reads a few thousand vectors at random places of an array of
    gigabytes; on 4 kB pages nearly each read also misses the TLB. At 1M
    vectors of 384 dims single queries took 18% less time on 2 MB pages.
    `MADV_HUGEPAGE` lets the kernel use them (transparent huge pages in
    "madvise" mode, the usual default); `MADV_COLLAPSE` (Linux 6.1+) converts
    the pages already filled, which takes seconds for gigabytes, so it runs in
    a background thread (returned). Errors are ignored: the pages stay small.
    """
    regions = [(a, n) for a, n in regions if n >= _HUGE]
    if sys.platform != "linux" or not regions:
        return None

    def advise() -> None:
        try:
            madvise = ctypes.CDLL(None, use_errno=True).madvise
        except (OSError, AttributeError):
            return
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for address, size in regions:
            start = address & ~0xFFF  # the page holding the first byte: mapped, page-aligned
            for advice in (_MADV_HUGEPAGE, _MADV_COLLAPSE):
                madvise(start, address + size - start, advice)

    thread = threading.Thread(target=advise, name="hnsw-huge-pages", daemon=True)
    thread.start()
    return thread


@contextmanager
def _faiss_threads(n: int) -> Iterator[None]:
    """faiss's OpenMP thread count set to `n` for the block (it is process-wide)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class Subset:
    """The positions of some records in one state of an index (a filter's matches).

    Valid while `index.version` equals `version`. For HNSW it also keeps the
    faiss selector over those positions, built on first use: a bitmap of the
    positions, which holds live vectors only, so it also skips tombstones.
    """

    def __init__(self, index: ExactIndex | HnswIndex, positions: np.ndarray) -> None:
        self.index = index
        self.version = index.version
        self.positions = positions
        self._selector: tuple[Any, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def valid(self) -> bool:
        return self.index.version == self.version

    def selector(self, ntotal: int) -> Any:
        if self._selector is None:
            import faiss

            alive = np.zeros(ntotal, dtype=bool)
            alive[self.positions] = True
            bits = np.packbits(alive, bitorder="little")
            # faiss reads the bits through a pointer: keep the array alive beside it.
            self._selector = (faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)), bits)
        return self._selector[0]


def _top(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = np.arange(len(scores))
    order = part[np.argsort(-scores[part], kind="stable")]
    return ids[order], scores[order]


class HnswIndex(_Positions):
    """faiss `IndexHNSWFlat` (inner product) with record-id labels and tombstones."""

    kind = "hnsw"

    def __init__(
        self,
        dim: int,
        *,
        m: int = 48,
        ef_construction: int = 160,
        ef_search: int | None = None,
        threads: int | None = None,
    ) -> None:
        import faiss

        self.dim = dim
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.threads = threads or cpu_budget()
        self.index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.labels = np.zeros(0, dtype=np.int64)  # internal position -> record id
        self.bitmap = np.zeros(0, dtype=np.uint8)  # bit i set: position i is alive (little-endian bits)
        self._pos: dict[int, int] = {}
        self._dead = 0
        self._params: dict[int, tuple[Any, Any]] = {}
        self._paged: list[tuple[int, int]] = []
        self.pages_thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._pos)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dead_ratio(self) -> float:
        return self._dead / self.ntotal if self.ntotal else 0.0

    def __contains__(self, record_id: int) -> bool:
        return record_id in self._pos

    def _set_alive(self, positions: np.ndarray, alive: bool) -> None:
        for p in positions.tolist():
            if alive:
                self.bitmap[p >> 3] |= 1 << (p & 7)
            else:
                self.bitmap[p >> 3] &= ~(1 << (p & 7)) & 0xFF

    def upsert(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) == 0:
            return
        self.remove(ids)
        start = self.ntotal
        # A large batch is added in parallel; one query never is (faiss only
        # parallelises over queries), so the thread count only matters here.
        with _faiss_threads(self.threads if len(ids) > 1000 else 1):
            self.index.add(vecs)
        end = self.ntotal
        self._changed()  # the bitmap is replaced below
        self.labels = np.concatenate([self.labels, ids])
        need = (end + 7) // 8
        if need > len(self.bitmap):
            self.bitmap = np.concatenate([self.bitmap, np.zeros(need - len(self.bitmap), dtype=np.uint8)])
        positions = np.arange(start, end, dtype=np.int64)
        self._set_alive(positions, True)
        self._pos.update(zip(ids.tolist(), positions.tolist(), strict=True))
        self._advise_pages()

    def _advise_pages(self) -> None:
        """Huge pages for the vectors and the graph when faiss has moved or much grown them."""
        import faiss

        try:
            codes = faiss.downcast_index(self.index.storage).codes  # bytes
            neighbors = self.index.hnsw.neighbors  # int32 node ids
            regions = [(int(codes.data()), codes.size()), (int(neighbors.data()), neighbors.size() * 4)]
        except (AttributeError, TypeError):  # another faiss layout: keep small pages
            return
        old = self._paged
        if len(old) != len(regions) or any(
            a != old_a or n > old_n * 5 // 4 for (a, n), (old_a, old_n) in zip(regions, old, strict=True)
        ):
            self._paged = regions
            self.pages_thread = huge_pages(regions) or self.pages_thread

    def remove(self, ids: Any) -> None:
        gone = [self._pos.pop(i) for i in np.asarray(ids, dtype=np.int64).tolist() if i in self._pos]
        if gone:
            self._set_alive(np.asarray(gone, dtype=np.int64), False)
            self._dead += len(gone)
            self._changed()

    def _changed(self) -> None:
        super()._changed()
        self._params.clear()  # their selectors point at the old bitmap

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        alive = np.flatnonzero(np.unpackbits(self.bitmap, bitorder="little", count=self.ntotal))
        return self.labels[alive], alive

    def exact_among(self, query: np.ndarray, k: int, subset: Subset) -> tuple[np.ndarray, np.ndarray]:
        """Top k of the positions in `subset`, scored exactly in place (no copy of the vectors)."""
        import faiss

        positions = subset.positions
        scores = np.empty(len(positions), dtype=np.float32)
        if len(positions):
            query = np.ascontiguousarray(query, dtype=np.float32)
            # One query is one loop iteration: an OpenMP team would only wait for itself (ms when loaded).
            with _faiss_threads(1):
                faiss.fvec_inner_products_by_idx(
                    faiss.swig_ptr(scores),
                    faiss.swig_ptr(query),
                    faiss.downcast_index(self.index.storage).get_xb(),
                    faiss.swig_ptr(positions),
                    self.dim,
                    1,
                    len(positions),
                )
        return _top(self.labels[positions], scores, k)

    def search_among(
        self, query: np.ndarray, k: int, subset: Subset, *, ef: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """HNSW search that only returns positions in `subset` (it still walks through the others)."""
        import faiss

        params = faiss.SearchParametersHNSW(efSearch=max(ef, k), sel=subset.selector(self.ntotal))
        scores, positions = self.index.search(
            query.reshape(1, -1).astype(np.float32, copy=False), min(k, len(subset)), params=params
        )
        keep = positions[0] >= 0
        return self.labels[positions[0][keep]], scores[0][keep]

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """The live record ids and their vectors, in insertion order."""
        positions = np.fromiter(sorted(self._pos.values()), dtype=np.int64, count=len(self._pos))
        vecs = np.empty((len(positions), self.dim), dtype=np.float32)
        for s in range(0, len(positions), 65536):
            vecs[s : s + 65536] = self.index.reconstruct_batch(positions[s : s + 65536])
        return self.labels[positions], vecs

    def auto_ef(self) -> int:
        """efSearch for recall@10 of 0.95 or more on sentence-embedding-like data (see memory_bench)."""
        n = len(self._pos)
        if self.m >= 48 and self.ef_construction >= 160:  # the default graph
            return 48 if n <= 250_000 else 80 if n <= 2_000_000 else 128
        return 64 if n <= 250_000 else 128 if n <= 2_000_000 else 192  # sparser graphs: search wider

    def search(self, query: np.ndarray, k: int, *, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self._pos))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        ef = max(ef or self.ef_search or self.auto_ef(), k)
        scores, positions = self.index.search(
            query.reshape(1, -1).astype(np.float32, copy=False), k, params=self._search_params(ef)
        )
        positions = positions[0]
        keep = positions >= 0
        return self.labels[positions[keep]], scores[0][keep]

    def _search_params(self, ef: int) -> Any:
        """faiss search parameters for `ef`, made once until the next write (a few µs a query saved)."""
        cached = self._params.get(ef)
        if cached is None:
            import faiss

            if self._dead:
                # The selector reads the bitmap through a pointer: both stay referenced here.
                selector = faiss.IDSelectorBitmap(len(self.bitmap), faiss.swig_ptr(self.bitmap))
                cached = (faiss.SearchParametersHNSW(efSearch=ef, sel=selector), selector)
            else:
                cached = (faiss.SearchParametersHNSW(efSearch=ef), None)
            if len(self._params) > 16:
                self._params.clear()
            self._params[ef] = cached
        return cached[0]

    def compacted(self) -> HnswIndex:
        """A fresh graph of the live vectors only (drops tombstones)."""
        ids, vecs = self.live()
        fresh = HnswIndex(
            self.dim,
            m=self.m,
            ef_construction=self.ef_construction,
            ef_search=self.ef_search,
            threads=self.threads,
        )
        fresh.upsert(ids, vecs)
        return fresh

    # -- persistence ---------------------------------------------------------

    def save(self, folder: Path, stem: str) -> None:
        """Write `stem.faiss` and `stem.npz` atomically (temp files, then rename)."""
        import faiss

        folder.mkdir(parents=True, exist_ok=True)
        tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        npz_tmp = folder / f"{stem}.npz{tag}"
        idx_tmp = folder / f"{stem}.faiss{tag}"
        try:
            with open(npz_tmp, "wb") as f:
                np.savez(
                    f,
                    labels=self.labels,
                    bitmap=self.bitmap,
                    params=np.array([self.m, self.ef_construction, self.ef_search or 0], dtype=np.int64),
                )
            faiss.write_index(self.index, str(idx_tmp))
            os.replace(npz_tmp, folder / f"{stem}.npz")
            os.replace(idx_tmp, folder / f"{stem}.faiss")
        finally:
            for p in (npz_tmp, idx_tmp):
                p.unlink(missing_ok=True)

    @classmethod
    def load(cls, folder: Path, stem: str, *, threads: int | None = None) -> HnswIndex:
        import faiss

        with np.load(folder / f"{stem}.npz") as data:
            labels, bitmap, params = data["labels"], data["bitmap"].copy(), data["params"]
        index = faiss.read_index(str(folder / f"{stem}.faiss"))
        self = cls.__new__(cls)
        self.dim = index.d
        self.m, self.ef_construction, ef_search = (int(p) for p in params)
        self.ef_search = ef_search or None
        self.threads = threads or cpu_budget()
        self.index = index
        self.labels = labels
        self.bitmap = bitmap
        if index.ntotal != len(labels):
            raise ValueError(f"index file has {index.ntotal} vectors but {len(labels)} labels")
        alive = np.unpackbits(bitmap, bitorder="little", count=len(labels)).astype(bool)
        positions = np.flatnonzero(alive)
        self._pos = dict(zip(labels[positions].tolist(), positions.tolist(), strict=True))
        self._dead = len(labels) - len(positions)
        self._params = {}
        self._paged, self.pages_thread = [], None
        self._advise_pages()
        return self
