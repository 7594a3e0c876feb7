"""LLM requests and answers as readable conversations (for the mitmweb "LLM" view): plain data in, text out."""

from __future__ import annotations

import json

from .dialects import ANTHROPIC, GEMINI, StreamMeter, usage_from_body
from .sse import SSEBuffer, parse_event


def _text(content) -> str:
    """Text of a content field: a string, or parts (text, tool calls/results, images as placeholders)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    out = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type", "")
        if isinstance(part.get("text"), str):
            out.append(part["text"])
        elif kind in ("image_url", "image", "input_image") or "inlineData" in part:
            out.append("[image]")
        elif kind == "tool_use" or "functionCall" in part:
            call = part.get("functionCall") or part
            out.append(f"[tool call {call.get('name')}: {json.dumps(call.get('input', call.get('args')))}]")
        elif kind == "tool_result" or "functionResponse" in part:
            out.append(f"[tool result: {_text(part.get('content', part.get('functionResponse')))}]")
    return "\n".join(out)


def render_request(dialect: str, body: dict) -> str:
    lines = [f"model: {body.get('model', '-')}" + ("  (stream)" if body.get("stream") else "")]
    if dialect == GEMINI:
        if body.get("systemInstruction"):
            lines.append(f"system: {_text(body['systemInstruction'].get('parts'))}")
        for turn in body.get("contents") or []:
            lines.append(f"{turn.get('role', 'user')}: {_text(turn.get('parts'))}")
        return "\n\n".join(lines)
    if dialect == ANTHROPIC and body.get("system"):
        lines.append(f"system: {_text(body['system'])}")
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            text = _text(message.get("content"))
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                text += f"\n[tool call {fn.get('name')}: {fn.get('arguments')}]"
            lines.append(f"{message.get('role', '?')}: {text}")
    if isinstance(body.get("input"), (str, list)):  # Responses API, embeddings
        lines.append(f"input: {_text(body['input']) if isinstance(body['input'], list) else body['input']}")
    if isinstance(body.get("prompt"), str):
        lines.append(f"prompt: {body['prompt']}")
    return "\n\n".join(lines)


def _usage_line(usage) -> str:
    return f"[usage: {usage.prompt_tokens} prompt → {usage.completion_tokens} completion tokens" + (
        f", {usage.cached_tokens} cached]" if usage.cached_tokens else "]") if usage else "[no usage reported]"


def render_answer(dialect: str, data: bytes, content_type: str) -> str:
    if content_type.startswith("text/event-stream"):
        meter, buffer = StreamMeter(dialect), SSEBuffer()
        for raw in buffer.feed(data) + [buffer.flush()]:
            if raw.strip():
                meter.feed(*reversed(parse_event(raw)))
        return f"assistant (streamed, {meter.events} events):\n{meter.streamed_text}\n\n{_usage_line(meter.usage)}"
    body = json.loads(data)
    if dialect == ANTHROPIC:
        text = _text(body.get("content"))
    elif dialect == GEMINI:
        text = "\n".join(_text((c.get("content") or {}).get("parts")) for c in body.get("candidates") or [])
    else:
        choices = body.get("choices") or []
        text = "\n".join(_text((c.get("message") or {}).get("content")) or c.get("text", "") for c in choices)
        for choice in choices:
            for call in (choice.get("message") or {}).get("tool_calls") or []:
                fn = call.get("function") or {}
                text += f"\n[tool call {fn.get('name')}: {fn.get('arguments')}]"
    if "error" in body and not text:
        return f"error: {json.dumps(body['error'], indent=2)}"
    return f"assistant:\n{text}\n\n{_usage_line(usage_from_body(dialect, body))}"
