"""Each pipeline step on its own flows, in process (mitmproxy's taddons and tflow, no mitmdump): what the step
adds to the call record or to the flow. The end-to-end tests (real mitmdump, real SDKs) are grouped by capability
in the other files; these pin each step's contract with the record."""

import asyncio
import json
import sqlite3
import time

import pytest
from mitmproxy.test import taddons, tflow, tutils

from tollgate import internals
from tollgate.core.record import METADATA_KEY, Decision
from tollgate.flows import record_of

ALICE = "tg-steps-alice"
CONFIG = {
    "providers": {"openai": {"type": "openai", "keys": ["sk-org-steps"], "upstream": "http://127.0.0.1:9"}},
    "consumers": [{"name": "alice", "key": ALICE, "group": "research"}],
    "groups": {"research": {"models": ["gpt-4o*"]}},
    "guard": {"rules": [{"name": "secrets", "detectors": ["aws_access_key"]},
                        {"name": "pii", "detectors": ["email"], "action": "mask"}]},
    "limits": {"rules": [{"name": "two", "per": "consumer", "requests_per_minute": 2}]},
    "cache": {"ttl": "1h"},
}


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def gate(tmp_path):
    """A fresh copy of the gateway's addons (addons/gateway.py), loaded in process on a configuration of ours."""
    import importlib.util

    import yaml

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location(f"gateway_{tmp_path.name}", ROOT / "addons" / "gateway.py")
    gateway = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gateway)
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({**CONFIG, "ledger": {"path": str(tmp_path / "u.db")}}))
    with taddons.context(*gateway.addons) as tctx:
        tctx.configure(gateway.settings, tollgate_config=str(tmp_path / "gateway.yaml"))
        yield gateway.addons[1], tmp_path / "u.db"
    internals.uninstall()


def call(content: str = "hello", key: str = ALICE, model: str = "gpt-4o-mini", **headers):
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    request = tutils.treq(scheme=b"https", host="api.openai.com", port=443, path=b"/v1/chat/completions",
                          method=b"POST", content=json.dumps(body).encode(),
                          headers=((b"host", b"api.openai.com"), (b"content-type", b"application/json"),
                                   (b"authorization", f"Bearer {key}".encode()),
                                   *((k.encode(), v.encode()) for k, v in headers.items())))
    flow = tflow.tflow(req=request)
    flow.client_conn.sni = "api.openai.com"
    return flow


async def through_request(pipeline, flow):
    await pipeline.requestheaders(flow)
    await pipeline.request(flow)
    return record_of(flow)


def answer(flow, words: str = "hi there", prompt_tokens: int = 9, completion_tokens: int = 2):
    body = {"choices": [{"message": {"role": "assistant", "content": words}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}
    flow.response = tutils.tresp(status_code=200, content=json.dumps(body).encode(),
                                 headers=((b"content-type", b"application/json"),))


async def ledger_row(ledger, sql: str):
    """A row of the ledger once the journal's rows are in SQLite (committed in batches on the event loop)."""
    from harness import journaled

    deadline = time.time() + 5
    while journaled(ledger) and time.time() < deadline:
        await asyncio.sleep(0.005)
    return sqlite3.connect(ledger).execute(sql).fetchone()


def error_of(flow) -> dict:
    return json.loads(flow.response.content)["error"]


async def test_classify_opens_the_record_of_an_llm_call_and_only_of_one(gate):
    pipeline, _ = gate
    record = await through_request(pipeline, call())
    assert (record.dialect, record.endpoint, record.requested_model) == ("openai", "/v1/chat/completions",
                                                                        "gpt-4o-mini")
    other = tflow.tflow(req=tutils.treq(host="example.com", port=443, path=b"/"))
    await through_request(pipeline, other)
    assert record_of(other) is None and other.response is None  # not the gate's: passes untouched


async def test_classify_refuses_names_that_disagree(gate):
    pipeline, _ = gate
    flow = call()
    flow.request.headers["host"] = "evil.example"
    await through_request(pipeline, flow)
    assert flow.response.status_code == 421


async def test_authenticate_names_the_consumer_or_refuses_in_the_provider_shape(gate):
    pipeline, _ = gate
    record = await through_request(pipeline, call())
    assert (record.consumer, record.group) == ("alice", "research")
    flow = call(key="tg-nobody")
    await through_request(pipeline, flow)
    assert flow.response.status_code == 401 and error_of(flow)["type"] == "invalid_request_error"
    assert "authorization" not in flow.request.headers  # the refused key goes no further


async def test_route_puts_the_org_key_on_the_wire_only(gate):
    pipeline, _ = gate
    flow = call()
    record = await through_request(pipeline, flow)
    assert record.provider == "openai" and (flow.request.host, flow.request.port) == ("127.0.0.1", 9)
    assert "sk-org-steps" not in str(flow.request.headers) and ALICE not in str(flow.request.headers)
    assert internals._wire_credentials[flow.request] == ("authorization", "Bearer sk-org-steps")


async def test_authorize_holds_the_group_to_its_models(gate):
    pipeline, _ = gate
    flow = call(model="o3")
    await through_request(pipeline, flow)
    assert flow.response.status_code == 403 and record_of(flow).decision == Decision.REJECTED


async def test_guard_blocks_a_secret_and_masks_an_email(gate):
    pipeline, _ = gate
    blocked = call("key AKIAIOSFODNN7EXAMPLE")
    await through_request(pipeline, blocked)
    assert blocked.response.status_code == 403 and "AKIA" not in blocked.response.text
    masked = call("mail jane@example.com")
    record = await through_request(pipeline, masked)
    assert masked.response is None and record.guard == "pii:mask×1"
    assert "[EMAIL_1]" in masked.request.text and "jane@" not in masked.request.text


async def test_admit_refuses_past_the_limit_with_retry_after(gate):
    pipeline, _ = gate
    for i in range(2):
        assert (await through_request(pipeline, call(f"question {i}"))).reservations
    flow = call("question 3")
    record = await through_request(pipeline, flow)
    assert flow.response.status_code == 429 and int(flow.response.headers["retry-after"]) >= 1
    assert (record.decision, record.limited_by) == (Decision.LIMITED, "two")


async def test_meter_settles_the_numbers_of_an_answer_and_the_ledger_writes_them(gate):
    pipeline, ledger = gate
    flow = call()
    await through_request(pipeline, flow)
    answer(flow, prompt_tokens=1000, completion_tokens=100)
    pipeline.responseheaders(flow)
    pipeline.response(flow)
    record = record_of(flow)
    assert (record.status, record.prompt_tokens, record.completion_tokens, record.usage_source) == (
        200, 1000, 100, "provider")
    assert record.cost_usd == pytest.approx(1000 * 0.15e-6 + 100 * 0.6e-6) and record.priced_by == "catalog"
    row = await ledger_row(ledger, "SELECT consumer, cost_usd, decision FROM calls")
    assert row == ("alice", record.cost_usd, "forwarded")


async def test_a_cache_hit_is_answered_here_and_metered_in_the_same_place(gate):
    pipeline, _ = gate
    first = call("same question")
    await through_request(pipeline, first)
    answer(first)
    pipeline.responseheaders(first)
    pipeline.response(first)
    assert first.response.headers["x-cache"] == "MISS"
    await asyncio.sleep(0.01)  # the fill is written in the background
    second = call("same question")
    record = await through_request(pipeline, second)
    assert second.response.headers["x-cache"] == "HIT" and record.answered_here
    pipeline.response(second)
    assert (record.decision, record.prompt_tokens, record.usage_source, record.cost_usd) == (
        Decision.CACHED, 9, "cache", 0.0)
    assert record.saved_usd > 0 and record.latency_ms is not None


async def test_the_answer_headers_are_set_in_one_pass_and_a_failure_there_withholds_the_answer(gate):
    pipeline, _ = gate
    flow = call()
    await through_request(pipeline, flow)
    answer(flow)
    flow.response.headers["X-Cache"] = "HIT from cdn"  # the provider's own: ours replaces it
    pipeline.responseheaders(flow)
    assert flow.response.headers.get_all("x-cache") == ["MISS"]
    assert flow.response.headers["x-ratelimit-limit-requests"] == "2"

    broken = call()
    record = await through_request(pipeline, broken)
    answer(broken)
    record.add_answer_headers({"x-broken": None})  # a bug in a step's header: not a value
    pipeline.responseheaders(broken)
    assert broken.response.status_code == 500 and record.decision == Decision.GATEWAY_ERROR
    assert "x-broken" not in broken.response.headers and "x-ratelimit-limit-requests" not in broken.response.headers


async def test_annotate_shows_the_client_url_and_the_record(gate):
    pipeline, _ = gate
    flow = call(key="tg-nobody")
    await through_request(pipeline, flow)
    pipeline.response(flow)
    assert flow.request.host == "api.openai.com" and flow.marked == ":heavy_multiplication_x:"
    assert flow.comment.startswith("401 rejected") and flow.metadata[METADATA_KEY]["decision"] == "rejected"


async def test_a_failing_step_refuses_and_still_writes_the_row(gate, monkeypatch):
    pipeline, ledger = gate
    from tollgate.guard import Guard

    def broken(self, flow):
        raise ValueError("boom")
    monkeypatch.setattr(Guard, "request", broken)
    pipeline.__init__(*pipeline.steps)  # the hooks are collected when the pipeline is built
    flow = call()
    await through_request(pipeline, flow)
    assert flow.response.status_code == 500 and error_of(flow)["code"] == "gateway_error"
    pipeline.response(flow)
    row = await ledger_row(ledger, "SELECT decision, reason FROM calls")
    assert row == ("gateway_error", "Guard failed in request: ValueError")  # the type, never the message


async def test_a_step_the_configuration_leaves_idle_is_not_called_until_a_reload_uses_it():
    from types import SimpleNamespace

    from tollgate.pipeline import Pipeline

    class Feature:
        calls = 0

        @staticmethod
        def active(config) -> bool:
            return config.feature

        def request(self, flow):
            Feature.calls += 1

    settings = SimpleNamespace(config=SimpleNamespace(feature=False))
    pipeline = Pipeline(Feature(), settings=settings)
    await pipeline.request(tflow.tflow())
    assert Feature.calls == 0
    settings.config = SimpleNamespace(feature=True)  # a reload turns the feature on
    await pipeline.request(tflow.tflow())
    assert Feature.calls == 1
    await Pipeline(Feature()).request(tflow.tflow())  # without settings: every step, always
    assert Feature.calls == 2


async def test_a_step_that_cannot_say_whether_it_is_active_runs():
    from types import SimpleNamespace

    from tollgate.pipeline import Pipeline

    class Broken:
        calls = 0

        @staticmethod
        def active(config) -> bool:
            raise KeyError("feature")

        def request(self, flow):
            Broken.calls += 1

    pipeline = Pipeline(Broken(), settings=SimpleNamespace(config=SimpleNamespace()))
    await pipeline.request(tflow.tflow())
    assert Broken.calls == 1  # fail closed: the step runs rather than being skipped


@pytest.mark.parametrize("http2", [False, True])
@pytest.mark.parametrize("fields", [((b"Host", b"api.openai.com"), (b"accept", b"*/*")), ((b"accept", b"*/*"),),
                                    ((b"HOST", b"api.openai.com"), (b"host", b"evil.example"), (b"accept", b"*/*"))])
def test_pointing_a_request_elsewhere_rewrites_host_header_and_authority_as_mitmproxy_does(http2, fields):
    """flows.point_at takes a shortcut past mitmproxy's setters (one pass over the headers instead of three): the
    request it leaves must be the one mitmproxy's own setters make, smuggled second Host header included."""
    from tollgate.flows import header, host_header, point_at

    ours = tutils.treq(scheme=b"https", host="api.openai.com", port=443, headers=fields,
                       authority=b"api.openai.com" if http2 else b"",
                       http_version=b"HTTP/2.0" if http2 else b"HTTP/1.1")
    theirs = ours.copy()
    point_at(ours, "http", "127.0.0.1", 8080)
    theirs.scheme, theirs.port, theirs.host = "http", 8080, "127.0.0.1"
    assert ours.data == theirs.data
    assert ours.url == "http://127.0.0.1:8080/path"
    assert header(ours.headers, "host") == (None if len(fields) == 1 else "127.0.0.1:8080")
    assert host_header(ours) == ours.host_header  # what Classify compares with the provider's names


def test_the_quick_header_lookup_answers_as_mitmproxy_does():
    from mitmproxy.http import Headers

    from tollgate.flows import header, header_values

    headers = Headers([(b"Accept", b"a"), (b"X-Multi", b"1"), (b"x-multi", b"2"), (b"X-Bytes", b"caf\xc3\xa9\xff")])
    for name in ("accept", "x-multi", "x-bytes", "missing"):
        assert header(headers, name) == headers.get(name)
        assert header_values(headers, name) == headers.get_all(name)
    assert header(headers, "missing", "") == ""


async def test_a_finished_stream_is_freed_without_the_cycle_collector(gate):
    """Thousands of open streams make the collector's full collections long (they scan every live object, and the
    event loop waits): a stream's flow and record must go when the flow goes, not wait for one of them."""
    import gc
    import weakref

    pipeline, _ = gate
    flow = call()
    body = json.loads(flow.request.content) | {"stream": True}
    flow.request.content = json.dumps(body).encode()
    await through_request(pipeline, flow)
    flow.response = tutils.tresp(status_code=200, content=b"", headers=((b"content-type", b"text/event-stream"),))
    pipeline.responseheaders(flow)
    tap = flow.response.stream
    chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
    assert b"hi" in b"".join(tap(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()) + tap(b""))
    pipeline.response(flow)
    record, flow_ref = weakref.ref(record_of(flow)), weakref.ref(flow)
    assert record().tap is tap
    gc.collect()  # mitmproxy's own type checks leave cycles (an exception's frames) that hold what made the flow
    gc.disable()
    try:
        del flow, tap
        assert flow_ref() is None and record() is None
    finally:
        gc.enable()
