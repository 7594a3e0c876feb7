"""Seed 000's prompt-in-URL endpoint and seed 001's key sources, through a real gateway's reverse listener."""

import json
import subprocess

import httpx
import pytest

from conftest import ALICE_KEY
from harness import Gateway, providers_to


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake):
    gateway = Gateway(tmp_path_factory.mktemp("url-prompt"), {
        "providers": providers_to(fake),
        "consumers": [{"name": "alice", "key": ALICE_KEY}],
        "auth": {"mode": "required", "key_sources": {"keys": ["apikey"], "in_header": True, "in_query": True}},
        "url_prompt": {"model": "gpt-4o-mini", "max_tokens": 64},
        "guard": {"rules": [{"name": "aws", "detectors": ["aws_access_key"], "action": "block"}]},
        "cache": {"ttl": "1m"},
    }, reverse=True)
    yield gateway
    gateway.stop()


def test_curl_gets_the_completion_as_text(gw, fake):
    mark = gw.mark()
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", f"http://127.0.0.1:{gw.reverse_port}/?text=Say,hello",
                          "-H", f"apikey: {ALICE_KEY}"], capture_output=True, text=True, timeout=30, check=True)
    text, status = out.stdout.rsplit("\n", 1)
    assert status == "200" and text.startswith("tollgate answers")
    seen = [r for r in fake.requests() if r["path"].endswith("/chat/completions")][-1]
    assert seen["body"]["messages"] == [{"role": "user", "content": "Say,hello"}] and seen["body"]["max_tokens"] == 64
    assert ALICE_KEY not in json.dumps(seen) and seen["headers"]["Authorization"].startswith("Bearer sk-org-openai")
    row = gw.rows_since(mark)[-1]
    assert (row["consumer"], row["model"], row["status"], row["endpoint"]) == \
        ("alice", "gpt-4o-mini", 200, "/v1/chat/completions")


def test_the_whole_pipeline_applies(gw):
    base = f"http://127.0.0.1:{gw.reverse_port}/"
    assert httpx.get(base, params={"text": "hello"}, trust_env=False).status_code == 401  # no key
    assert httpx.get(base, params={"text": "hello"}, headers={"apikey": "tg-wrong"}, trust_env=False).status_code == 401
    blocked = httpx.get(base, params={"text": "my key AKIAIOSFODNN7EXAMPLE", "apikey": ALICE_KEY}, trust_env=False)
    assert blocked.status_code == 403 and "aws" in blocked.text
    first = httpx.get(base, params={"text": "cache me", "apikey": ALICE_KEY}, trust_env=False)
    second = httpx.get(base, params={"text": "cache me", "apikey": ALICE_KEY}, trust_env=False)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.text == first.text and second.headers["content-type"].startswith("text/plain")
    assert ALICE_KEY not in gw.logs()
    rows = gw.rows()
    assert all(ALICE_KEY not in json.dumps(r) for r in rows)
