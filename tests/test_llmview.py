"""The LLM content view renders recorded requests and streams as readable text."""

import json

from mitmproxy.contentviews import Metadata
from mitmproxy.test import tflow, tutils

from tollgate.core.conversation import render_answer, render_request
from tollgate.core.record import CallRecord
from tollgate.flows import open_record
from tollgate.llmview import LLMContentview

OPENAI_STREAM = b"".join(
    b"data: " + json.dumps(obj).encode() + b"\n\n" for obj in (
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "Hello"}}]},
        {"choices": [{"delta": {"content": ", Alice"}}]},
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}},
    )) + b"data: [DONE]\n\n"
ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Bonjour"}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" Bob"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{},"usage":{"output_tokens":2}}\n\n')


def flow_with(dialect: str, path: str):
    flow = tflow.tflow(req=tutils.treq(path=path.encode()), resp=True)
    open_record(flow, CallRecord(id="x", started_at=0, client_ip="", dialect=dialect, endpoint=path))
    return flow


def test_openai_stream_reads_as_text_with_usage():
    flow = flow_with("openai", "/v1/chat/completions")
    view = LLMContentview()
    meta = Metadata(flow=flow, content_type="text/event-stream", http_message=flow.response)
    assert view.render_priority(OPENAI_STREAM, meta) > 1
    text = view.prettify(OPENAI_STREAM, meta)
    assert "Hello, Alice" in text and "11 prompt → 3 completion" in text


def test_anthropic_stream_reads_as_text_with_usage():
    text = render_answer("anthropic", ANTHROPIC_STREAM, "text/event-stream")
    assert "Bonjour Bob" in text and "9 prompt → 2 completion" in text


def test_requests_read_as_conversations():
    openai_body = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                                                                 {"type": "image_url"}]}]}
    assert render_request("openai", openai_body) == "model: gpt-4o\n\nsystem: Be brief.\n\nuser: Hi\n[image]"
    claude = render_request("anthropic", {"model": "claude", "system": "S", "messages": [{"role": "user", "content": "Q"}]})
    assert "system: S" in claude and "user: Q" in claude
    flow = flow_with("openai", "/v1/chat/completions")
    meta = Metadata(flow=flow, content_type="application/json", http_message=flow.request)
    assert "user: Hi" in LLMContentview().prettify(json.dumps(openai_body).encode(), meta)


def test_plain_answers_and_other_flows():
    answer = {"choices": [{"message": {"content": "Plain answer"}}], "usage": {"prompt_tokens": 2, "completion_tokens": 2}}
    assert "Plain answer" in render_answer("openai", json.dumps(answer).encode(), "application/json")
    other = tflow.tflow(resp=True)  # no tollgate record: not an LLM call, the view stands aside
    assert LLMContentview().render_priority(b"{}", Metadata(flow=other, content_type="application/json")) < 0


def test_the_view_starts_with_the_record_and_wraps_long_answers():
    flow = flow_with("openai", "/v1/chat/completions")
    record = CallRecord(id="x", started_at=0, client_ip="", dialect="openai", endpoint="/v1/chat/completions",
                        consumer="alice", group="research", provider="openai", requested_model="gpt-4o",
                        model="gpt-4o-mini", status=200, prompt_tokens=812, completion_tokens=96,
                        usage_source="provider", cost_usd=0.000213, priced_by="catalog", decision="forwarded")
    flow.metadata["tollgate"] = record.row()
    # an OpenAI stream whose usage chunk the gateway asked for and kept from the client
    words = " ".join(f"word{i}" for i in range(400))
    stream = (b'data: {"choices": [{"delta": {"content": "' + words.encode() + b'"}}]}\n\ndata: [DONE]\n\n')
    meta = Metadata(flow=flow, content_type="text/event-stream", http_message=flow.response)
    text = LLMContentview().prettify(stream, meta)
    head = text.split("assistant")[0]
    assert "decision: forwarded  status 200" in head and "consumer: alice (research)" in head
    assert "gpt-4o → gpt-4o-mini via openai" in head and "812 prompt → 96 completion tokens (provider)" in head
    assert "cost $0.000213 (priced by catalog)" in head
    assert "[no usage reported]" not in text and "the gateway's count is in the record above" in text
    assert max(map(len, text.splitlines())) <= 100 and "word399" in text
    assert "".join(text.split("streamed, 2 events):\n")[1].split("\n\n")[0].split("\n")).count("word") == 400
