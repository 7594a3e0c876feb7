"""LLM requests and answers as readable conversations (for the mitmweb "LLM" view): plain data in, text out."""

from __future__ import annotations

import json
import textwrap

from . import wire
from .dialects import StreamMeter, usage_from_body
from .sse import SSEBuffer, parse_event


def render_request(dialect: str, body: dict) -> str:
    lines = [f"model: {body.get('model', '-')}" + ("  (stream)" if body.get("stream") else "")]
    return "\n\n".join(lines + wire.of(dialect).transcript(body))


WIDTH = 100  # mitmweb shows views as preformatted text: long answers would be one endless line


def wrap(text: str) -> str:
    """Every line at most WIDTH characters; the text's own line breaks and indentation stay."""
    return "\n".join(piece for line in text.split("\n")
                     for piece in (textwrap.wrap(line, WIDTH, replace_whitespace=False, drop_whitespace=False,
                                                 subsequent_indent=" " * (len(line) - len(line.lstrip())))
                                   or [""]))


def render_record(row: dict) -> str:
    """The head of every view of an LLM call: what the gateway decided and metered (a ledger row, or the record so
    far while the call is out)."""
    who = row.get("consumer") or "-"
    if row.get("group"):
        who += f" ({row['group']})"
    model = row.get("model") or row.get("requested_model") or "-"
    if row.get("requested_model") and row.get("model") and row["requested_model"] != row["model"]:
        model = f"{row['requested_model']} → {model}"
    tokens = f"{row.get('prompt_tokens', 0)} prompt → {row.get('completion_tokens', 0)} completion tokens"
    if row.get("cached_tokens"):
        tokens += f", {row['cached_tokens']} cached"
    if row.get("usage_source"):
        tokens += f" ({row['usage_source']})"
    money = f"cost ${row.get('cost_usd') or 0:.6f}"
    if row.get("saved_usd"):
        money += f", saved ${row['saved_usd']:.6f} by the cache"
    lines = [
        f"decision: {row.get('decision') or '-'}" + (f"  status {row['status']}" if row.get("status") else "")
        + ("  (call still out)" if not row.get("status") else ""),
        f"consumer: {who}",
        f"model:    {model} via {row.get('provider') or '-'}",
        f"usage:    {tokens}",
        f"money:    {money}" + (f" (priced by {row['priced_by']})" if row.get("priced_by") else ""),
    ]
    if (row.get("attempts") or 0) > 1:
        lines.append(f"route:    {row['attempts']} attempts; failed: {row.get('failed_targets') or '-'}")
    if row.get("upstream_dialect") and row.get("dialect") and row["upstream_dialect"] != row["dialect"]:
        lines.append(f"wire:     {row['dialect']} → {row['upstream_dialect']} (translated)"
                     + (f"; dropped: {row['dropped']}" if row.get("dropped") else ""))
    for key in ("cache", "guard", "moderation", "prompts", "limited_by", "reason"):
        if row.get(key):
            lines.append(f"{key + ':':<9} {row[key]}")
    return "\n".join(["── tollgate " + "─" * 40, *lines, "─" * 52, ""])


def _usage_line(usage, metered: bool = False) -> str:
    if usage is None:  # e.g. a stream whose usage chunk the gateway asked for and kept from the client
        return "[no usage in this answer; the gateway's count is in the record above]" if metered else \
            "[no usage reported]"
    return f"[usage: {usage.prompt_tokens} prompt → {usage.completion_tokens} completion tokens" + (
        f", {usage.cached_tokens} cached]" if usage.cached_tokens else "]")


def render_answer(dialect: str, data: bytes, content_type: str, metered: bool = False) -> str:
    if content_type.startswith("text/event-stream"):
        meter, buffer = StreamMeter(dialect), SSEBuffer()
        for raw in buffer.feed(data) + [buffer.flush()]:
            if raw.strip():
                meter.feed(*reversed(parse_event(raw)))
        return (f"assistant (streamed, {meter.events} events):\n{meter.streamed_text}\n\n"
                f"{_usage_line(meter.usage, metered)}")
    body = json.loads(data)
    text = wire.of(dialect).answer_text(body) if isinstance(body, dict) else ""
    if "error" in body and not text:
        return f"error: {json.dumps(body['error'], indent=2)}"
    return f"assistant:\n{text}\n\n{_usage_line(usage_from_body(dialect, body), metered)}"
