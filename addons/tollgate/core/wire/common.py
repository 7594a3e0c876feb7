"""The common form every wire format parses to and renders from: a chat request, its answer, and the events of a
streamed answer. Translating between two wire formats is parsing with one module and rendering with the other."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Usage:
    prompt_tokens: int = 0            # every prompt token, cached ones included
    completion_tokens: int = 0
    cached_tokens: int = 0            # read from the provider's prompt cache
    cache_write_tokens: int = 0       # written to it (Anthropic)


@dataclass
class Part:
    kind: str                         # text | image | tool_call | tool_result
    text: str = ""
    url: str = ""                     # image: an http(s) URL or a data: URL
    id: str = ""                      # tool_call / tool_result: the call's id
    name: str = ""
    arguments: str = "{}"             # tool_call: the arguments as JSON text
    content: list[Part] = field(default_factory=list)  # tool_result: its text and image parts
    is_error: bool = False


@dataclass
class Message:
    role: str                         # user | assistant
    parts: list[Part]


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict


@dataclass
class Chat:
    model: str = ""
    system: str = ""
    messages: list[Message] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    stream_usage: bool = False        # an OpenAI client asked for the usage chunk
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str | None = None    # auto | none | required | "tool:<name>"
    parallel_tool_calls: bool | None = None
    user: str = ""
    dropped: list[str] = field(default_factory=list)  # fields with no counterpart in the other format


# Why an answer stopped, in common words: end | length | tool_calls | stop_sequence | refusal
@dataclass
class Answer:
    id: str
    model: str
    parts: list[Part]                 # text and tool_call parts
    stop: str = "end"
    stop_sequence: str | None = None
    usage: Usage | None = None


# Stream events, as tuples: ("start", id, model, usage|None), ("text", block, text), ("tool", block, id, name),
# ("args", block, json piece), ("finish", stop, stop_sequence), ("usage", Usage), ("end",), ("error", status, msg)


class TranslationError(ValueError):
    """The request cannot be said in the other wire format; the message is safe to show to the client."""


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def split_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a data: URL, or None for any other URL."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    head, data = url[5:].split(";base64,", 1)
    return head or "application/octet-stream", data


def as_int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def sse(name: str, obj) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {name}\n" if name else "").encode() + f"data: {data}\n\n".encode()


def json_text(value) -> str:
    """Tool arguments as JSON text, whatever the client sent (an object, or text already)."""
    return value if isinstance(value, str) else json.dumps(value if value is not None else {}, ensure_ascii=False)


def json_object(text: str) -> dict:
    """Tool arguments as an object (Anthropic's input): text that is no JSON object is kept under "arguments"."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"arguments": text}
    return value if isinstance(value, dict) else {"arguments": value}


def plain_text(content) -> str:
    """Text of a content field in any format: a string, or parts (text, tool calls/results, images as placeholders)."""
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
            out.append(f"[tool result: {plain_text(part.get('content', part.get('functionResponse')))}]")
    return "\n".join(out)


def message_lines(messages) -> list[str]:
    """"role: text" for chat messages (OpenAI's and Anthropic's share this shape), tool calls included."""
    lines = []
    for message in messages or []:
        if isinstance(message, dict):
            text = plain_text(message.get("content"))
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                text += f"\n[tool call {fn.get('name')}: {fn.get('arguments')}]"
            lines.append(f"{message.get('role', '?')}: {text}")
    return lines


def error_message(body) -> str | None:
    """The message of an `{"error": {"message": …}}` body (OpenAI's, Anthropic's and Gemini's errors all have it)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return error if isinstance(error, str) else None
