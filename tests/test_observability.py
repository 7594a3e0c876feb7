"""Observability through real parts: Prometheus metrics scraped over HTTP after real SDK calls."""

import re
import time

import httpx
import openai
import pytest

from harness import Gateway, free_port, providers_to

HELLO = [{"role": "user", "content": "metrics please"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake, redis_server):
    port = free_port()
    gateway = Gateway(tmp_path_factory.mktemp("obs"), {
        "providers": providers_to(fake), "consumers": [{"name": "alice", "key": "tg-obs-alice"}],
        "store": redis_server.url, "cache": {"ttl": "1h"},
    }, extra=("--set", f"tollgate_metrics_port={port}"))
    gateway.metrics = f"http://127.0.0.1:{port}"
    yield gateway
    gateway.stop()


def scrape(gw) -> str:
    return httpx.get(f"{gw.metrics}/metrics", trust_env=False).text


def value(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_after_real_calls(gw):
    assert httpx.get(f"{gw.metrics}/healthz", trust_env=False).text == "ok\n"
    client = gw.openai("tg-obs-alice")
    for _ in range(3):  # one miss, two hits
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    list(client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
    with pytest.raises(openai.AuthenticationError):
        gw.openai("tg-wrong").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    text = scrape(gw)
    assert value(text, "tollgate_requests_total", consumer="alice", model="gpt-4o-mini", status="200",
                 decision="forwarded") == 1
    assert value(text, "tollgate_requests_total", consumer="alice", model="gpt-4o-mini", decision="cached") == 2
    assert value(text, "tollgate_requests_total", status="401", decision="rejected") == 1
    assert value(text, "tollgate_tokens_total", consumer="alice", model="gpt-4o", kind="output") == 12
    assert value(text, "tollgate_cache_lookups_total", result="hit") == 2
    assert "_created" not in text and "process_resident_memory_bytes" in text
    assert int(float(re.search(r"^tollgate_gateway_overhead_seconds_count (\S+)$", text, re.M)[1])) >= 5
    assert value(text, "tollgate_cost_usd_total", consumer="alice", model="gpt-4o") > 0
    assert value(text, "tollgate_cache_saved_usd_total", consumer="alice") > 0
    assert value(text, "tollgate_time_to_first_token_seconds_count", provider="openai", model="gpt-4o") == 1
    assert value(text, "tollgate_request_latency_seconds_count", provider="openai", model="gpt-4o-mini") == 1
    assert re.search(r"^tollgate_store_errors_total 0\.0$", text, re.M)
    assert re.search(r'^tollgate_config_reloads_total\{result="ok"\} [1-9]', text, re.M)
    # the event-loop probe runs all the time, every 50 ms; an idle gateway (start-up is over) is on time
    def lag(text):
        probes = float(re.search(r"^tollgate_event_loop_lag_seconds_count (\S+)$", text, re.M)[1])
        on_time = float(re.search(r'^tollgate_event_loop_lag_seconds_bucket\{le="0.1"\} (\S+)$', text, re.M)[1])
        return probes, on_time
    before = lag(text)
    time.sleep(1)
    after = lag(scrape(gw))
    assert after[0] - before[0] >= 10 and after[1] - before[1] >= after[0] - before[0] - 1


def test_a_model_nobody_prices_is_counted_and_recorded(gw):
    """Priced by the catalogue where it knows the model; otherwise at the default price, counted and recorded."""
    client = gw.openai("tg-obs-alice")
    mark = gw.mark()
    client.chat.completions.create(model="in-house-llm-7b", messages=HELLO, extra_headers={"cache-control": "no-store"})
    client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers={"cache-control": "no-store"})
    unpriced, priced = gw.rows_since(mark, 2)
    assert (unpriced["priced_by"], priced["priced_by"]) == ("default", "catalog")
    assert unpriced["cost_usd"] > 0 and priced["cost_usd"] > 0
    text = scrape(gw)
    assert value(text, "tollgate_unpriced_calls_total", model="in-house-llm-7b") == 1
    assert value(text, "tollgate_unpriced_calls_total", model="gpt-4o") == 0
