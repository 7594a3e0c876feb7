"""The vector index's two backends pass the same tests: the embedded one (SQLite + numpy) and pgvector."""

import asyncio
import math

import pytest

from tollgate.core.vectors import EmbeddedIndex, PgVectorIndex


@pytest.fixture(params=["embedded", "pgvector"])
def index_url(request, tmp_path):
    if request.param == "embedded":
        return str(tmp_path / "vectors.db")
    url = request.getfixturevalue("pgvector")
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS tollgate_vectors")
    return url


def open_(url):
    return PgVectorIndex(url) if url.startswith("postgresql") else EmbeddedIndex(url)


def unit(*xs):
    norm = math.sqrt(sum(x * x for x in xs))
    return [x / norm for x in xs]


def test_nearest_first_within_a_namespace_and_bounded(index_url):
    async def scenario():
        index = open_(index_url)
        await index.add("a", [("x", unit(1, 0, 0), {"n": 1}), ("y", unit(1, 1, 0), {"n": 2}),
                              ("z", unit(0, 0, 1), {"n": 3})])
        await index.add("b", [("w", unit(1, 0, 0), {"n": 4})])
        hits = await index.search("a", unit(1, 0.1, 0), 2)
        other = await index.search("b", unit(0, 0, 1), 5)
        await index.add("a", [(f"extra{i}", unit(0, 1, i), {}) for i in range(5)], limit=4)  # the oldest go
        names = await index.namespaces()
        after = [h.id for h in await index.search("a", unit(1, 0, 0), 10)]
        dropped = await index.drop("b")
        left = await index.namespaces()
        await index.close()
        return hits, other, names, after, dropped, left
    hits, other, names, after, dropped, left = asyncio.run(scenario())
    assert [h.id for h in hits] == ["x", "y"] and hits[0].payload == {"n": 1}
    assert hits[0].score > 0.99 and 0.7 < hits[1].score < 0.8
    assert [h.id for h in other] == ["w"] and abs(other[0].score) < 1e-6
    assert names == {"a": 4, "b": 1} and "x" not in after and len(after) == 4
    assert dropped == 1 and left == {"a": 4}


def test_the_embedded_index_survives_a_restart(tmp_path):
    path = str(tmp_path / "vectors.db")

    async def write():
        index = EmbeddedIndex(path)
        await index.add("kb:h", [("c1", unit(1, 2, 3), {"text": "hello"})])
        await index.close()

    async def read():
        index = EmbeddedIndex(path)
        hits = await index.search("kb:h", unit(1, 2, 3), 1)
        await index.close()
        return hits
    asyncio.run(write())
    hits = asyncio.run(read())
    assert hits[0].id == "c1" and hits[0].payload == {"text": "hello"} and hits[0].score > 0.999
