"""OpenAI Chat Completions <-> Anthropic Messages: the wire modules on plain data, then both SDKs through a real
gateway against a fake provider of the other format."""

import json

import anthropic
import openai
import pytest

from conftest import ALICE_KEY
from harness import providers_to
from tollgate.core import wire
from tollgate.core.sse import SSEBuffer, parse_event

HELLO = [{"role": "user", "content": "Say hello to the gateway"}]
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}
ANTHROPIC_TOOL = {"name": "get_weather", "description": "Weather of a city",
                  "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


# --- plain data ------------------------------------------------------------------------------------------------

def test_openai_request_in_anthropic_terms_and_back():
    body = {"model": "gpt-4o", "max_tokens": 50, "temperature": 0.3, "top_p": 0.9, "stop": "END", "seed": 7,
            "user": "u1", "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False, "tools": [WEATHER_TOOL],
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                      {"type": "image_url",
                                                       "image_url": {"url": "data:image/png;base64,iVBOR"}},
                                                      {"type": "image_url",
                                                       "image_url": {"url": "https://example.com/a.png"}}]},
                         {"role": "assistant", "content": "Checking.", "tool_calls": [
                             {"id": "call_1", "type": "function",
                              "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                         {"role": "user", "content": "Thanks"}]}
    out, dropped = wire.translate_request(body, "openai", "anthropic", "claude-sonnet-4-5")
    assert dropped == ["seed"]
    assert out["model"] == "claude-sonnet-4-5" and out["system"] == "Be brief." and out["max_tokens"] == 50
    assert out["stop_sequences"] == ["END"] and out["temperature"] == 0.3 and out["top_p"] == 0.9
    assert out["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    assert out["tools"] == [ANTHROPIC_TOOL] and out["metadata"] == {"user_id": "u1"}
    user, assistant, results = out["messages"]
    assert user["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                              "data": "iVBOR"}}
    assert user["content"][2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    assert assistant["content"] == [{"type": "text", "text": "Checking."},
                                    {"type": "tool_use", "id": "call_1", "name": "get_weather",
                                     "input": {"city": "Paris"}}]
    assert results == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
        {"type": "text", "text": "Thanks"}]}  # tool result and the next turn: one user message, in order
    back, _ = wire.translate_request(out, "anthropic", "openai", "gpt-4o")
    assert [m["role"] for m in back["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert back["messages"][2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert back["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert back["parallel_tool_calls"] is False


def test_anthropic_needs_max_tokens_and_takes_temperature_up_to_one():
    out, dropped = wire.translate_request({"model": "m", "messages": HELLO, "temperature": 1.6, "n": 1},
                                          "openai", "anthropic", "claude")
    assert out["max_tokens"] == wire.anthropic.DEFAULT_MAX_TOKENS and out["temperature"] == 1.0
    assert dropped == ["temperature>1"]


def test_what_cannot_be_said_is_refused_not_guessed():
    with pytest.raises(wire.TranslationError):
        wire.translate_request({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
                               "openai", "anthropic", "claude")
    with pytest.raises(wire.TranslationError):
        wire.translate_request({"model": "m", "messages": HELLO, "tools": [{"type": "web_search_20250305",
                                                                             "name": "web_search"}]},
                               "anthropic", "openai", "gpt")


def test_answers_and_usage_both_ways():
    anthropic_answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                        "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                    {"type": "text", "text": "Let me look."},
                                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                     "input": {"city": "Paris"}}],
                        "stop_reason": "tool_use", "stop_sequence": None,
                        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 30,
                                  "cache_creation_input_tokens": 2}}
    out = wire.translate_answer(anthropic_answer, "anthropic", "openai")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Let me look."
    assert choice["message"]["tool_calls"][0] == {"id": "toolu_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert out["usage"]["prompt_tokens"] == 42 and out["usage"]["prompt_tokens_details"] == {"cached_tokens": 30}
    openai_answer = {"id": "c1", "model": "gpt", "choices": [{"index": 0, "finish_reason": "length", "message": {
        "role": "assistant", "content": "Hi"}}], "usage": {"prompt_tokens": 40, "completion_tokens": 3,
                                                           "prompt_tokens_details": {"cached_tokens": 30}}}
    back = wire.translate_answer(openai_answer, "openai", "anthropic")
    assert back["stop_reason"] == "max_tokens" and back["content"] == [{"type": "text", "text": "Hi"}]
    assert back["usage"] == {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 30,
                             "cache_creation_input_tokens": 0}


def test_errors_arrive_in_the_clients_shape():
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert json.loads(wire.translate_error(body, 529, "anthropic", "openai"))["error"]["message"] == "Overloaded"
    body = {"error": {"message": "bad model", "type": "invalid_request_error"}}
    out = json.loads(wire.translate_error(body, 400, "openai", "anthropic"))
    assert out == {"type": "error", "error": {"type": "invalid_request_error", "message": "bad model"}}


def _events(raw: bytes) -> list[tuple[str, str]]:
    buffer = SSEBuffer()
    return [parse_event(e) for e in buffer.feed(raw) + [buffer.flush()] if e.strip()]


def test_a_stream_with_tool_argument_deltas_both_ways():
    upstream = [("message_start", {"type": "message_start", "message": {
                    "id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 9, "output_tokens": 1}}}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": "Looking"}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
                    "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                         "delta": {"type": "input_json_delta", "partial_json": '{"city": '}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                         "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 1}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                                   "usage": {"output_tokens": 7}}),
                ("message_stop", {"type": "message_stop"})]
    to_openai = wire.StreamTranslator("anthropic", "openai", "gpt-4o")
    chunks = b"".join(raw for name, obj in upstream for raw in to_openai(name, json.dumps(obj)))
    events = [data for _, data in _events(chunks)]
    assert events[-1] == "[DONE]"
    objs = [json.loads(d) for d in events[:-1]]
    text = "".join(o["choices"][0]["delta"].get("content") or "" for o in objs if o["choices"])
    calls = [c for o in objs if o["choices"] for c in o["choices"][0]["delta"].get("tool_calls") or []]
    assert text == "Looking" and calls[0]["id"] == "toolu_1" and calls[0]["function"]["name"] == "get_weather"
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city": "Paris"}'
    assert [o["choices"][0]["finish_reason"] for o in objs if o["choices"] and o["choices"][0]["finish_reason"]] == \
        ["tool_calls"]
    assert objs[-1]["choices"] == [] and objs[-1]["usage"]["completion_tokens"] == 7

    # and the OpenAI chunks back into Anthropic events
    to_anthropic = wire.StreamTranslator("openai", "anthropic", "claude-x")
    back = b"".join(raw for data in events for raw in to_anthropic("", data))
    names = [name for name, _ in _events(back)]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    objs = [json.loads(data) for _, data in _events(back)]
    starts = [o["content_block"] for o in objs if o["type"] == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use"] and starts[1]["id"] == "toolu_1"
    partial = "".join(o["delta"]["partial_json"] for o in objs if o["type"] == "content_block_delta"
                      and o["delta"]["type"] == "input_json_delta")
    assert json.loads(partial) == {"city": "Paris"}
    assert objs[-2]["delta"]["stop_reason"] == "tool_use" and objs[-2]["usage"]["output_tokens"] == 7


# --- through the gateway ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def translating(tmp_path_factory, fake):
    from harness import Gateway
    gw = Gateway(tmp_path_factory.mktemp("translating"), {
        "providers": providers_to(fake),
        "models": [{"match": "gpt-4o", "provider": "anthropic", "model": "claude-sonnet-4-5"},
                   {"match": "claude-*", "provider": "openai", "model": "gpt-4o-mini"}],
        "consumers": [{"name": "alice", "key": ALICE_KEY}],
        "guard": {"rules": [{"name": "email", "detectors": ["email"], "action": "mask"}]},
        "moderation": {"rules": [{"name": "no-secrets", "terms": ["project zeus"]}]},
    })
    yield gw
    gw.stop()


def _seen(fake, path_end: str) -> dict:
    return [r for r in fake.requests() if r["path"].endswith(path_end)][-1]


def test_openai_sdk_against_an_anthropic_provider_plain(translating, fake):
    mark = translating.mark()
    client = translating.openai(ALICE_KEY)
    answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "system", "content": "Be brief."},
                                                                      *HELLO],
                                            seed=3, extra_headers={"x-fake-cached": "4"})
    assert answer.choices[0].message.content.startswith("tollgate answers")
    assert answer.choices[0].finish_reason == "stop" and answer.model == "claude-sonnet-4-5"
    assert answer.usage.completion_tokens == 12 and answer.usage.prompt_tokens_details.cached_tokens == 4
    seen = _seen(fake, "/v1/messages")
    assert seen["headers"]["x-api-key"] == "sk-ant-org-1" and seen["headers"]["anthropic-version"]
    assert "Authorization" not in seen["headers"]
    assert seen["body"]["system"] == "Be brief." and seen["body"]["max_tokens"] > 0 and "seed" not in seen["body"]
    row = translating.rows_since(mark)[-1]
    assert (row["dialect"], row["upstream_dialect"], row["provider"], row["model"]) == \
        ("openai", "anthropic", "anthropic", "claude-sonnet-4-5")
    assert row["dropped"] == "seed" and row["completion_tokens"] == 12 and row["usage_source"] == "provider"
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO, seed=1)
    assert raw.headers["x-tollgate-dropped"] == "seed"


def test_openai_sdk_stream_with_tools_and_an_image(translating, fake):
    client = translating.openai(ALICE_KEY)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Weather where this photo is?"},
                                             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]}]
    stream = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], stream=True,
                                            stream_options={"include_usage": True},
                                            extra_headers={"x-fake-tool": "get_weather"})
    chunks = list(stream)
    calls = [c for ch in chunks if ch.choices for c in ch.choices[0].delta.tool_calls or []]
    assert calls[0].id == "toolu_fake1" and calls[0].function.name == "get_weather"
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == {"city": "Paris"}
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    seen = _seen(fake, "/v1/messages")["body"]
    assert seen["stream"] is True and seen["tools"] == [ANTHROPIC_TOOL]
    assert seen["messages"][0]["content"][1] == {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "iVBO"}}
    # without stream_options the client gets no usage chunk, as from OpenAI itself
    plain = list(client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
    assert all(ch.choices for ch in plain)
    assert "".join(ch.choices[0].delta.content or "" for ch in plain).startswith("tollgate answers")


def test_anthropic_sdk_against_an_openai_provider(translating, fake):
    mark = translating.mark()
    client = translating.anthropic(ALICE_KEY)
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, system="Be brief.", messages=HELLO)
    assert message.content[0].text.startswith("tollgate answers") and message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 12 and message.usage.input_tokens > 0
    seen = _seen(fake, "/v1/chat/completions")
    assert seen["headers"]["Authorization"].startswith("Bearer sk-org-openai-")
    assert seen["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen["body"]["model"] == "gpt-4o-mini" and seen["body"]["max_tokens"] == 100
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=HELLO,
                                tools=[ANTHROPIC_TOOL], extra_headers={"x-fake-tool": "get_weather"}) as stream:
        final = stream.get_final_message()
    tool = [b for b in final.content if b.type == "tool_use"][0]
    assert tool.name == "get_weather" and tool.input == {"city": "Paris"} and final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 12
    assert _seen(fake, "/v1/chat/completions")["body"]["tools"][0]["function"]["name"] == "get_weather"
    used = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=HELLO, tools=[ANTHROPIC_TOOL],
                                  tool_choice={"type": "any"}, extra_headers={"x-fake-tool": "get_weather"})
    assert used.content[-1].type == "tool_use" and used.content[-1].input == {"city": "Paris"}
    assert _seen(fake, "/v1/chat/completions")["body"]["tool_choice"] == "required"
    rows = translating.rows_since(mark, 3)
    assert {(r["dialect"], r["upstream_dialect"]) for r in rows} == {("anthropic", "openai")}


def test_errors_come_back_in_the_clients_format(translating):
    with pytest.raises(openai.BadRequestError) as e:
        translating.openai(ALICE_KEY).chat.completions.create(model="gpt-4o", messages=HELLO,
                                                              extra_headers={"x-fake-status": "400"})
    assert "fake upstream error 400" in str(e.value)
    with pytest.raises(anthropic.RateLimitError):
        translating.anthropic(ALICE_KEY).messages.create(model="claude-x", max_tokens=10, messages=HELLO,
                                                         extra_headers={"x-fake-status": "429"})
    with pytest.raises(openai.BadRequestError) as e:  # a part Anthropic has no word for: refused before it leaves
        translating.openai(ALICE_KEY).chat.completions.create(model="gpt-4o", messages=[
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}])
    assert "cannot translate" in str(e.value)


def test_mask_restoring_and_moderation_on_a_translated_stream(translating, fake):
    client = translating.openai(ALICE_KEY)
    chunks = list(client.chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "Mail bob@example.com please"}],
        extra_headers={"x-fake-echo": "1"}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Mail bob@example.com please"
    assert "bob@example.com" not in json.dumps(_seen(fake, "/v1/messages")["body"])
    mark = translating.mark()
    chunks = list(client.chat.completions.create(
        model="gpt-4o", stream=True, messages=HELLO,
        extra_headers={"x-fake-reply": "The plan is project zeus, launching soon"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "zeus" not in text and "withheld" in text
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert translating.rows_since(mark)[-1]["moderation"] == "no-secrets:cut"


# --- whatever a client or provider sends: a translation or a clear refusal, never a crash ---------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                         st.sampled_from(["role", "content", "type", "text", "tool_calls", "function", "id", "name",
                                          "arguments", "image_url", "url", "source", "input", "tool_use_id",
                                          "messages", "system", "tools", "tool_choice", "stop", "index", "delta",
                                          "choices", "usage", "message", "content_block", "partial_json",
                                          "stop_reason", "finish_reason", "max_tokens", "temperature", "x"]),
                         inner, max_size=5), max_leaves=25)
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "developer", 3]),
                                  "content": _json}, optional={"tool_calls": _json, "tool_call_id": _json})
_request = st.fixed_dictionaries({"model": _json, "messages": st.lists(_message | _json, max_size=4)},
                                 optional={"tools": _json, "tool_choice": _json, "stop": _json, "system": _json,
                                           "max_tokens": _json, "temperature": _json, "stream": _json,
                                           "stream_options": _json, "metadata": _json, "stop_sequences": _json})


@settings(max_examples=300, deadline=None)
@given(_request, st.sampled_from([("openai", "anthropic"), ("anthropic", "openai")]))
def test_any_request_is_translated_or_refused_cleanly(body, way):
    try:
        out, dropped = wire.translate_request(body, *way, "model")
    except wire.TranslationError:
        return
    json.dumps(out)
    assert isinstance(out["messages"], list) and all(isinstance(d, str) for d in dropped)


@settings(max_examples=300, deadline=None)
@given(_json, st.sampled_from([("openai", "anthropic"), ("anthropic", "openai")]))
def test_any_answer_or_event_is_translated_or_refused_cleanly(body, way):
    try:
        json.dumps(wire.translate_answer(body, *way))
    except wire.TranslationError:
        pass
    translator = wire.StreamTranslator(*way, "m")
    events = [{"type": kind, "index": body, "delta": body, "content_block": body, "message": body, "usage": body}
              for kind in ("message_start", "content_block_start", "content_block_delta", "message_delta")]
    events += [{"choices": [{"index": 0, "delta": body, "finish_reason": body}], "usage": body}, body]
    for raw in [out for event in events for out in translator("", json.dumps(event))] + translator.end():
        assert isinstance(raw, bytes) and raw.endswith(b"\n\n")
