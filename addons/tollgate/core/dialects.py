"""Wire formats ("dialects"): where the model sits, how usage is reported, what an error looks like.

Three wire formats cover every supported provider: OpenAI's (and everything OpenAI-compatible), Anthropic's
Messages API and Gemini's native generateContent. Everything here takes and returns plain data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

OPENAI, ANTHROPIC, GEMINI = "openai", "anthropic", "gemini"

_GEMINI_PATH = re.compile(r"/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")
_AZURE_PATH = re.compile(r"/openai/deployments/(?P<model>[^/]+)/(?P<endpoint>.+)$")


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0


USAGE_ENDPOINTS = ("/chat/completions", "/completions")  # OpenAI endpoints whose streams can report usage


def wants_stream_usage(body: dict) -> bool:
    """Did the client itself ask for the usage chunk of an OpenAI stream?"""
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def dialect_of_path(path: str) -> str:
    """The wire format a request path speaks (query string excluded)."""
    if path.endswith("/messages") or path.endswith("/messages/count_tokens"):
        return ANTHROPIC
    if _GEMINI_PATH.search(path) and "/openai/" not in path:
        return GEMINI
    return OPENAI


def gemini_path_parts(path: str) -> tuple[str, str] | None:
    """(model, method) of a native Gemini path such as /v1beta/models/gemini-2.0-flash:generateContent."""
    m = _GEMINI_PATH.search(path)
    return (m["model"], m["method"]) if m else None


def azure_path_parts(path: str) -> tuple[str, str] | None:
    """(deployment, endpoint) of an Azure OpenAI deployment path."""
    m = _AZURE_PATH.search(path)
    return (m["model"], m["endpoint"]) if m else None


def replace_gemini_model(path: str, model: str) -> str:
    return _GEMINI_PATH.sub(lambda m: f"/models/{model}:{m['method']}", path)


def _int(value) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def usage_from_body(dialect: str, body: dict) -> Usage | None:
    """Usage reported in a complete (non-streamed) answer, or None if the answer carries none."""
    if not isinstance(body, dict):
        return None
    if dialect == GEMINI:
        meta = body.get("usageMetadata")
        if not isinstance(meta, dict):
            return None
        return Usage(
            _int(meta.get("promptTokenCount")),
            _int(meta.get("candidatesTokenCount")) + _int(meta.get("thoughtsTokenCount")),
            _int(meta.get("cachedContentTokenCount")),
        )
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    if dialect == ANTHROPIC:
        cached = _int(usage.get("cache_read_input_tokens"))
        created = _int(usage.get("cache_creation_input_tokens"))
        return Usage(_int(usage.get("input_tokens")) + cached + created, _int(usage.get("output_tokens")), cached,
                     created)
    # OpenAI: chat/completions use prompt/completion_tokens, the Responses API input/output_tokens.
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    return Usage(
        _int(usage.get("prompt_tokens", usage.get("input_tokens"))),
        _int(usage.get("completion_tokens", usage.get("output_tokens"))),
        _int(details.get("cached_tokens")) if isinstance(details, dict) else 0,
    )


@dataclass
class StreamMeter:
    """Follows the events of one streamed answer: usage as reported, and the text streamed so far
    (to count tokens when the stream is cut before the provider reports usage)."""

    dialect: str
    usage: Usage | None = None
    text: list[str] = field(default_factory=list)  # non-empty pieces only: the first one marks the first token
    events: int = 0
    finished: bool = False  # the provider's final event came ([DONE], message_stop, response.completed, finishReason)

    def feed(self, data: str, event: str = "") -> bool:
        """Takes one SSE event's data. Returns True if this is an OpenAI usage-only chunk (no choices)."""
        self.events += 1
        if data == "[DONE]":
            self.finished = True
            return False
        if not data:
            return False
        try:
            obj = json.loads(data)
        except ValueError:
            return False
        if not isinstance(obj, dict):
            return False
        if self.dialect == ANTHROPIC:
            self._anthropic(obj)
            return False
        if self.dialect == GEMINI:
            self.usage = usage_from_body(GEMINI, obj) or self.usage
            for cand in obj.get("candidates") or []:
                if isinstance(cand, dict) and cand.get("finishReason"):
                    self.finished = True
                for part in ((cand or {}).get("content") or {}).get("parts") or []:
                    if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
                        self.text.append(part["text"])
            return False
        return self._openai(obj)

    def _openai(self, obj: dict) -> bool:
        kind = obj.get("type")
        if isinstance(kind, str) and kind.startswith("response."):  # Responses API events
            if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str) and obj["delta"]:
                self.text.append(obj["delta"])
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                self.usage = usage_from_body(OPENAI, obj.get("response") or {}) or self.usage
                self.finished = True
            return False
        choices = obj.get("choices")
        for choice in choices or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                self.text.append(content)
            elif isinstance(choice.get("text"), str) and choice["text"]:  # legacy completions
                self.text.append(choice["text"])
        if isinstance(obj.get("usage"), dict):
            self.usage = usage_from_body(OPENAI, obj)
            return choices == []
        return False

    def _anthropic(self, obj: dict) -> None:
        kind = obj.get("type")
        if kind == "message_stop":
            self.finished = True
        elif kind == "message_start":
            self.usage = usage_from_body(ANTHROPIC, obj.get("message") or {}) or Usage()
        elif kind == "message_delta":
            out = (obj.get("usage") or {}).get("output_tokens")
            if self.usage is None:
                self.usage = Usage()
            self.usage.completion_tokens = _int(out)
        elif kind == "content_block_delta":
            delta = obj.get("delta") or {}
            text = delta.get("text", delta.get("thinking", delta.get("partial_json")))
            if isinstance(text, str) and text:
                self.text.append(text)

    @property
    def streamed_text(self) -> str:
        return "".join(self.text)


# Error shapes: each SDK maps the HTTP status to its exception class and reads the message from these bodies.
_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                 404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    503: "overloaded_error", 529: "overloaded_error"}
_GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                  504: "DEADLINE_EXCEEDED"}


def error_body(dialect: str, status: int, message: str, code: str | None = None) -> bytes:
    if dialect == ANTHROPIC:
        kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        body: dict = {"type": "error", "error": {"type": kind, "message": message}}
    elif dialect == GEMINI:
        body = {"error": {"code": status, "message": message, "status": _GEMINI_STATUS.get(status, "UNKNOWN")}}
    else:
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return json.dumps(body).encode()


def error_event(dialect: str, status: int, message: str, code: str | None = None) -> bytes:
    """A final SSE event that ends a stream the gateway has to cut: the SDKs raise it as an API error."""
    if dialect == ANTHROPIC:
        return b"event: error\ndata: " + error_body(dialect, status, message, code) + b"\n\n"
    return b"data: " + error_body(dialect, status, message, code) + b"\n\n"
