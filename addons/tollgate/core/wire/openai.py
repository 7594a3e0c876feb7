"""OpenAI's wire format (Chat Completions, Responses, legacy completions, and every OpenAI-compatible server)."""

from __future__ import annotations

import copy
import json
import time

from .common import (Answer, Chat, Message, Part, Tool, TranslationError, Usage, as_int, error_message,
                     json_text, message_lines, plain_text, sse)

NAME = "openai"
CHAT_ENDPOINT = "chat/completions"   # the endpoint a translated call goes to
USAGE_ENDPOINTS = ("/chat/completions", "/completions")  # endpoints whose streams can report usage


# --- usage and errors ------------------------------------------------------------------------------------------

def usage(body) -> Usage | None:
    """Chat/completions report prompt/completion_tokens, the Responses API input/output_tokens."""
    found = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(found, dict):
        return None
    details = found.get("prompt_tokens_details") or found.get("input_tokens_details") or {}
    return Usage(as_int(found.get("prompt_tokens", found.get("input_tokens"))),
                 as_int(found.get("completion_tokens", found.get("output_tokens"))),
                 as_int(details.get("cached_tokens")) if isinstance(details, dict) else 0)


def render_usage(u: Usage) -> dict:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}


_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def error_event(status: int, message: str, code: str | None = None) -> bytes:
    """A final SSE event that ends a stream the gateway has to cut: the SDKs raise it as an API error."""
    return b"data: " + error_body(status, message, code) + b"\n\n"




# --- metering a stream -----------------------------------------------------------------------------------------

def meter(m, obj: dict) -> bool:
    """Feeds one event to a StreamMeter. True if it is a usage-only chunk (no choices)."""
    kind = obj.get("type")
    if isinstance(kind, str) and kind.startswith("response."):  # Responses API events
        if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str) and obj["delta"]:
            m.text.append(obj["delta"])
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            m.usage = usage(obj.get("response") or {}) or m.usage
            m.finished = True
        return False
    choices = obj.get("choices")
    for choice in choices or []:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            m.text.append(content)
        elif isinstance(choice.get("text"), str) and choice["text"]:  # legacy completions
            m.text.append(choice["text"])
    if isinstance(obj.get("usage"), dict):
        m.usage = usage(obj)
        return choices == []
    return False


# --- where answer text sits (restoring, moderation) ------------------------------------------------------------

ALL = "all"  # "every channel"


def stream_deltas(obj: dict) -> tuple[list[tuple[object, tuple, bool]], object]:
    """([(channel, path to the delta text, channel ends here)], channels this event closes: a list or ALL)."""
    deltas, closes = [], []
    kind = obj.get("type")
    if isinstance(kind, str) and kind.startswith("response."):  # Responses API
        channel = (obj.get("output_index", 0), obj.get("content_index", 0))
        if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
            deltas.append((channel, ("delta",), False))
        elif kind == "response.output_text.done":
            closes.append(channel)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            closes = ALL
        return deltas, closes
    choices = obj.get("choices")
    if choices == []:  # the usage chunk comes after every choice finished
        return deltas, ALL
    for i, choice in enumerate(choices or []):
        if not isinstance(choice, dict):
            continue
        channel, done = choice.get("index", i), choice.get("finish_reason") is not None
        delta = choice.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            deltas.append((channel, ("choices", i, "delta", "content"), done))
        elif isinstance(choice.get("text"), str):  # legacy completions
            deltas.append((channel, ("choices", i, "text"), done))
        elif done:
            closes.append(channel)
    return deltas, closes


def refusal_events(template: dict, path: tuple, name: str, channel, message: str) -> list[bytes]:
    obj = copy.deepcopy(template)
    if path == ("delta",):  # Responses API: a last delta; its stream has no finish event to borrow
        obj["delta"] = message
        return [sse(name, obj)]
    choice = {"index": channel, "finish_reason": "content_filter"}
    if path[2] == "text":
        choice.update(text=message, logprobs=None)
    else:
        choice["delta"] = {"content": message}
    obj["choices"] = [choice]
    if "usage" in obj:
        obj["usage"] = None
    return [sse(name, obj), sse("", "[DONE]")]


def answer_items(body: dict) -> list[tuple[dict, str]]:
    if isinstance(body.get("output"), list):  # Responses API
        return [(part, "text") for item in body["output"] if isinstance(item, dict)
                for part in item.get("content") or [] if isinstance(part, dict)]
    items = []
    for choice in body.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message")
            items.append((message, "content") if isinstance(message, dict) else (choice, "text"))
    return items


def mark_refused(body: dict) -> None:
    for choice in body.get("choices") or []:
        if isinstance(choice, dict):
            choice["finish_reason"] = "content_filter"


# --- the conversation: read (the mitmweb view) and added to (prompt decorators) ------------------------------------

def transcript(body: dict) -> list[str]:
    lines = message_lines(body.get("messages"))
    if isinstance(body.get("input"), (str, list)):  # Responses API, embeddings
        lines.append(f"input: {plain_text(body['input']) if isinstance(body['input'], list) else body['input']}")
    if isinstance(body.get("prompt"), str):
        lines.append(f"prompt: {body['prompt']}")
    return lines


def answer_text(body: dict) -> str:
    choices = body.get("choices") or []
    text = "\n".join(plain_text((c.get("message") or {}).get("content")) or c.get("text", "") for c in choices)
    for choice in choices:
        for call in (choice.get("message") or {}).get("tool_calls") or []:
            fn = call.get("function") or {}
            text += f"\n[tool call {fn.get('name')}: {fn.get('arguments')}]"
    return text


def decorate(body: dict, endpoint: str, before: list[dict], after: list[dict]) -> bool:
    """Adds messages ({"role", "content"}) around the conversation (in place); False if the call has none."""
    if endpoint.endswith("/chat/completions") and isinstance(body.get("messages"), list):
        key = "messages"
    elif endpoint.endswith("/responses") and isinstance(body.get("input"), (list, str)):
        key = "input"
    else:
        return False  # embeddings, legacy completions and the like have no conversation to decorate
    current = body[key] if isinstance(body[key], list) else [{"role": "user", "content": body[key]}]
    body[key] = [dict(m) for m in before] + current + [dict(m) for m in after]
    return True


# --- translation: Chat Completions <-> the common form ----------------------------------------------------------

_UNTRANSLATED = ("n", "logprobs", "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty", "seed",
                 "response_format", "modalities", "audio", "prediction", "store", "service_tier", "reasoning_effort",
                 "web_search_options", "functions", "function_call")
_STOPS_IN = {"stop": "end", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
             "content_filter": "refusal"}
_STOPS_OUT = {"end": "stop", "stop_sequence": "stop", "length": "length", "tool_calls": "tool_calls",
              "refusal": "content_filter"}


def _parts(content) -> list[Part]:
    if isinstance(content, str):
        return [Part("text", text=content)] if content else []
    parts = []
    for item in content or []:
        if not isinstance(item, dict):
            raise TranslationError("messages: content parts must be objects")
        kind = item.get("type")
        if kind in ("text", "input_text", "refusal"):
            parts.append(Part("text", text=str(item.get("text", item.get("refusal", "")))))
        elif kind == "image_url":
            image = item.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise TranslationError("messages: image_url needs a url")
            parts.append(Part("image", url=url))
        else:
            raise TranslationError(f"messages: a content part of type {kind!r} cannot be translated")
    return parts


def parse_request(body: dict) -> Chat:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages: expected a list")
    chat = Chat(model=str(body.get("model") or ""), stream=body.get("stream") is True)
    system = []
    for m in messages:
        if not isinstance(m, dict):
            raise TranslationError("messages: each message must be an object")
        role = m.get("role")
        if role in ("system", "developer"):
            system.append("\n".join(p.text for p in _parts(m.get("content")) if p.kind == "text"))
        elif role == "user":
            chat.messages.append(Message("user", _parts(m.get("content"))))
        elif role == "assistant":
            parts = _parts(m.get("content"))
            for call in m.get("tool_calls") or []:
                fn = (call or {}).get("function") or {}
                parts.append(Part("tool_call", id=str(call.get("id", "")), name=str(fn.get("name", "")),
                                  arguments=json_text(fn.get("arguments"))))
            chat.messages.append(Message("assistant", parts))
        elif role == "tool":
            result = Part("tool_result", id=str(m.get("tool_call_id", "")), content=_parts(m.get("content")))
            chat.messages.append(Message("user", [result]))
        else:
            raise TranslationError(f"messages: role {role!r} cannot be translated")
    chat.system = "\n\n".join(s for s in system if s)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    chat.max_tokens = limit if isinstance(limit, int) and limit > 0 else None
    for name in ("temperature", "top_p"):
        if isinstance(body.get(name), (int, float)):
            setattr(chat, name, body[name])
    stop = body.get("stop")
    chat.stop = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    options = body.get("stream_options")
    chat.stream_usage = isinstance(options, dict) and options.get("include_usage") is True
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise TranslationError("tools: only function tools can be translated")
        chat.tools.append(Tool(fn["name"], str(fn.get("description") or ""),
                               fn.get("parameters") or {"type": "object", "properties": {}}))
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        chat.tool_choice = choice
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        chat.tool_choice = "tool:" + choice["function"]["name"]
    if isinstance(body.get("parallel_tool_calls"), bool):
        chat.parallel_tool_calls = body["parallel_tool_calls"]
    if isinstance(body.get("user"), str):
        chat.user = body["user"]
    chat.dropped = [name for name in _UNTRANSLATED if name in body and not (name == "n" and body[name] == 1)]
    return chat


def _content(parts: list[Part]):
    if all(p.kind == "text" for p in parts):
        return "".join(p.text for p in parts)
    return [{"type": "text", "text": p.text} if p.kind == "text" else {"type": "image_url", "image_url": {"url": p.url}}
            for p in parts]


def render_request(chat: Chat) -> dict:
    messages = [{"role": "system", "content": chat.system}] if chat.system else []
    for m in chat.messages:
        if m.role == "assistant":
            text = "".join(p.text for p in m.parts if p.kind == "text")
            calls = [{"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
                     for p in m.parts if p.kind == "tool_call"]
            messages.append({"role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})})
            continue
        for p in m.parts:  # tool results first: each is a message of its own
            if p.kind == "tool_result":
                text = "".join(c.text for c in p.content if c.kind == "text")
                messages.append({"role": "tool", "tool_call_id": p.id, "content": text})
        rest = [p for p in m.parts if p.kind in ("text", "image")]
        if rest:
            messages.append({"role": "user", "content": _content(rest)})
    body: dict = {"model": chat.model, "messages": messages}
    if chat.max_tokens is not None:
        body["max_tokens"] = chat.max_tokens
    for name in ("temperature", "top_p"):
        if getattr(chat, name) is not None:
            body[name] = getattr(chat, name)
    if chat.stop:
        body["stop"] = chat.stop
    if chat.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if chat.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                           "parameters": t.parameters}} for t in chat.tools]
    if chat.tool_choice:
        body["tool_choice"] = ({"type": "function", "function": {"name": chat.tool_choice[5:]}}
                               if chat.tool_choice.startswith("tool:") else chat.tool_choice)
    if chat.parallel_tool_calls is not None and chat.tools:
        body["parallel_tool_calls"] = chat.parallel_tool_calls
    if chat.user:
        body["user"] = chat.user
    return body


def parse_answer(body: dict) -> Answer:
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    parts = [Part("text", text=message["content"])] if isinstance(message.get("content"), str) else []
    for call in message.get("tool_calls") or []:
        fn = (call or {}).get("function") or {}
        parts.append(Part("tool_call", id=str(call.get("id", "")), name=str(fn.get("name", "")),
                          arguments=json_text(fn.get("arguments"))))
    return Answer(str(body.get("id", "")), str(body.get("model", "")), parts,
                  _STOPS_IN.get(choice.get("finish_reason"), "end"), None, usage(body))


def render_answer(answer: Answer) -> dict:
    text = "".join(p.text for p in answer.parts if p.kind == "text")
    calls = [{"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
             for p in answer.parts if p.kind == "tool_call"]
    message = {"role": "assistant", "content": text if text or not calls else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    body = {"id": answer.id, "object": "chat.completion", "created": int(time.time()), "model": answer.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": _STOPS_OUT.get(answer.stop, "stop")}]}
    if answer.usage is not None:
        body["usage"] = render_usage(answer.usage)
    return body


class StreamReader:
    """Chat Completions chunks -> common stream events (the first choice; n > 1 is not translated)."""

    def __init__(self):
        self.started = False
        self.tools: dict[int, int] = {}  # OpenAI tool-call index -> block

    def __call__(self, name: str, data: str) -> list[tuple]:
        if data == "[DONE]":
            return [("end",)]
        obj = json.loads(data)
        if not isinstance(obj, dict):
            return []
        if "error" in obj:
            return [("error", 500, error_message(obj) or "the provider failed mid-stream")]
        out = []
        if not self.started:
            self.started = True
            out.append(("start", str(obj.get("id", "")), str(obj.get("model", "")), None))
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                out.append(("text", 0, delta["content"]))
            for call in delta.get("tool_calls") or []:
                index = call.get("index", 0) if isinstance(call, dict) else 0
                fn = call.get("function") or {} if isinstance(call, dict) else {}
                if index not in self.tools:
                    self.tools[index] = len(self.tools) + 1
                    out.append(("tool", self.tools[index], str(call.get("id", "")), str(fn.get("name", ""))))
                if isinstance(fn.get("arguments"), str) and fn["arguments"]:
                    out.append(("args", self.tools[index], fn["arguments"]))
            if choice.get("finish_reason"):
                out.append(("finish", _STOPS_IN.get(choice["finish_reason"], "end"), None))
        if isinstance(obj.get("usage"), dict):
            out.append(("usage", usage(obj)))
        return out


class StreamWriter:
    """Common stream events -> Chat Completions chunks. The usage chunk is always written (the cache keeps it);
    `usage_chunk` names it so a client that did not ask for it does not get it."""

    def __init__(self, model: str):
        self.id, self.model, self.created = "", model, int(time.time())
        self.tools: dict[int, int] = {}   # block -> OpenAI tool-call index
        self.usage: Usage | None = None
        self.usage_chunk: bytes | None = None
        self.ended = False

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        return sse("", {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                          "finish_reason": finish}]})

    def __call__(self, event: tuple) -> list[bytes]:
        kind = event[0]
        if kind == "start":
            self.id, self.model = event[1] or self.id, event[2] or self.model
            self.usage = event[3]
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "text":
            return [self._chunk({"content": event[2]})]
        if kind == "tool":
            self.tools[event[1]] = len(self.tools)
            return [self._chunk({"tool_calls": [{"index": self.tools[event[1]], "id": event[2], "type": "function",
                                                 "function": {"name": event[3], "arguments": ""}}]})]
        if kind == "args":
            index = self.tools.setdefault(event[1], len(self.tools))
            return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": event[2]}}]})]
        if kind == "finish":
            return [self._chunk({}, _STOPS_OUT.get(event[1], "stop"))]
        if kind == "usage":
            self.usage = event[1]
            return []
        if kind == "error":
            return [error_event(event[1], event[2])]
        if kind == "end" and not self.ended:
            self.ended = True
            out = []
            if self.usage is not None:
                self.usage_chunk = sse("", {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                            "model": self.model, "choices": [], "usage": render_usage(self.usage)})
                out.append(self.usage_chunk)
            return out + [sse("", "[DONE]")]
        return []


MESSAGES = "messages"  # where the conversation is (the semantic cache's context leaves out its last turn)


def last_user_text(body: dict) -> str:
    """The text of the last user turn ('' if none): what the semantic cache and knowledge bases embed."""
    if isinstance(body.get("input"), str):  # Responses API
        return body["input"]
    turns = body.get("messages") if isinstance(body.get("messages"), list) else body.get("input")
    for turn in reversed(turns if isinstance(turns, list) else []):
        if isinstance(turn, dict) and turn.get("role") == "user":
            return plain_text(turn.get("content"))
    return ""
