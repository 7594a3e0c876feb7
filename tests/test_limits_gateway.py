"""Rate limits and budgets through the real SDKs: 429s the SDKs understand, headers that match the counters, streams
cut by the client charged what was streamed, budgets the SDK does not retry, three gateways sharing one Redis, and
a Redis outage (open and closed)."""

import threading
import time

import httpx
import openai
import pytest

from harness import Gateway, RedisServer, providers_to

CONSUMERS = [{"name": "alice", "key": "tg-l-alice"}, {"name": "bob", "key": "tg-l-bob"}]
ASK = [{"role": "user", "content": "hello"}]


def raw(client, **kw):
    return client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK, **kw)


@pytest.fixture(scope="module", params=["memory", "redis"])
def gw(request, tmp_path_factory, fake):
    store = "memory" if request.param == "memory" else request.getfixturevalue("redis_server").url
    gateway = Gateway(tmp_path_factory.mktemp(f"limits-{request.param}"), {
        "providers": providers_to(fake),
        "consumers": CONSUMERS,
        "store": store,
        "cache": {"ttl": "1h"},
        "limits": {"default_max_tokens": 500, "rules": [
            {"name": "per-consumer", "per": "consumer", "requests_per_minute": 40, "tokens_per_minute": 3000},
            {"name": "default_rule", "limit_by_per_header": "x-team",
             "limit_keys": [{"key": "red", "query_per_minute": 1}],
             "rejected_code": 429, "rejected_msg": "您的请求频率过高,请稍后再试。"}]},
        "budgets": [{"name": "bob-daily", "consumers": ["bob"], "usd_per_day": 0.00005}],
    })
    gateway.wait_for(lambda: "token counting ready" in gateway.logs(), timeout=30)  # estimates must not change
    yield gateway
    gateway.stop()


def test_headers_match_the_counters_and_settle_to_actual_usage(gw):
    client = gw.openai("tg-l-alice")
    first = raw(client, max_tokens=100, extra_headers={"x-tollgate-cache": "bypass"})
    time.sleep(0.1)  # the settlement is a spawned store call
    second = raw(client, max_tokens=100, extra_headers={"x-tollgate-cache": "bypass"})
    h1, h2 = first.headers, second.headers
    assert (h1["x-ratelimit-limit-requests"], h1["x-ratelimit-limit-tokens"]) == ("40", "3000")
    assert int(h1["x-ratelimit-remaining-requests"]) - int(h2["x-ratelimit-remaining-requests"]) == 1
    reserved = 3000 - int(h1["x-ratelimit-remaining-tokens"])
    used = gw.rows("status = 200")[-2]
    assert reserved >= 100 + 1  # max_tokens plus the prompt
    # The second call sees the first one's actual usage, not its reservation, plus its own reservation.
    assert int(h1["x-ratelimit-remaining-tokens"]) - int(h2["x-ratelimit-remaining-tokens"]) == \
        used["prompt_tokens"] + used["completion_tokens"]
    assert h1["x-ratelimit-reset-requests"].endswith("s")


def test_limit_exceeded_is_a_rate_limit_error_with_retry_after_and_a_ledger_row(gw):
    client = gw.openai("tg-l-alice")
    raw(client, extra_headers={"x-team": "red"})
    with pytest.raises(openai.RateLimitError) as e:
        raw(client, extra_headers={"x-team": "red"})
    assert e.value.message.endswith("您的请求频率过高,请稍后再试。")
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 61  # the window plus at most one slot
    row = gw.last_row()
    assert (row["status"], row["decision"], row["limited_by"]) == (429, "limited", "default_rule")
    raw(client, extra_headers={"x-team": "blue"})  # another header value: not limited


def test_stream_cut_by_the_client_is_charged_what_was_streamed(gw):
    client = gw.openai("tg-l-alice")
    before = raw(client, max_tokens=300, extra_headers={"x-tollgate-cache": "bypass"})
    time.sleep(0.1)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, max_tokens=300, stream=True,
                                            extra_headers={"x-fake-words": "200", "x-fake-delay-ms": "20",
                                                           "x-tollgate-cache": "bypass"})
    for i, _ in enumerate(stream):
        if i == 5:
            break
    stream.close()
    cut = gw.wait_for(lambda: (r := gw.last_row())["decision"] == "client_aborted" and r)
    time.sleep(0.2)
    after = raw(client, max_tokens=300, extra_headers={"x-tollgate-cache": "bypass"})
    charged = int(before.headers["x-ratelimit-remaining-tokens"]) - int(after.headers["x-ratelimit-remaining-tokens"])
    plain = gw.rows("status = 200 AND decision = 'forwarded'")[-2]
    assert charged == plain["prompt_tokens"] + plain["completion_tokens"] + cut["prompt_tokens"] + \
        cut["completion_tokens"]
    assert 0 < cut["completion_tokens"] < 200  # what was streamed, not the whole answer or the reservation


def test_cache_hit_counts_as_a_request_but_not_as_tokens(gw):
    client = gw.openai("tg-l-alice")
    question = [{"role": "user", "content": f"cache me {time.time()}"}]
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=question, max_tokens=50)
    time.sleep(0.1)
    hit = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=question, max_tokens=50)
    time.sleep(0.1)
    after = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=question, max_tokens=50,
                                                             extra_headers={"x-tollgate-cache": "bypass"})
    assert hit.headers["x-cache"] == "HIT"
    requests = [int(r.headers["x-ratelimit-remaining-requests"]) for r in (first, hit, after)]
    tokens = [int(r.headers["x-ratelimit-remaining-tokens"]) for r in (first, hit, after)]
    assert requests[0] - requests[2] == 2  # the hit took a request
    row = gw.rows("status = 200 AND cache = 'miss'")[-1]
    assert tokens[0] - tokens[2] == row["prompt_tokens"] + row["completion_tokens"]  # and no tokens


def test_exhausted_budget_is_insufficient_quota_and_not_retried(gw, fake):
    client = gw.openai("tg-l-bob", max_retries=3)
    errors = []
    for _ in range(8):
        try:
            raw(client, max_tokens=20, extra_headers={"x-tollgate-cache": "bypass"})
        except openai.RateLimitError as e:
            errors.append(e)
    assert errors, "the budget never ran out"
    assert errors[-1].code == "insufficient_quota" and errors[-1].response.headers["x-should-retry"] == "false"
    assert "does not fit" in errors[-1].message and " spent" in errors[-1].message  # never "exhausted" with money left
    mark = gw.mark()
    with pytest.raises(openai.RateLimitError):
        raw(client, max_tokens=20, extra_headers={"x-tollgate-cache": "bypass"})
    rows = gw.rows_since(mark)
    assert len(rows) == 1 and rows[0]["decision"] == "over_budget"  # one call, no retries
    assert rows[0]["limited_by"] == "bob-daily"


def test_three_gateways_one_redis_sixty_clients_hold_one_limit(tmp_path, fake, redis_server):
    limit = 10_000
    config = {"providers": providers_to(fake), "store": redis_server.url,
              "limits": {"rules": [{"name": "org-tpm", "tokens_per_minute": limit}]}}
    gateways = [Gateway(tmp_path / f"gw{i}", config) for i in range(3)]
    try:
        for gw in gateways:  # warm-up (building token tables) competes for the two cores: not part of this test
            gw.wait_for(lambda: "token counting ready" in gw.logs(), timeout=20)
        clients = [gw.openai("any") for gw in gateways]
        outcomes = {"ok": 0, "limited": 0, "other": []}
        lock = threading.Lock()

        def worker(i: int):
            client = clients[i % 3]
            for _ in range(4):
                try:
                    client.chat.completions.create(model="gpt-4o-mini", messages=ASK, max_tokens=320,
                                                   extra_headers={"x-fake-words": "300", "x-fake-delay-ms": "1"})
                    key = "ok"
                except openai.RateLimitError:
                    key = "limited"
                except Exception as e:  # noqa: BLE001 - anything else fails the test below
                    with lock:
                        outcomes["other"].append(repr(e))
                    continue
                with lock:
                    outcomes[key] += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(60)]
        start = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.time() - start < 50, "the run must fit in one window for the bound below"
        assert not outcomes["other"], outcomes["other"][:3]
        rows = [r for gw in gateways for r in gw.rows("status = 200")]
        admitted = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
        assert len(rows) == outcomes["ok"] and outcomes["limited"] > 0
        assert not any("store unavailable" in gw.logs() for gw in gateways), "an outage admits uncounted"
        assert admitted <= limit  # actual usage <= reservation here, so the bound is the limit itself
        assert admitted >= limit * 0.6, "capacity was given back as calls settled"
        assert all(gw.rows() for gw in gateways), "every gateway took calls"
    finally:
        for gw in gateways:
            gw.stop()


def test_redis_outage_open_keeps_serving_closed_refuses_and_limits_return(tmp_path, fake, redis_server):
    redis = RedisServer(tmp_path / "redis")
    config = {"providers": providers_to(fake), "consumers": CONSUMERS, "store": redis.url,
              "limits": {"rules": [{"name": "three", "per": "consumer", "requests_per_minute": 3}]}}
    gw = Gateway(tmp_path / "gw", config)
    try:
        client = gw.openai("tg-l-alice")

        def statuses(n):
            out = []
            for _ in range(n):
                try:
                    out.append(raw(client).http_response.status_code)
                except openai.APIStatusError as e:
                    out.append(e.status_code)
            return out

        assert statuses(4) == [200, 200, 200, 429]
        redis.stop()
        assert statuses(3) == [200, 200, 200]  # open: served, uncounted
        assert gw.logs().count("shared store unavailable") == 1
        redis.start()  # an empty Redis: the limit counts from zero again
        assert statuses(4) == [200, 200, 200, 429]
        assert "shared store is back" in gw.logs()
        gw.write_config({**config, "limits": {**config["limits"], "on_store_error": "closed"}})
        time.sleep(2.5)
        redis.stop()
        with pytest.raises(openai.InternalServerError) as e:
            raw(client)
        assert e.value.status_code == 503 and "store unavailable" in e.value.message
        assert gw.last_row()["decision"] == "limited"
        with httpx.Client() as plain:  # the gateway itself is fine: still answering, not hung
            assert plain.get(f"http://127.0.0.1:{gw.port}/", timeout=5).status_code in (200, 400, 404, 502)
    finally:
        gw.stop()
        redis.stop()


def test_a_hung_redis_costs_a_call_about_a_second_and_its_late_reply_is_nobody_elses(tmp_path, fake):
    """A Redis that accepts but stops answering (SIGSTOP): under on_store_error open the call is served after the
    store's one-second deadline, not hung. Its reservation was already sent: once Redis wakes it is charged (the safe
    side), so the next call is the third of two and refused; had the late reply ("admitted") been read as the next
    call's, that call would have passed."""
    import signal

    redis = RedisServer(tmp_path / "redis")
    config = {"providers": providers_to(fake), "consumers": CONSUMERS, "store": redis.url,
              "limits": {"rules": [{"name": "two", "per": "consumer", "requests_per_minute": 2}]}}
    gw = Gateway(tmp_path / "gw", config)
    try:
        client = gw.openai("tg-l-alice")
        assert raw(client).http_response.status_code == 200
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            assert raw(client).http_response.status_code == 200
            took = time.monotonic() - start
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        assert 0.9 < took < 5 and gw.logs().count("shared store unavailable") == 1
        with pytest.raises(openai.RateLimitError) as refused:
            raw(client)
        assert "rate limit 'two' exceeded" in refused.value.message
    finally:
        gw.stop()
        redis.stop()
