"""Property-based fuzzing through one real gateway (hypothesis): valid OpenAI and Anthropic requests, mutated in body
structure and types, nesting, encodings, escapes, Content-Type, Content-Encoding, credential header bytes and host
spelling, sent byte for byte through a CONNECT tunnel. Whatever the mutation, the gate's invariants hold:
- every request the fake provider receives came from an authenticated consumer allowed that model, carries only the
  org key and none of the test's secrets;
- every request gets an answer; every call has exactly one ledger row; the gateway log has no addon error.
Bounded (FUZZ_EXAMPLES, default 120) so CI stays fast."""

from __future__ import annotations

import gzip
import json
import os
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import Gateway, providers_to, raw_request

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))
ALICE = "tg-fuzz-alice-0123456789"   # group mini: gpt-4o-mini and claude-haiku-4-5 only
CAROL = "tg-fuzz-carol-0123456789"   # unrestricted
ORG = {"Bearer sk-org-openai-1", "Bearer sk-org-openai-2", "sk-ant-org-1"}
SECRETS = ["AKIAIOSFODNN7EXAMPLE", "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "4111 1111 1111 1111"]
ALLOWED = {ALICE: {"gpt-4o-mini", "claude-haiku-4-5"}, CAROL: None}
HOSTS = {"openai": ["api.openai.com", "API.OPENAI.COM", "api.openai.com.", "Api.OpenAI.Com."],
         "anthropic": ["api.anthropic.com", "api.anthropic.com.", "API.ANTHROPIC.COM"]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake):
    gateway = Gateway(tmp_path_factory.mktemp("fuzz"), {
        "providers": providers_to(fake),
        "groups": {"mini": {"models": ["gpt-4o-mini", "claude-haiku-4-5"]}},
        # gpt-4o goes to Anthropic and claude-opus-4-5 to OpenAI: fuzzed bodies go through translation too
        "models": [{"match": "gpt-4o", "provider": "anthropic", "model": "claude-sonnet-4-5"},
                   {"match": "claude-opus-4-5", "provider": "openai", "model": "gpt-4.1"}],
        "consumers": [{"name": "alice", "key": ALICE, "group": "mini"}, {"name": "carol", "key": CAROL}],
        "guard": {"rules": [{"name": "secrets", "detectors": ["aws_access_key", "github_token", "credit_card"]}]},
        "gateway": {"max_request_bytes": "64KB", "max_json_depth": 32},
    }, extra=("--set", "flow_detail=4"))
    yield gateway
    gateway.stop()


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=12)


@st.composite
def requests(draw):
    kind = draw(st.sampled_from(["openai", "anthropic"]))
    model = draw(st.sampled_from(["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "claude-opus-4-5", "x"]))
    text = draw(st.text(max_size=40))
    if draw(st.booleans()):
        text += " " + draw(st.sampled_from(SECRETS))
    body: dict = {"model": model, "messages": [{"role": "user", "content": text}]}
    if kind == "anthropic":
        body["max_tokens"] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    # structural mutations
    for _ in range(draw(st.integers(0, 2))):
        target = draw(st.sampled_from(["model", "messages", "max_tokens", "extra", "content"]))
        value = draw(json_value)
        if target == "content":
            body["messages"] = [{"role": "user", "content": value}]
        else:
            body[target] = value
    raw = json.dumps(body).encode()
    # textual mutations the JSON encoder cannot produce
    mutation = draw(st.sampled_from(["none", "deep", "surrogate", "duplicate", "nan", "bad-utf8", "truncate",
                                     "not-object", "bom"]))
    if mutation == "deep":
        depth = draw(st.integers(30, 3000))
        raw = raw[:-1] + b',"d":' + b"[" * depth + b"]" * depth + b"}"
    elif mutation == "surrogate":
        raw = raw.replace(b'"role"', b'"r\\ud800ole"', 1) if draw(st.booleans()) else \
            raw[:-1] + b',"note":"\\udc00 ' + draw(st.sampled_from(SECRETS)).encode() + b'"}'
    elif mutation == "duplicate":
        raw = raw[:-1] + b',"model":"gpt-4o"}'
    elif mutation == "nan":
        raw = raw[:-1] + b',"temperature":NaN}'
    elif mutation == "bad-utf8":
        raw = raw.replace(b'"user"', b'"us\xff\xfeer"', 1)
    elif mutation == "truncate":
        raw = raw[:draw(st.integers(0, max(0, len(raw) - 1)))]
    elif mutation == "not-object":
        raw = b"[" + raw + b"]"
    elif mutation == "bom":
        raw = b"\xef\xbb\xbf" + raw
    key = draw(st.sampled_from([ALICE, CAROL, "tg-unknown-key", "sk-proj-own-key", ""]))
    key_bytes = key.encode()
    if key and draw(st.integers(0, 5)) == 0:
        key_bytes = key_bytes[:3] + draw(st.sampled_from([b"\xff", b"\x80", b"\xc3\xa9", b"\x7f"])) + key_bytes[3:]
    content_type = draw(st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                         "multipart/form-data; boundary=zz", "application/jso", None]))
    encoding = draw(st.sampled_from([None, "gzip", "deflate", "br", "identity", "gzip-lie", "zstd-lie", "bogus"]))
    host = draw(st.sampled_from(HOSTS[kind]))
    return kind, raw, key_bytes, content_type, encoding, host, model


def encode(raw: bytes, encoding: str | None) -> tuple[bytes, str | None]:
    import brotli

    if encoding == "gzip":
        return gzip.compress(raw), "gzip"
    if encoding == "deflate":
        return zlib.compress(raw), "deflate"
    if encoding == "br":
        return brotli.compress(raw), "br"
    if encoding == "gzip-lie":
        return raw, "gzip"
    if encoding == "zstd-lie":
        return raw, "zstd"
    return raw, encoding


def build(kind, raw, key_bytes, content_type, encoding, host) -> tuple[bytes, bytes]:
    body, content_encoding = encode(raw, encoding)
    path = "/v1/chat/completions" if kind == "openai" else "/v1/messages"
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: " + host.encode(), b"Connection: close",
             b"Content-Length: " + str(len(body)).encode()]
    if key_bytes:
        lines.append((b"Authorization: Bearer " if kind == "openai" else b"x-api-key: ") + key_bytes)
    if content_type:
        lines.append(b"Content-Type: " + content_type.encode())
    if content_encoding:
        lines.append(b"Content-Encoding: " + content_encoding.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n", body


def upstream_requests(fake) -> list[dict]:
    return [r for r in fake.requests() if not r["path"].startswith("/_fake")]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=os.environ.get("FUZZ_RANDOM") != "1")
@given(case=requests())
def test_fuzzed_requests_never_leak_past_the_gate(gw, fake, case):
    kind, raw, key_bytes, content_type, encoding, host, model = case
    fake.clear()
    before = len(gw.rows())
    head, body = build(kind, raw, key_bytes, content_type, encoding, host)
    status, _, answer = raw_request(gw, head, body, connect=f"{host}:443", sni=host.rstrip(".").lower())
    assert 100 <= status < 600, "every request gets an answer"
    if status >= 400 and not upstream_requests(fake):  # the gate's own refusal: in the provider's shape
        assert "error" in json.loads(answer)
    gw.wait_for(lambda: len(gw.rows()) == before + 1, timeout=5)  # exactly one row per call
    row = gw.rows()[-1]
    assert row["decision"] != "gateway_error", "bad input is the client's error, never a failure of the gateway"
    for seen in upstream_requests(fake):
        headers = {k.lower(): v for k, v in seen["headers"].items()}
        credential = headers.get("authorization") or headers.get("x-api-key")
        assert credential in ORG, "only the org key goes upstream"
        assert row["consumer"] in ("alice", "carol"), "only authenticated consumers reach the provider"
        allowed = ALLOWED[ALICE if row["consumer"] == "alice" else CAROL]
        assert allowed is None or seen["body"].get("model") in allowed, "only models the consumer may use"
        assert row["model"] == seen["body"].get("model", row["model"])
        dump = json.dumps(seen)
        assert not any(secret in dump for secret in SECRETS), "no secret reaches the provider"
        assert ALICE not in dump and CAROL not in dump
    log = gw.logs()
    assert "Addon error" not in log and "has crashed" not in log
