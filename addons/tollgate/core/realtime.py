"""Realtime sessions (OpenAI's /v1/realtime over WebSocket) as plain data: where client events carry text the prompt
rules must see, what a response will cost at most, and the usage the provider reports when a response is done."""

from __future__ import annotations

import json

from .dialects import Usage

# Server events whose text is the answer being streamed (for an estimate when a session is cut mid-response).
_DELTAS = ("response.output_text.delta", "response.text.delta", "response.audio_transcript.delta")


def is_realtime(path: str) -> bool:
    return path.rstrip("/").endswith("/realtime")


def parse(data: str | bytes) -> dict | None:
    try:
        event = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None


def text_slots(event: dict) -> list[tuple[object, object]]:
    """(container, key) of every piece of text a client event hands the model: conversation items' text parts,
    session and response instructions."""
    slots: list[tuple[object, object]] = []
    kind = event.get("type")
    if kind == "conversation.item.create" and isinstance(item := event.get("item"), dict):
        for part in item.get("content") or [] if isinstance(item.get("content"), list) else []:
            if isinstance(part, dict):
                slots += [(part, k) for k in ("text", "transcript") if isinstance(part.get(k), str)]
        if isinstance(item.get("output"), str):  # function_call_output
            slots.append((item, "output"))
    for holder in ("session", "response"):
        if kind in ("session.update", "response.create") and isinstance(inner := event.get(holder), dict):
            if isinstance(inner.get("instructions"), str):
                slots.append((inner, "instructions"))
    return slots


def max_output(event: dict, default: int) -> int:
    """The output a response.create may produce at most (its max_output_tokens, 'inf' meaning the default)."""
    response = event.get("response") if isinstance(event.get("response"), dict) else {}
    value = response.get("max_output_tokens", response.get("max_response_output_tokens"))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def usage_of(event: dict) -> Usage | None:
    """The usage of a response.done event."""
    response = event.get("response")
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    def count(name):
        value = usage.get(name)
        return value if isinstance(value, int) and value >= 0 else 0
    details = usage.get("input_token_details")
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    return Usage(count("input_tokens"), count("output_tokens"), cached if isinstance(cached, int) else 0)


def delta_text(event: dict) -> str:
    return event["delta"] if event.get("type") in _DELTAS and isinstance(event.get("delta"), str) else ""


def error_event(message: str, code: str) -> bytes:
    """What the client gets instead of a refused event: the Realtime API's own error event."""
    return json.dumps({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                  "message": message}}).encode()
