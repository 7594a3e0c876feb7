"""Seed 000's prompt-in-URL endpoint: `GET /?text=Say,hello` on the reverse listener answers with the model's
completion. The call is an ordinary chat completion from the moment it is read, so every check applies to it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from .schema import ConfigError, choice, count, mapping, string

ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True)
class UrlPrompt:
    model: str
    param: str = "text"           # the query parameter that holds the prompt
    path: str = "/"               # where it answers on the reverse listener
    max_tokens: int = 256
    output: str = "text"          # text: the completion as plain text | json: {"text", "model", "usage"}


def parse_url_prompt(node) -> UrlPrompt | None:
    if node is None:
        return None
    node = mapping(node, "url_prompt", {"model", "param", "path", "max_tokens", "output"})
    path = string(node.get("path", "/"), "url_prompt.path")
    if not path.startswith("/"):
        raise ConfigError(f"url_prompt.path: expected a path starting with '/', got {path!r}")
    return UrlPrompt(string(node.get("model"), "url_prompt.model"), string(node.get("param", "text"), "url_prompt.param"),
                     path, count(node.get("max_tokens", 256), "url_prompt.max_tokens"),
                     choice(node.get("output", "text"), "url_prompt.output", ("text", "json")))


def as_chat(config: UrlPrompt, path: str, query: str) -> tuple[str, bytes] | None:
    """(the query left once the prompt is taken out, the chat completion body), or None if this is no such call."""
    if path != config.path:
        return None
    pairs = parse_qsl(query, keep_blank_values=True)
    prompt = next((value for name, value in pairs if name == config.param), None)
    if prompt is None:
        return None
    rest = urlencode([(n, v) for n, v in pairs if n != config.param])
    body = {"model": config.model, "max_tokens": config.max_tokens, "messages": [{"role": "user", "content": prompt}]}
    return rest, json.dumps(body, ensure_ascii=False).encode()


def render(config: UrlPrompt, answer: dict) -> tuple[str, bytes]:
    """(content type, body) of a chat completion answer in the endpoint's output form."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    text = message.get("content") if isinstance(message, dict) and isinstance(message.get("content"), str) else ""
    if config.output == "json":
        return "application/json", json.dumps({"text": text, "model": answer.get("model", ""),
                                               "usage": answer.get("usage")}, ensure_ascii=False).encode()
    return "text/plain; charset=utf-8", (text + "\n").encode()
