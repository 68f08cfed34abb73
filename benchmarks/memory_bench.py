"""Vector memory benchmark: VectorMemory (SQLite + faiss HNSW) against exact numpy search.

Data sets:
- synthetic, 384 dims, shaped like sentence embeddings: a shared mean direction
  (all pairs have a positive cosine), a few thousand Zipf-sized clusters whose
  centres follow a power-law spectrum, anisotropic spread within each cluster
  (iid random vectors would make every ANN index look broken);
- real: all-MiniLM-L6-v2 embeddings of docstring sentences from the installed
  Python packages (a text corpus available offline), `--real N` of them.

For each set it measures, in one run: insert throughput (rows into SQLite),
index build time (HNSW from the stored vectors) and save time, query latency
p50/p99 for top-10 (through `VectorMemory.search_vector`, which also reads the
records back from SQLite, and for the bare index) as wall time and as the
query thread's CPU time (which other jobs on the machine inflate far less),
an efSearch sweep, recall@10 against exact search, a filtered search (10%
selectivity), memory, index reload time in a fresh process, and incremental
updates (adds and deletes into the live index, and a second process catching
up with them). On the real set the records hold the texts and the memory
uses the real model, so text queries are also timed end to end.

Generated vectors, exact answers, the corpus and its embeddings are cached
under $MEMORY_BENCH_CACHE (default ~/.cache/agent-runtime-bench, outside the
repository), so reruns skip that work; the embedding rate printed is the one
measured when the vectors were computed.

    .venv/bin/python benchmarks/memory_bench.py                  # 100k and 1M synthetic, 100k real
    .venv/bin/python benchmarks/memory_bench.py --quick          # 20k synthetic, 2k real
    .venv/bin/python benchmarks/memory_bench.py --sizes 100000 --real 0 --compare   # index variants
    .venv/bin/python benchmarks/memory_bench.py --sizes '' --real 0 --embed-compare 2000
"""

from __future__ import annotations

import argparse
import ast
import gc
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memory.vector import VectorMemory  # noqa: E402

CACHE = Path(os.environ.get("MEMORY_BENCH_CACHE", Path.home() / ".cache" / "agent-runtime-bench"))


class FixedEmbedder:
    """Stands in for the model when vectors are given precomputed."""

    def __init__(self, name: str, dim: int) -> None:
        self.name, self._dim = name, dim

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts):  # pragma: no cover - never called: vectors are passed in
        raise RuntimeError("vectors are precomputed in this benchmark")

    embed_query = embed


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cached(name: str, make) -> dict[str, np.ndarray]:
    """Arrays from `CACHE/name.npz`, made (and saved) on the first call."""
    path = CACHE / f"{name}.npz"
    if path.exists():
        with np.load(path) as f:
            return {key: f[key] for key in f.files}
    arrays = make()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return arrays


# -- data ---------------------------------------------------------------------------


def clustered(n: int, queries: int, dim: int = 384, clusters: int = 3000, seed: int = 0):
    """Unit vectors with the structure of sentence embeddings (see the module docstring)."""
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    spectrum = (1.0 / np.arange(1, dim + 1) ** 0.5).astype(np.float32)
    centres = (rng.standard_normal((clusters, dim)).astype(np.float32) * spectrum) @ basis
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres = centres + 0.6 * mean
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.7
    weights /= weights.sum()
    spread = rng.uniform(0.5, 1.2, clusters).astype(np.float32)
    # each cluster stretches along its own random subset of axes
    axis_scale = rng.uniform(0.3, 1.7, (clusters, 8)).astype(np.float32)

    def draw(m: int, r: np.random.Generator):
        out = np.empty((m, dim), np.float32)
        labels = r.choice(clusters, m, p=weights)
        for s in range(0, m, 50_000):
            lab = labels[s : s + 50_000]
            z = r.standard_normal((len(lab), dim)).astype(np.float32) * spectrum * 1.6
            z *= np.repeat(axis_scale[lab], dim // 8, axis=1)
            x = centres[lab] + spread[lab, None] * (z @ basis) / np.sqrt(dim) * 6
            out[s : s + len(lab)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out, labels

    data, labels = draw(n, rng)
    q, _ = draw(queries, np.random.default_rng(seed + 1))
    return data, labels, q


def docstring_corpus(limit: int) -> list[str]:
    """First sentences (30-200 chars) of docstring paragraphs of the installed packages, deduplicated."""
    site = Path(sysconfig.get_paths()["purelib"])
    installed = "\n".join(sorted(p.name for p in site.glob("*.dist-info")))
    key = hashlib.sha256(f"{limit}\n{sys.version}\n{installed}".encode()).hexdigest()[:16]
    path = CACHE / f"corpus-{limit}-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    seen: set[str] = set()
    out: list[str] = []
    files = sorted(site.rglob("*.py"))
    random.Random(0).shuffle(files)
    for file in files:
        try:
            tree = ast.parse(file.read_text(errors="ignore"))
        except (SyntaxError, ValueError, RecursionError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for para in re.split(r"\n\s*\n", doc):
                text = re.split(r"(?<=[.!?])\s", " ".join(para.split()), maxsplit=1)[0]
                if 30 <= len(text) <= 200 and not text.startswith((">>>", "..", "Args:", "Returns:", ":")):
                    low = text.lower()
                    if low not in seen:
                        seen.add(low)
                        out.append(text)
        if len(out) >= limit * 3:
            break
    random.Random(1).shuffle(out)
    out = out[:limit]
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def minilm_vectors(texts: list[str], threads: int | None, chunk: int = 5000) -> tuple[np.ndarray, float]:
    """MiniLM embeddings of `texts`, cached per chunk (an interrupted run resumes where it stopped).

    Returns the vectors and the texts per second measured when they were computed.
    """
    from memory.embedders import TransformersEmbedder

    emb = None
    parts, done, seconds = [], 0, 0.0
    for s in range(0, len(texts), chunk):
        part = texts[s : s + chunk]
        digest = hashlib.sha256("\n".join(part).encode()).hexdigest()[:16]
        path = CACHE / "minilm" / f"{digest}.npy"
        meta = path.with_suffix(".json")
        if not (path.exists() and meta.exists()):
            if emb is None:
                emb = TransformersEmbedder(threads=threads)
                emb.embed(["warm up"])
            started = time.perf_counter()
            vecs = emb.embed(part)
            took = time.perf_counter() - started
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            with open(tmp, "wb") as f:
                np.save(f, vecs)
            os.replace(tmp, path)
            meta.write_text(json.dumps({"n": len(part), "seconds": took, "load": os.getloadavg()[0]}))
            print(
                f"  embedded {s + len(part):,}/{len(texts):,} texts: {len(part) / took:.0f} texts/s "
                f"(load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        info = json.loads(meta.read_text())
        done, seconds = done + info["n"], seconds + info["seconds"]
        parts.append(np.load(path))
    return np.concatenate(parts), done / seconds


def char_sorted_embed(emb, texts: list[str]) -> np.ndarray:
    """The usual batching (sentence-transformers' too): sort by characters, the tokenizer pads each batch.

    Our embedder did this before it sorted by token counts; it is the baseline here.
    """
    import torch

    out = np.empty((len(texts), emb.dim), np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for s in range(0, len(order), emb.batch_size):
            idx = order[s : s + emb.batch_size]
            batch = emb._tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=emb._max_length,
                return_tensors="pt",
            )
            hidden = emb._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[idx] = ((hidden * mask).sum(dim=1) / mask.sum(dim=1)).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def embed_compare(texts: list[str], reps: int = 2) -> None:
    """Texts per second of our embedder and of the character-sorted baseline: same texts, interleaved."""
    from memory.embedders import TransformersEmbedder, cpu_budget

    counts = sorted({1, cpu_budget()})
    embedders = {threads: TransformersEmbedder(threads=threads) for threads in counts}
    for emb in embedders.values():
        emb.embed(["warm up"])  # the first load picks OpenMP's wait policy: before torch is imported here
    import torch

    emb = embedders[counts[0]]
    encoded = emb._tokenizer(texts, truncation=True, max_length=emb._max_length)["input_ids"]
    lengths = np.asarray([len(x) for x in encoded])

    def padded(order: list[int]) -> int:
        """Tokens the model runs on (padding included) when texts are batched in this order."""
        size = emb.batch_size
        return sum(
            len(b) * int(lengths[b].max()) for b in (order[s : s + size] for s in range(0, len(order), size))
        )

    by_chars = padded(sorted(range(len(texts)), key=lambda i: len(texts[i])))
    by_tokens = padded(np.argsort(lengths, kind="stable").tolist())
    diff = float(np.abs(char_sorted_embed(emb, texts[:256]) - emb.embed(texts[:256])).max())
    print(
        f"\n## Embedding {len(texts):,} corpus texts with all-MiniLM-L6-v2, batches of {emb.batch_size}\n\n"
        f"real tokens {int(lengths.sum()):,}; tokens through the model (padding included): {by_chars:,} "
        f"sorted by characters, {by_tokens:,} sorted by tokens; largest difference between the vectors "
        f"of the two batchings {diff:.1e}\n",
        flush=True,
    )
    rates: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(reps):
        for threads, emb in embedders.items():
            torch.set_num_threads(threads)  # for the baseline; the embedder sets its own
            for name in ("sorted by characters (baseline)", "TransformersEmbedder (sorted by tokens)"):
                wall, cpu = time.perf_counter(), time.process_time()
                char_sorted_embed(emb, texts) if name.endswith("(baseline)") else emb.embed(texts)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                rates.setdefault((name, threads), []).append((len(texts) / wall, len(texts) / cpu))
    print("| batching | torch threads | texts/s | texts per CPU-second |")
    print("|---|---:|---:|---:|")
    for (name, threads), runs in rates.items():
        wall_rate, cpu_rate = np.median(np.asarray(runs), axis=0)
        print(f"| {name} | {threads} | {wall_rate:,.0f} | {cpu_rate:,.0f} |")
    print(f"\n(medians of {reps} interleaved runs; load average {os.getloadavg()[0]:.1f})", flush=True)


# -- measurements ------------------------------------------------------------------------


def percentiles(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def timed(fn, items) -> tuple[list[float], list[float], list]:
    """Call `fn` on each item: wall seconds, this thread's CPU seconds, and the results."""
    wall, cpu, out = [], [], []
    for item in items:
        w, c = time.perf_counter(), time.thread_time()
        out.append(fn(item))
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    return wall, cpu, out


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    step = max(1, min(256, int(2e8 // (4 * len(data)))))  # keep the score block near 200 MB
    for s in range(0, len(queries), step):
        scores = queries[s : s + step] @ data.T
        if rows is not None:
            scores[:, ~rows] = -np.inf
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        out[s : s + step] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)]))


def exact_answers(
    key: str, data: np.ndarray, queries: np.ndarray, groups: np.ndarray
) -> dict[str, np.ndarray]:
    """Exact top-10 of every query ("all"), and of the first 200 among records with g == 3 ("g3")."""
    rows = (groups % 10) == 3
    return cached(
        f"{key}-truth",
        lambda: {"all": exact_topk(data, queries, 10), "g3": exact_topk(data, queries[:200], 10, rows=rows)},
    )


RELOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {root!r})
    import numpy as np
    started = time.perf_counter()
    from memory.vector import VectorMemory
    from benchmarks.memory_bench import FixedEmbedder
    imported = time.perf_counter()
    mem = VectorMemory({path!r}, FixedEmbedder({name!r}, {dim}), ann_threshold={threshold})
    q = np.load({qpath!r})
    hits = mem.search_vector(q, 10)
    ready = time.perf_counter()
    print(json.dumps({{"import_s": imported - started, "open_and_first_search_s": ready - imported,
                      "kind": mem.store.index_kind, "ids": [h.id for h in hits]}}))
    mem.store._saved_gen = mem.store._gen  # nothing changed: skip the save at exit
    mem.close()
    """
)


def bench_set(
    label: str,
    key: str,
    data: np.ndarray,
    queries: np.ndarray,
    groups: np.ndarray,
    args,
    texts: list[str] | None = None,
    query_texts: list[str] | None = None,
) -> dict:
    """Measure one data set; `key` names it in the cache (for the exact answers).

    `data` holds `args.updates` extra rows at the end: they are added later,
    incrementally. With `texts` the records hold them and the memory uses the
    real default model, so `query_texts` are searched end to end.
    """
    extra, data, groups = data[-args.updates :], data[: -args.updates], groups[: -args.updates]
    n, dim = data.shape
    k = 10
    answers = exact_answers(key, data, queries, groups)
    truth, ftruth = answers["all"], answers["g3"]  # the filter: metadata g == 3, 10% of records
    res: dict = {"set": label, "n": n}
    work = Path(tempfile.mkdtemp(prefix="membench-", dir=args.workdir))
    try:

        def exact(q: np.ndarray) -> np.ndarray:
            s = data @ q
            top = np.argpartition(-s, k)[:k]
            return top[np.argsort(-s[top])]

        wall, cpu, _ = timed(exact, queries[: args.exact_queries])
        res["exact_p50"], res["exact_p99"] = percentiles(wall)
        res["exact_cpu50"] = percentiles(cpu)[0]

        rss0 = rss_mb()
        path = work / "mem.db"
        name = "all-MiniLM-L6-v2" if texts is not None else f"bench-{label}"

        def open_memory(embedder=None) -> VectorMemory:
            return VectorMemory(
                path,
                embedder or FixedEmbedder(name, dim),
                ann_threshold=args.threshold,
                threads=args.threads,
                hnsw_m=args.m,
                ef_construction=args.ef_construction,
                ef_search=args.ef,
                cache_embeddings=False,
            )

        if texts is not None:
            from memory.embedders import TransformersEmbedder

            model = TransformersEmbedder(threads=args.embed_threads)
            model.embed_query("warm up")
            mem = open_memory(model)
        else:
            mem = open_memory()
        metas = [{"g": int(g % 10)} for g in groups]
        record_texts = texts[:n] if texts is not None else [f"{label} record {i}" for i in range(n)]
        started = time.perf_counter()
        mem.add_many(record_texts, metas, vectors=data, batch_size=20_000)
        res["insert_s"] = time.perf_counter() - started
        res["insert_rate"] = n / res["insert_s"]
        del record_texts, metas
        gc.collect()

        store = mem.store
        started = time.perf_counter()
        with store._lock:
            store._open_index()
        res["build_s"] = time.perf_counter() - started
        res["kind"] = store.index_kind
        res["ef"] = (store._index.ef_search or store._index.auto_ef()) if res["kind"] == "hnsw" else None
        started = time.perf_counter()
        store._save()
        res["save_s"] = time.perf_counter() - started
        res["rss_index_mb"] = rss_mb() - rss0
        res["files_mb"] = (
            sum(p.stat().st_size for p in work.rglob("*") if p.is_file() and p.suffix in (".faiss", ".npz"))
            / 2**20
        )
        res["db_mb"] = path.stat().st_size / 2**20

        # queries through VectorMemory (index + reading the 10 records from SQLite); ids are 1-based rows,
        # after a warm-up with other vectors (the rows added later) as queries
        timed(lambda q: mem.search_vector(q, k), extra[:200])
        wall, cpu, hits = timed(lambda q: mem.search_vector(q, k), queries)
        res["p50"], res["p99"] = percentiles(wall)
        res["cpu50"] = percentiles(cpu)[0]
        res["recall"] = recall_at([[h.id - 1 for h in hs] for hs in hits], truth)
        # the bare index
        index = store._index
        wall, cpu, _ = timed(lambda q: index.search(q, k), queries)
        res["raw_p50"], res["raw_p99"] = percentiles(wall)
        res["raw_cpu50"] = percentiles(cpu)[0]
        res["ef_sweep"] = []
        if index.kind == "hnsw":
            for ef in args.ef_sweep:
                wall, cpu, found = timed(
                    lambda q, ef=ef: (index.search(q, k, ef=ef)[0] - 1).tolist(), queries
                )
                res["ef_sweep"].append((ef, recall_at(found, truth), *percentiles(wall), percentiles(cpu)[0]))
        if query_texts is not None:  # the model embeds each query text, then the memory searches
            wall, _, _ = timed(model.embed_query, query_texts[:200])
            res["embed_query_p50"] = percentiles(wall)[0]
            wall, _, _ = timed(lambda t: mem.search(t, k), query_texts[:200])
            res["text_p50"], res["text_p99"] = percentiles(wall)

        wall, _, hits = timed(lambda q: mem.search_vector(q, k, where={"g": 3}), queries[:200])
        res["filt_p50"], res["filt_p99"] = percentiles(wall)
        res["filt_recall"] = recall_at([[h.id - 1 for h in hs] for hs in hits], ftruth)

        # reload in a fresh process (after close() saved the index)
        mem.close()
        qpath = work / "q.npy"
        np.save(qpath, queries[0])
        script = RELOAD_SCRIPT.format(
            root=str(ROOT), path=str(path), name=name, dim=dim, qpath=str(qpath), threshold=args.threshold
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
        )
        reload = json.loads(out.stdout.strip().splitlines()[-1])
        res["reload_s"] = reload["open_and_first_search_s"]
        res["reload_kind"] = reload["kind"]

        # incremental updates on a live index, then a second process-like handle catching up
        mem = open_memory()
        mem.search_vector(queries[0], k)
        other = open_memory()
        other.search_vector(queries[0], k)  # loads the index file
        started = time.perf_counter()
        new_ids = []
        for s in range(0, args.updates, 10):
            new_ids += mem.add_many([f"new {i}" for i in range(s, s + 10)], vectors=extra[s : s + 10])
        res["incr_add_ms"] = (time.perf_counter() - started) / args.updates * 1e3
        victims = [int(i) + 1 for i in truth[:, 0][: args.updates // 10]]  # some true nearest neighbours
        started = time.perf_counter()
        for v in victims:
            mem.delete(v)
        res["incr_del_ms"] = (time.perf_counter() - started) / max(1, len(victims)) * 1e3
        started = time.perf_counter()
        hits = other.search_vector(extra[0], k)
        res["catch_up_s"] = time.perf_counter() - started
        res["catch_up_ok"] = new_ids[0] in {h.id for h in hits} and other.count() == mem.count()
        gone = set(victims)
        res["deleted_never_returned"] = all(
            not (gone & {h.id for h in mem.search_vector(q, k)}) for q in queries[: len(victims)]
        )
        other.store._saved_gen = other.store._gen
        other.close()
        mem.store._saved_gen = mem.store._gen
        mem.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


def compare_indexes(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, args) -> list[tuple]:
    """Index libraries and vector formats on the same data: build, single-query latency, recall, reload.

    faiss HNSW over float32 (what the memory uses), over fp16, and over 8-bit
    scalar quantisation with exact re-ranking of 2k candidates
    (`IndexRefineFlat`); usearch HNSW over f32, f16 and i8. All with the
    memory's M and efConstruction, queries one at a time on one thread.
    """
    import faiss
    from usearch.index import Index

    dim, m, efc, threads = data.shape[1], args.m, args.ef_construction, args.threads or 2
    rows = []

    def measure(label, build, searcher, save, load) -> None:
        started = time.perf_counter()
        index = build()
        built = time.perf_counter() - started
        path = tempfile.mktemp(dir=args.workdir)
        save(index, path)
        size = os.path.getsize(path) / 2**20
        started = time.perf_counter()
        load(path)
        loaded = time.perf_counter() - started
        os.remove(path)
        for ef in args.ef_sweep:
            wall, cpu, found = timed(searcher(index, ef), queries)
            rows.append(
                (
                    label,
                    ef,
                    built,
                    recall_at(found, truth),
                    *percentiles(wall),
                    percentiles(cpu)[0],
                    loaded,
                    size,
                )
            )
            print("  ", rows[-1], flush=True)

    def faiss_index(kind: str):
        def build():
            if kind == "float32":
                index = hnsw = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
            else:
                qtype = faiss.ScalarQuantizer.QT_fp16 if kind == "fp16" else faiss.ScalarQuantizer.QT_8bit
                index = hnsw = faiss.IndexHNSWSQ(dim, qtype, m, faiss.METRIC_INNER_PRODUCT)
                hnsw.train(data[:100_000])
                if kind == "SQ8 + re-rank":
                    index = faiss.IndexRefineFlat(hnsw)
            hnsw.hnsw.efConstruction = efc
            faiss.omp_set_num_threads(threads)
            index.add(data)
            faiss.omp_set_num_threads(1)
            return index

        def searcher(index, ef):
            params = faiss.SearchParametersHNSW(efSearch=ef)
            if kind == "SQ8 + re-rank":
                params = faiss.IndexRefineSearchParameters(k_factor=2, base_index_params=params)
            return lambda q: index.search(q[None], 10, params=params)[1][0].tolist()

        measure(f"faiss HNSW {kind}", build, searcher, faiss.write_index, faiss.read_index)

    def usearch_index(dtype: str) -> None:
        def build():
            index = Index(ndim=dim, metric="ip", dtype=dtype, connectivity=m, expansion_add=efc)
            index.add(np.arange(len(data)), data, threads=threads)
            return index

        def searcher(index, ef):
            index.expansion_search = ef
            return lambda q: index.search(q, 10, threads=1).keys.tolist()

        measure(f"usearch {dtype}", build, searcher, lambda index, path: index.save(path), Index.restore)

    for kind in ("float32", "fp16", "SQ8 + re-rank"):
        faiss_index(kind)
        gc.collect()
    for dtype in ("f32", "f16", "i8"):
        usearch_index(dtype)
        gc.collect()
    return rows


def ef_note(r: dict) -> str:
    return f" (ef {r['ef']})" if r.get("ef") else ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20k synthetic, 2k real, 200 queries")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--real", type=int, default=100_000, help="MiniLM corpus size (0 to skip)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact-queries", type=int, default=200, help="queries timed for exact search")
    parser.add_argument("--threshold", type=int, default=20_000, help="ann_threshold of the memory")
    parser.add_argument("--m", type=int, default=None, help="HNSW M (default: the memory's)")
    parser.add_argument("--ef-construction", type=int, default=None, help="(default: the memory's)")
    parser.add_argument("--ef", type=int, default=None, help="efSearch of the memory (default: by size)")
    parser.add_argument("--ef-sweep", default="32,48,64,80,96,128")
    parser.add_argument("--threads", type=int, default=None, help="threads for index builds")
    parser.add_argument("--embed-threads", type=int, default=None, help="torch threads for MiniLM")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--compare", action="store_true", help="also compare index libraries and formats")
    parser.add_argument("--embed-compare", type=int, default=0, metavar="N", help="time embedding N texts")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.real, args.queries, args.updates = "20000", 2000, 200, 200
        args.threshold = min(args.threshold, 5000)
    args.ef_sweep = [int(x) for x in args.ef_sweep.split(",") if x]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    import inspect

    import faiss

    # None means the memory's own defaults; --compare needs the numbers.
    defaults = inspect.signature(VectorMemory).parameters
    args.m = args.m or defaults["hnsw_m"].default
    args.ef_construction = args.ef_construction or defaults["ef_construction"].default
    print(
        f"# memory_bench  load average {os.getloadavg()[0]:.1f}  cores={os.cpu_count()} numpy={np.__version__} "
        f"faiss={faiss.__version__} threshold={args.threshold} M={args.m} efConstruction={args.ef_construction} "
        f"efSearch={args.ef or 'auto'} queries={args.queries}",
        flush=True,
    )
    if args.embed_compare:
        embed_compare(docstring_corpus(args.embed_compare))
    results, compared = [], {}
    for n in sizes:
        t = time.perf_counter()
        key = f"synthetic-{n + args.updates}-{args.queries}"
        arrays = cached(
            key,
            lambda n=n: dict(
                zip(("data", "labels", "queries"), clustered(n + args.updates, args.queries), strict=True)
            ),
        )
        data, labels, queries = arrays["data"], arrays["labels"], arrays["queries"]
        print(f"{n:,} synthetic vectors ready in {time.perf_counter() - t:.1f} s", flush=True)
        results.append(bench_set(f"synthetic-{n // 1000}k", key, data, queries, labels, args))
        print(json.dumps(results[-1]), flush=True)
        if args.compare:
            truth = exact_answers(key, data[: -args.updates], queries, labels[: -args.updates])["all"]
            compared[n] = compare_indexes(data[: -args.updates], queries, truth, args)
        del data, queries, labels, arrays
        gc.collect()
    if args.real:
        texts = docstring_corpus(args.real + args.queries)
        if len(texts) < args.real + args.queries:
            print(f"corpus has only {len(texts)} paragraphs", flush=True)
        t = time.perf_counter()
        vecs, rate = minilm_vectors(texts, args.embed_threads)
        print(
            f"MiniLM: {len(texts):,} texts, {rate:.0f} texts/s when embedded "
            f"(ready in {time.perf_counter() - t:.1f} s)",
            flush=True,
        )
        n = len(texts) - args.queries
        data, queries = vecs[:n], vecs[n:]
        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
        res = bench_set(
            f"minilm-{(n - args.updates) // 1000}k",
            f"minilm-{n}-{digest}",
            data,
            queries,
            np.arange(n),
            args,
            texts=texts[: n - args.updates],
            query_texts=texts[n:],
        )
        res["embed_rate"] = rate
        results.append(res)
        print(json.dumps(res), flush=True)

    if results:
        print_results(results)
    for n, rows in compared.items():
        print(f"\n## Index variants on {n:,} synthetic vectors, top-10, one query at a time\n")
        print("| index | efSearch | build s | recall@10 | p50 ms | p99 ms | CPU p50 ms | load s | file MB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} | {r[6]:.3f} "
                f"| {r[7]:.2f} | {r[8]:,.0f} |"
            )
    print(
        f"\nload average at the end: {os.getloadavg()[0]:.1f} (other jobs share these {os.cpu_count()} cores)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"results": results, "compare": compared}, indent=1, default=float)
        )


def print_results(results: list[dict]) -> None:
    print("\n## VectorMemory (SQLite + faiss HNSW) vs exact numpy, top-10\n")
    print(
        "| set | n | index | insert rows/s | build s | save s | p50 / p99 ms | CPU p50 ms "
        "| bare index p50 / p99 ms | bare CPU p50 ms | recall@10 | exact numpy p50 ms "
        "| filtered p50 / p99 ms / recall | RSS of index MB | files MB (index / db) "
        "| reload s | add / delete ms each | catch-up s |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['set']} | {r['n']:,} | {r['kind']}{ef_note(r)} "
            f"| {r['insert_rate']:,.0f} | {r['build_s']:.1f} | {r['save_s']:.1f} "
            f"| {r['p50']:.3f} / {r['p99']:.3f} | {r['cpu50']:.3f} "
            f"| {r['raw_p50']:.3f} / {r['raw_p99']:.3f} | {r['raw_cpu50']:.3f} | {r['recall']:.3f} "
            f"| {r['exact_p50']:.2f} | {r['filt_p50']:.2f} / {r['filt_p99']:.1f} / {r['filt_recall']:.3f} "
            f"| {r['rss_index_mb']:,.0f} | {r['files_mb']:,.0f} / {r['db_mb']:,.0f} | {r['reload_s']:.2f} "
            f"| {r['incr_add_ms']:.2f} / {r['incr_del_ms']:.2f} | {r['catch_up_s']:.3f} |"
        )
    sweeps = [r for r in results if r["ef_sweep"]]
    if sweeps:
        print("\n## bare HNSW index: efSearch sweep (recall@10; p50 / p99 ms; CPU p50 ms)\n")
        print("| set | " + " | ".join(f"ef={ef}" for ef, *_ in sweeps[0]["ef_sweep"]) + " |")
        print("|---|" + "---|" * len(sweeps[0]["ef_sweep"]))
        for r in sweeps:
            cells = " | ".join(
                f"{rc:.3f}; {p50:.3f} / {p99:.3f}; {c50:.3f}" for _, rc, p50, p99, c50 in r["ef_sweep"]
            )
            print(f"| {r['set']} | {cells} |")
    for r in results:
        if "text_p50" in r:
            print(
                f"\n{r['set']}: text queries end to end (embed with MiniLM + search) p50 {r['text_p50']:.2f} ms, "
                f"p99 {r['text_p99']:.2f} ms; embedding the query alone p50 {r['embed_query_p50']:.2f} ms; "
                f"corpus embedded at {r['embed_rate']:.0f} texts/s"
            )
    print("\nchecks (set, second handle saw new records, deleted never returned, index kind after reload):")
    for r in results:
        print("  ", (r["set"], r["catch_up_ok"], r["deleted_never_returned"], r["reload_kind"]))


if __name__ == "__main__":
    main()
