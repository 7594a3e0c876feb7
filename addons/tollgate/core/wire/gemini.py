"""Gemini's native generateContent API (its OpenAI-compatible endpoint speaks openai.py)."""

from __future__ import annotations

import copy
import json

from .common import Usage, as_int, error_message, plain_text, sse

NAME = "gemini"
CHAT_ENDPOINT = None  # not translated to or from (yet): a Gemini client reaches Gemini-format providers only


def usage(body) -> Usage | None:
    meta = body.get("usageMetadata") if isinstance(body, dict) else None
    if not isinstance(meta, dict):
        return None
    return Usage(as_int(meta.get("promptTokenCount")),
                 as_int(meta.get("candidatesTokenCount")) + as_int(meta.get("thoughtsTokenCount")),
                 as_int(meta.get("cachedContentTokenCount")))


_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
           504: "DEADLINE_EXCEEDED"}


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}).encode()


def error_event(status: int, message: str, code: str | None = None) -> bytes:
    return b"data: " + error_body(status, message, code) + b"\n\n"




def meter(m, obj: dict) -> bool:
    m.usage = usage(obj) or m.usage
    for cand in obj.get("candidates") or []:
        if isinstance(cand, dict) and cand.get("finishReason"):
            m.finished = True
        for part in ((cand or {}).get("content") or {}).get("parts") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
                m.text.append(part["text"])
    return False


def stream_deltas(obj: dict) -> tuple[list[tuple[object, tuple, bool]], object]:
    deltas, closes = [], []
    for i, cand in enumerate(obj.get("candidates") or []):
        if not isinstance(cand, dict):
            continue
        channel, done = cand.get("index", i), "finishReason" in cand
        parts = (cand.get("content") or {}).get("parts") or []
        texts = [j for j, part in enumerate(parts) if isinstance(part, dict) and isinstance(part.get("text"), str)]
        for j in texts:
            deltas.append((channel, ("candidates", i, "content", "parts", j, "text"), done and j == texts[-1]))
        if done and not texts:
            closes.append(channel)
    return deltas, closes


def refusal_events(template: dict, path: tuple, name: str, channel, message: str) -> list[bytes]:
    obj = copy.deepcopy(template)
    obj["candidates"] = [{"content": {"role": "model", "parts": [{"text": message}]}, "finishReason": "SAFETY",
                          "index": channel}]
    return [sse(name, obj)]


def answer_items(body: dict) -> list[tuple[dict, str]]:
    return [(part, "text") for cand in body.get("candidates") or [] if isinstance(cand, dict)
            for part in (cand.get("content") or {}).get("parts") or [] if isinstance(part, dict)]


def mark_refused(body: dict) -> None:
    for cand in body.get("candidates") or []:
        if isinstance(cand, dict):
            cand["finishReason"] = "SAFETY"


def transcript(body: dict) -> list[str]:
    lines = []
    if isinstance(body.get("systemInstruction"), dict):
        lines.append(f"system: {plain_text(body['systemInstruction'].get('parts'))}")
    for turn in body.get("contents") or []:
        if isinstance(turn, dict):
            lines.append(f"{turn.get('role', 'user')}: {plain_text(turn.get('parts'))}")
    return lines


def answer_text(body: dict) -> str:
    return "\n".join(plain_text((c.get("content") or {}).get("parts")) for c in body.get("candidates") or []
                     if isinstance(c, dict))


def decorate(body: dict, endpoint: str, before: list[dict], after: list[dict]) -> bool:
    if not isinstance(body.get("contents"), list):
        return False
    turn = lambda m: {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}  # noqa: E731
    first = [{"text": m["content"]} for m in before if m["role"] == "system"]
    last = [{"text": m["content"]} for m in after if m["role"] == "system"]
    if first or last:
        instruction = body.pop("system_instruction", None) or body.get("systemInstruction") or {}
        parts = instruction.get("parts") if isinstance(instruction, dict) else None
        body["systemInstruction"] = {"parts": first + (parts if isinstance(parts, list) else []) + last}
    body["contents"] = ([turn(m) for m in before if m["role"] != "system"] + body["contents"]
                        + [turn(m) for m in after if m["role"] != "system"])
    return True


MESSAGES = "contents"


def last_user_text(body: dict) -> str:
    turns = body.get("contents")
    for turn in reversed(turns if isinstance(turns, list) else []):
        if isinstance(turn, dict) and turn.get("role", "user") == "user":
            return plain_text(turn.get("parts"))
    return ""
