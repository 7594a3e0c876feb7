"""Wire formats on plain data: usage of every dialect (plain and streamed), SSE split anywhere, error shapes."""

import json

import pytest

from tollgate.core.dialects import ANTHROPIC, GEMINI, OPENAI, StreamMeter, Usage, dialect_of_path, error_body, usage_from_body
from tollgate.core.sse import SSEBuffer, StreamTap, parse_event


def sse(*objs, names=None) -> bytes:
    out = b""
    for i, obj in enumerate(objs):
        name = f"event: {names[i]}\n" if names else ""
        data = obj if isinstance(obj, str) else json.dumps(obj)
        out += f"{name}data: {data}\n\n".encode()
    return out


OPENAI_STREAM = sse(
    {"choices": [{"delta": {"role": "assistant", "content": ""}}], "usage": None},
    {"choices": [{"delta": {"content": "Hel"}}], "usage": None},
    {"choices": [{"delta": {"content": "lo"}}], "usage": None},
    {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}},
    "[DONE]",
)
ANTHROPIC_STREAM = sse(
    {"type": "message_start", "message": {"usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 1}}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 7}},
    {"type": "message_stop"},
    names=["message_start", "content_block_delta", "message_delta", "message_stop"],
)


def run(tap, data: bytes, step: int) -> bytes:
    chunks = [c for i in range(0, len(data), step) for c in tap(data[i:i + step])] + tap(b"")
    assert b"" not in chunks, "an empty chunk ends an HTTP/1 chunked body early"
    return b"".join(chunks)


@pytest.mark.parametrize("dialect, body, usage", [
    (OPENAI, {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}, Usage(3, 4, 0)),
    (OPENAI, {"usage": {"input_tokens": 3, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 1}}},
     Usage(3, 4, 1)),
    (OPENAI, {"usage": {"prompt_tokens": 5, "total_tokens": 5}}, Usage(5, 0, 0)),  # embeddings
    (ANTHROPIC, {"usage": {"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 30,
                           "cache_creation_input_tokens": 5}}, Usage(45, 2, 30, 5)),
    (GEMINI, {"usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 3, "thoughtsTokenCount": 2,
                                "cachedContentTokenCount": 1}}, Usage(8, 5, 1)),
    (OPENAI, {"choices": []}, None),
    (GEMINI, [], None),
])
def test_usage_from_plain_bodies(dialect, body, usage):
    assert usage_from_body(dialect, body) == usage


@pytest.mark.parametrize("step", [1, 2, 7, 64, 10_000])
def test_openai_stream_split_anywhere_meters_the_same_and_drops_injected_usage(step):
    tap = StreamTap(StreamMeter(OPENAI), drop_usage_chunk=True, clock=lambda: 1.0)
    out = run(tap, OPENAI_STREAM, step)
    assert tap.meter.usage == Usage(9, 2, 4) and tap.meter.streamed_text == "Hello"
    assert b'"choices": []' not in out and out.endswith(b"data: [DONE]\n\n")
    assert out == OPENAI_STREAM.replace(sse(json.loads(OPENAI_STREAM.split(b"\n\n")[3][6:])), b"")


def test_stream_kept_intact_when_client_asked_for_usage():
    tap = StreamTap(StreamMeter(OPENAI), drop_usage_chunk=False, clock=lambda: 1.0)
    assert run(tap, OPENAI_STREAM, 10_000) == OPENAI_STREAM


@pytest.mark.parametrize("step", [1, 5, 1000])
def test_anthropic_stream_usage(step):
    tap = StreamTap(StreamMeter(ANTHROPIC), drop_usage_chunk=False, clock=lambda: 1.0)
    out = run(tap, ANTHROPIC_STREAM, step)
    assert out == ANTHROPIC_STREAM
    assert tap.meter.usage == Usage(25, 7, 5) and tap.meter.streamed_text == "Hi"


def test_gemini_and_responses_api_streams():
    meter = StreamMeter(GEMINI)
    for n in (1, 2):
        meter.feed(json.dumps({"candidates": [{"content": {"parts": [{"text": "ab"}]}}],
                               "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": n}}))
    assert meter.usage == Usage(4, 2, 0) and meter.streamed_text == "abab"
    meter = StreamMeter(OPENAI)
    meter.feed(json.dumps({"type": "response.output_text.delta", "delta": "yo"}))
    meter.feed(json.dumps({"type": "response.completed", "response": {"usage": {"input_tokens": 6, "output_tokens": 1}}}))
    assert meter.usage == Usage(6, 1, 0) and meter.streamed_text == "yo"


def test_cut_stream_keeps_text_for_counting():
    tap = StreamTap(StreamMeter(OPENAI), drop_usage_chunk=True, clock=lambda: 5.0)
    tap(OPENAI_STREAM[: OPENAI_STREAM.index(b"lo") + 5])  # cut in the middle of the third event
    assert tap.meter.streamed_text == "Hel" and tap.meter.usage is None and tap.first_token_at == 5.0


def test_a_chunk_goes_on_before_its_events_are_read_and_the_meter_is_exact_whenever_it_is_read():
    """Reading each event's JSON would delay the client's first token: it waits for the tap's next call (or for
    the meter to be read), and the first token is timed by when its chunk came, not when it was read."""
    clock = iter([1.0, 2.0, 3.0, 4.0])
    tap = StreamTap(StreamMeter(OPENAI), drop_usage_chunk=True, clock=lambda: next(clock))
    cut = OPENAI_STREAM.index(b"lo") + 5
    first = b"".join(tap(OPENAI_STREAM[:cut]))
    assert b'"Hel' in first and tap._stream_meter.text == []  # passed on, not read yet
    assert tap.meter.streamed_text == "Hel" and tap.first_token_at == 1.0  # read when asked, timed as it came
    rest = b"".join(tap(OPENAI_STREAM[cut:]) + tap(b""))
    assert tap.meter.usage == Usage(9, 2, 4) and tap.meter.streamed_text == "Hello" and tap.first_token_at == 1.0
    assert b'"choices": []' not in first + rest  # the injected usage chunk still stays behind


def test_on_a_running_loop_the_meter_reads_a_chunk_as_soon_as_the_loop_is_free():
    import asyncio

    async def stream():
        tap = StreamTap(StreamMeter(OPENAI), drop_usage_chunk=True, clock=lambda: 7.0)
        tap(OPENAI_STREAM[: OPENAI_STREAM.index(b"lo") + 5])
        assert tap._stream_meter.streamed_text == ""  # the chunk went first
        await asyncio.sleep(0)
        assert tap._stream_meter.streamed_text == "Hel" and tap._first_token_at == 7.0  # no next chunk needed

    asyncio.run(stream())


def test_sse_buffer_handles_crlf_and_multiline_data():
    buf = SSEBuffer()
    events = buf.feed(b"event: a\r\ndata: 1\r\ndata: 2\r\n\r\ndata: x")
    assert len(events) == 1 and parse_event(events[0]) == ("a", "1\n2")
    assert buf.flush() == b"data: x"


@pytest.mark.parametrize("path, dialect", [
    ("/v1/chat/completions", OPENAI), ("/v1/messages", ANTHROPIC), ("/v1/messages/count_tokens", ANTHROPIC),
    ("/v1beta/models/gemini-2.0-flash:generateContent", GEMINI),
    ("/v1beta/openai/chat/completions", OPENAI), ("/openai/deployments/x/chat/completions", OPENAI),
])
def test_dialect_of_path(path, dialect):
    assert dialect_of_path(path) == dialect


def test_error_shapes_sdks_understand():
    assert json.loads(error_body(OPENAI, 401, "no", "invalid_api_key")) == {
        "error": {"message": "no", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    assert json.loads(error_body(ANTHROPIC, 403, "no")) == {
        "type": "error", "error": {"type": "permission_error", "message": "no"}}
    assert json.loads(error_body(ANTHROPIC, 502, "down"))["error"]["type"] == "api_error"
    assert json.loads(error_body(GEMINI, 429, "slow")) == {
        "error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED"}}
