"""Which wire format ("dialect") a request speaks, where its model sits in the path, and the calls every step
makes by dialect; what each format says lives in its own module under wire/."""

from __future__ import annotations

import re

from . import wire
from .wire import ANTHROPIC, GEMINI, OPENAI, StreamMeter, Usage  # noqa: F401 (the names callers use)

_GEMINI_PATH = re.compile(r"/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")
_AZURE_PATH = re.compile(r"/openai/deployments/(?P<model>[^/]+)/(?P<endpoint>.+)$")


USAGE_ENDPOINTS = wire.openai.USAGE_ENDPOINTS


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


def usage_from_body(dialect: str, body) -> Usage | None:
    """Usage reported in a complete (non-streamed) answer, or None if the answer carries none."""
    return wire.of(dialect).usage(body) if isinstance(body, dict) else None


def error_body(dialect: str, status: int, message: str, code: str | None = None) -> bytes:
    """The error shape each SDK maps to its exception class (by status) and reads the message from."""
    return wire.of(dialect).error_body(status, message, code)


def error_event(dialect: str, status: int, message: str, code: str | None = None) -> bytes:
    """A final SSE event that ends a stream the gateway has to cut: the SDKs raise it as an API error."""
    return wire.of(dialect).error_event(status, message, code)
