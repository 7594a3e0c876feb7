"""Limits on plain data and the window counters of both stores (the same tests for memory and Redis)."""

import asyncio
import time

import pytest

from tollgate.core import limits as core
from tollgate.core.config import ConfigError, parse_config
from tollgate.core.limits import Call, Counter, Limit, WindowState
from tollgate.core.store import MemoryStore, RedisClusterStore, RedisStore

BASE = {"providers": {"openai": {"type": "openai", "keys": ["k"]}},
        "groups": {"research": {}}, "consumers": [{"name": "alice", "key": "k-alice", "group": "research"}]}


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def store(request):
    if request.param == "memory":
        return MemoryStore()
    if request.param == "redis-cluster":
        return RedisClusterStore(request.getfixturevalue("redis_cluster").url)
    return RedisStore(request.getfixturevalue("redis_server").url)


def run(coro):
    return asyncio.run(coro)


def test_seed_shape_and_native_rules_parse():
    config = parse_config({**BASE, "limits": {"rules": [
        {"name": "default_rule", "limit_by_per_ip": "from-remote-addr",
         "limit_keys": [{"key": "0.0.0.0/0", "token_per_minute": 100}],
         "rejected_code": 429, "rejected_msg": "您的请求频率过高,请稍后再试。"},
        {"name": "gpt4", "per": "consumer", "models": ["gpt-4*"], "requests": 5, "window": "10s",
         "tokens_per_hour": 50000},
        {"name": "teams", "per": "header:X-Team", "requests_per_second": 2}]},
        "budgets": [{"name": "monthly", "per": "group", "usd_per_month": 100, "usd_per_day": 7.5}]})
    seed, gpt4_requests, gpt4_tokens, team, day, month = config.limits.limits
    assert (seed.kind, seed.amount, seed.window_s, seed.per, seed.message) == (
        "tokens", 100, 60, "ip", "您的请求频率过高,请稍后再试。")
    assert (gpt4_requests.amount, gpt4_requests.window_s, gpt4_tokens.window_s) == (5, 10, 3600)
    assert team.per == "header:x-team" and team.window_s == 1
    assert (day.kind, day.amount, day.period, month.period) == ("usd", 7_500_000, "day", "month")


@pytest.mark.parametrize("rule,error", [
    ({"name": "r"}, r"limits.rules\[0\]: give requests or tokens"),
    ({"name": "r", "requests": 0}, r"limits.rules\[0\].requests: expected a whole number from 1"),
    ({"name": "r", "per": "planet", "requests": 1}, r"limits.rules\[0\].per: expected global"),
    ({"name": "r", "limit_by_per_ip": "from-remote-addr",
      "limit_keys": [{"key": "10.0.0.300/8", "token_per_minute": 1}]}, r"limit_keys\[0\].key: not an IP address"),
    ({"name": "r", "limit_by_per_ip": "from-header-x real", "requests": 1},
     r"limit_by_per_ip: expected from-remote-addr or from-header-NAME"),
    ({"name": "r", "requests": 1, "groups": ["nobody"]}, r"groups\[0\]: no group named 'nobody'"),
])
def test_bad_limit_rules_name_the_key(rule, error):
    with pytest.raises(ConfigError, match=error):
        parse_config({**BASE, "limits": {"rules": [rule]}})


def test_limit_by_per_ip_from_a_header_counts_the_address_the_balancer_saw():
    config = parse_config({**BASE, "limits": {"rules": [{"name": "r", "limit_by_per_ip": "from-header-x-real-ip",
                                                         "limit_keys": [{"key": "10.0.0.0/8", "requests_per_minute": 1}]}]}})
    limit = config.limits.limits[-1]
    call = lambda ip, header: core.Call("c", "", ip, "m", {"x-real-ip": header} if header else {})  # noqa: E731
    assert core.subject(limit, call("127.0.0.1", "10.1.2.3, 127.0.0.1")) == "10.1.2.3"
    assert core.subject(limit, call("10.9.9.9", "192.168.0.1")) is None, "the socket address does not count"
    assert core.subject(limit, call("10.9.9.9", "")) is None


def test_subject_applies_subsets():
    import ipaddress

    office = Limit("office", "tokens", 100, 60, per="ip", networks=(ipaddress.ip_network("10.0.0.0/8"),))
    gpt4 = Limit("gpt4", "requests", 5, 60, per="consumer", models=("gpt-4*",))
    team = Limit("team", "requests", 5, 60, per="header:x-team", values=("blue*",))
    call = Call("alice", "research", "::ffff:10.1.2.3", "gpt-4o", {"x-team": "blue-1"})
    assert [core.subject(limit, call) for limit in (office, gpt4, team)] == ["::ffff:10.1.2.3", "alice", "blue-1"]
    other = Call("bob", "", "192.168.1.1", "claude-x", {})
    assert [core.subject(limit, other) for limit in (office, gpt4, team)] == [None, None, None]


def test_the_limits_that_apply_are_remembered_per_facts_and_day_unless_a_rule_reads_headers():
    config = parse_config({**BASE, "limits": {"rules": [{"name": "per", "per": "consumer", "requests_per_minute": 5}]},
                           "budgets": [{"name": "daily", "per": "consumer", "usd_per_day": 1}]}).limits
    alice, bob = (Call(name, "", "10.0.0.1", "gpt-4o", {}) for name in ("alice", "bob"))
    day = 20_000 * 86400.0
    first = config.applicable(alice, day + 10)
    assert config.applicable(alice, day + 80_000) is first  # same facts, same day: no second look
    assert [key for _, key, _ in config.applicable(bob, day + 10)] == [
        "tollgate:limit:per:0:requests:bob", "tollgate:budget:daily:0:usd:bob:2024-10-04"]
    assert [key for _, key, _ in config.applicable(alice, day + 86400)][1].endswith(":alice:2024-10-05")  # next day
    teams = parse_config({**BASE, "limits": {"rules": [{"name": "t", "per": "header:x-team", "requests": 5}]}}).limits
    keys = [teams.applicable(Call("alice", "", "", "m", {"x-team": team}), day)[0][1] for team in ("red", "blue")]
    assert keys == ["tollgate:limit:t:0:requests:red", "tollgate:limit:t:0:requests:blue"]


def test_reservation_is_prompt_estimate_plus_output_cap():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 50}
    prompt, output = core.reservation("/v1/chat/completions", "gpt-4o", body, 4096)
    assert output == 50 and 5 <= prompt <= 20
    assert core.reservation("/v1/chat/completions", "gpt-4o", {"messages": []}, 4096)[1] == 4096
    assert core.reservation("/v1/embeddings", "x", {"input": "hi"}, 4096)[1] == 0


def test_headers_report_the_tightest_rule_and_reset():
    small = Limit("small", "tokens", 1000, 60)
    big = Limit("big", "tokens", 100000, 3600)
    requests = Limit("r", "requests", 10, 60)
    now_ms = 1_000_000_000
    slot = now_ms // small.slot_ms
    headers = core.rate_headers([(small, core.window_state(True, now_ms, slot, {slot: 400}, 1000, 0)),
                                 (big, core.window_state(True, now_ms, 0, {0: 400}, 100000, 0)),
                                 (requests, core.window_state(True, now_ms, slot, {slot: 3}, 10, 0))], now_ms / 1000)
    assert headers == {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "7",
                       "x-ratelimit-reset-requests": "1m1s", "x-ratelimit-limit-tokens": "1000",
                       "x-ratelimit-remaining-tokens": "600", "x-ratelimit-reset-tokens": "1m1s"}


def test_retry_after_waits_for_the_oldest_slots():
    limit = Limit("r", "requests", 3, 60)  # 1 s slots
    now_ms = 100_000_500
    cur = now_ms // 1000
    state = core.window_state(False, now_ms, cur, {cur - 30: 1, cur - 10: 2}, 3, 1)
    assert core.retry_after_ms(limit, state, 1, now_ms / 1000) == (cur - 30 + 61) * 1000 - now_ms  # ~30.5 s
    assert core.retry_after_ms(limit, state, 4, now_ms / 1000) is None  # more than the limit: never
    state = core.window_state(False, now_ms, cur, {cur - 30: 1, cur - 10: 2}, 3, 3)
    assert core.retry_after_ms(limit, state, 3, now_ms / 1000) == (cur - 10 + 61) * 1000 - now_ms  # both must go


async def add(store, key, limit, cost, slot_ms, slots, ttl_ms) -> WindowState:
    return (await store.reserve([Counter(key, limit, cost, slot_ms, slots, ttl_ms)]))[0]


def test_window_counter_admits_refuses_and_settles(store):
    async def scenario():
        key = f"t:{time.time()}"
        results = [(await add(store, key, 10, 4, 1000, 60, 62_000)).admitted for _ in range(3)]
        refused = await add(store, key, 10, 4, 1000, 60, 62_000)
        admitted = await add(store, key, 10, 2, 1000, 60, 62_000)
        counter = Counter(key, 10, 2, 1000, 60, 62_000)
        await store.settle([(counter, admitted.slot, -5)])  # settle: used 1 of the reserved 6
        after = await add(store, key, 10, 5, 1000, 60, 62_000)
        await store.close()
        return results, refused, admitted, after
    results, refused, admitted, after = run(scenario())
    assert results == [True, True, False] and not refused.admitted and refused.used == 8
    assert admitted.admitted and admitted.used == 10
    assert after.admitted and after.used == 10


def test_a_call_is_charged_to_all_its_counters_or_to_none(store):
    async def scenario():
        requests, tokens = Counter(f"r:{time.time()}", 5, 1, 1000, 60, 62_000), Counter(f"t:{time.time()}", 100, 60,
                                                                                          1000, 60, 62_000)
        first = await store.reserve([requests, tokens])
        second = await store.reserve([requests, tokens])  # tokens has no room: requests is not charged either
        third = await store.reserve([requests, Counter(tokens.key, 100, 40, 1000, 60, 62_000)])
        await store.close()
        return first, second, third
    first, second, third = run(scenario())
    assert [s.admitted for s in second] == [True, False] and second[0].used == 1
    assert [s.admitted for s in third] == [True, True] and (third[0].used, third[1].used) == (2, 100)


def test_concurrent_calls_never_overfill_counters_in_different_slots(store):
    """Two counters of one call that a cluster keeps on different shards: as exact as one atomic step."""
    async def scenario():
        stamp = time.time()
        narrow, wide = Counter(f"{{a{stamp}}}:narrow", 10, 1, 1000, 60, 62_000), \
            Counter(f"{{b{stamp}}}:wide", 1000, 1, 1000, 60, 62_000)
        results = await asyncio.gather(*(store.reserve([wide, narrow]) for _ in range(60)))
        probe = await store.reserve([Counter(narrow.key, 10, 0, 1000, 60, 62_000),
                                     Counter(wide.key, 1000, 0, 1000, 60, 62_000)])
        await store.close()
        return results, probe
    results, probe = run(scenario())
    admitted = sum(all(s.admitted for s in states) for states in results)
    assert admitted == 10 and probe[0].used == 10 and probe[1].used == 10, "refused calls are given back"


def test_sliding_window_has_no_double_burst_at_the_edge(store):
    """A 1 s window: a full burst just before a second boundary leaves nothing just after it."""
    async def scenario():
        key = f"edge:{time.time()}"
        await asyncio.sleep(1 - time.time() % 1 + 0.8)  # 0.8 s into a second
        first = [(await add(store, key, 5, 1, 17, 60, 2000)).admitted for _ in range(6)]
        await asyncio.sleep(1 - time.time() % 1 + 0.1)  # 0.1 s into the next second
        second = (await add(store, key, 5, 1, 17, 60, 2000)).admitted
        await asyncio.sleep(1.0)  # a whole window after the burst
        third = (await add(store, key, 5, 1, 17, 60, 2000)).admitted
        await store.close()
        return first, second, third
    first, second, third = run(scenario())
    assert first == [True] * 5 + [False] and second is False and third is True


def test_fixed_slot_counter_for_budget_periods(store):
    async def scenario():
        key = f"budget:{time.time()}"
        states = [await add(store, key, 1_000_000, 400_000, 0, 0, 60_000) for _ in range(3)]
        await store.close()
        return states
    states = run(scenario())
    assert [s.admitted for s in states] == [True, True, False] and states[2].used == 800_000


def test_memory_store_bounds_its_counters():
    store = MemoryStore()
    store.MAX_COUNTERS = 50

    async def scenario():
        for i in range(200):
            await add(store, f"k{i}", 5, 1, 1000, 60, 62_000)
    run(scenario())
    assert len(store._counters) == 50


def test_batched_writes_set_and_settle_in_one_go_and_survive_a_script_flush(store):
    """What the answers of one event-loop turn leave behind (cache entries, settlements) goes in one write; after a
    Redis restart lost the settle script, it is loaded again and the settlements still land."""
    async def scenario():
        key = f"t:batch:{time.time()}"
        first = await add(store, key, 10, 6, 1000, 60, 62_000)
        counter = Counter(key, 10, 6, 1000, 60, 62_000)
        if isinstance(store, RedisStore):
            await store._redis.script_flush()
        await store.write([("set", f"{key}:entry", b"answer", 60), ("settle", [(counter, first.slot, -5)])])
        after = await add(store, key, 10, 9, 1000, 60, 62_000)  # 1 left from the first call: 9 more fit
        entry = await store.get(f"{key}:entry")
        await store.close()
        return after, entry
    after, entry = run(scenario())
    assert after.admitted and after.used == 10 and entry == b"answer"


def test_a_reservation_fetches_a_cache_entry_in_the_same_round_trip(store):
    async def scenario():
        key = f"t:fetch:{time.time()}"
        await store.set(f"{key}:entry", b"answer", 60)
        counter = Counter(key, 10, 4, 1000, 60, 62_000)
        if isinstance(store, RedisStore):
            await store._redis.script_flush()  # after a Redis restart the script is loaded again
        states, entry = await store.reserve_and_get([counter], f"{key}:entry")
        missing = (await store.reserve_and_get([counter], f"{key}:none"))[1]
        await store.close()
        return states[0], entry, missing
    state, entry, missing = run(scenario())
    assert state.admitted and state.used == 4 and entry == b"answer" and missing is None
