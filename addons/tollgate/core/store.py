"""Shared state behind one small interface: an in-memory store (embedded default, one process) and Redis (shared by
replicas). Both pass the same tests (tests/test_store.py).

Besides plain values (the cache) the stores keep window counters (limits and budgets): a counter is a hash of
slot -> amount. reserve() checks every counter of a call and charges all of them, or none, in one step (in Redis one
Lua call, on Redis's clock, so replicas agree); settle() corrects reservations (counter, slot, delta) in the slots
they went to, unless those slots have left their window."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Protocol

from .limits import Counter, WindowState, window_state


class StoreError(Exception):
    """The store cannot answer (Redis down or slow); callers degrade instead of failing the call."""


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def get_many(self, keys: list[str]) -> list[bytes | None]: ...

    async def delete(self, key: str) -> None: ...

    async def reserve(self, counters: list[Counter]) -> list[WindowState]: ...

    async def reserve_and_get(self, counters: list[Counter], key: str) -> tuple[list[WindowState], bytes | None]: ...

    async def settle(self, corrections: list[tuple[Counter, int, int]]) -> None: ...

    async def write(self, writes: list[tuple]) -> None: ...  # ("set", key, value, ttl_s) | ("settle", corrections)

    async def close(self) -> None: ...


def _slot(now_ms: int, slot_ms: int) -> int:
    return now_ms // slot_ms if slot_ms else 0  # slot_ms 0: one fixed slot (budget periods are in the key)


ENTRY_OVERHEAD = 250  # bytes an entry costs besides its key and value (dict slot, tuple, objects), measured


def _size(key: str, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD


class MemoryStore:
    """LRU bounded by the memory its entries take (keys, values and their bookkeeping, so that many small answers
    cannot outgrow the bound); entries also expire after their TTL."""

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
        if counts and min(counts) < oldest:  # slots that have left the window go (in place: no copy a call)
            for slot in [s for s in counts if s < oldest]:
                del counts[slot]
        return counts

    def _keep(self, key: str, counts: dict[int, int], expiry_ms: int) -> None:
        self._counters[key] = (counts, expiry_ms)
        self._counters.move_to_end(key)
        while len(self._counters) > self.MAX_COUNTERS:
            self._counters.popitem(last=False)

    async def reserve(self, counters: list[Counter]) -> list[WindowState]:
        return self.reserve_now(counters)

    def reserve_now(self, counters: list[Counter]) -> list[WindowState]:
        """reserve() without a coroutine: this store answers at once."""
        now = int(self._wall() * 1000)
        slots = [_slot(now, c.slot_ms) for c in counters]
        counts = [self._counter(c.key, now, slot - c.slots) for c, slot in zip(counters, slots)]
        room = [sum(n.values()) + c.cost <= c.limit for c, n in zip(counters, counts)]
        if all(room):
            for c, slot, n in zip(counters, slots, counts):
                n[slot] = n.get(slot, 0) + c.cost
                self._keep(c.key, n, now + c.ttl_ms)
        return [window_state(ok, now, slot, n, c.limit, c.cost)
                for c, slot, n, ok in zip(counters, slots, counts, room)]

    async def settle(self, corrections: list[tuple[Counter, int, int]]) -> None:
        self.settle_now(corrections)

    def settle_now(self, corrections: list[tuple[Counter, int, int]]) -> None:
        now = int(self._wall() * 1000)
        for c, slot, delta in corrections:
            oldest = _slot(now, c.slot_ms) - c.slots
            counts = self._counter(c.key, now, oldest)
            if slot < oldest or not counts:  # the reservation has left the window (or the counter expired)
                continue
            counts[slot] = counts.get(slot, 0) + delta
            self._keep(c.key, counts, now + c.ttl_ms)

    async def reserve_and_get(self, counters: list[Counter], key: str) -> tuple[list[WindowState], bytes | None]:
        return self.reserve_now(counters), self.get_now(key)

    async def write(self, writes: list[tuple]) -> None:
        self.write_now(writes)

    def write_now(self, writes: list[tuple]) -> None:
        """write() without a coroutine: this store answers at once."""
        for kind, *args in writes:
            self.set_now(*args) if kind == "set" else self.settle_now(*args)

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def get_now(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self.get_now(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.set_now(key, value, ttl_s)

    def set_now(self, key: str, value: bytes, ttl_s: float) -> None:
        if _size(key, value) > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = (value, self._clock() + ttl_s)
        self.bytes += _size(key, value)
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
            self.bytes -= _size(key, entry[0])


# All of a call's counters in one step. KEYS: the counter hashes. ARGV: per key limit, cost, slot_ms, slots, ttl_ms.
# Returns {all admitted, now_ms, {had room, slot, used before, newest slot with usage, slot that frees room} per key}.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, slots_of, all = {0, now}, {}, 1
for i = 1, #KEYS do
  local limit, cost, slot_ms, slots = tonumber(ARGV[i*5-4]), tonumber(ARGV[i*5-3]), tonumber(ARGV[i*5-2]),
                                      tonumber(ARGV[i*5-1])
  local slot = 0
  if slot_ms > 0 then slot = math.floor(now / slot_ms) end
  slots_of[i] = slot
  local flat = redis.call('HGETALL', KEYS[i])
  local used, newest, live = 0, -1, {}
  for j = 1, #flat, 2 do
    local s, n = tonumber(flat[j]), tonumber(flat[j + 1])
    if s < slot - slots then
      redis.call('HDEL', KEYS[i], flat[j])
    else
      used = used + n
      live[#live + 1] = {s, n}
      if n > 0 and s > newest then newest = s end
    end
  end
  local room, free = 1, -1
  if used + cost > limit then
    room, all = 0, 0
    table.sort(live, function(a, b) return a[1] < b[1] end)
    local freed = 0
    for _, pair in ipairs(live) do
      freed = freed + pair[2]
      if freed >= used + cost - limit then free = pair[1]; break end
    end
  end
  out[i + 2] = {room, slot, used, newest, free}
end
if all == 1 then
  for i = 1, #KEYS do
    redis.call('HINCRBY', KEYS[i], slots_of[i], tonumber(ARGV[i*5-3]))
    redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[i*5]))
  end
end
out[1] = all
return out
"""

# Corrections. KEYS: the counter hashes. ARGV: per key slot, delta, slot_ms, slots, ttl_ms.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  local slot, delta, slot_ms, slots = tonumber(ARGV[i*5-4]), tonumber(ARGV[i*5-3]), tonumber(ARGV[i*5-2]),
                                      tonumber(ARGV[i*5-1])
  local current = 0
  if slot_ms > 0 then current = math.floor(now / slot_ms) end
  if slot >= current - slots and redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], slot, delta)
    redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[i*5]))
  end
end
return 1
"""


def hiredis_packing(connection_class: type) -> type:
    """redis-py's asyncio connections pack commands in Python, ~1 µs an argument (a reservation has ~25); its sync
    ones let hiredis pack them when it is installed. This gives the asyncio connection the sync client's packer."""
    try:
        from redis.connection import HiredisRespSerializer
        import hiredis  # noqa: F401  (the serializer needs it)
    except ImportError:
        return connection_class
    pack = HiredisRespSerializer().pack

    class HiredisPacked(connection_class):
        def pack_command(self, *args):
            return pack(*args)

        def pack_commands(self, commands):
            return [b"".join(pack(*command)[0] for command in commands)]

    return HiredisPacked


class RedisStore:
    """redis.asyncio with short timeouts: a dead Redis costs a call at most `timeout_s`, never a hang.
    The client reconnects by itself once Redis is back."""

    # Long enough that a busy gateway's own event-loop lag is not taken for an outage (an outage admits calls
    # uncounted under on_store_error: open), short enough that a hung Redis costs a call at most about a second.
    # One deadline covers a whole store call (connect, send, every reply of a pipeline): redis-py's own per-read and
    # per-write timeouts would arm two or three more timers a command. A call cut off by the deadline closes its
    # connection (redis-py drops a connection whose command was cancelled), so no late reply is read as another's.
    def __init__(self, url: str, timeout_s: float = 1.0):
        import redis.asyncio as redis

        self.url = url
        self.timeout_s = timeout_s
        self.errors = 0  # exported as tollgate_store_errors_total
        self._redis = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=timeout_s,
                                           retry_on_timeout=False)
        pool = self._redis.connection_pool
        pool.connection_class = hiredis_packing(pool.connection_class)
        self._reserve = self._redis.register_script(_RESERVE)  # EVALSHA; loaded again after a Redis restart
        self._settle = self._redis.register_script(_SETTLE)

    async def _call(self, coro):
        try:
            return await asyncio.wait_for(coro, self.timeout_s)
        except Exception as e:  # connection refused, timeouts, protocol errors: all mean "no answer"
            self.errors += 1
            raise StoreError(f"{type(e).__name__}: {e}") from None

    async def get(self, key: str) -> bytes | None:
        return await self._call(self._redis.get(key))

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return await self._call(self._redis.mget(keys)) if keys else []

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._call(self._redis.set(key, value, px=max(1, int(ttl_s * 1000))))

    async def delete(self, key: str) -> None:
        await self._call(self._redis.delete(key))

    async def reserve(self, counters: list[Counter]) -> list[WindowState]:
        args = [v for c in counters for v in (c.limit, c.cost, c.slot_ms, c.slots, c.ttl_ms)]
        return self._states(counters, await self._call(self._reserve(keys=[c.key for c in counters], args=args)))

    async def reserve_and_get(self, counters: list[Counter], key: str) -> tuple[list[WindowState], bytes | None]:
        """One round trip: the reservation script by its digest and a GET, pipelined (no transaction)."""
        return await self._call(self._reserve_and_get(counters, key))

    async def _reserve_and_get(self, counters: list[Counter], key: str):
        from redis.exceptions import NoScriptError

        args = [v for c in counters for v in (c.limit, c.cost, c.slot_ms, c.slots, c.ttl_ms)]
        keys = [c.key for c in counters]
        pipe = self._redis.pipeline(transaction=False)
        pipe.evalsha(self._reserve.sha, len(keys), *keys, *args)
        pipe.get(key)
        out, value = await pipe.execute(raise_on_error=False)
        if isinstance(out, NoScriptError):  # Redis restarted: the script runs (and is loaded) the usual way
            out = await self._reserve(keys=keys, args=args)
        for result in (out, value):
            if isinstance(result, Exception):
                raise result
        return self._states(counters, out), value

    @staticmethod
    def _states(counters: list[Counter], out) -> list[WindowState]:
        admitted, now = bool(out[0]), int(out[1])
        states = []
        for c, (room, slot, used, newest, free) in zip(counters, out[2:]):
            if admitted:
                used, newest = used + c.cost, max(newest, slot) if c.cost > 0 else newest
            states.append(WindowState(bool(room), now, slot, used, newest, None if free < 0 else free))
        return states

    async def settle(self, corrections: list[tuple[Counter, int, int]]) -> None:
        await self.write([("settle", corrections)])

    async def write(self, writes: list[tuple]) -> None:
        """Several writes (of several calls) in one round trip: a pipeline, no transaction. The settle script is
        sent by its digest; after a Redis restart (NOSCRIPT) it is loaded again and those commands are repeated."""
        await self._call(self._write(writes))

    async def _write(self, writes: list[tuple]) -> None:
        from redis.exceptions import NoScriptError

        pipe = self._redis.pipeline(transaction=False)
        settles = []
        for kind, *args in writes:
            if kind == "set":
                key, value, ttl_s = args
                pipe.set(key, value, px=max(1, int(ttl_s * 1000)))
            else:
                corrections = args[0]
                settles.append((len(pipe), [c.key for c, _, _ in corrections],
                                [v for c, slot, delta in corrections for v in (slot, delta, c.slot_ms, c.slots,
                                                                              c.ttl_ms)]))
                pipe.evalsha(self._settle.sha, len(corrections), *settles[-1][1], *settles[-1][2])
        results = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, NoScriptError) for r in results):
            await self._redis.script_load(_SETTLE)
            for index, keys, args in settles:
                if isinstance(results[index], NoScriptError):
                    await self._settle(keys=keys, args=args)
        if failed := next((r for r in results if isinstance(r, Exception) and not isinstance(r, NoScriptError)), None):
            raise failed

    async def close(self) -> None:
        try:
            await self._redis.aclose()
        except Exception:
            pass


CLUSTER_SCHEMES = ("redis-cluster://", "rediss-cluster://")


class RedisClusterStore(RedisStore):
    """Redis Cluster (redis-cluster://[user:password@]h1:7000,h2:7001; rediss-cluster:// for TLS), through
    redis-py's cluster client: it follows slots that move and nodes that fail over.

    Counter keys carry no hash tag, so the counters of different consumers (and rules) spread over the shards. One
    call's counters may therefore live in several slots, and no script can touch several slots at once. They are
    reserved slot group by slot group, in slot order, each group atomically with its own check; when a group has no
    room, the groups already charged are given their cost back, and the groups after it are only read. So a counter
    never holds more than its limit from admitted calls: the same bound as one atomic step. (A call that races such a
    give-back may be refused although it would have fit a moment later: the safe side.) An error mid-way (a node
    failing) is a store error for the call, and what was charged stays charged: the limits' on_store_error decides,
    and a counter holds at most that call's cost too much until its window passes."""

    def __init__(self, url: str, timeout_s: float = 1.0):
        from urllib.parse import unquote, urlsplit

        from redis.asyncio.cluster import ClusterNode, RedisCluster

        self.url = url
        self.timeout_s = timeout_s
        self.errors = 0
        scheme, rest = url.split("://", 1)
        auth, _, hosts = rest.rpartition("@")
        user, _, password = auth.partition(":")
        nodes = []
        for hostport in hosts.split("/")[0].split(","):
            parts = urlsplit(f"//{hostport}")
            nodes.append(ClusterNode(parts.hostname, parts.port or 6379))
        self._redis = RedisCluster(startup_nodes=nodes, username=unquote(user) or None,
                                   password=unquote(password) or None, ssl=scheme == "rediss-cluster",
                                   # per node and command: the client follows moved slots and failovers itself
                                   socket_timeout=timeout_s / 2, socket_connect_timeout=timeout_s / 2)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)

    @staticmethod
    def _by_slot(keys: list[str]) -> dict[int, list[int]]:
        from redis.crc import key_slot

        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key_slot(key.encode()), []).append(i)
        return dict(sorted(groups.items()))

    async def _run_reserve(self, counters: list[Counter]):
        args = [v for c in counters for v in (c.limit, c.cost, c.slot_ms, c.slots, c.ttl_ms)]
        return await self._reserve(keys=[c.key for c in counters], args=args)

    async def reserve(self, counters: list[Counter]) -> list[WindowState]:
        return await self._call(self._reserve_grouped(counters))

    async def _reserve_grouped(self, counters: list[Counter]) -> list[WindowState]:
        states: list[WindowState | None] = [None] * len(counters)
        charged: list[tuple[Counter, int]] = []  # (counter, its index) charged before a group had no room
        room = True
        for indices in self._by_slot([c.key for c in counters]).values():
            group = [counters[i] if room else counters[i]._replace(cost=0) for i in indices]
            out = await self._run_reserve(group)
            for i, state in zip(indices, self._states(group, out)):
                states[i] = state
            if room and out[0]:
                charged += list(zip(group, indices))
            elif room:
                room = False
        if not room and charged:  # given back: the call is refused
            await self._write([("settle", [(c, states[i].slot, -c.cost) for c, i in charged if c.cost])])
            for c, i in charged:
                states[i] = states[i]._replace(used=states[i].used - c.cost)
        return states

    async def reserve_and_get(self, counters: list[Counter], key: str) -> tuple[list[WindowState], bytes | None]:
        states, value = await asyncio.gather(self.reserve(counters), self.get(key))
        return states, value

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return await self._call(self._redis.mget_nonatomic(keys)) if keys else []

    async def _write(self, writes: list[tuple]) -> None:
        """Values are set in one cluster pipeline; corrections go one slot group per script call."""
        sets = [args for kind, *args in writes if kind == "set"]
        if sets:
            pipe = self._redis.pipeline()
            for key, value, ttl_s in sets:
                pipe.set(key, value, px=max(1, int(ttl_s * 1000)))
            await pipe.execute()
        for kind, *args in writes:
            if kind != "settle":
                continue
            corrections = args[0]
            for indices in self._by_slot([c.key for c, _, _ in corrections]).values():
                group = [corrections[i] for i in indices]
                await self._settle(keys=[c.key for c, _, _ in group],
                                   args=[v for c, slot, delta in group
                                         for v in (slot, delta, c.slot_ms, c.slots, c.ttl_ms)])


def open_store(url: str, memory_bytes: int) -> Store:
    """'memory', redis://host:port/db (rediss:// and unix:// too), or redis-cluster://h1:p1,h2:p2 (rediss-cluster://)."""
    if url in ("", "memory"):
        return MemoryStore(memory_bytes)
    if url.startswith(CLUSTER_SCHEMES):
        return RedisClusterStore(url)
    return RedisStore(url)
