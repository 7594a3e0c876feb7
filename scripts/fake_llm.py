"""A fake LLM provider for tests, the demo and the benchmark: OpenAI, Anthropic and Gemini wire formats, offline.

Knobs, per request as headers (they pass through the gateway) or for the whole server as options:
  x-fake-status: 503        answer with this status in the provider's error shape
  x-fake-delay-ms: 200      pause between streamed chunks (and before a plain answer)
  x-fake-words: 40          words in the completion
  x-fake-hang: 1            never answer (for timeout tests)
  x-fake-reply: text        answer exactly this (percent-encoded), streamed in pieces of x-fake-chunk-chars (4)
  x-fake-echo: 1            answer with the last user message, streamed the same way
Misbehaviour, for the gateway's robustness tests:
  x-fake-stall-body: 1      plain answer: headers and half the body, then silence
  x-fake-odd-events: 1      stream: wrong-typed events and garbage lines among the real ones
  x-fake-gzip: 1            stream: gzip-compressed although the request asked for identity
  x-fake-end-delay-ms: 20   stream: keep the body open this long after the final event
  x-fake-tool: get_weather  answer with a call of this tool ({"city": "Paris"}; streamed as argument pieces)
  x-fake-cached: 30         report this many prompt tokens as read from the provider's prompt cache
  x-fake-answer-header: x-cache: HIT   add this header to the answer
Command-line defaults for every request (a provider that is down, or one key of it refused): --status, --hang,
--retry-after (sent with a 429), --key-status KEY=STATUS (the answer for requests carrying that org key).
Served at any path prefix (/v1/..., /compatible-mode/v1/..., /openai/deployments/x/...), so routed traffic lands.
GET /_fake/requests lists the requests seen (method, path, headers, body); DELETE clears them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import zlib
from collections import deque
from urllib.parse import unquote

from aiohttp import web

WORDS = ("tollgate answers every call from the fake provider with a steady stream of words so tests can count "
         "tokens and watch chunks arrive one by one").split()

seen: deque = deque(maxlen=2000)
defaults = {"words": 12, "delay_ms": 0, "status": 200, "hang": False, "retry_after": "", "key_status": {}}


def completion_text(n: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


def prompt_tokens(body: dict) -> int:
    """A deterministic stand-in for a tokenizer: whitespace-separated words in the prompt, plus 7."""
    text = json.dumps(body.get("messages") or body.get("contents") or body.get("prompt") or body.get("input") or "")
    return len(text.split()) + 7


def last_user_text(body: dict) -> str:
    """The text of the last user turn, in any of the three wire formats."""
    turns = body.get("messages") or body.get("contents") or []
    for turn in reversed(turns if isinstance(turns, list) else []):
        if isinstance(turn, dict) and turn.get("role") == "user":
            content = turn.get("content", turn.get("parts"))
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


def answer_pieces(request: web.Request, body: dict, words: int) -> list[str]:
    """The completion as the pieces it is streamed in (joined, the plain answer)."""
    if "x-fake-reply" in request.headers or "x-fake-echo" in request.headers:
        text = unquote(request.headers.get("x-fake-reply", "")) or last_user_text(body)
        size = max(1, int(request.headers.get("x-fake-chunk-chars", 4)))
        return [text[i:i + size] for i in range(0, len(text), size)] or [""]
    return [w if i == 0 else " " + w for i, w in enumerate(completion_text(words).split(" "))]


def _key_status(request: web.Request) -> int | None:
    for header in ("authorization", "x-api-key", "api-key"):
        value = request.headers.get(header, "").removeprefix("Bearer ").strip()
        if value in defaults["key_status"]:
            return defaults["key_status"][value]
    return None


def knobs(request: web.Request) -> tuple[int, float, int]:
    status = int(request.headers.get("x-fake-status", _key_status(request) or defaults["status"]))
    delay = float(request.headers.get("x-fake-delay-ms", defaults["delay_ms"])) / 1000
    words = int(request.headers.get("x-fake-words", defaults["words"]))
    return status, delay, words


async def read_json(request: web.Request) -> dict:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"_unparsed": raw.decode("utf-8", "replace")}
    seen.append({"method": request.method, "path": request.path_qs, "headers": dict(request.headers),
                 "body": body, "at": time.time()})
    return body if isinstance(body, dict) else {}


def _error_headers(status: int) -> dict:
    return {"retry-after": defaults["retry_after"]} if status == 429 and defaults["retry_after"] else {}


def openai_error(status: int) -> web.Response:
    return web.json_response({"error": {"message": f"fake upstream error {status}", "type": "server_error",
                                        "param": None, "code": None}}, status=status, headers=_error_headers(status))


TOOL_ARGUMENTS = '{"city": "Paris"}'


def tool_pieces(text: str = TOOL_ARGUMENTS) -> list[str]:
    return [text[i:i + 5] for i in range(0, len(text), 5)]


ODD_EVENTS = ['data: {"choices": 5}\n\n', "data: {not json\n\n", "garbage line without a blank line\n\n",
              'data: {"choices": [{"delta": 7}], "usage": "lots"}\n\n', 'data: [1, 2]\n\n',
              'event: message_delta\ndata: {"type": "message_delta", "usage": 3}\n\n']


async def sse(request: web.Request, events, delay: float) -> web.StreamResponse:
    headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
    gzipped = bool(request.headers.get("x-fake-gzip"))
    if gzipped:
        headers["content-encoding"] = "gzip"
    if request.headers.get("x-fake-odd-events"):
        events = [e for pair in zip(events, ODD_EVENTS * len(events)) for e in pair][:-1] + [events[-1]]
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    compressor = zlib.compressobj(wbits=31) if gzipped else None
    for i, event in enumerate(events):
        if i and delay:
            await asyncio.sleep(delay)
        data = event.encode()
        if compressor:
            data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        await response.write(data)
    if compressor:
        await response.write(compressor.flush())
    if end_delay := float(request.headers.get("x-fake-end-delay-ms", 0)):
        await asyncio.sleep(end_delay / 1000)
    await response.write_eof()
    return response


async def stalled(request: web.Request, payload: dict) -> web.StreamResponse:
    """Headers and half of a plain answer, then nothing until the client gives up."""
    data = json.dumps(payload).encode()
    response = web.StreamResponse(headers={"content-type": "application/json", "content-length": str(len(data))})
    await response.prepare(request)
    await response.write(data[:len(data) // 2])
    await asyncio.sleep(3600)
    return response


async def maybe_hang(request: web.Request) -> None:
    if request.headers.get("x-fake-hang") or defaults["hang"]:
        await asyncio.sleep(3600)


async def chat(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    await maybe_hang(request)
    status, delay, n = knobs(request)
    if status != 200:
        return openai_error(status)
    model = body.get("model", "fake-model")
    if str(model).startswith("transform"):  # a transformation model: XML bodies become JSON, deterministically
        return web.json_response({"id": f"chatcmpl-tf{len(seen)}", "object": "chat.completion",
                                  "created": int(time.time()), "model": model, "choices": [
                                      {"index": 0, "message": {"role": "assistant",
                                                               "content": transformed(last_user_text(body))},
                                       "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": prompt_tokens(body), "completion_tokens": 20,
                                            "total_tokens": prompt_tokens(body) + 20}})
    if str(model).startswith("llama-guard"):  # an LLM judge: safe, or unsafe and the categories
        text = last_user_text(body)
        categories = [c for c, score in flagged(text).items() if score > 0.5]
        verdict = "unsafe\n" + ",".join(categories) if categories else "safe"
        return web.json_response({"id": f"chatcmpl-judge{len(seen)}", "object": "chat.completion",
                                  "created": int(time.time()), "model": model, "choices": [
                                      {"index": 0, "message": {"role": "assistant", "content": verdict},
                                       "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": prompt_tokens(body), "completion_tokens": 2,
                                            "total_tokens": prompt_tokens(body) + 2}})
    legacy = request.path.endswith("/completions") and not request.path.endswith("chat/completions")
    ptok, pieces = prompt_tokens(body), answer_pieces(request, body, n)
    n = len(pieces)
    usage = {"prompt_tokens": ptok, "completion_tokens": n, "total_tokens": ptok + n}
    if cached := int(request.headers.get("x-fake-cached", 0)):
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    tool = request.headers.get("x-fake-tool")
    created, cid = int(time.time()), f"chatcmpl-fake{len(seen)}"
    obj = "text_completion" if legacy else "chat.completion"
    if not body.get("stream"):
        await asyncio.sleep(delay)
        choice = ({"index": 0, "text": "".join(pieces), "finish_reason": "stop", "logprobs": None} if legacy else
                  {"index": 0, "message": {"role": "assistant", "content": "".join(pieces)}, "finish_reason": "stop"})
        if tool:
            choice = {"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_fake1", "type": "function", "function": {"name": tool, "arguments": TOOL_ARGUMENTS}}]}}
        payload = {"id": cid, "object": obj, "created": created, "model": model, "choices": [choice], "usage": usage}
        if request.headers.get("x-fake-stall-body"):
            return await stalled(request, payload)
        return web.json_response(payload)
    include_usage = (body.get("stream_options") or {}).get("include_usage")

    def chunk(delta=None, finish=None, text=None, choices=True, with_usage=False):
        c = {"id": cid, "object": obj + ".chunk" if not legacy else obj, "created": created, "model": model}
        if choices:
            c["choices"] = [{"index": 0, "text": text, "finish_reason": finish} if legacy else
                            {"index": 0, "delta": delta or {}, "finish_reason": finish}]
        else:
            c["choices"] = []
        if include_usage:
            c["usage"] = usage if with_usage else None
        return f"data: {json.dumps(c)}\n\n"

    events = [] if legacy else [chunk({"role": "assistant", "content": ""})]
    if tool:
        events.append(chunk({"tool_calls": [{"index": 0, "id": "call_fake1", "type": "function",
                                             "function": {"name": tool, "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in tool_pieces()]
        events.append(chunk({}, "tool_calls"))
        pieces = []
    for piece in pieces:
        events.append(chunk(text=piece) if legacy else chunk({"content": piece}))
    if not tool:
        events.append(chunk(text="", finish="stop") if legacy else chunk({}, "stop"))
    if include_usage:
        events.append(chunk(choices=False, with_usage=True))
    events.append("data: [DONE]\n\n")
    return await sse(request, events, delay)


STOP_WORDS = set("a an the is are was were be to of in on at for and or but with what how do does did i you me my "
                 "your it its this that please can could would should tell about".split())


def hashed_embedding(text: str, dimensions: int = 256) -> list[float]:
    """Deterministic and meaningful enough for tests: each content word (lower case, a trailing s dropped) adds to
    one hashed dimension, normalised. Paraphrases sharing words are close; unrelated texts are far."""
    import hashlib
    import math
    import re as _re

    vector = [0.0] * dimensions
    for word in _re.findall(r"[a-z0-9]+", text.lower()):
        if word in STOP_WORDS:
            continue
        word = word[:-1] if len(word) > 3 and word.endswith("s") else word
        vector[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % dimensions] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


async def embeddings(request: web.Request) -> web.Response:
    body = await read_json(request)
    status, _, _ = knobs(request)
    if status != 200:
        return openai_error(status)
    inputs = body.get("input") if isinstance(body.get("input"), list) else [body.get("input", "")]
    ptok = prompt_tokens(body)
    dimensions = body.get("dimensions") if isinstance(body.get("dimensions"), int) else 256
    return web.json_response({"object": "list", "model": body.get("model", "fake-embed"),
                              "data": [{"object": "embedding", "index": i,
                                        "embedding": hashed_embedding(str(text), dimensions)}
                                       for i, text in enumerate(inputs)],
                              "usage": {"prompt_tokens": ptok, "total_tokens": ptok}})


FLAGGED = {"violence": ("attack", "bomb", "kill"), "hate": ("hateful",), "self-harm": ("selfharm",)}


def flagged(text: str) -> dict[str, float]:
    """Category scores of the fake moderation: 0.91 for a category whose words appear, 0.01 otherwise."""
    words = set(re.findall(r"[a-z-]+", text.lower()))
    return {category: 0.91 if words & set(terms) else 0.01 for category, terms in FLAGGED.items()}


def transformed(text: str) -> str:
    """The fake transformation model: the XML body of the HTTP message it is shown, as JSON in a 200 response
    (an instruction that says INVALID gets an answer that is no HTTP message)."""
    import xml.etree.ElementTree as ET

    if "INVALID" in text:
        return "Sorry, I would rather not."
    body = text.replace("\r\n", "\n").split("\n\n", 2)[-1]

    def convert(element):
        children = list(element)
        if not children:
            return (element.text or "").strip()
        out: dict = {}
        for child in children:
            out.setdefault(child.tag, []).append(convert(child))
        return {k: v[0] if len(v) == 1 else v for k, v in out.items()}
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "HTTP/1.1 422 Unprocessable\ncontent-type: text/plain\n\nnot XML"
    return "HTTP/1.1 200 OK\ncontent-type: application/json\nx-transformed: yes\n\n" + json.dumps(
        {root.tag: convert(root)})


SLIDESHOW = ('<?xml version="1.0"?>\n<slideshow><title>Sample Slide Show</title><slide><title>Wake up</title></slide>'
             '<slide><title>Overview</title></slide></slideshow>')


async def xml(request: web.Request) -> web.Response:
    """httpbin's /xml: a small XML document (for transformation tests)."""
    return web.Response(text=SLIDESHOW, content_type="application/xml")


async def moderations(request: web.Request) -> web.Response:
    body = await read_json(request)
    await maybe_hang(request)
    inputs = body.get("input") if isinstance(body.get("input"), list) else [body.get("input", "")]
    results = []
    for text in inputs:
        scores = flagged(str(text))
        results.append({"flagged": any(v > 0.5 for v in scores.values()),
                        "categories": {k: v > 0.5 for k, v in scores.items()}, "category_scores": scores})
    return web.json_response({"id": f"modr-fake{len(seen)}", "model": body.get("model", "omni-moderation-latest"),
                              "results": results})


async def dlp(request: web.Request) -> web.Response:
    """A webhook DLP service: blocks 'confidential', masks 'ssn NNN-NN-NNNN' numbers, hangs with ?hang=1."""
    body = await read_json(request)
    if request.query.get("hang"):
        await asyncio.sleep(3600)
    text = str(body.get("text", ""))
    if "confidential" in text.lower():
        return web.json_response({"action": "block", "category": "confidential", "reason": "confidential document"})
    spans = [[m.start(), m.end()] for m in re.finditer(r"\d{3}-\d{2}-\d{4}", text)]
    if spans:
        return web.json_response({"action": "mask", "category": "ssn", "spans": spans})
    return web.json_response({"action": "allow"})


async def models(request: web.Request) -> web.Response:
    await read_json(request)
    return web.json_response({"object": "list", "data": [
        {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in ("gpt-4o-mini", "gpt-4o")]})


async def messages(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    await maybe_hang(request)
    status, delay, n = knobs(request)
    if status != 200:
        return web.json_response({"type": "error", "error": {"type": "api_error",
                                                             "message": f"fake upstream error {status}"}},
                                 status=status, headers=_error_headers(status))
    model, ptok = body.get("model", "claude-fake"), prompt_tokens(body)
    pieces = answer_pieces(request, body, n)
    text, n = "".join(pieces), len(pieces)
    mid = f"msg_fake{len(seen)}"
    cached = int(request.headers.get("x-fake-cached", 0))
    usage = {"input_tokens": ptok - cached, "output_tokens": n, "cache_read_input_tokens": cached}
    tool = request.headers.get("x-fake-tool")
    if not body.get("stream"):
        await asyncio.sleep(delay)
        content = [{"type": "text", "text": text}]
        if tool:
            content.append({"type": "tool_use", "id": "toolu_fake1", "name": tool, "input": json.loads(TOOL_ARGUMENTS)})
        return web.json_response({"id": mid, "type": "message", "role": "assistant", "model": model,
                                  "content": content, "stop_reason": "tool_use" if tool else "end_turn",
                                  "stop_sequence": None, "usage": usage})

    def ev(name, data):
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

    events = [ev("message_start", {"message": {"id": mid, "type": "message", "role": "assistant", "model": model,
                                               "content": [], "stop_reason": None, "stop_sequence": None,
                                               "usage": {**usage, "output_tokens": 1}}}),
              ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
              ev("ping", {})]
    for piece in pieces:
        events.append(ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}}))
    events.append(ev("content_block_stop", {"index": 0}))
    if tool:
        events.append(ev("content_block_start", {"index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_fake1", "name": tool, "input": {}}}))
        events += [ev("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": p}})
                   for p in tool_pieces()]
        events.append(ev("content_block_stop", {"index": 1}))
    events += [ev("message_delta", {"delta": {"stop_reason": "tool_use" if tool else "end_turn",
                                              "stop_sequence": None},
                                    "usage": {"output_tokens": n}}),
               ev("message_stop", {})]
    return await sse(request, events, delay)


async def gemini(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    status, delay, n = knobs(request)
    model, method = request.match_info["model"], request.match_info["method"]
    if status != 200:
        return web.json_response({"error": {"code": status, "message": f"fake upstream error {status}",
                                            "status": "UNAVAILABLE"}}, status=status)
    ptok = prompt_tokens(body)
    pieces = answer_pieces(request, body, n)
    n = len(pieces)

    def piece(text, done, count):
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                **({"finishReason": "STOP"} if done else {})}],
                "usageMetadata": {"promptTokenCount": ptok, "candidatesTokenCount": count,
                                  "totalTokenCount": ptok + count}, "modelVersion": model}

    if method == "generateContent":
        await asyncio.sleep(delay)
        return web.json_response(piece("".join(pieces), True, n))
    events = [f"data: {json.dumps(piece(p, i == n - 1, i + 1))}\r\n\r\n" for i, p in enumerate(pieces)]
    return await sse(request, events, delay)


async def record_any(request: web.Request) -> dict:
    """Records a request of any kind (multipart uploads, GETs, a third-party host's traffic)."""
    raw = await request.read()
    body: object
    if request.content_type == "multipart/form-data":
        body = {"_form": raw.decode("utf-8", "replace")[:2000]}
    else:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")[:2000]}
    seen.append({"method": request.method, "path": request.path_qs, "headers": dict(request.headers), "body": body,
                 "at": time.time()})
    return body if isinstance(body, dict) else {}


async def files(request: web.Request) -> web.Response:
    await record_any(request)
    file_id = request.match_info.get("file_id") or "file-fake1"
    if request.method == "DELETE":
        return web.json_response({"id": file_id, "object": "file", "deleted": True})
    if request.path.endswith("/content"):
        return web.Response(body=b'{"custom_id": "1"}\n', content_type="application/octet-stream")
    return web.json_response({"id": file_id, "object": "file", "bytes": 1, "created_at": 0, "filename": "x.jsonl",
                              "purpose": "batch", "status": "processed"})


async def batches(request: web.Request) -> web.Response:
    body = await record_any(request)
    return web.json_response({"id": "batch_fake1", "object": "batch", "endpoint": body.get("endpoint", ""),
                              "input_file_id": body.get("input_file_id", ""), "completion_window": "24h",
                              "status": "validating", "created_at": 0})


async def transcriptions(request: web.Request) -> web.Response:
    await record_any(request)
    return web.json_response({"text": "hello from the fake transcriber"})


REALTIME_USAGE = {"input_tokens": 7, "output_tokens": 5}


async def realtime(request: web.Request) -> web.StreamResponse:
    """OpenAI's Realtime API over WebSocket, text only: every response.create gets a short answer streamed as text
    deltas and a response.done with usage (input 7, output 5). Client events are recorded as requests."""
    if request.headers.get("upgrade", "").lower() != "websocket":
        return await anything(request)
    seen.append({"method": "WS", "path": request.path_qs, "headers": dict(request.headers), "body": {}, "at": time.time()})
    ws = web.WebSocketResponse(protocols=("realtime",))
    await ws.prepare(request)
    await ws.send_json({"type": "session.created", "session": {"model": request.query.get("model", "")}})
    count = 0
    async for msg in ws:
        if msg.type != web.WSMsgType.TEXT:
            continue
        event = json.loads(msg.data)
        seen.append({"method": "WS-MESSAGE", "path": request.path, "headers": {}, "body": event, "at": time.time()})
        if event.get("type") == "response.create":
            count += 1
            rid = f"resp_fake{count}"
            await ws.send_json({"type": "response.created", "response": {"id": rid}})
            for word in ("hello", " from", " realtime"):
                await ws.send_json({"type": "response.output_text.delta", "response_id": rid, "delta": word})
            await ws.send_json({"type": "response.done", "response": {"id": rid, "status": "completed",
                                                                       "usage": {**REALTIME_USAGE, "total_tokens": 12}}})
    return ws


async def anything(request: web.Request) -> web.Response:
    """Any other path: recorded and answered, so a test can see what a third-party host received."""
    await record_any(request)
    return web.json_response({"ok": True, "path": request.path})


async def list_seen(request: web.Request) -> web.Response:
    if request.method == "DELETE":
        seen.clear()
        return web.json_response({"cleared": True})
    return web.json_response(list(seen))


async def _answer_header(request: web.Request, response: web.StreamResponse) -> None:
    """x-fake-answer-header: "name: value" is added to the answer (a CDN's header, say)."""
    name, sep, value = request.headers.get("x-fake-answer-header", "").partition(":")
    if sep:
        response.headers[name.strip()] = value.strip()


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 2**20)
    app.on_response_prepare.append(_answer_header)
    app.router.add_route("*", "/_fake/requests", list_seen)
    app.router.add_post("/_fake/dlp", dlp)
    app.router.add_get("/xml", xml)
    app.router.add_post(r"/{prefix:.*}moderations", moderations)
    app.router.add_route("POST", r"/{prefix:.*}models/{model:[^/:]+}:{method:[A-Za-z]+}", gemini)
    app.router.add_post(r"/{prefix:.*}chat/completions", chat)
    app.router.add_post(r"/{prefix:.*}completions", chat)
    app.router.add_post(r"/{prefix:.*}embeddings", embeddings)
    app.router.add_post(r"/{prefix:.*}messages", messages)
    app.router.add_get(r"/{prefix:.*}models", models)
    app.router.add_route("*", r"/{prefix:.*}files/{file_id:[^/]+}/content", files)
    app.router.add_route("*", r"/{prefix:.*}files/{file_id:[^/]+}", files)
    app.router.add_route("*", r"/{prefix:.*}files", files)
    app.router.add_post(r"/{prefix:.*}batches", batches)
    app.router.add_post(r"/{prefix:.*}audio/transcriptions", transcriptions)
    app.router.add_get(r"/{prefix:.*}realtime", realtime)
    app.router.add_route("*", r"/{tail:.*}", anything)
    return app


def self_signed_context():
    import datetime
    import ssl
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "fake-llm")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7)).sign(key, hashes.SHA256()))
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as pem:
        pem.write(cert.public_bytes(serialization.Encoding.PEM))
        pem.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
        pem.flush()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pem.name)
    return context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--words", type=int, default=12, help="default completion length")
    parser.add_argument("--delay-ms", type=float, default=0, help="default pause between streamed chunks")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a throwaway self-signed certificate")
    parser.add_argument("--status", type=int, default=200, help="answer every call with this status")
    parser.add_argument("--hang", action="store_true", help="never answer")
    parser.add_argument("--retry-after", default="", help="retry-after seconds sent with a 429")
    parser.add_argument("--key-status", action="append", default=[], metavar="KEY=STATUS",
                        help="answer calls carrying this org key with this status")
    args = parser.parse_args()
    defaults.update(words=args.words, delay_ms=args.delay_ms, status=args.status, hang=args.hang,
                    retry_after=args.retry_after,
                    key_status={k: int(v) for k, _, v in (item.rpartition("=") for item in args.key_status)})

    async def serve():
        runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, ssl_context=self_signed_context() if args.tls else None)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        print(f"fake-llm listening on http{'s' if args.tls else ''}://{args.host}:{port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
