"""Realtime sessions through the gate: the `websockets` client via HTTPS_PROXY (trusting the gateway CA) to
wss://api.openai.com/v1/realtime, against the fake provider's realtime endpoint (usage 7 in, 5 out per response)."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from harness import providers_to

ALICE = "tg-rt-alice-0123456789"
MINI = "tg-rt-mini-0123456789"      # may use gpt-4o-mini models only
URL = "wss://api.openai.com/v1/realtime?model=gpt-4o-realtime-preview"
AWS = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture
def gw(make_gateway, fake):
    return make_gateway({
        "providers": providers_to(fake),
        "groups": {"mini": {"models": ["gpt-4o-mini*"]}},
        "consumers": [{"name": "alice", "key": ALICE}, {"name": "mini", "key": MINI, "group": "mini"}],
        "guard": {"rules": [{"name": "secrets", "detectors": ["aws_access_key"]},
                            {"name": "pii", "detectors": ["email"], "action": "mask"}]},
        "limits": {"rules": [{"name": "alice-tokens", "per": "consumer", "consumers": ["alice"], "tokens": 40,
                              "window": "60s"}]},
    }, extra=("--set", "flow_detail=4"))


def session(gw, key: str | None, url: str = URL):
    context = ssl.create_default_context(cafile=gw.ca)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return connect(url, ssl=context, proxy=gw.proxy, additional_headers=headers, subprotocols=["realtime"],
                   open_timeout=10)


def item(text: str) -> str:
    return json.dumps({"type": "conversation.item.create",
                       "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})


async def until(ws, kind: str) -> dict:
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if event["type"] in (kind, "error"):
            return event


def run(coro):
    return asyncio.run(coro)


def test_refused_without_a_key_and_for_a_model_not_allowed(gw, fake):
    with pytest.raises(InvalidStatus) as missing:
        run(session(gw, None).__aenter__())
    assert missing.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as denied:
        run(session(gw, MINI).__aenter__())
    assert denied.value.response.status_code == 403
    assert not [r for r in fake.requests() if r["method"] == "WS"]


def test_session_is_guarded_metered_limited_and_recorded(gw, fake):
    fake.clear()

    async def talk():
        async with session(gw, ALICE) as ws:
            assert (await until(ws, "session.created"))["type"] == "session.created"
            await ws.send(item(f"my key is {AWS}"))
            blocked = await until(ws, "error")
            assert blocked["error"]["code"] == "content_blocked"
            await ws.send(item("mail me at me@example.com"))
            await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 10}}))
            done = await until(ws, "response.done")
            assert done["response"]["usage"]["output_tokens"] == 5
            await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 10}}))
            assert (await until(ws, "response.done"))["type"] == "response.done"
            # 2 x 12 tokens used; the next response's worst case (10) no longer fits in 40 - 24 ... after a third
            await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 10}}))
            third = await until(ws, "response.done")
            await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 10}}))
            refused = await until(ws, "response.done")
            return third, refused

    third, refused = run(talk())
    assert third["type"] == "response.done"
    assert refused["type"] == "error" and refused["error"]["code"] == "rate_limit_exceeded"
    received = [r["body"] for r in fake.requests() if r["method"] == "WS-MESSAGE"]
    assert not any(AWS in json.dumps(e) for e in received), "the blocked event never reached the provider"
    assert any("[EMAIL_1]" in json.dumps(e) for e in received) and "me@example.com" not in json.dumps(received)
    assert sum(e["type"] == "response.create" for e in received) == 3
    handshake = [r for r in fake.requests() if r["method"] == "WS"][-1]
    assert handshake["headers"]["Authorization"].startswith("Bearer sk-org-openai-")
    row = gw.wait_for(lambda: [r for r in gw.rows() if r["endpoint"] == "/v1/realtime"])[-1]
    assert (row["consumer"], row["status"], row["prompt_tokens"], row["completion_tokens"]) == ("alice", 101, 21, 15)
    assert row["limited_by"] == "alice-tokens" and "secrets:block" in row["guard"]
    assert ALICE not in gw.logs() and "sk-org-openai-1" not in gw.logs()


def test_realtime_deny(make_gateway, fake):
    gw = make_gateway({"providers": providers_to(fake), "consumers": [{"name": "alice", "key": ALICE}],
                       "realtime": "deny"})
    with pytest.raises(InvalidStatus) as denied:
        run(session(gw, ALICE).__aenter__())
    assert denied.value.response.status_code == 403


def test_websocket_apis_the_gate_cannot_read_are_refused(gw, fake):
    url = "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    with pytest.raises(InvalidStatus) as refused:
        run(session(gw, ALICE, url).__aenter__())
    assert refused.value.response.status_code == 403
