"""One vector index, two backends: embedded (one machine: SQLite for persistence, numpy for search) and PostgreSQL
with pgvector (several replicas). Both pass the same tests (tests/test_vectors.py).

Vectors live in namespaces: a knowledge base (`kb:handbook`), or the semantic cache of one tenant and context
(`cache:<digest>`). Scores are cosine similarities (1: the same direction). A namespace keeps at most `limit` items
when one is given (the oldest go first), so nothing grows without bound."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class Hit:
    id: str
    score: float
    payload: dict
    created_at: float


class VectorIndex(Protocol):
    async def add(self, namespace: str, items: list[tuple[str, list[float], dict]], limit: int = 0) -> None: ...

    async def search(self, namespace: str, vector: list[float], k: int) -> list[Hit]: ...

    async def drop(self, namespace: str) -> int: ...

    async def namespaces(self, prefix: str = "") -> dict[str, int]: ...

    async def close(self) -> None: ...


def _unit(vector) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm else v


class _Namespace:
    def __init__(self):
        self.ids: list[str] = []
        self.payloads: list[dict] = []
        self.created: list[float] = []
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.size = 0  # rows of matrix in use (it grows by doubling)

    def add(self, id_: str, vector: np.ndarray, payload: dict, created: float) -> None:
        if id_ in self.ids:  # replaced: the old row goes
            self.remove(self.ids.index(id_))
        if self.matrix.shape[1:] != vector.shape:
            if self.size:
                raise ValueError(f"vectors of {vector.shape[0]} dimensions in a namespace of {self.matrix.shape[1]}")
            self.matrix = np.zeros((16, vector.shape[0]), dtype=np.float32)
        if self.size == self.matrix.shape[0]:
            self.matrix = np.vstack([self.matrix, np.zeros_like(self.matrix)])
        self.matrix[self.size] = vector
        self.size += 1
        self.ids.append(id_)
        self.payloads.append(payload)
        self.created.append(created)

    def remove(self, i: int) -> None:
        self.matrix[i:self.size - 1] = self.matrix[i + 1:self.size]
        self.size -= 1
        del self.ids[i], self.payloads[i], self.created[i]

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        if not self.size or vector.shape[0] != self.matrix.shape[1]:
            return []
        scores = self.matrix[:self.size] @ vector
        top = np.argpartition(-scores, min(k, self.size) - 1)[:k] if self.size > k else np.arange(self.size)
        top = top[np.argsort(-scores[top])]
        return [Hit(self.ids[i], float(scores[i]), self.payloads[i], self.created[i]) for i in top]


class EmbeddedIndex:
    """The embedded default: every namespace in memory for search, persisted in a SQLite file. One process owns it
    (several processes or machines: use PostgreSQL with pgvector)."""

    def __init__(self, path: str):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (namespace TEXT, id TEXT, vector BLOB, payload TEXT, "
                         "created_at REAL, PRIMARY KEY (namespace, id))")
        self._lock = threading.Lock()
        self._spaces: dict[str, _Namespace] = {}
        for namespace, id_, blob, payload, created in self._db.execute(
                "SELECT namespace, id, vector, payload, created_at FROM vectors ORDER BY created_at"):
            self._space(namespace).add(id_, np.frombuffer(blob, dtype=np.float32), json.loads(payload), created)

    def _space(self, namespace: str) -> _Namespace:
        return self._spaces.setdefault(namespace, _Namespace())

    def _add(self, namespace: str, items, limit: int) -> None:
        now = time.time()
        with self._lock:
            space = self._space(namespace)
            rows = []
            for id_, vector, payload in items:
                unit = _unit(vector)
                space.add(id_, unit, payload, now)
                rows.append((namespace, id_, unit.tobytes(), json.dumps(payload), now))
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?)", rows)
            while limit and space.size > limit:
                self._db.execute("DELETE FROM vectors WHERE namespace = ? AND id = ?", (namespace, space.ids[0]))
                space.remove(0)

    async def add(self, namespace: str, items: list[tuple[str, list[float], dict]], limit: int = 0) -> None:
        await asyncio.to_thread(self._add, namespace, items, limit)

    async def search(self, namespace: str, vector: list[float], k: int) -> list[Hit]:
        space = self._spaces.get(namespace)
        if space is None:
            return []
        unit = _unit(vector)
        if space.size * unit.shape[0] < 2_000_000:  # ~1 ms of work: not worth a thread hop
            with self._lock:
                return space.search(unit, k)
        return await asyncio.to_thread(self._locked_search, space, unit, k)

    def _locked_search(self, space, unit, k):
        with self._lock:
            return space.search(unit, k)

    async def drop(self, namespace: str) -> int:
        with self._lock:
            space = self._spaces.pop(namespace, None)
            self._db.execute("DELETE FROM vectors WHERE namespace = ?", (namespace,))
        return space.size if space else 0

    async def namespaces(self, prefix: str = "") -> dict[str, int]:
        return {name: space.size for name, space in sorted(self._spaces.items())
                if name.startswith(prefix) and space.size}

    async def close(self) -> None:
        self._db.close()


class PgVectorIndex:
    """PostgreSQL with pgvector: one table for every namespace, an HNSW index per dimension count (cosine)."""

    def __init__(self, url: str):
        self.url = url
        self._conn = None
        self._lock = asyncio.Lock()
        self._indexed: set[int] = set()

    async def _db(self):
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5)
            await self._conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            await self._conn.execute(
                "CREATE TABLE IF NOT EXISTS tollgate_vectors (namespace TEXT, id TEXT, dims INT, embedding vector, "
                "payload JSONB, created_at DOUBLE PRECISION, PRIMARY KEY (namespace, id))")
        return self._conn

    async def _index(self, db, dims: int) -> None:
        if dims in self._indexed:
            return
        await db.execute(f"CREATE INDEX IF NOT EXISTS tollgate_vectors_{dims} ON tollgate_vectors USING hnsw "
                         f"((embedding::vector({dims})) vector_cosine_ops) WHERE dims = {dims}")
        self._indexed.add(dims)

    async def add(self, namespace: str, items: list[tuple[str, list[float], dict]], limit: int = 0) -> None:
        if not items:
            return
        async with self._lock:
            db = await self._db()
            now = time.time()
            dims = len(items[0][1])
            await self._index(db, dims)
            async with db.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO tollgate_vectors VALUES (%s, %s, %s, %s::vector, %s, %s) ON CONFLICT (namespace, id) "
                    "DO UPDATE SET dims = EXCLUDED.dims, embedding = EXCLUDED.embedding, payload = EXCLUDED.payload, "
                    "created_at = EXCLUDED.created_at",
                    [(namespace, id_, len(v), _literal(v), json.dumps(p), now) for id_, v, p in items])
            if limit:
                await db.execute("DELETE FROM tollgate_vectors WHERE namespace = %s AND id IN (SELECT id FROM "
                                 "tollgate_vectors WHERE namespace = %s ORDER BY created_at DESC OFFSET %s)",
                                 (namespace, namespace, limit))

    async def search(self, namespace: str, vector: list[float], k: int) -> list[Hit]:
        dims = len(vector)
        async with self._lock:
            db = await self._db()
            rows = await (await db.execute(
                f"SELECT id, 1 - (embedding::vector({dims}) <=> %s::vector({dims})), payload, created_at "
                f"FROM tollgate_vectors WHERE namespace = %s AND dims = %s "
                f"ORDER BY embedding::vector({dims}) <=> %s::vector({dims}) LIMIT %s",
                (_literal(vector), namespace, dims, _literal(vector), k))).fetchall()
        return [Hit(id_, float(score), payload, created) for id_, score, payload, created in rows]

    async def drop(self, namespace: str) -> int:
        async with self._lock:
            db = await self._db()
            return (await db.execute("DELETE FROM tollgate_vectors WHERE namespace = %s", (namespace,))).rowcount

    async def namespaces(self, prefix: str = "") -> dict[str, int]:
        async with self._lock:
            db = await self._db()
            rows = await (await db.execute("SELECT namespace, COUNT(*) FROM tollgate_vectors WHERE namespace LIKE %s "
                                           "GROUP BY 1 ORDER BY 1", (prefix.replace("%", r"\%") + "%",))).fetchall()
        return dict(rows)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def _literal(vector) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def open_index(url: str) -> VectorIndex:
    """A file path (the embedded index) or postgresql://… (pgvector)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PgVectorIndex(url)
    return EmbeddedIndex(url)
