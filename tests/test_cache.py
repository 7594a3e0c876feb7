"""The response cache through the real SDKs, against both stores (memory and a private Redis)."""

import json
import time
import uuid

import openai
import pytest

from conftest import ROOT
from harness import Gateway, providers_to

KEYS = {"alice": "tg-cache-alice", "bob": "tg-cache-bob"}


@pytest.fixture(scope="module", params=["memory", "redis"])
def gw(request, tmp_path_factory, fake):
    store = "memory" if request.param == "memory" else request.getfixturevalue("redis_server").url
    gateway = Gateway(tmp_path_factory.mktemp(f"cache-{request.param}"), {
        "providers": providers_to(fake),
        "groups": {"team": {}},
        "consumers": [{"name": n, "key": k, "group": "team"} for n, k in KEYS.items()],
        "store": store,
        "cache": {"ttl": "1h", "scope": "consumer", "max_entry_bytes": "6KB"},
    })
    gateway.store_kind = request.param
    yield gateway
    gateway.stop()


def prompt(text="") -> list[dict]:
    return [{"role": "user", "content": f"{text} {uuid.uuid4()}"}]


def upstream_calls(fake, marker: str) -> int:
    return sum(marker in json.dumps(r["body"]) for r in fake.requests())


def test_second_identical_openai_call_is_a_hit(gw, fake):
    client = gw.openai(KEYS["alice"])
    messages = prompt("plain")
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.http_response.content == second.http_response.content  # byte-identical
    assert upstream_calls(fake, messages[0]["content"]) == 1
    hit = gw.last_row()
    assert (hit["cache"], hit["decision"], hit["status"]) == ("hit", "cached", 200)
    assert hit["completion_tokens"] == first.parse().usage.completion_tokens  # tokens saved
    miss = gw.rows()[-2]
    assert hit["saved_usd"] == miss["cost_usd"] > 0 and hit["cost_usd"] == 0  # saved what the miss cost; spent nothing


def test_x_cache_is_the_gateways_whatever_the_provider_or_a_cdn_said(gw, fake):
    client = gw.openai(KEYS["alice"])
    cdn = {"x-fake-answer-header": "X-Cache: HIT from cloudfront"}
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=prompt("cdn"),
                                                             extra_headers=cdn)
    assert first.http_response.headers.get_list("x-cache") == ["MISS"], "a CDN's HIT must not pass for ours"


def test_anthropic_hit_and_other_consumer_model_or_system_prompt_miss(gw, fake):
    messages = prompt("claude")
    ask = lambda key, **kw: gw.anthropic(key).messages.with_raw_response.create(  # noqa: E731
        max_tokens=50, messages=messages, **{"model": "claude-sonnet-4-6", **kw})
    assert ask(KEYS["alice"]).headers["x-cache"] == "MISS"
    assert ask(KEYS["alice"]).headers["x-cache"] == "HIT"
    assert ask(KEYS["bob"]).headers["x-cache"] == "MISS"             # scope: consumer
    assert ask(KEYS["alice"], model="claude-haiku-4-5").headers["x-cache"] == "MISS"
    assert ask(KEYS["alice"], system="Be terse.").headers["x-cache"] == "MISS"
    assert upstream_calls(fake, messages[0]["content"]) == 4


def test_streamed_answer_is_replayed_as_a_stream_with_usage(gw, fake):
    client = gw.openai(KEYS["alice"])
    messages = prompt("stream")

    def run():
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                                     stream_options={"include_usage": True}))
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].usage

    before = gw.mark()
    first_text, first_usage = run()
    gw.rows_since(before)  # the stream's row lands just after its last event: wait for it before the mark
    mark = gw.mark()
    second_text, second_usage = run()
    assert second_text == first_text and second_usage == first_usage and first_usage.completion_tokens == 12
    assert upstream_calls(fake, messages[0]["content"]) == 1
    assert gw.rows_since(mark)[0]["cache"] == "hit"
    # A client that did not ask for usage gets the same stream without the usage chunk, and a plain call misses.
    plain_stream = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    assert all(c.choices for c in plain_stream)
    assert "".join(c.choices[0].delta.content or "" for c in plain_stream) == first_text
    assert client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages).headers["x-cache"] == "MISS"


def test_anthropic_stream_replay(gw, fake):
    messages = prompt("anthropic stream")
    texts = []
    for _ in range(2):
        with gw.anthropic(KEYS["bob"]).messages.stream(model="claude-sonnet-4-6", max_tokens=50,
                                                       messages=messages) as stream:
            texts.append((stream.get_final_text(), stream.get_final_message().usage.output_tokens))
    assert texts[0] == texts[1] and texts[0][1] == 12
    assert upstream_calls(fake, messages[0]["content"]) == 1


def test_controls_no_store_bypass_and_no_cache(gw, fake):
    client = gw.openai(KEYS["alice"])
    messages = prompt("controls")
    call = lambda **headers: client.chat.completions.with_raw_response.create(  # noqa: E731
        model="gpt-4o-mini", messages=messages, extra_headers=headers).headers["x-cache"]
    assert call(**{"Cache-Control": "no-store"}) == "BYPASS"
    assert call(**{"x-tollgate-cache": "bypass"}) == "BYPASS"
    assert call() == "MISS"                                  # nothing was stored by the two above
    assert call() == "HIT"
    assert call(**{"Cache-Control": "no-cache"}) == "MISS"   # skips the lookup, refreshes the entry
    assert call() == "HIT"
    assert upstream_calls(fake, messages[0]["content"]) == 4
    assert not any("x-tollgate-cache" in {k.lower() for k in r["headers"]} for r in fake.requests())


def test_errors_and_oversized_answers_are_not_stored(gw, fake):
    client = gw.openai(KEYS["alice"])
    messages = prompt("errors")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                           extra_headers={"x-fake-status": "500"})
    big = prompt("big")
    for _ in range(2):  # ~10 KB answer, over max_entry_bytes
        response = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=big,
                                                                    extra_headers={"x-fake-words": "1500"})
        assert response.headers["x-cache"] == "MISS"
    assert upstream_calls(fake, messages[0]["content"]) == 2 and upstream_calls(fake, big[0]["content"]) == 2


def test_refused_requests_are_never_answered_from_cache(gw):
    messages = prompt("refused")
    gw.openai(KEYS["alice"]).chat.completions.create(model="gpt-4o-mini", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        gw.openai("tg-intruder").chat.completions.create(model="gpt-4o-mini", messages=messages)


def test_ttl_expiry_and_group_scope(tmp_path, fake):
    gw = Gateway(tmp_path, {"providers": providers_to(fake), "groups": {"team": {}},
                            "consumers": [{"name": n, "key": k, "group": "team"} for n, k in KEYS.items()],
                            "cache": {"ttl": "1s", "scope": "group"}})
    try:
        messages = prompt("ttl")
        call = lambda key: gw.openai(key).chat.completions.with_raw_response.create(  # noqa: E731
            model="gpt-4o-mini", messages=messages).headers["x-cache"]
        assert [call(KEYS["alice"]), call(KEYS["bob"])] == ["MISS", "HIT"]  # same group shares
        time.sleep(1.2)
        assert call(KEYS["alice"]) == "MISS"
    finally:
        gw.stop()


def test_redis_outage_degrades_to_miss(tmp_path, fake, redis_server):
    from harness import RedisServer

    redis = RedisServer(tmp_path / "redis")
    gw = Gateway(tmp_path / "gw", {"providers": providers_to(fake), "store": redis.url, "cache": {"ttl": "1h"}})
    try:
        client = gw.openai("any")
        messages = prompt("outage")
        call = lambda: client.chat.completions.with_raw_response.create(  # noqa: E731
            model="gpt-4o-mini", messages=messages).headers["x-cache"]
        assert call() == "MISS"
        gw.wait_for(lambda: call() == "HIT")  # the fill is written in a spawned task
        redis.stop()
        assert [call(), call()] == ["MISS", "MISS"]  # answered from upstream, no error
        assert gw.logs().count("shared store unavailable") == 1
        redis.start()
        assert call() == "MISS"
        gw.wait_for(lambda: call() == "HIT")  # an empty Redis refills
        assert "shared store is back" in gw.logs()
    finally:
        gw.stop()
        redis.stop()


def test_no_cache_configured_says_nothing_about_it(make_gateway, fake):
    gw = make_gateway({"providers": providers_to(fake)})
    with gw.httpx() as client:
        response = client.post("https://api.openai.com/v1/chat/completions",
                               json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200 and "x-cache" not in response.headers
    assert gw.last_row()["cache"] == ""


def test_shipped_config_does_not_cache_sampled_answers():
    from tollgate.core.config import load_config

    config = load_config(ROOT / "config" / "gateway.yaml", env={})
    assert config.cache.only_deterministic
