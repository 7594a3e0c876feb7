"""Shared state behind one small interface: an in-memory store (embedded default, one process) and Redis (shared by
replicas). Both pass the same tests (tests/test_store.py)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Protocol


class StoreError(Exception):
    """The store cannot answer (Redis down or slow); callers degrade instead of failing the call."""


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """LRU bounded by the total bytes of its values; entries also expire after their TTL."""

    def __init__(self, max_bytes: int = 64 * 2**20, clock=time.monotonic):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if len(value) > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = (value, self._clock() + ttl_s)
        self.bytes += len(value)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def delete(self, key: str) -> None:
        self._drop(key)

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= len(entry[0])


class RedisStore:
    """redis.asyncio with short timeouts: a dead Redis costs a call at most `timeout_s`, never a hang.
    The client reconnects by itself once Redis is back."""

    def __init__(self, url: str, timeout_s: float = 0.25):
        import redis.asyncio as redis

        self.url = url
        self.timeout_s = timeout_s
        self.errors = 0  # exported as tollgate_store_errors_total
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           retry_on_timeout=False)

    async def _call(self, coro):
        try:
            return await asyncio.wait_for(coro, self.timeout_s * 2)
        except Exception as e:  # connection refused, timeouts, protocol errors: all mean "no answer"
            self.errors += 1
            raise StoreError(f"{type(e).__name__}: {e}") from None

    async def get(self, key: str) -> bytes | None:
        return await self._call(self._redis.get(key))

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._call(self._redis.set(key, value, px=max(1, int(ttl_s * 1000))))

    async def delete(self, key: str) -> None:
        await self._call(self._redis.delete(key))

    async def close(self) -> None:
        try:
            await self._redis.aclose()
        except Exception:
            pass


def open_store(url: str, memory_bytes: int) -> Store:
    """'memory' or redis://host:port/db (rediss:// and unix:// too)."""
    if url in ("", "memory"):
        return MemoryStore(memory_bytes)
    return RedisStore(url)
