"""The two stores pass the same tests; the memory store stays within its byte bound; a dead Redis is an error the
caller can catch, quickly."""

import asyncio
import time

import pytest

from tollgate.core.store import MemoryStore, RedisClusterStore, RedisStore, StoreError


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def store(request):
    if request.param == "memory":
        return MemoryStore(10_000)
    if request.param == "redis-cluster":
        return RedisClusterStore(request.getfixturevalue("redis_cluster").url)
    return RedisStore(request.getfixturevalue("redis_server").url)


def run(coro):
    return asyncio.run(coro)


def test_set_get_delete_and_ttl(store):
    async def scenario():
        await store.set("t:a", b"one", 60)
        await store.set("t:b", b"two", 0.2)
        assert await store.get("t:a") == b"one" and await store.get("t:b") == b"two"
        await store.delete("t:a")
        await asyncio.sleep(0.35)
        result = (await store.get("t:a"), await store.get("t:b"), await store.get("t:never"))
        await store.close()
        return result
    assert run(scenario()) == (None, None, None)


def test_memory_store_is_bounded_by_bytes_and_evicts_least_recently_used():
    store = MemoryStore(max_bytes=2000)  # 300-byte values cost ~550 bytes each with key and bookkeeping

    async def scenario():
        for i in range(10):
            await store.set(f"k{i}", bytes(300), 60)
            await store.get("k0")  # k0 stays hot
        return [await store.get(f"k{i}") is not None for i in range(10)]
    kept = run(scenario())
    assert store.bytes <= 2000 and kept[0] and kept[-1] and sum(kept) == 3


def test_many_small_entries_stay_within_the_memory_bound():
    """The bound counts what an entry really takes, so small answers under long keys cannot outgrow it."""
    import tracemalloc

    store = MemoryStore(max_bytes=2**20)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]

    async def scenario():
        for i in range(50_000):
            await store.set(f"tollgate:cache:{i:064d}", b"x" * 40, 60)
    run(scenario())
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(store._entries) < 5_000 and used < 1.5 * 2**20


def test_dead_redis_raises_store_error_fast():
    store = RedisStore("redis://127.0.0.1:1/0")

    async def scenario():
        start = time.monotonic()
        with pytest.raises(StoreError):
            await store.get("x")
        return time.monotonic() - start
    assert run(scenario()) < 1.0


def test_hung_redis_costs_a_call_its_deadline_and_no_late_reply_is_read_as_another(tmp_path):
    """A Redis that stops answering (here: stopped with SIGSTOP) is a StoreError after the store's deadline. Once it
    answers again, the reply to the cut-off command must not be taken for the next command's."""
    import signal

    from harness import RedisServer

    server = RedisServer(tmp_path)
    store = RedisStore(server.url, timeout_s=0.3)

    async def scenario():
        await store.set("t:first", b"first", 60)
        await store.set("t:second", b"second", 60)
        server.proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(StoreError):
                await store.get("t:first")
            took = time.monotonic() - start
        finally:
            server.proc.send_signal(signal.SIGCONT)
        second = await store.get("t:second")
        await store.close()
        return took, second
    try:
        took, second = run(scenario())
    finally:
        server.stop()
    assert 0.25 < took < 1.0 and second == b"second"
