"""Vector memory benchmark: VectorMemory (SQLite + faiss HNSW) against exact numpy search.

Data sets:
- synthetic, 384 dims, shaped like sentence embeddings: a shared mean direction
  (all pairs have a positive cosine), a few thousand Zipf-sized clusters whose
  centres follow a power-law spectrum, anisotropic spread within each cluster
  (iid random vectors would make every ANN index look broken);
- real: all-MiniLM-L6-v2 embeddings of docstring paragraphs from the installed
  Python packages (a text corpus available offline), `--real N` of them.

For each set it measures, in one run: insert throughput (rows into SQLite),
index build time (HNSW from the stored vectors) and save time, query latency
p50/p99 for top-10 (through `VectorMemory.search_vector`, which also reads the
records back from SQLite, and for the bare index), recall@10 against exact
search, a filtered search (10% selectivity), memory, index reload time in a
fresh process, and incremental updates (adds and deletes into the live index,
and a second process catching up with them).

    .venv/bin/python benchmarks/memory_bench.py                 # 100k and 1M synthetic, 20k real
    .venv/bin/python benchmarks/memory_bench.py --quick         # 20k synthetic, 2k real
    .venv/bin/python benchmarks/memory_bench.py --sizes 100000 --real 0 --compare-usearch
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
    seen: set[str] = set()
    out: list[str] = []
    files = sorted(site.rglob("*.py"))
    random.Random(0).shuffle(files)
    for path in files:
        try:
            tree = ast.parse(path.read_text(errors="ignore"))
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
                    key = text.lower()
                    if key not in seen:
                        seen.add(key)
                        out.append(text)
        if len(out) >= limit * 3:
            break
    random.Random(1).shuffle(out)
    return out[:limit]


def minilm_vectors(texts: list[str]) -> tuple[np.ndarray, float]:
    """MiniLM embeddings of `texts`, cached on disk; returns (vectors, texts per second or nan)."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"minilm-{len(texts)}-{digest}.npy"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return np.load(path), json.loads(meta.read_text())["texts_per_s"]
    from memory.embedders import TransformersEmbedder

    emb = TransformersEmbedder(batch_size=64)
    emb.embed(["warm up"])
    started = time.perf_counter()
    vecs = np.concatenate([emb.embed(texts[s : s + 2048]) for s in range(0, len(texts), 2048)])
    rate = len(texts) / (time.perf_counter() - started)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    meta.write_text(json.dumps({"texts_per_s": rate}))
    return vecs, rate


# -- measurements ------------------------------------------------------------------------


def percentiles(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


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


def bench_set(label: str, data: np.ndarray, queries: np.ndarray, groups: np.ndarray, args) -> dict:
    """`data` holds `args.updates` extra rows at the end: they are added later, incrementally."""
    extra, data, groups = data[-args.updates :], data[: -args.updates], groups[: -args.updates]
    n, dim = data.shape
    res: dict = {"set": label, "n": n}
    work = Path(tempfile.mkdtemp(prefix="membench-", dir=args.workdir))
    try:
        k = 10
        # exact numpy baseline
        started = time.perf_counter()
        truth = exact_topk(data, queries, k)
        res["truth_s"] = time.perf_counter() - started
        sample = queries[: min(len(queries), args.exact_queries)]
        times = []
        for q in sample:
            t = time.perf_counter()
            s = data @ q
            top = np.argpartition(-s, k)[:k]
            top[np.argsort(-s[top])]
            times.append(time.perf_counter() - t)
        res["exact_p50"], res["exact_p99"] = percentiles(times)

        rss0 = rss_mb()
        path = work / "mem.db"
        name = f"bench-{label}"
        mem = VectorMemory(
            path,
            FixedEmbedder(name, dim),
            ann_threshold=args.threshold,
            threads=args.threads,
            ef_search=args.ef,
        )
        metas = [{"g": int(g % 10)} for g in groups]
        texts = [f"{label} record {i}" for i in range(n)]
        started = time.perf_counter()
        mem.add_many(texts, metas, vectors=data, batch_size=20_000)
        res["insert_s"] = time.perf_counter() - started
        res["insert_rate"] = n / res["insert_s"]
        del texts, metas
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

        # queries through VectorMemory (index + reading the 10 records from SQLite)
        found, times = [], []
        for q in queries:
            t = time.perf_counter()
            hits = mem.search_vector(q, k)
            times.append(time.perf_counter() - t)
            found.append([h.id - 1 for h in hits])  # ids are 1-based insertion order
        res["p50"], res["p99"] = percentiles(times)
        res["recall"] = recall_at(found, truth)
        # the bare index
        index = store._index
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            ids, _ = index.search(q, k)
            times.append(time.perf_counter() - t)
            found.append((ids - 1).tolist())
        res["raw_p50"], res["raw_p99"] = percentiles(times)
        res["ef_sweep"] = []
        if index.kind == "hnsw":
            for ef in args.ef_sweep:
                times, found = [], []
                for q in queries:
                    t = time.perf_counter()
                    ids, _ = index.search(q, k, ef=ef)
                    times.append(time.perf_counter() - t)
                    found.append((ids - 1).tolist())
                p50, p99 = percentiles(times)
                res["ef_sweep"].append((ef, recall_at(found, truth), p50, p99))

        # filtered search: metadata g == 3 (about 10% of records)
        rows = (groups % 10) == 3
        ftruth = exact_topk(data, queries[:200], k, rows=rows)
        times, found = [], []
        for q in queries[:200]:
            t = time.perf_counter()
            hits = mem.search_vector(q, k, where={"g": 3})
            times.append(time.perf_counter() - t)
            found.append([h.id - 1 for h in hits])
        res["filt_p50"], res["filt_p99"] = percentiles(times)
        res["filt_recall"] = recall_at(found, ftruth)

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
        mem = VectorMemory(
            path,
            FixedEmbedder(name, dim),
            ann_threshold=args.threshold,
            threads=args.threads,
            ef_search=args.ef,
        )
        mem.search_vector(queries[0], k)
        other = VectorMemory(
            path,
            FixedEmbedder(name, dim),
            ann_threshold=args.threshold,
            threads=args.threads,
            ef_search=args.ef,
        )
        other.search_vector(queries[0], k)  # loads the index file
        started = time.perf_counter()
        new_ids = []
        for s in range(0, args.updates, 10):
            new_ids += mem.add_many([f"new {i}" for i in range(s, s + 10)], vectors=extra[s : s + 10])
        res["incr_add_ms"] = (time.perf_counter() - started) / args.updates * 1e3
        victims = [
            int(i) + 1 for i in truth[:, 0][: args.updates // 10]
        ]  # delete some true nearest neighbours
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


def compare_usearch(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, threads: int) -> list[tuple]:
    """faiss HNSW vs usearch HNSW on the same vectors: build, latency, recall, reload."""
    import faiss
    from usearch.index import Index

    rows = []
    faiss.omp_set_num_threads(threads)
    idx = faiss.IndexHNSWFlat(data.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = 80
    t = time.perf_counter()
    idx.add(data)
    build = time.perf_counter() - t
    f = tempfile.mktemp()
    faiss.write_index(idx, f)
    t = time.perf_counter()
    faiss.read_index(f)
    load = time.perf_counter() - t
    os.remove(f)
    faiss.omp_set_num_threads(1)
    for ef in (32, 64, 128):
        params = faiss.SearchParametersHNSW(efSearch=ef)
        times, found = [], []
        for q in queries:
            s = time.perf_counter()
            _, ids = idx.search(q[None], 10, params=params)
            times.append(time.perf_counter() - s)
            found.append(ids[0].tolist())
        rows.append(
            ("faiss HNSWFlat M=32 efC=80", ef, build, recall_at(found, truth), *percentiles(times), load)
        )
    del idx
    u = Index(ndim=data.shape[1], metric="ip", dtype="f32", connectivity=32, expansion_add=80)
    t = time.perf_counter()
    u.add(np.arange(len(data)), data, threads=threads)
    build = time.perf_counter() - t
    f = tempfile.mktemp()
    u.save(f)
    t = time.perf_counter()
    Index.restore(f)
    load = time.perf_counter() - t
    os.remove(f)
    for ef in (32, 64, 128):
        u.expansion_search = ef
        times, found = [], []
        for q in queries:
            s = time.perf_counter()
            m = u.search(q, 10, threads=1)
            times.append(time.perf_counter() - s)
            found.append(m.keys.tolist())
        rows.append(
            ("usearch f32 M=32 efC=80", ef, build, recall_at(found, truth), *percentiles(times), load)
        )
    return rows


def ef_note(r: dict) -> str:
    return f" (ef {r['ef']})" if r.get("ef") else ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20k synthetic, 2k real, 200 queries")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--real", type=int, default=20_000, help="MiniLM corpus size (0 to skip)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact-queries", type=int, default=200, help="queries timed for exact search")
    parser.add_argument("--threshold", type=int, default=20_000, help="ann_threshold of the memory")
    parser.add_argument("--ef", type=int, default=None, help="efSearch of the memory (default: by size)")
    parser.add_argument("--ef-sweep", default="32,64,96,128,192")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--compare-usearch", action="store_true")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.real, args.queries, args.updates = "20000", 2000, 200, 200
        args.threshold = min(args.threshold, 5000)
    args.ef_sweep = [int(x) for x in args.ef_sweep.split(",") if x]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    import faiss

    print(
        f"# memory_bench  load average {os.getloadavg()[0]:.1f}  cores={os.cpu_count()} numpy={np.__version__} faiss={faiss.__version__} "
        f"threshold={args.threshold} efSearch={args.ef or 'auto'} queries={args.queries}",
        flush=True,
    )
    results = []
    for n in sizes:
        t = time.perf_counter()
        data, labels, queries = clustered(n + args.updates, args.queries)
        print(f"generated {n} synthetic vectors in {time.perf_counter() - t:.1f} s", flush=True)
        if args.compare_usearch:
            truth = exact_topk(data, queries, 10)
            rows = compare_usearch(data, queries, truth, args.threads or 2)
            print(f"\n## faiss vs usearch, synthetic {n}\n")
            print("| library | ef | build s | recall@10 | p50 ms | p99 ms | load s |")
            print("|---|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} | {r[6]:.2f} |")
            sys.stdout.flush()
        results.append(bench_set(f"synthetic-{n // 1000}k", data, queries, labels, args))
        print(json.dumps(results[-1]), flush=True)
        del data, queries, labels
        gc.collect()
    if args.real:
        texts = docstring_corpus(args.real + args.queries)
        if len(texts) < args.real + args.queries:
            print(f"corpus has only {len(texts)} paragraphs", flush=True)
        t = time.perf_counter()
        vecs, rate = minilm_vectors(texts)
        print(
            f"MiniLM: {len(texts)} texts, {rate:.0f} texts/s when embedded "
            f"(loaded in {time.perf_counter() - t:.1f} s)",
            flush=True,
        )
        data, queries = vecs[: -args.queries], vecs[-args.queries :]
        groups = np.arange(len(data))
        res = bench_set(f"minilm-{len(data) // 1000}k", data, queries, groups, args)
        res["embed_rate"] = rate
        results.append(res)
        print(json.dumps(res), flush=True)

    print("\n## VectorMemory (SQLite + faiss HNSW) vs exact numpy, top-10\n")
    print(
        "| set | n | index | insert rows/s | build s | save s | p50 ms | p99 ms | bare index p50/p99 ms | recall@10 "
        "| exact numpy p50/p99 ms | filtered p50 ms / recall | RSS of index MB | files MB (index / db) "
        "| reload s | add / delete ms each | catch-up s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['set']} | {r['n']:,} | {r['kind']}{ef_note(r)} "
            f"| {r['insert_rate']:,.0f} | {r['build_s']:.1f} | {r['save_s']:.1f} "
            f"| {r['p50']:.3f} | {r['p99']:.3f} | {r['raw_p50']:.3f} / {r['raw_p99']:.3f} | {r['recall']:.3f} "
            f"| {r['exact_p50']:.2f} / {r['exact_p99']:.2f} | {r['filt_p50']:.2f} / {r['filt_recall']:.3f} "
            f"| {r['rss_index_mb']:,.0f} | {r['files_mb']:,.0f} / {r['db_mb']:,.0f} | {r['reload_s']:.2f} "
            f"| {r['incr_add_ms']:.2f} / {r['incr_del_ms']:.2f} | {r['catch_up_s']:.3f} |"
        )
    sweeps = [r for r in results if r["ef_sweep"]]
    if sweeps:
        print("\n## bare HNSW index: efSearch sweep (recall@10, p50 ms, p99 ms)\n")
        print("| set | " + " | ".join(f"ef={ef}" for ef, *_ in sweeps[0]["ef_sweep"]) + " |")
        print("|---|" + "---|" * len(sweeps[0]["ef_sweep"]))
        for r in sweeps:
            cells = " | ".join(f"{rc:.3f}, {p50:.3f}, {p99:.3f}" for _, rc, p50, p99 in r["ef_sweep"])
            print(f"| {r['set']} | {cells} |")
    print(
        f"\nload average at the end: {os.getloadavg()[0]:.1f} (other jobs share these {os.cpu_count()} cores)"
    )
    checks = [(r["set"], r["catch_up_ok"], r["deleted_never_returned"], r["reload_kind"]) for r in results]
    print("\nchecks (set, second handle saw new records, deleted never returned, index kind after reload):")
    for c in checks:
        print("  ", c)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
