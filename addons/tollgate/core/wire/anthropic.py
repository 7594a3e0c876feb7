"""Anthropic's Messages API."""

from __future__ import annotations

import json

from .common import (Answer, Chat, Message, Part, Tool, TranslationError, Usage, as_int, data_url,
                     error_message, json_object, message_lines, plain_text, split_data_url, sse)

NAME = "anthropic"
CHAT_ENDPOINT = "messages"
DEFAULT_MAX_TOKENS = 4096  # required here; an OpenAI client may leave it out
VERSION = "2023-06-01"


# --- usage and errors ------------------------------------------------------------------------------------------

def usage(body) -> Usage | None:
    """Anthropic counts cache reads and writes apart from input_tokens; the common form counts every prompt token."""
    found = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(found, dict):
        return None
    cached, created = as_int(found.get("cache_read_input_tokens")), as_int(found.get("cache_creation_input_tokens"))
    return Usage(as_int(found.get("input_tokens")) + cached + created, as_int(found.get("output_tokens")), cached,
                 created)


def render_usage(u: Usage) -> dict:
    return {"input_tokens": max(u.prompt_tokens - u.cached_tokens - u.cache_write_tokens, 0),
            "output_tokens": u.completion_tokens, "cache_read_input_tokens": u.cached_tokens,
            "cache_creation_input_tokens": u.cache_write_tokens}


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                503: "overloaded_error", 529: "overloaded_error"}
_ERROR_STATUS = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500, "invalid_request_error": 400}


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def error_event(status: int, message: str, code: str | None = None) -> bytes:
    return b"event: error\ndata: " + error_body(status, message, code) + b"\n\n"




# --- metering a stream -----------------------------------------------------------------------------------------

def meter(m, obj: dict) -> bool:
    kind = obj.get("type")
    if kind == "message_stop":
        m.finished = True
    elif kind == "message_start":
        m.usage = usage(obj.get("message") or {}) or Usage()
    elif kind == "message_delta":
        if m.usage is None:
            m.usage = Usage()
        m.usage.completion_tokens = as_int((obj.get("usage") or {}).get("output_tokens"))
    elif kind == "content_block_delta":
        delta = obj.get("delta") or {}
        text = delta.get("text", delta.get("thinking", delta.get("partial_json")))
        if isinstance(text, str) and text:
            m.text.append(text)
    return False


# --- where answer text sits (restoring, moderation) ------------------------------------------------------------

ALL = "all"


def stream_deltas(obj: dict) -> tuple[list[tuple[object, tuple, bool]], object]:
    deltas, closes = [], []
    kind = obj.get("type")
    delta = obj.get("delta")
    if kind == "content_block_delta" and isinstance(delta, dict) and isinstance(delta.get("text"), str):
        deltas.append((obj.get("index", 0), ("delta", "text"), False))
    elif kind == "content_block_stop":
        closes.append(obj.get("index", 0))
    elif kind in ("message_delta", "message_stop"):
        closes = ALL
    return deltas, closes


def refusal_events(template: dict, path: tuple, name: str, channel, message: str) -> list[bytes]:
    return [sse("content_block_delta", {"type": "content_block_delta", "index": channel,
                                        "delta": {"type": "text_delta", "text": message}}),
            sse("content_block_stop", {"type": "content_block_stop", "index": channel}),
            sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": None},
                                  "usage": {"output_tokens": 0}}),
            sse("message_stop", {"type": "message_stop"})]


def answer_items(body: dict) -> list[tuple[dict, str]]:
    return [(block, "text") for block in body.get("content") or [] if isinstance(block, dict)]


def mark_refused(body: dict) -> None:
    body["stop_reason"] = "refusal"


# --- the conversation: read (the mitmweb view) and added to (prompt decorators) ------------------------------------

def transcript(body: dict) -> list[str]:
    return ([f"system: {plain_text(body['system'])}"] if body.get("system") else []) + message_lines(body.get("messages"))


def answer_text(body: dict) -> str:
    return plain_text(body.get("content"))


def _system_blocks(system) -> list:
    if isinstance(system, str):
        return [{"type": "text", "text": system}] if system else []
    return list(system) if isinstance(system, list) else []


def decorate(body: dict, endpoint: str, before: list[dict], after: list[dict]) -> bool:
    if not isinstance(body.get("messages"), list):
        return False
    block = lambda m: {"type": "text", "text": m["content"]}  # noqa: E731
    system = [block(m) for m in before if m["role"] == "system"] + _system_blocks(body.get("system")) + \
        [block(m) for m in after if m["role"] == "system"]
    if system:
        body["system"] = system
    body["messages"] = ([dict(m) for m in before if m["role"] != "system"] + body["messages"]
                        + [dict(m) for m in after if m["role"] != "system"])
    return True


# --- translation: Messages <-> the common form -----------------------------------------------------------------

_UNTRANSLATED = ("top_k", "thinking", "service_tier", "container", "mcp_servers")
_STOPS_IN = {"end_turn": "end", "max_tokens": "length", "stop_sequence": "stop_sequence", "tool_use": "tool_calls",
             "refusal": "refusal", "pause_turn": "end"}
_STOPS_OUT = {"end": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence", "tool_calls": "tool_use",
              "refusal": "refusal"}


def _text_of(value) -> str:
    if isinstance(value, str):
        return value
    return "\n".join(b.get("text", "") for b in value or [] if isinstance(b, dict) and b.get("type") == "text")


def _block(block) -> Part | None:
    if not isinstance(block, dict):
        raise TranslationError("messages: content blocks must be objects")
    kind = block.get("type")
    if kind == "text":
        return Part("text", text=str(block.get("text", "")))
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            return Part("image", url=data_url(str(source.get("media_type", "")), str(source.get("data", ""))))
        if source.get("type") == "url":
            return Part("image", url=str(source.get("url", "")))
        raise TranslationError("messages: an image source must be base64 or url")
    if kind == "tool_use":
        return Part("tool_call", id=str(block.get("id", "")), name=str(block.get("name", "")),
                    arguments=json.dumps(block.get("input") or {}, ensure_ascii=False))
    if kind == "tool_result":
        content = block.get("content")
        parts = [Part("text", text=content)] if isinstance(content, str) else \
            [p for p in map(_block, content or []) if p is not None]
        return Part("tool_result", id=str(block.get("tool_use_id", "")), content=parts,
                    is_error=block.get("is_error") is True)
    if kind in ("thinking", "redacted_thinking"):
        return None  # the model's own notes: no counterpart, and no meaning for another model
    raise TranslationError(f"messages: a content block of type {kind!r} cannot be translated")


def parse_request(body: dict) -> Chat:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages: expected a list")
    chat = Chat(model=str(body.get("model") or ""), stream=body.get("stream") is True, system=_text_of(body.get("system")))
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise TranslationError("messages: each message needs the role user or assistant")
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise TranslationError("messages: content must be text or a list of blocks")
        chat.messages.append(Message(m["role"], [p for p in map(_block, blocks) if p is not None]))
    if isinstance(body.get("max_tokens"), int):
        chat.max_tokens = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if isinstance(body.get(name), (int, float)):
            setattr(chat, name, body[name])
    chat.stop = [s for s in body.get("stop_sequences") or [] if isinstance(s, str)]
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or "input_schema" not in tool:
            raise TranslationError("tools: only custom tools with an input_schema can be translated")
        chat.tools.append(Tool(tool["name"], str(tool.get("description") or ""), tool["input_schema"]))
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        chat.tool_choice = {"auto": "auto", "any": "required", "none": "none"}.get(kind) or (
            "tool:" + str(choice.get("name")) if kind == "tool" else None)
        if choice.get("disable_parallel_tool_use") is True:
            chat.parallel_tool_calls = False
    user = (body.get("metadata") or {}).get("user_id") if isinstance(body.get("metadata"), dict) else None
    chat.user = user if isinstance(user, str) else ""
    chat.dropped = [name for name in _UNTRANSLATED if name in body]
    return chat


def _render_part(p: Part) -> dict:
    if p.kind == "text":
        return {"type": "text", "text": p.text}
    if p.kind == "image":
        inline = split_data_url(p.url)
        source = {"type": "base64", "media_type": inline[0], "data": inline[1]} if inline else \
            {"type": "url", "url": p.url}
        return {"type": "image", "source": source}
    if p.kind == "tool_call":
        return {"type": "tool_use", "id": p.id, "name": p.name, "input": json_object(p.arguments)}
    block = {"type": "tool_result", "tool_use_id": p.id, "content": [_render_part(c) for c in p.content]}
    if p.is_error:
        block["is_error"] = True
    return block


def render_request(chat: Chat) -> dict:
    messages: list[dict] = []
    for m in chat.messages:
        blocks = [_render_part(p) for p in m.parts if not (p.kind == "text" and not p.text)]
        if not blocks:
            continue
        if messages and messages[-1]["role"] == m.role:  # tool results and the next user turn: one message
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": m.role, "content": blocks})
    body: dict = {"model": chat.model, "messages": messages, "max_tokens": chat.max_tokens or DEFAULT_MAX_TOKENS}
    if chat.system:
        body["system"] = chat.system
    if chat.temperature is not None:
        body["temperature"] = min(chat.temperature, 1.0)  # OpenAI's scale goes to 2, Anthropic's to 1
        if chat.temperature > 1:
            chat.dropped.append("temperature>1")
    if chat.top_p is not None:
        body["top_p"] = chat.top_p
    if chat.stop:
        body["stop_sequences"] = chat.stop
    if chat.stream:
        body["stream"] = True
    if chat.tools:
        body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                         for t in chat.tools]
    choice = chat.tool_choice
    if choice and chat.tools:
        rendered = {"type": "tool", "name": choice[5:]} if choice.startswith("tool:") else \
            {"type": {"auto": "auto", "required": "any", "none": "none"}.get(choice, "auto")}
        if chat.parallel_tool_calls is False:
            rendered["disable_parallel_tool_use"] = True
        body["tool_choice"] = rendered
    if chat.user:
        body["metadata"] = {"user_id": chat.user}
    return body


def parse_answer(body: dict) -> Answer:
    parts = []
    for block in body.get("content") or []:
        if isinstance(block, dict) and block.get("type") in ("text", "tool_use"):
            parts.append(_block(block))
    return Answer(str(body.get("id", "")), str(body.get("model", "")), parts,
                  _STOPS_IN.get(body.get("stop_reason"), "end"), body.get("stop_sequence"), usage(body))


def render_answer(answer: Answer) -> dict:
    return {"id": answer.id, "type": "message", "role": "assistant", "model": answer.model,
            "content": [_render_part(p) for p in answer.parts if not (p.kind == "text" and not p.text)],
            "stop_reason": _STOPS_OUT.get(answer.stop, "end_turn"), "stop_sequence": answer.stop_sequence,
            "usage": render_usage(answer.usage or Usage())}


class StreamReader:
    """Messages stream events -> common stream events."""

    def __init__(self):
        self.usage = Usage()

    def __call__(self, name: str, data: str) -> list[tuple]:
        obj = json.loads(data) if data else None
        if not isinstance(obj, dict):
            return []
        kind = obj.get("type")
        if kind == "message_start":
            message = obj.get("message") or {}
            self.usage = usage(message) or Usage()
            return [("start", str(message.get("id", "")), str(message.get("model", "")), self.usage)]
        if kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "tool_use":
                return [("tool", obj.get("index", 0), str(block.get("id", "")), str(block.get("name", "")))]
            if block.get("type") == "text" and block.get("text"):
                return [("text", obj.get("index", 0), block["text"])]
            return []
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [("text", obj.get("index", 0), str(delta.get("text", "")))]
            if delta.get("type") == "input_json_delta":
                return [("args", obj.get("index", 0), str(delta.get("partial_json", "")))]
            return []  # thinking and signatures have no counterpart
        if kind == "message_delta":
            delta, reported = obj.get("delta") or {}, obj.get("usage") or {}
            self.usage.completion_tokens = as_int(reported.get("output_tokens"))
            if reported.get("input_tokens") is not None:  # newer streams report the prompt here too
                self.usage = usage({"usage": {**render_usage(self.usage), **reported}}) or self.usage
            out = [("usage", self.usage)]
            if delta.get("stop_reason"):
                out.insert(0, ("finish", _STOPS_IN.get(delta["stop_reason"], "end"), delta.get("stop_sequence")))
            return out
        if kind == "message_stop":
            return [("end",)]
        if kind == "error":
            error = obj.get("error") or {}
            return [("error", _ERROR_STATUS.get(error.get("type"), 500), str(error.get("message", "")))]
        return []


class StreamWriter:
    """Common stream events -> Messages stream events. Blocks are numbered in order; the final message_delta waits
    for the usage (an OpenAI stream reports it after the finish reason)."""

    def __init__(self, model: str):
        self.model = model
        self.started = False
        self.blocks: dict[tuple, int] = {}     # (kind, source block) -> our index
        self.open: int | None = None
        self.stop, self.stop_sequence = "end", None
        self.usage = Usage()
        self.ended = False

    def _start(self, message_id: str = "", model: str = "") -> list[bytes]:
        self.started = True
        return [sse("message_start", {"type": "message_start", "message": {
            "id": message_id or "msg_tollgate", "type": "message", "role": "assistant", "model": model or self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {**render_usage(self.usage), "output_tokens": 0}}})]

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        index, self.open = self.open, None
        return [sse("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _open(self, key: tuple, block: dict) -> list[bytes]:
        out = self._close()
        self.blocks[key] = self.open = len(self.blocks)
        return out + [sse("content_block_start", {"type": "content_block_start", "index": self.open,
                                                  "content_block": block})]

    def __call__(self, event: tuple) -> list[bytes]:
        kind = event[0]
        out = [] if self.started or kind in ("start", "error") else self._start()
        if kind == "start":
            self.usage = event[3] or self.usage
            return self._start(event[1], event[2])
        if kind == "text":
            key = ("text", event[1])
            if self.blocks.get(key) != self.open or self.open is None:
                out += self._open(key, {"type": "text", "text": ""})
            return out + [sse("content_block_delta", {"type": "content_block_delta", "index": self.open,
                                                      "delta": {"type": "text_delta", "text": event[2]}})]
        if kind == "tool":
            return out + self._open(("tool", event[1]), {"type": "tool_use", "id": event[2], "name": event[3],
                                                         "input": {}})
        if kind == "args":
            index = self.blocks.get(("tool", event[1]), self.open)
            return out + [sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                      "delta": {"type": "input_json_delta",
                                                                "partial_json": event[2]}})]
        if kind == "finish":
            self.stop, self.stop_sequence = event[1], event[2]
            return out
        if kind == "usage":
            self.usage = event[1]
            return out
        if kind == "error":
            return [error_event(event[1], event[2])]
        if kind == "end" and not self.ended:
            self.ended = True
            return out + self._close() + [
                sse("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": _STOPS_OUT.get(self.stop, "end_turn"),
                                                "stop_sequence": self.stop_sequence},
                                      "usage": render_usage(self.usage)}),
                sse("message_stop", {"type": "message_stop"})]
        return out


MESSAGES = "messages"


def last_user_text(body: dict) -> str:
    turns = body.get("messages")
    for turn in reversed(turns if isinstance(turns, list) else []):
        if isinstance(turn, dict) and turn.get("role") == "user":
            return plain_text(turn.get("content"))
    return ""
