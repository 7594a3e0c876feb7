"""Every provider spec through the addon chain (mitmproxy's test context, no network): the client's key is removed
wherever it was, the org key goes in the spec's own header, and the request lands at the spec's address."""

import asyncio
import json

import pytest
from mitmproxy.test import taddons, tflow, tutils

from mitmproxy.proxy.layers.http import RequestHeaders, SendHttp

from tollgate import internals
from tollgate.authenticate import Authenticate
from tollgate.classify import Classify
from tollgate.core.config import parse_config
from tollgate.flows import record_of
from tollgate.pipeline import Pipeline
from tollgate.health import Health
from tollgate.route import Route
from tollgate.stream import Stream

CASES = [
    # type, host, path, header, value
    ("openai", "api.openai.com", "/v1/chat/completions", "authorization", "Bearer ORG"),
    ("azure-openai", "acme.openai.azure.com", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
     "api-key", "ORG"),
    ("anthropic", "api.anthropic.com", "/v1/messages", "x-api-key", "ORG"),
    ("gemini", "generativelanguage.googleapis.com", "/v1beta/models/gemini-2.0-flash:generateContent",
     "x-goog-api-key", "ORG"),
    ("gemini", "generativelanguage.googleapis.com", "/v1beta/openai/chat/completions", "authorization", "Bearer ORG"),
    ("qwen", "dashscope.aliyuncs.com", "/compatible-mode/v1/chat/completions", "authorization", "Bearer ORG"),
    ("deepseek", "api.deepseek.com", "/chat/completions", "authorization", "Bearer ORG"),
    ("mistral", "api.mistral.ai", "/v1/chat/completions", "authorization", "Bearer ORG"),
    ("groq", "api.groq.com", "/openai/v1/chat/completions", "authorization", "Bearer ORG"),
    ("openrouter", "openrouter.ai", "/api/v1/chat/completions", "authorization", "Bearer ORG"),
    ("xai", "api.x.ai", "/v1/chat/completions", "authorization", "Bearer ORG"),
    ("openai-compatible", "llm.internal", "/v1/chat/completions", "authorization", "Bearer ORG"),
]


def run(pipeline, flow) -> None:
    async def request_phase():
        await pipeline.requestheaders(flow)
        await pipeline.request(flow)
    asyncio.run(request_phase())


class FixedSettings:
    def __init__(self, config):
        self.config = config


@pytest.mark.parametrize("type_, host, path, header, value", CASES)
def test_org_key_goes_in_the_specs_header_and_client_keys_go(type_, host, path, header, value):
    provider = {"type": type_, "keys": ["ORG"]}
    if type_ in ("azure-openai", "openai-compatible"):
        provider["hosts"] = [host]
    settings = FixedSettings(parse_config({"providers": {"p": provider},
                                           "consumers": [{"name": "alice", "key": "CONSUMER"}]}, env={}))
    pipeline = Pipeline(Classify(settings), Authenticate(settings), Route(settings, Health(settings)), Stream())
    flow = tflow.tflow(req=tutils.treq(
        scheme=b"https", host=host, port=443, path=path.encode(), method=b"POST",
        headers=[(b"authorization", b"Bearer CONSUMER"), (b"x-api-key", b"CONSUMER"), (b"api-key", b"CONSUMER"),
                 (b"x-goog-api-key", b"CONSUMER"), (b"content-type", b"application/json")],
        content=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()))
    flow.request.path = path + ("&" if "?" in path else "?") + "key=CONSUMER"
    flow.client_conn.sni = host  # the TLS name a real client sends
    with taddons.context(pipeline):
        run(pipeline, flow)
    assert flow.response is None, flow.response and flow.response.text
    record = record_of(flow)
    assert (record.consumer, record.provider) == ("alice", "p")
    prefix = value[:-len("ORG")]
    assert flow.request.headers[header] == prefix + "<p org key>", "the flow (mitmweb, dumps, log) never holds the key"
    wire = internals._with_credential(SendHttp(RequestHeaders(1, flow.request, False), None)).event.request
    assert wire.headers[header] == value and wire.host == host
    sent = bytes(flow.request.headers.fields.__repr__(), "utf8") + flow.request.path.encode() + flow.request.content
    assert b"CONSUMER" not in sent
    assert flow.request.host == host and flow.request.path.split("?")[0] == path.split("?")[0]


def test_plain_http_to_other_hosts_passes_unchanged():
    settings = FixedSettings(parse_config({"providers": {"openai": {"type": "openai"}}}, env={}))
    flow = tflow.tflow(req=tutils.treq(host="example.com", port=80, path=b"/v1/chat/completions",
                                       headers=[(b"authorization", b"Bearer mine")]))
    pipeline = Pipeline(Classify(settings), Route(settings, Health(settings)))
    with taddons.context(pipeline):
        run(pipeline, flow)
    assert record_of(flow) is None and flow.request.headers["authorization"] == "Bearer mine"
