"""Shared state behind one small interface: an in-memory store (embedded default, one process) and Redis (shared by
replicas). Both pass the same tests (tests/test_store.py).

Besides plain values (the cache) the stores keep window counters (limits and budgets): a counter is a hash of
slot -> amount. window_add checks and reserves in one step (in Redis one Lua call, on Redis's clock, so replicas
agree); window_adjust settles a reservation in the slot it went to, unless that slot has left the window."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Protocol

from .limits import WindowState


class StoreError(Exception):
    """The store cannot answer (Redis down or slow); callers degrade instead of failing the call."""


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def window_add(self, key: str, limit: int, cost: int, slot_ms: int, slots: int,
                         ttl_ms: int) -> WindowState: ...

    async def window_adjust(self, key: str, slot: int, delta: int, slot_ms: int, slots: int, ttl_ms: int) -> None: ...

    async def close(self) -> None: ...


def _slot(now_ms: int, slot_ms: int) -> int:
    return now_ms // slot_ms if slot_ms else 0  # slot_ms 0: one fixed slot (budget periods are in the key)


class MemoryStore:
    """LRU bounded by the total bytes of its values; entries also expire after their TTL."""

    MAX_COUNTERS = 100_000  # beyond this many live counters the least recently used is dropped

    def __init__(self, max_bytes: int = 64 * 2**20, clock=time.monotonic, wall=time.time):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._clock = clock
        self._wall = wall
        self._counters: OrderedDict[str, tuple[dict[int, int], int]] = OrderedDict()  # key -> (slots, expiry ms)

    def _counter(self, key: str, now_ms: int, oldest: int) -> dict[int, int]:
        counts, expiry = self._counters.get(key, (None, 0))
        if counts is None or expiry <= now_ms:
            return {}
        return {slot: n for slot, n in counts.items() if slot >= oldest}

    def _keep(self, key: str, counts: dict[int, int], expiry_ms: int) -> None:
        self._counters[key] = (counts, expiry_ms)
        self._counters.move_to_end(key)
        while len(self._counters) > self.MAX_COUNTERS:
            self._counters.popitem(last=False)

    async def window_add(self, key, limit, cost, slot_ms, slots, ttl_ms) -> WindowState:
        now = int(self._wall() * 1000)
        slot = _slot(now, slot_ms)
        counts = self._counter(key, now, slot - slots)
        admitted = sum(counts.values()) + cost <= limit
        if admitted:
            counts[slot] = counts.get(slot, 0) + cost
            self._keep(key, counts, now + ttl_ms)
        return WindowState(admitted, now, slot, dict(counts))

    async def window_adjust(self, key, slot, delta, slot_ms, slots, ttl_ms) -> None:
        now = int(self._wall() * 1000)
        oldest = _slot(now, slot_ms) - slots
        counts = self._counter(key, now, oldest)
        if slot < oldest or not counts:  # the reservation has left the window (or the counter expired)
            return
        counts[slot] = counts.get(slot, 0) + delta
        self._keep(key, counts, now + ttl_ms)

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
        self._counters.clear()
        self.bytes = 0

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= len(entry[0])


# Check and reserve in one step. KEYS[1]: the counter hash. ARGV: slot_ms, slots, limit, cost, ttl_ms.
# Returns {admitted, now_ms, slot, slot1, count1, slot2, count2, ...} (counts before the reservation).
_ADD = """
local slot_ms, slots, limit, cost, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                                         tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot = 0
if slot_ms > 0 then slot = math.floor(now / slot_ms) end
local flat = redis.call('HGETALL', KEYS[1])
local used, out = 0, {0, now, slot}
for i = 1, #flat, 2 do
  local s, n = tonumber(flat[i]), tonumber(flat[i + 1])
  if s < slot - slots then
    redis.call('HDEL', KEYS[1], flat[i])
  else
    used = used + n
    out[#out + 1] = s
    out[#out + 1] = n
  end
end
if used + cost <= limit then
  out[1] = 1
  redis.call('HINCRBY', KEYS[1], slot, cost)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return out
"""

# Settle a reservation. KEYS[1]: the counter hash. ARGV: slot, delta, slot_ms, slots, ttl_ms.
_ADJUST = """
local slot, delta, slot_ms, slots, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                                         tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = 0
if slot_ms > 0 then current = math.floor(now / slot_ms) end
if slot >= current - slots and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], slot, delta)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"""


class RedisStore:
    """redis.asyncio with short timeouts: a dead Redis costs a call at most `timeout_s`, never a hang.
    The client reconnects by itself once Redis is back."""

    # Long enough that a busy gateway's own event-loop lag is not taken for an outage (an outage admits calls
    # uncounted under on_store_error: open), short enough that a hung Redis costs a call at most about a second.
    def __init__(self, url: str, timeout_s: float = 0.5):
        import redis.asyncio as redis

        self.url = url
        self.timeout_s = timeout_s
        self.errors = 0  # exported as tollgate_store_errors_total
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           retry_on_timeout=False)
        self._add = self._redis.register_script(_ADD)  # EVALSHA, loading the script again after a Redis restart
        self._adjust = self._redis.register_script(_ADJUST)

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

    async def window_add(self, key, limit, cost, slot_ms, slots, ttl_ms) -> WindowState:
        out = [int(v) for v in await self._call(self._add(keys=[key], args=[slot_ms, slots, limit, cost, ttl_ms]))]
        admitted, now, slot = bool(out[0]), out[1], out[2]
        counts = dict(zip(out[3::2], out[4::2]))
        if admitted:
            counts[slot] = counts.get(slot, 0) + cost
        return WindowState(admitted, now, slot, counts)

    async def window_adjust(self, key, slot, delta, slot_ms, slots, ttl_ms) -> None:
        await self._call(self._adjust(keys=[key], args=[slot, delta, slot_ms, slots, ttl_ms]))

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
