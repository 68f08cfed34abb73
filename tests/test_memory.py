"""Vector memory: the shared suite (SQLite and PostgreSQL), processes, the ANN path, tools."""

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
from helpers import call
from pydantic import ValidationError

from agent import Agent, Decision
from agent.llm import ScriptedLLM
from memory import VectorMemory, memory_tools
from memory.embedders import CachedEmbedder, EmbeddingCache, HashingEmbedder, default_embedder
from memory.records import VectorMemoryError

ROOT = Path(__file__).resolve().parents[1]

NOTES = [
    ("The staging database password is rotated every Monday by the ops team.", {"topic": "ops", "n": 1}),
    ("Our CI pipeline runs the unit tests on Python 3.11 and 3.12.", {"topic": "ci", "n": 2}),
    ("Alice prefers answers in French and short bullet lists.", {"topic": "user", "n": 3}),
    ("The quarterly sales report is stored as a CSV file in the finance bucket.", {"topic": "data", "n": 4}),
    ("To deploy the web app, run make deploy after merging to main.", {"topic": "ops", "n": 5}),
    ("The cat sat on the warm windowsill all afternoon.", {"topic": "misc", "n": 6}),
    ("Bananas are rich in potassium and make a good snack.", {"topic": "misc", "n": 7}),
    ("The API rate limit is 100 requests per minute per key.", {"topic": "api", "n": 8}),
]


@pytest.fixture(scope="module")
def minilm():
    """The real default model; each text is embedded once per module (both backends share it)."""
    emb = CachedEmbedder(default_embedder(), EmbeddingCache(lru=10_000))
    emb.embed(["warm up"])
    return emb


@pytest.fixture(scope="module")
def pg_dsn():
    from memory.testing import PostgresUnavailable, postgres_dsn

    try:
        return postgres_dsn()
    except PostgresUnavailable as e:
        pytest.skip(f"PostgreSQL backend not tested: {e}")


@pytest.fixture(params=["sqlite", "postgres"])
def make_memory(request, tmp_path):
    """A factory of fresh memories on one backend; the same suite runs on both."""
    opened = []

    def make(embedder, **kwargs):
        if request.param == "sqlite":
            mem = VectorMemory(tmp_path / f"{uuid.uuid4().hex[:8]}.db", embedder, **kwargs)
        else:
            dsn = request.getfixturevalue("pg_dsn")
            kwargs.pop("ann_threshold", None)
            mem = VectorMemory.postgres(dsn, embedder, collection="c" + uuid.uuid4().hex[:10], **kwargs)
        opened.append(mem)
        return mem

    make.backend = request.param
    yield make
    for mem in opened:
        mem.close()


# -- the shared suite ---------------------------------------------------------------


def test_semantic_search_finds_paraphrases(make_memory, minilm):
    mem = make_memory(minilm)
    ids = mem.add_many([t for t, _ in NOTES], [m for _, m in NOTES])
    assert mem.count() == len(NOTES) and len(set(ids)) == len(NOTES)
    cases = {
        "when does the DB credential change?": 0,
        "which python versions does continuous integration use": 1,
        "how should I format replies for Alice": 2,
        "where can I find the sales numbers": 3,
        "how many API calls am I allowed": 7,
    }
    for query, expected in cases.items():
        hits = mem.search(query, k=3)
        assert hits[0].id == ids[expected], (query, [h.text for h in hits])
        assert hits[0].score > hits[1].score >= hits[2].score
        assert hits[0].metadata == NOTES[expected][1]


def test_get_update_delete(make_memory, minilm):
    mem = make_memory(minilm)
    ids = mem.add_many([t for t, _ in NOTES], [m for _, m in NOTES])
    rec = mem.get(ids[0])
    assert rec.text == NOTES[0][0] and rec.metadata == {"topic": "ops", "n": 1} and rec.time > 0
    # new text is re-embedded: the old meaning is gone, the new one is found
    assert mem.update(ids[5], text="Kubernetes pods restart when they exceed their memory limit.")
    hits = mem.search("why did my container get OOM killed", k=1)
    assert hits[0].id == ids[5] and "Kubernetes" in hits[0].text
    assert all("cat sat" not in h.text for h in mem.search("a cat resting on the windowsill", k=len(NOTES)))
    # metadata alone: replaced, vector untouched
    assert mem.update(ids[5], metadata={"topic": "k8s"})
    assert mem.get(ids[5]).metadata == {"topic": "k8s"}
    assert mem.search("why did my container get OOM killed", k=1)[0].id == ids[5]
    # delete
    assert mem.delete(ids[0]) is True
    assert mem.delete(ids[0]) is False
    assert mem.get(ids[0]) is None and mem.count() == len(NOTES) - 1
    assert all(h.id != ids[0] for h in mem.search("database password rotation", k=len(NOTES)))
    assert mem.delete([ids[1], ids[2], 10**9]) == 2
    assert mem.update(10**9, text="nothing") is False and mem.get(10**9) is None
    assert mem.count() == len(NOTES) - 3


def test_filters(make_memory):
    mem = make_memory(HashingEmbedder(64))
    rows = [
        {"kind": "note", "n": 1, "tags": ["a", "b"], "ok": True},
        {"kind": "note", "n": 2, "tags": ["b"], "ok": False},
        {"kind": "task", "n": 3, "tags": [], "ok": True, "owner": {"name": "ada"}},
        {"kind": "task", "n": 2.5, "tags": ["a"], "extra": None},
        {"kind": "1", "n": "1", "tags": ["c"]},
        {},
    ]
    ids = mem.add_many([f"record number {i}" for i in range(len(rows))], rows)

    def found(where):
        return sorted(h.id for h in mem.search("record number", k=20, where=where))

    def expect(*indexes):
        return sorted(ids[i] for i in indexes)

    assert found({"kind": "note"}) == expect(0, 1)
    assert found({"kind": "note", "n": 2}) == expect(1)
    assert found({"n": 1}) == expect(0)  # typed: the string "1" does not match
    assert found({"kind": {"$in": ["task", "1"]}}) == expect(2, 3, 4)
    assert found({"kind": {"$nin": ["task", "1"]}}) == expect(0, 1, 5)
    assert found({"kind": {"$ne": "note"}}) == expect(2, 3, 4, 5)
    assert found({"tags": {"$contains": "a"}}) == expect(0, 3)
    assert found({"ok": True}) == expect(0, 2)
    assert found({"ok": False}) == expect(1)
    assert found({"extra": None}) == expect(3)
    assert found({"owner.name": "ada"}) == expect(2)
    assert found({"n": {"$gte": 2, "$lt": 3}}) == expect(1, 3)
    assert found({"owner": {"$exists": True}}) == expect(2)
    assert found({"$or": [{"kind": "1"}, {"ok": False}]}) == expect(1, 4)
    assert found({"kind": "none-such"}) == []
    assert mem.ids({"kind": "task"}) == expect(2, 3)
    with pytest.raises(ValueError):
        found({"kind": {"$regex": "x"}})
    with pytest.raises(ValueError):
        found({"bad'key": 1})
    assert found({"any key, in any script!": 1}) == []  # a key that no record has matches nothing
    deep = {"kind": "note"}
    for _ in range(32):
        deep = {"$or": [deep]}
    assert found(deep) == expect(0, 1)
    for _ in range(2000):  # a RecursionError before
        deep = {"$or": [deep]}
    with pytest.raises(ValueError, match="at most 32 levels"):
        found(deep)


def test_ids_and_limits_beyond_64_bits_name_nothing(make_memory):
    mem = make_memory(HashingEmbedder(64))
    first = mem.add("x")
    # each raised OverflowError (SQLite's integers are 64-bit)
    assert mem.get(2**70) is None and mem.delete(2**70) is False and mem.delete([2**70, first]) == 1
    assert mem.update(2**70, "y") is False and mem.records([2**70]) == []
    mem.add("y")
    assert [r.text for r in mem.recent(10**30)] == ["y"] and len(mem.search("y", k=10**30)) == 1


def test_min_score_and_k(make_memory, minilm):
    mem = make_memory(minilm)
    mem.add_many([t for t, _ in NOTES], [m for _, m in NOTES])
    all_hits = mem.search("deploying the web application", k=50)
    assert len(all_hits) == len(NOTES)
    strong = mem.search("deploying the web application", k=50, min_score=0.4)
    assert 1 <= len(strong) < len(NOTES)
    assert all(h.score >= 0.4 for h in strong) and "make deploy" in strong[0].text
    assert mem.search("anything", k=0) == []
    assert mem.search("deploy", k=3, where={"topic": "ops"}, min_score=0.99) == []


def test_source_time_and_metadata_round_trip(make_memory):
    mem = make_memory(HashingEmbedder(64))
    a = mem.add(
        "from a tool call", {"tags": ["x"], "nested": {"k": [1, 2]}}, source=("run-1", 7), time=1000.0
    )
    b = mem.add("from an event dict", source={"run_id": "run-2", "seq": 3})
    c = mem.add("no source")
    assert mem.get(a).source == {"run_id": "run-1", "seq": 7}
    assert mem.get(a).time == 1000.0 and mem.get(a).metadata == {"tags": ["x"], "nested": {"k": [1, 2]}}
    assert mem.get(b).source == {"run_id": "run-2", "seq": 3}
    assert mem.get(c).source is None and mem.get(c).metadata == {}
    assert [r.id for r in mem.recent(2)] == [c, b]
    hit = mem.search("from a tool call", k=1)[0]
    assert hit.to_dict()["source"] == {"run_id": "run-1", "seq": 7}
    with pytest.raises(VectorMemoryError):
        mem.add("bad", {"x": object()})


def test_a_memory_refuses_another_model(make_memory):
    mem = make_memory(HashingEmbedder(64))
    mem.add("hello")
    if make_memory.backend == "sqlite":
        other = VectorMemory(mem.store.path, HashingEmbedder(32))
    else:
        other = VectorMemory.postgres(
            mem.store.conn.info.dsn, HashingEmbedder(32), collection=mem.store.collection
        )
    with pytest.raises(VectorMemoryError, match="hashing-64"):
        other.search("hello")
    other.close()


def test_ann_path_agrees_with_exact(make_memory):
    """Past the threshold the SQLite backend switches to HNSW; results match brute force."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((12, 64)).astype(np.float32)
    labels = rng.integers(0, 12, 600)
    vecs = centres[labels] + 0.6 * rng.standard_normal((600, 64)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    mem = make_memory(HashingEmbedder(64), ann_threshold=200)
    ids = np.asarray(
        mem.add_many([f"v{i}" for i in range(600)], [{"g": int(g % 3)} for g in labels], vectors=vecs)
    )
    queries = centres[:8] + 0.6 * rng.standard_normal((8, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def check(alive, where_g=None, floor=0.9):
        total = 0.0
        for q in queries:
            mask = alive.copy()
            if where_g is not None:
                mask &= (labels % 3) == where_g
            scores = np.where(mask, vecs @ q, -np.inf)
            truth = set(ids[np.argsort(-scores)[:10]].tolist())
            hits = mem.search_vector(q, 10, where={"g": where_g} if where_g is not None else None)
            got = {h.id for h in hits}
            assert got <= set(ids[mask].tolist())
            total += len(got & truth) / 10
        assert total / len(queries) >= floor

    alive = np.ones(600, dtype=bool)
    check(alive)
    if make_memory.backend == "sqlite":
        assert mem.store.index_kind == "hnsw"
    check(alive, where_g=1)
    # deletes and updates on the live index (tombstones, re-inserts)
    dead = rng.choice(600, 60, replace=False)
    mem.delete([int(ids[i]) for i in dead])
    alive[dead] = False
    check(alive)
    check(alive, where_g=2)
    assert mem.count() == 540


def test_embedding_cache_embeds_each_text_once(tmp_path):
    calls = []

    class Counting(HashingEmbedder):
        def embed(self, texts):
            calls.extend(texts)
            return super().embed(texts)

    mem = VectorMemory(tmp_path / "m.db", Counting(64))
    mem.add_many(["alpha", "beta", "alpha"])
    mem.add("beta")
    assert sorted(calls) == ["alpha", "beta"]
    mem.close()
    mem = VectorMemory(tmp_path / "m.db", Counting(64))
    mem.add("alpha")  # from the SQLite cache of the file, not the model
    assert sorted(calls) == ["alpha", "beta"] and mem.count() == 5
    cache = EmbeddingCache(tmp_path / "other.db")
    emb = CachedEmbedder(HashingEmbedder(64), cache)
    np.testing.assert_allclose(emb.embed(["x y"])[0], HashingEmbedder(64).embed(["x y"])[0])
    rows = lambda: mem.store.conn.execute("SELECT COUNT(*) FROM embedding_cache").fetchone()[0]  # noqa: E731
    before = rows()
    for i in range(20):  # searches are no writes: the file does not keep every query
        mem.search(f"query {i}")
    assert rows() == before
    mem.close()


def test_openai_compatible_embedder():
    import httpx

    from memory.embedders import EmbedderError, OpenAIEmbedder

    seen = []

    def handler(request):
        body = json.loads(request.content)
        seen.append((request.url.path, request.headers.get("authorization"), body))
        if body["model"] == "broken":
            return httpx.Response(500, text="boom")
        data = [{"index": i, "embedding": [float(len(t)), 1.0, 0.0]} for i, t in enumerate(body["input"])]
        return httpx.Response(200, json={"data": data[::-1]})  # out of order: sorted by index

    emb = OpenAIEmbedder(
        "http://emb.local/v1/", "e5", api_key="k", batch_size=2, transport=httpx.MockTransport(handler)
    )
    vecs = emb.embed(["a", "bbb", "cc"])
    assert vecs.shape == (3, 3) and emb.dim == 3 and emb.name == "openai:e5"
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-6)
    assert vecs[1, 0] > vecs[2, 0] > vecs[0, 0]
    assert [len(b["input"]) for _, _, b in seen] == [2, 1]  # batched
    assert seen[0][0] == "/v1/embeddings" and seen[0][1] == "Bearer k"
    with pytest.raises(EmbedderError, match="500"):
        OpenAIEmbedder("http://emb.local/v1", "broken", transport=httpx.MockTransport(handler)).embed(["x"])


def test_transformers_embedder_batches_like_single_texts(minilm):
    from memory.embedders import default_model_path

    texts = [
        "short",
        "a much longer sentence with many more tokens in it than the first one",
        "mid length text",
    ]
    together = minilm.inner.embed(texts)
    alone = np.stack([minilm.inner.embed([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)  # padding does not leak into the mean
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)
    assert minilm.dim == 384 and minilm.name == "all-MiniLM-L6-v2"
    assert (default_model_path() / "model.safetensors").exists()
    paraphrase, unrelated = minilm.inner.embed(["How old are you?", "What is your age?", "The sky is blue."])[
        1:
    ]
    q = minilm.inner.embed_query("How old are you?")
    assert float(q @ paraphrase) > 0.7 > float(q @ unrelated)


def test_transformers_embedder_batches_by_token_count(minilm):
    """Several batches, grouped by tokens (code is short in characters but long in tokens), keep input order."""
    texts = [
        "The cat sat on the warm windowsill all afternoon long.",  # 54 chars, 14 tokens
        "self.__dict__[k]=v;x=y[0:1]",  # 27 chars, 24 tokens
        "ok",
        "Refactor the HTTPConnectionPool._make_request() retry/backoff logic.",
        "What is your age?",
        "A quiet afternoon in a small garden by the river.",
    ]
    emb = minilm.inner
    size = emb.batch_size
    emb.batch_size = 2
    try:
        together = emb.embed(texts)
    finally:
        emb.batch_size = size
    alone = np.stack([emb.embed([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert int(np.argmax(together @ emb.embed_query("a cat on a windowsill"))) == 0


# -- the embedded store: processes and the index on disk ------------------------------

WRITER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {root!r})
    from memory import VectorMemory
    from memory.embedders import HashingEmbedder
    mem = VectorMemory({path!r}, HashingEmbedder(64), ann_threshold={threshold})
    who = sys.argv[1]
    ids = []
    for i in range({n}):
        ids.append(mem.add(f"{{who}} wrote note {{i}}", {{"who": who, "i": i}}))
        if i % 25 == 0:
            mem.search(f"{{who}} note", k=3)  # reads interleaved with the other writer
    print(json.dumps(ids))
    mem.close()
    """
)

READER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {root!r})
    from memory import VectorMemory
    from memory.embedders import HashingEmbedder
    mem = VectorMemory({path!r}, HashingEmbedder(64), ann_threshold={threshold})
    hits = mem.search(sys.argv[1], k=3, where={{"who": "a"}})
    print(json.dumps({{"count": mem.count(), "top": [h.text for h in hits], "kind": mem.store.index_kind}}))
    mem.close()
    """
)


def _script(template, path, n=0, threshold=20_000):
    return template.format(root=str(ROOT), path=str(path), n=n, threshold=threshold)


def test_persists_across_processes(tmp_path):
    path = tmp_path / "mem.db"
    out = subprocess.run(
        [sys.executable, "-c", _script(WRITER, path, n=40), "a"], capture_output=True, text=True, check=True
    )
    ids = json.loads(out.stdout)
    assert len(ids) == 40
    out = subprocess.run(
        [sys.executable, "-c", _script(READER, path), "a wrote note 17"],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(out.stdout)
    assert seen["count"] == 40 and seen["top"][0] == "a wrote note 17"


def test_two_processes_write_one_file(tmp_path):
    path = tmp_path / "mem.db"
    VectorMemory(path, HashingEmbedder(64)).close()  # created (WAL) before the race
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _script(WRITER, path, n=150, threshold=100), who],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("a", "b")
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    ids_a, ids_b = (json.loads(out) for out, _ in results)
    assert len(set(ids_a) | set(ids_b)) == 300
    mem = VectorMemory(path, HashingEmbedder(64), ann_threshold=100)
    assert mem.count() == 300
    assert {mem.get(i).metadata["who"] for i in ids_b} == {"b"}
    hits = mem.search("b wrote note 149", k=3)
    assert "b wrote note 149" in [h.text for h in hits], hits  # approximate: top 3, not top 1
    mem.close()
    # and a third process sees everything through the index the writers saved
    out = subprocess.run(
        [sys.executable, "-c", _script(READER, path, threshold=100), "a wrote note 99"],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(out.stdout)
    assert seen["count"] == 300 and seen["kind"] == "hnsw", seen
    assert "a wrote note 99" in seen["top"], seen


def test_hnsw_index_deletes_adds_huge_pages_and_reload(tmp_path):
    """The bare HNSW index: tombstones, adds after deletes, 2 MB pages and a reload give the same answers."""
    from memory.index import HnswIndex

    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((3000, 256)).astype(np.float32)  # 3 MB of vectors: past one huge page
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(1, 3001)
    index = HnswIndex(256, m=16, ef_construction=64)
    index.upsert(ids, vecs)
    queries = vecs[:20] + 0.1 * rng.standard_normal((20, 256)).astype(np.float32)
    first = [index.search(q, 5)[0].tolist() for q in queries]
    assert [f[0] for f in first] == ids[:20].tolist()
    if sys.platform == "linux":
        index.pages_thread.join()  # the pages were being collapsed while we searched
    assert [index.search(q, 5)[0].tolist() for q in queries] == first
    index.remove(ids[:10])
    assert all(index.search(q, 5)[0][0] not in ids[:10] for q in queries[:10])
    index.upsert(np.arange(5001, 5011), vecs[:10])  # back under new ids, past the old selector's range
    assert [index.search(q, 1)[0][0] for q in queries[:10]] == list(range(5001, 5011))
    index.save(tmp_path, "idx")
    loaded = HnswIndex.load(tmp_path, "idx")
    assert [loaded.search(q, 5)[0].tolist() for q in queries] == [
        index.search(q, 5)[0].tolist() for q in queries
    ]
    assert len(loaded) == 3000 and loaded.ntotal == 3010


def test_index_catches_up_incrementally_and_reloads(tmp_path):
    path = tmp_path / "mem.db"
    emb = HashingEmbedder(64)
    a = VectorMemory(path, emb, ann_threshold=100)
    a.add_many([f"first batch item {i}" for i in range(150)])
    assert a.search("first batch item 3", k=1)[0].text == "first batch item 3"
    index = a.store._index
    assert index.kind == "hnsw"
    b = VectorMemory(path, emb, ann_threshold=100)  # another handle: another process's view
    new = b.add_many([f"second batch entry {i}" for i in range(20)])
    b.delete(new[0])
    b.update(new[1], text="a completely rewritten entry about zebras")
    hits = a.search("rewritten entry about zebras", k=1)
    assert hits[0].id == new[1]
    assert a.store._index is index  # replayed the log, no rebuild
    assert all(h.id != new[0] for h in a.search("second batch entry 0", k=5))
    assert a.count() == b.count() == 169
    a.close()
    b.close()
    files = sorted(p.name for p in (tmp_path / "mem.db.ann").iterdir())
    assert len(files) == 2 and files[0].endswith(".faiss") and files[1].endswith(".npz")
    c = VectorMemory(path, emb, ann_threshold=100)
    assert c.search("rewritten entry about zebras", k=1)[0].id == new[1]
    info = c.store.index_info()
    assert info["kind"] == "hnsw" and info["saved_generation"] == info["generation"]  # loaded, not rebuilt
    c.close()


def test_damaged_index_file_is_rebuilt(tmp_path):
    path = tmp_path / "mem.db"
    emb = HashingEmbedder(64)
    mem = VectorMemory(path, emb, ann_threshold=100)
    mem.add_many([f"item {i}" for i in range(120)])
    mem.search("item 1", k=1)
    mem.close()
    for f in (tmp_path / "mem.db.ann").glob("*.faiss"):
        f.write_bytes(b"garbage")
    mem = VectorMemory(path, emb, ann_threshold=100)
    assert mem.search("item 42", k=1)[0].text == "item 42"
    assert mem.store.index_kind == "hnsw"
    mem.close()


def test_index_file_older_than_the_change_log_is_rebuilt(tmp_path):
    """A saved index the pruned change log no longer reaches is dropped and rebuilt, not reloaded in a loop."""
    import sqlite3

    path = tmp_path / "mem.db"
    emb = HashingEmbedder(64)
    mem = VectorMemory(path, emb, ann_threshold=100)
    mem.add_many([f"item {i}" for i in range(120)])
    mem.search("item 1", k=1)  # builds the HNSW index
    mem.flush()  # an index file at this generation
    saved = mem.store.index_info()["saved_generation"]
    mem.store.save_every = 10**9  # keep that file the newest
    mem.add_many([f"later item {i}" for i in range(30)])
    mem.store._index = None  # forget the live index: close() must not save a newer file
    mem.close()
    files = list((tmp_path / "mem.db.ann").glob("*.faiss"))
    assert len(files) == 1 and files[0].stem.endswith(f"{saved:012d}")
    with sqlite3.connect(path) as conn:  # prune the log past the file's generation
        conn.execute("DELETE FROM changes WHERE gen <= ?", (saved + 5,))
    mem = VectorMemory(path, emb, ann_threshold=100)
    assert mem.search("later item 29", k=1)[0].text == "later item 29"
    info = mem.store.index_info()
    assert info["kind"] == "hnsw" and info["size"] == 150
    mem.close()


def test_a_database_restored_from_a_backup_ignores_the_index_files_of_its_later_life(tmp_path):
    """The .db is restored, the .db.ann folder is not: an index file saved after the backup
    numbers other changes with the same generations, and must not be loaded."""
    import sqlite3

    path, backup = tmp_path / "notes.db", tmp_path / "backup.db"
    emb = HashingEmbedder(64)

    def copy(src, dst):
        with sqlite3.connect(src) as s, sqlite3.connect(dst) as d:
            s.backup(d)

    mem = VectorMemory(path, emb, ann_threshold=100)
    mem.add_many([f"alpha note number {i}" for i in range(300)])
    mem.search("alpha", k=1)
    mem.close()
    copy(path, backup)
    mem = VectorMemory(path, emb, ann_threshold=100)
    mem.add_many([f"beta fact {i} about bananas" for i in range(200)])
    mem.search("beta", k=1)
    mem.close()  # an index file at generation 500
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    copy(backup, path)
    mem = VectorMemory(path, emb, ann_threshold=100)
    mem.add_many([f"gamma item {i} on cars" for i in range(300)])  # generations 301-600
    mem.store._index = None  # a writer that never searched: no index file of its own
    mem.close()
    mem = VectorMemory(path, emb, ann_threshold=100)
    assert mem.search("gamma item 7 on cars", k=1)[0].text == "gamma item 7 on cars"
    assert all("beta" not in h.text for h in mem.search("beta fact 7 about bananas", k=5))
    assert mem.store.index_info()["size"] == 600
    mem.close()


def _clustered(n, dim=64, clusters=10, seed=0):
    """Unit vectors in tight clusters, the cluster of each, and queries: query i is near cluster i % 10."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    vecs = centres[labels] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    near = np.arange(3 * clusters) % clusters
    queries = centres[near] + 0.5 * rng.standard_normal((len(near), dim)).astype(np.float32)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    return unit(vecs), labels, unit(queries)


def test_filter_correlated_with_clusters_is_searched_among_its_matches(tmp_path, monkeypatch):
    """A filter that no near candidate passes: exact top-k among the matches, or HNSW restricted to them."""
    from memory import store_sqlite

    vecs, labels, queries = _clustered(4000)
    mem = VectorMemory(tmp_path / "mem.db", HashingEmbedder(64), ann_threshold=500)
    ids = np.asarray(
        mem.add_many([f"v{i}" for i in range(4000)], [{"g": int(c)} for c in labels], vectors=vecs)
    )
    mem.search_vector(queries[0], 1)
    index = mem.store._index
    assert index.kind == "hnsw"

    def exact(q, rows, k=10):
        scores = np.where(rows, vecs @ q, -np.inf)
        return ids[np.argsort(-scores)[:k]].tolist()

    # queries near clusters the filter excludes: the first 200 candidates hold (almost) no match
    far = [q for i, q in enumerate(queries) if i % 10 not in (3, 4, 5)]
    ten = labels == 3
    # the old path widened its search 200 -> 800 -> 3200 candidates for these, then scanned the table
    assert all(np.isin(index.search(q, 200, ef=200)[0], ids[ten]).sum() < 10 for q in far)
    for q in far:
        assert [h.id for h in mem.search_vector(q, 10, where={"g": 3})] == exact(q, ten)

    # the graph walk restricted to the matches (the path of filters with many matches), after
    # deleting some of them: the selector holds live matches only
    monkeypatch.setattr(store_sqlite, "_exact_limit", lambda ef, m: 0)
    wide = np.isin(labels, [3, 4, 5])
    dead = np.flatnonzero(wide)[::7]
    mem.delete(ids[dead].tolist())
    wide[dead] = False
    where = {"g": {"$in": [3, 4, 5]}}
    recall = []
    for q in far:
        got = [h.id for h in mem.search_vector(q, 10, where=where)]
        assert len(got) == 10 and set(got) <= set(ids[wide].tolist())
        recall.append(len(set(got) & set(exact(q, wide))) / 10)
    assert np.mean(recall) >= 0.9, recall

    # nothing matches; one record matches, far from the query
    assert mem.search_vector(far[0], 10, where={"g": 11}) == []
    lonely = int(ids[np.flatnonzero(~wide)[0]])
    mem.update(lonely, metadata={"g": 3, "only": True})
    assert [h.id for h in mem.search_vector(queries[3], 10, where={"only": True})] == [lonely]
    mem.close()


@pytest.mark.parametrize("threshold", [100_000, 500], ids=["exact", "hnsw"])
def test_filter_matches_cache_follows_every_write(tmp_path, threshold):
    """The ids matching a filter are scanned once, then follow every write from the logs: own or
    another handle's, records or metadata; a log that no longer reaches back means a new scan."""
    vecs, labels, queries = _clustered(3000, seed=1)
    path = tmp_path / "mem.db"
    a = VectorMemory(path, HashingEmbedder(64), ann_threshold=threshold)
    ids = a.add_many([f"v{i}" for i in range(3000)], [{"g": int(c)} for c in labels], vectors=vecs)
    q = queries[0]  # near cluster 0: g == 0, so {"g": 3} has no match close by
    where = {"g": 3}

    def top(mem=a):
        return [h.id for h in mem.search_vector(q, 5, where=where)]

    before = top()
    assert len(a.store._matches) == 1 and a.store.index_kind == ("exact" if threshold > 3000 else "hnsw")
    (entry,) = a.store._matches.values()

    def same_entry():
        return list(a.store._matches.values()) == [entry]

    assert top() == before and same_entry()
    a.search("a text query that is embedded and cached", k=3, where=where)  # writes the embedding cache
    assert same_entry()

    # own writes: add, update the metadata, delete
    new = a.add_many(["close to q"], [{"g": 3}], vectors=q[None])[0]
    assert top()[0] == new
    a.update(new, metadata={"g": 4})
    assert new not in top()
    a.update(new, metadata={"g": 3})
    assert top()[0] == new
    a.delete(new)
    assert top() == before and same_entry()  # brought up to date, not scanned again

    # another handle on the same file (another process's view)
    b = VectorMemory(path, HashingEmbedder(64), ann_threshold=threshold)
    assert top() == before
    other = b.add_many(["also close to q"], [{"g": 3}], vectors=q[None])[0]
    assert top()[0] == other
    near = int(ids[int(np.argmax(vecs @ q))])  # the nearest record of all, g == 0
    b.update(near, metadata={"g": 3})
    assert top()[:2] == [other, near] or top()[:2] == [near, other]
    b.delete(other)
    assert top()[0] == near and other not in top()
    b.update(near, metadata={"g": 0})
    assert top() == before and same_entry()
    # the edit log pruned past what the cache saw: scanned again
    b.update(near, metadata={"g": 3})
    b.store.conn.execute("DELETE FROM edits")
    assert near in top() and not same_entry() and len(a.store._matches) == 1
    b.close()
    a.close()


def test_import_memory_is_light():
    code = (
        "import sys, memory; from memory import VectorMemory, EpisodicMemory; "
        "heavy = [m for m in ('numpy', 'torch', 'transformers', 'faiss', 'psycopg') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


# -- memory as tools, through a real run ----------------------------------------------


def test_memory_tools_in_a_run(tmp_path, minilm, run_dir):
    mem = VectorMemory(tmp_path / "notes.db", minilm)
    mem.add("The office wifi password is on the fridge.", {"tags": ["office"]})
    llm = ScriptedLLM(
        [
            call("memory_save", text="The release train leaves every second Thursday.", tags=["process"]),
            call("memory_search", query="when is the next release?", k=2),
            "Every second Thursday.",
        ]
    )
    result = Agent(llm, tools=memory_tools(mem), run_dir=run_dir).run_sync("When do we release?")
    assert result.ok
    writes = [e for e in result.events if e.type == "memory_write"]
    reads = [e for e in result.events if e.type == "memory_read"]
    assert len(writes) == 1 and writes[0].metadata == {"tags": ["process"]} and writes[0].memory == "notes"
    assert len(reads) == 1 and reads[0].query == "when is the next release?"
    assert reads[0].hits[0]["text"] == "The release train leaves every second Thursday."
    saved = mem.get(reads[0].hits[0]["id"])
    assert saved.source == {"run_id": result.run_id, "seq": writes[0].seq}
    outputs = [e.content for e in result.events if e.type == "tool_result"]
    assert outputs[0].startswith("Saved to memory as id")
    assert "second Thursday" in outputs[1].splitlines()[0]
    # the model saw the search result in its next prompt
    assert "second Thursday" in llm.requests[2].messages[-1].content
    mem.close()


def test_a_guard_refuses_a_memory_write(tmp_path, run_dir):
    mem = VectorMemory(tmp_path / "notes.db", HashingEmbedder(64))
    seen = []

    async def guard(event):
        seen.append(event.type)
        if event.type == "memory_write" and "password" in event.text:
            return Decision.block("Do not store credentials in memory.")
        return None

    llm = ScriptedLLM(
        [
            call("memory_save", text="The admin password is hunter2", tags=["secret"]),
            call("memory_save", text="Standup is at 9:30", tags=["team"]),
            "Noted.",
        ]
    )
    result = Agent(llm, tools=memory_tools(mem), guards=[guard], run_dir=run_dir).run_sync("remember things")
    assert result.ok
    results = [e for e in result.events if e.type == "tool_result"]
    assert results[0].is_error and "Do not store credentials in memory." in results[0].content
    assert not results[1].is_error
    assert "memory_write" in seen
    # the refused write never reached the store or the log
    assert [r.text for r in mem.recent(10)] == ["Standup is at 9:30"]
    assert [e.text for e in result.events if e.type == "memory_write"] == ["Standup is at 9:30"]
    assert "Do not store credentials" in llm.requests[1].messages[-1].content
    mem.close()


def test_a_guard_rewrites_or_blocks_what_a_search_shows(tmp_path, run_dir):
    mem = VectorMemory(tmp_path / "notes.db", HashingEmbedder(64))
    mem.add("public: the cafeteria opens at noon", {"tags": ["public"]})
    mem.add("secret: the vault code is 4711", {"tags": ["secret"]})

    async def redact(event):
        if event.type == "memory_read":
            kept = [h for h in event.hits if "secret" not in h["metadata"].get("tags", [])]
            return Decision.rewrite(event.model_copy(update={"hits": kept}))
        return None

    llm = ScriptedLLM([call("memory_search", query="the vault code and the cafeteria", k=5), "done"])
    result = Agent(llm, tools=memory_tools(mem), guards=[redact], run_dir=run_dir).run_sync("look")
    shown = [e.content for e in result.events if e.type == "tool_result"][0]
    assert "cafeteria" in shown and "4711" not in shown
    assert "4711" not in llm.requests[1].messages[-1].content
    (read,) = [e for e in result.events if e.type == "memory_read"]
    assert [h["text"] for h in read.hits] == ["public: the cafeteria opens at noon"]

    async def block(event):
        return Decision.block("memory is off limits") if event.type == "memory_read" else None

    llm = ScriptedLLM([call("memory_search", query="vault"), "done"])
    result = Agent(llm, tools=memory_tools(mem), guards=[block], run_dir=run_dir).run_sync("look")
    (res,) = [e for e in result.events if e.type == "tool_result"]
    assert res.is_error and "memory is off limits" in res.content and "4711" not in res.content
    mem.close()


@pytest.mark.parametrize(
    "kind",
    ["not a database", "another program's", "another program's, with tables named like ours", "a folder"],
)
def test_a_file_that_is_not_a_memory_is_refused_clearly_and_left_alone(tmp_path, kind):
    import sqlite3

    from memory import VectorMemoryError

    path = tmp_path / "memory.db"
    if kind == "not a database":
        path.write_bytes(b"plain text, not SQLite " * 100)
    elif kind == "another program's":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE records (name TEXT, price REAL)")
        conn.execute("INSERT INTO records VALUES ('tea', 3.5)")
        conn.commit()
        conn.close()
    elif kind == "another program's, with tables named like ours":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        conn.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, time REAL)")
        conn.execute("INSERT INTO records (time) VALUES (1.5)")
        conn.commit()
        conn.close()
    else:
        path.mkdir()
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(VectorMemoryError, match="cannot be opened as a memory file"):
        VectorMemory(path, HashingEmbedder())
    if before is not None:
        assert path.read_bytes() == before


def test_bad_values_are_clear_errors_not_database_ones(tmp_path):
    from memory import VectorMemoryError
    from memory.filters import FilterError

    mem = VectorMemory(tmp_path / "m.db", HashingEmbedder())
    mem.add("hello", {"n": 1})
    with pytest.raises(FilterError, match="64-bit"):
        mem.search("hello", where={"n": 2**70})
    with pytest.raises(FilterError, match="takes true or false"):
        mem.search("hello", where={"n": {"$exists": "no"}})
    with pytest.raises(VectorMemoryError, match="lone surrogate"):
        mem.add("\ud800")
    with pytest.raises(VectorMemoryError, match="not a run id and an event number"):
        mem.add("x", source={"run_id": "r", "seq": "zz"})
    assert mem.count() == 1


def test_metadata_keys_in_any_script_can_be_filtered(make_memory):
    from memory.filters import FilterError

    mem = make_memory(HashingEmbedder())
    mem.add("first", {"名前": "Ada", "a b": 1, "x-y": {"z w": True}})
    mem.add("second", {"名前": "Bob", "a b": 2})
    assert [h.text for h in mem.search("first", where={"名前": "Ada"})] == ["first"]
    assert [h.text for h in mem.search("first", where={"a b": {"$gt": 1}})] == ["second"]
    assert [h.text for h in mem.search("first", where={"x-y.z w": True})] == ["first"]
    for key in ("a'b", 'a"b', "a\\b"):  # what would end a quoted key or an SQL literal
        with pytest.raises(FilterError, match="may not hold quotes"):
            mem.search("x", where={key: 1})


def test_filters_with_thousands_of_values_work_on_every_backend(make_memory):
    mem = make_memory(HashingEmbedder(32))
    mem.add_many([f"t{i}" for i in range(1500)], [{"doc": f"d{i}", "n": i} for i in range(1500)])
    many = [f"d{i}" for i in range(1200)]
    assert len(mem.ids({"doc": {"$in": many}})) == 1200
    assert len(mem.ids({"doc": {"$nin": many}})) == 300
    assert len(mem.ids({"n": {"$in": [*range(1000), 1.0, "5", True, None]}})) == 1000  # typed: "5" is no 5
    assert len(mem.ids({"$or": [{"doc": d} for d in many]})) == 1200


def test_bad_items_store_nothing_and_bad_queries_are_clear_errors(tmp_path):
    from memory.tools import format_hits

    mem = VectorMemory(tmp_path / "m.db", HashingEmbedder())
    metas = [{"i": i} for i in range(30)]
    metas[-1] = {"bad": object()}
    with pytest.raises(VectorMemoryError, match="JSON-serialisable"):
        mem.add_many([f"t{i}" for i in range(30)], metas, batch_size=10)
    for bad, message in (
        (lambda: mem.add_many("hello"), "not one string"),
        (lambda: mem.add("x", time="2024-05-01"), "seconds since the epoch"),
        (lambda: mem.add("x", time=float("nan")), "seconds since the epoch"),
        (lambda: mem.add("x", vector=np.full(mem.embedder.dim, np.nan, dtype=np.float32)), "NaN"),
        (lambda: mem.update(1, text="\ud800"), "lone surrogate"),
        (lambda: mem.search(None), "query string, not NoneType"),
        (lambda: mem.search("x", k="3"), "k must be a whole number"),
        (lambda: mem.search("x", k=-1), "k must be a whole number, 0 or more, not -1"),
        (lambda: mem.recent(-1), "limit must be a whole number"),
        (lambda: mem.search("  "), "the query cannot be empty"),
        (lambda: mem.add(""), "a text to store cannot be empty"),
        (lambda: mem.add_many(["a", "\n"]), "a text to store cannot be empty"),
        (lambda: mem.search("x", min_score="0.5"), "min_score must be a number"),
        (lambda: mem.search_vector(np.ones(3, dtype=np.float32)), "must be 256 finite numbers"),
        (lambda: mem.add("x", {1: "a"}), "metadata keys must be strings"),
        (lambda: mem.add("x", {"a": "\udcff"}), "metadata holds a lone surrogate"),
        (lambda: VectorMemory(""), "needs a file path"),
    ):
        with pytest.raises(VectorMemoryError, match=message):
            bad()
    assert mem.count() == 0
    ids = mem.add_many(["a", "b", "c"])
    assert mem.get(10**30) is None
    numpy_numbers = mem.search("a", k=np.int64(2), min_score=np.float32(-1.0))  # NumPy numbers are numbers
    assert len(numpy_numbers) == 2 and mem.recent(np.int64(1))[0].text == "c"
    assert mem.get(mem.add("d", time=np.float64(1.5e9))).time == 1.5e9
    assert (
        mem.recent(0) == [] and mem.delete(set(ids[:2])) == 2 and mem.delete(range(ids[2], ids[2] + 1)) == 1
    )
    shown = format_hits([{"id": 1, "text": "t", "metadata": {"tags": "ops"}, "time": "soon"}])
    assert shown == "1. [id 1; tags: ops] t"
    save = memory_tools(mem)[1]
    with pytest.raises(ValidationError, match="at most 4000 characters"):  # a model cannot store megabytes
        save.validate({"text": "x" * 4001})


def test_the_change_log_and_crashed_saves_do_not_grow_without_end(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "mem.db"
    mem = VectorMemory(path, HashingEmbedder(32), ann_threshold=100)
    ids = mem.add_many([f"item {i}" for i in range(150)])
    mem.search("item 1", k=1)
    mem.flush()  # an HNSW file: the log is kept back to it while others may load it
    mem.delete(ids[10:])  # 10 left: below where any process loads an index file
    mem.store._index = None  # close() saves no newer file
    mem.close()
    mem = VectorMemory(path, HashingEmbedder(32), ann_threshold=100)  # exact index: saves nothing
    for round_ in range(56):  # 56,000 changes; the log keeps 20,000 to 25,000 of them
        new = mem.add_many([f"churn {round_} {i}" for i in range(500)])
        mem.delete(new)
    log = mem.store.conn.execute("SELECT COUNT(*) FROM changes").fetchone()[0]
    assert log <= 25_000 and mem.count() == 10
    # the half-written files of a save whose process died are removed at the next save
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / "mem.db.ann" / f"x.faiss.tmp-{dead.stdout.strip()}-0a1b2c3d"
    mine = tmp_path / "mem.db.ann" / f"y.npz.tmp-{os.getpid()}-0a1b2c3d"  # a live process's: kept
    stale.write_bytes(b"partial")
    mine.write_bytes(b"partial")
    mem.add_many([f"more {i}" for i in range(150)])
    mem.search("more 1", k=1)
    mem.flush()
    assert not stale.exists() and mine.exists()
    mem.close()


def test_a_memory_knows_its_model_by_its_files_not_its_folder_name(tmp_path, monkeypatch):
    """Two checkpoints both called `final` are two models; the default model's own files
    under another path are the same one."""
    import sqlite3

    from memory.embedders import TransformersEmbedder, default_model_path

    def copy_of_default(folder, pooling=None):
        source = default_model_path()
        for path in source.rglob("*"):
            if path.is_file():
                target = folder / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path)  # the same bytes, without copying the weights
        if pooling is not None:
            pool = folder / "1_Pooling" / "config.json"
            pool.unlink(missing_ok=True)
            pool.parent.mkdir(exist_ok=True)
            pool.write_text(json.dumps({"word_embedding_dimension": 384, f"pooling_mode_{pooling}": True}))
        return folder

    run_a = copy_of_default(tmp_path / "run-a" / "final")
    run_b = copy_of_default(tmp_path / "run-b" / "final", pooling="cls_token")
    a, b = TransformersEmbedder(run_a), TransformersEmbedder(run_b)
    assert a.name == b.name == "final" and a.fingerprint != b.fingerprint
    assert a.fingerprint == TransformersEmbedder().fingerprint  # the default's files
    assert (
        a.fingerprint == TransformersEmbedder(run_a, pooling="mean", max_length=256).fingerprint
    )  # its own settings
    # the folder and its settings are looked up once, for the fingerprint and the dimension alike
    from memory import embedders

    looked_up = []
    find = embedders._local_folder
    monkeypatch.setattr(embedders, "_local_folder", lambda source: looked_up.append(source) or find(source))
    fresh = TransformersEmbedder(run_b)
    assert (fresh.fingerprint, fresh.dim, looked_up) == (b.fingerprint, 384, [str(run_b)])
    one = np.zeros(384, dtype=np.float32)
    one[0] = 1.0
    mem = VectorMemory(tmp_path / "m.db", a)
    mem.add("hello", vector=one)
    with pytest.raises(
        VectorMemoryError, match=rf"cannot be searched or extended with 'final' \({b.fingerprint}\)"
    ):
        VectorMemory(tmp_path / "m.db", b).add("x", vector=one)
    VectorMemory(tmp_path / "m.db", TransformersEmbedder()).add("same files", vector=one)  # the default's
    # the model's name row is as earlier versions wrote it (they still open the file); the fingerprint has its own
    meta = dict(sqlite3.connect(tmp_path / "m.db").execute("SELECT key, value FROM meta").fetchall())
    assert (meta["model"], meta["model_print"]) == ("final", a.fingerprint)
    # a memory recorded before fingerprints (a name only) is checked by name once, then by fingerprint
    VectorMemory(tmp_path / "old.db", HashingEmbedder(384)).add("x", vector=one)
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("UPDATE meta SET value = 'final' WHERE key = 'model'")
    VectorMemory(tmp_path / "old.db", a).add("y", vector=one)
    with pytest.raises(VectorMemoryError, match="cannot be searched"):
        VectorMemory(tmp_path / "old.db", b).add("z", vector=one)
