"""Pools, fallback within a call, key and provider health: through a real gateway, the OpenAI SDK and fake
providers that fail in each way a provider fails."""

import threading
import time
from collections import Counter

import httpx
import openai
import pytest

from conftest import ALICE_KEY
from harness import FakeLLM, free_port
from tollgate.core.health import key_id

HELLO = [{"role": "user", "content": "Say hello to the gateway"}]


@pytest.fixture
def fakes(tmp_path):
    started = []

    def start(*args: str) -> FakeLLM:
        started.append(FakeLLM(tmp_path / f"fake{len(started)}", *args))
        return started[-1]

    yield start
    for fake in started:
        fake.stop()


def pool(primary_url: str, backup_url: str, **extra) -> dict:
    """openai (the primary) first, then backup, an OpenAI-compatible server of its own."""
    return {
        "providers": {"openai": {"type": "openai", "keys": ["sk-primary-1"], "upstream": primary_url},
                      "backup": {"type": "openai-compatible", "hosts": ["backup.internal"], "keys": ["sk-backup"],
                                 "upstream": backup_url}},
        "models": [{"match": "gpt-4o*", "strategy": "priority",
                    "targets": [{"provider": "openai"}, {"provider": "backup", "model": "backup-4o"}]}],
        "consumers": [{"name": "alice", "key": ALICE_KEY}],
        "limits": {"rules": [{"name": "per-consumer", "per": "consumer", "requests_per_minute": 1000}]},
        "gateway": {"upstream_timeout": "1s"},
        **extra,
    }


@pytest.mark.parametrize("failure", ["503", "429", "hang", "refused"])
def test_a_failed_target_is_replaced_by_the_next_one(failure, fakes, fake, make_gateway):
    primary = {"503": lambda: fakes("--status", "503").url, "429": lambda: fakes("--status", "429").url,
               "hang": lambda: fakes("--hang").url, "refused": lambda: f"http://127.0.0.1:{free_port()}"}[failure]()
    gw = make_gateway(pool(primary, fake.url))
    client = gw.openai(ALICE_KEY)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    answer = raw.parse()
    assert answer.choices[0].message.content.startswith("tollgate answers") and answer.model == "backup-4o"
    assert raw.headers["x-tollgate-attempts"] == "2"
    row = gw.last_row()
    assert row["attempts"] == 2 and row["provider"] == "backup" and row["status"] == 200
    expected = {"503": "503", "429": "429", "hang": "timeout", "refused": "unreachable"}[failure]
    assert row["failed_targets"].startswith("openai/") and row["failed_targets"].endswith(f":{expected}")
    assert "sk-primary" not in row["failed_targets"]
    # limits settle once, on the attempt that answered
    second = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    assert int(raw.headers["x-ratelimit-remaining-requests"]) - \
        int(second.headers["x-ratelimit-remaining-requests"]) == 1
    # a 429 cools the key down (60 s without retry-after): the next call goes straight to the backup
    assert gw.rows()[-1]["attempts"] == (1 if failure == "429" else 2)


def test_a_streamed_fallback_answer_arrives_complete_and_metered(fakes, fake, make_gateway):
    gw = make_gateway(pool(fakes("--status", "502").url, fake.url))
    chunks = list(gw.openai(ALICE_KEY).chat.completions.create(model="gpt-4o", messages=HELLO, stream=True,
                                                               extra_headers={"x-fake-words": "20"}))
    assert all(c.choices for c in chunks), "the usage chunk the gateway asked for stays with the gateway"
    assert len("".join(c.choices[0].delta.content or "" for c in chunks).split()) == 20
    row = gw.rows_since(0)[-1]
    assert (row["attempts"], row["streamed"], row["completion_tokens"], row["usage_source"]) == (2, 1, 20, "provider")


def test_a_stream_that_failed_after_its_first_byte_is_not_retried(fake, make_gateway):
    backup_seen = len(fake.requests())
    gw = make_gateway(pool(fake.url, fake.url, gateway={"upstream_timeout": "5s", "upstream_idle_timeout": "300ms"}))
    stream = gw.openai(ALICE_KEY).chat.completions.create(model="gpt-4o", messages=HELLO, stream=True,
                                                          extra_headers={"x-fake-delay-ms": "1500"})
    with pytest.raises(openai.APIError):
        list(stream)
    row = gw.rows_since(0)[-1]
    assert row["attempts"] == 1 and row["decision"] == "upstream_timeout" and row["provider"] == "openai"
    assert len(fake.requests()) == backup_seen + 1  # one attempt only


def test_retries_stop_at_the_budget(fakes, make_gateway):
    gw = make_gateway(pool(fakes("--status", "503").url, fakes("--status", "500").url,
                           retry={"max_attempts": 2, "budget": 0.2, "min_per_minute": 1},
                           breaker={"failures": 1000}))
    client = gw.openai(ALICE_KEY)
    for _ in range(20):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o", messages=HELLO)
    retries = sum(r["attempts"] - 1 for r in gw.rows_since(0, 20))
    assert 1 <= retries <= 1 + 0.2 * 20, retries  # without the budget: 20


def test_a_refused_key_is_taken_out_and_a_busy_one_cools_down(fakes, make_gateway):
    upstream = fakes("--key-status", "sk-bad=401", "--key-status", "sk-busy=429", "--retry-after", "30")
    gw = make_gateway({
        "providers": {"openai": {"type": "openai", "keys": ["sk-bad", "sk-good"], "upstream": upstream.url},
                      "anthropic": {"type": "anthropic", "keys": ["sk-busy", "sk-free"], "upstream": upstream.url}},
        "consumers": [{"name": "alice", "key": ALICE_KEY}]},
        extra=("--set", f"tollgate_metrics_port={(metrics_port := free_port())}"))
    client = gw.openai(ALICE_KEY)
    for _ in range(4):
        assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices[0].message.content
    keys = [r["headers"].get("Authorization") for r in upstream.requests()]
    assert keys.count("Bearer sk-bad") == 1 and keys.count("Bearer sk-good") == 4  # out after its first 401
    assert gw.rows_since(0, 4)[0]["attempts"] == 2 and gw.rows_since(0, 4)[0]["failed_targets"].endswith(":401")
    assert "is out: the provider answered 401; replace it" in gw.logs()
    assert "sk-bad" not in gw.logs()
    anthropic_client = gw.anthropic(ALICE_KEY)
    for _ in range(3):
        anthropic_client.messages.create(model="claude-x", max_tokens=10, messages=HELLO)
    keys = [r["headers"].get("x-api-key") for r in upstream.requests() if r["path"].endswith("/messages")]
    assert keys.count("sk-busy") == 1 and keys.count("sk-free") == 3  # cooling for its retry-after (30 s)
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", trust_env=False).text
    assert f'tollgate_key_state{{key="{key_id("sk-bad")}",provider="openai"}} 2.0' in metrics
    assert f'tollgate_key_state{{key="{key_id("sk-busy")}",provider="anthropic"}} 1.0' in metrics
    assert "sk-busy" not in metrics and "sk-bad" not in metrics


def test_replicas_on_one_redis_share_a_cool_down(fakes, make_gateway, redis_server):
    upstream = fakes("--key-status", "sk-busy=429", "--retry-after", "30")
    config = {"providers": {"openai": {"type": "openai", "keys": ["sk-busy", "sk-free"], "upstream": upstream.url}},
              "consumers": [{"name": "alice", "key": ALICE_KEY}], "store": redis_server.url}
    first, second = make_gateway(config), make_gateway(config)
    first.openai(ALICE_KEY).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert [r["headers"]["Authorization"] for r in upstream.requests()] == ["Bearer sk-busy", "Bearer sk-free"]
    time.sleep(1.5)  # replicas read the shared states every second
    upstream.clear()
    for _ in range(2):  # the second replica's rotation starts at sk-busy: it must know the key is cooling
        second.openai(ALICE_KEY).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert [r["headers"]["Authorization"] for r in upstream.requests()] == ["Bearer sk-free"] * 2
    assert "cooling 30 s" in second.logs()


def test_an_open_breaker_skips_the_provider_then_probes_it_once(fakes, fake, make_gateway):
    failing = fakes("--status", "503")
    gw = make_gateway(pool(failing.url, fake.url, breaker={"failures": 2, "cooldown": "1s"}))
    client = gw.openai(ALICE_KEY)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert len(failing.requests()) == 2
    for _ in range(4):  # open: straight to the backup
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert len(failing.requests()) == 2 and gw.rows()[-1]["attempts"] == 1
    assert "provider openai breaker open: 2 failures in a row" in gw.logs()
    time.sleep(1.2)
    for _ in range(3):  # half-open: one probe, it fails, open again
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert len(failing.requests()) == 3
    assert "the probe failed" in gw.logs()


def test_weighted_pool_follows_the_weights(fake, make_gateway):
    gw = make_gateway({
        "providers": {"openai": {"type": "openai", "keys": ["sk-a"], "upstream": fake.url},
                      "azure": {"type": "openai-compatible", "hosts": ["eu.internal"], "keys": ["sk-b"],
                                "upstream": fake.url}},
        "models": [{"match": "gpt-4o", "targets": [{"provider": "openai", "weight": 3},
                                                   {"provider": "azure", "model": "gpt-4o-eu", "weight": 1}]}],
        "consumers": [{"name": "alice", "key": ALICE_KEY}]})
    client = gw.httpx()
    for _ in range(300):
        response = client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o",
                                                                                   "messages": HELLO},
                               headers={"authorization": f"Bearer {ALICE_KEY}"})
        assert response.status_code == 200
    share = Counter(r["provider"] for r in gw.rows_since(0, 300))
    assert 0.65 <= share["openai"] / 300 <= 0.85, share  # 0.75 expected; four standard deviations either side
    assert {r["model"] for r in gw.rows() if r["provider"] == "azure"} == {"gpt-4o-eu"}


def test_least_busy_sends_calls_away_from_a_slow_target(fakes, fake, make_gateway):
    slow = fakes("--delay-ms", "400")
    gw = make_gateway({
        "providers": {"openai": {"type": "openai", "keys": ["sk-a"], "upstream": slow.url},
                      "fast": {"type": "openai-compatible", "hosts": ["fast.internal"], "keys": ["sk-b"],
                               "upstream": fake.url}},
        "models": [{"match": "gpt-4o", "strategy": "least_busy",
                    "targets": [{"provider": "openai"}, {"provider": "fast"}]}],  # ties go to the slow one
        "consumers": [{"name": "alice", "key": ALICE_KEY}]})

    def worker(client):
        for _ in range(6):
            client.chat.completions.create(model="gpt-4o", messages=HELLO)

    threads = [threading.Thread(target=worker, args=(gw.openai(ALICE_KEY),)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    share = Counter(r["provider"] for r in gw.rows_since(0, 36))
    assert share["fast"] >= 24, share  # round robin would give 18
