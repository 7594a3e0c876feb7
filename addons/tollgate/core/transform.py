"""AI transformation of HTTP messages (seed 002's intelligent request/response transformation): configuration, the
message a model is shown, and the strict reading of the message it answers with. Plain data.

  transform:
    - name: xml-to-json
      match: {host: "httpbin.org", path: "/xml"}     # any host; decrypted only because it is listed
      response:
        prompt: "Change content-type to application/json; convert the XML body to JSON; drop content-length."
      provider: qwen
      model: qwen-max
      on_error: passthrough                           # passthrough (leave the original) | fail (502)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .providers import split_host
from .schema import ConfigError, choice, list_of, mapping, parse_duration, parse_size, string, unique

SYSTEM_PROMPT = ("You rewrite HTTP messages. Apply the instruction to the HTTP message you are given and answer "
                 "with the complete rewritten HTTP message only: the start line, the headers, a blank line, the "
                 "body. No explanations, no code fences.")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
        "proxy-connection", "content-encoding"}


@dataclass(frozen=True)
class Transform:
    name: str
    host: str                       # host pattern ("api.example.com", "*.example.com"), port 443 unless given
    path: str                       # path glob ("/xml", "/v1/*")
    request_prompt: str
    response_prompt: str
    provider: str
    model: str
    on_error: str = "passthrough"   # passthrough | fail
    max_bytes: int = 256 * 1024     # larger messages are left as they are (and the model's answer is bounded too)
    timeout_s: float = 30.0
    cache_ttl_s: float = 3600.0

    @property
    def hostport(self) -> str:
        return "{}:{}".format(*split_host(self.host))

    def matches(self, host: str, port: int, path: str) -> bool:
        pattern_host, pattern_port = split_host(self.host)
        return (port == pattern_port and fnmatchcase(host.lower().rstrip("."), pattern_host)
                and fnmatchcase(path.split("?", 1)[0], self.path))


def parse_transform(node, providers: dict) -> tuple[Transform, ...]:
    rules, names = [], set()
    for i, item in enumerate(list_of(node, "transform")):
        path = f"transform[{i}]"
        item = mapping(item, path, {"name", "match", "request", "response", "provider", "model", "on_error",
                                    "max_bytes", "timeout", "cache_ttl"})
        match = mapping(item.get("match"), f"{path}.match", {"host", "path"})
        prompts = {}
        for side in ("request", "response"):
            part = mapping(item.get(side), f"{path}.{side}", {"prompt"})
            prompts[side] = string(part.get("prompt"), f"{path}.{side}.prompt", required=False)
        if not any(prompts.values()):
            raise ConfigError(f"{path}: give a request and/or a response prompt")
        provider = string(item.get("provider"), f"{path}.provider")
        if provider not in providers:
            raise ConfigError(f"{path}.provider: no provider named {provider!r} (have: {', '.join(providers)})")
        rules.append(Transform(unique(string(item.get("name"), f"{path}.name"), names, f"{path}.name", "transform"),
                               string(match.get("host"), f"{path}.match.host").lower(),
                               string(match.get("path", "*"), f"{path}.match.path"),
                               prompts["request"], prompts["response"], provider, string(item.get("model"),
                                                                                        f"{path}.model"),
                               choice(item.get("on_error", "passthrough"), f"{path}.on_error", ("passthrough", "fail")),
                               parse_size(item.get("max_bytes", "256KB"), f"{path}.max_bytes"),
                               parse_duration(item.get("timeout", 30), f"{path}.timeout"),
                               parse_duration(item.get("cache_ttl", "1h"), f"{path}.cache_ttl")))
    return tuple(rules)


VOLATILE = {"date", "age", "expires", "last-modified", "etag", "x-request-id"}  # would defeat the result cache
# Credentials are never shown to a model: they stay on the message as they were (see kept_credentials).
CREDENTIALS = {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
               "x-goog-api-key", "x-auth-token"}


def kept_credentials(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() in CREDENTIALS]


def render_message(start_line: str, headers: list[tuple[str, str]], body: str) -> str:
    """The HTTP message a model is shown (credentials and headers that change on every message left out)."""
    kept = "".join(f"{k}: {v}\r\n" for k, v in headers if k.lower() not in VOLATILE | CREDENTIALS)
    return start_line + "\r\n" + kept + "\r\n" + body


def cache_key(rule: Transform, side: str, message: str) -> str:
    material = "\n".join((rule.name, side, rule.model, rule.request_prompt if side == "request" else
                          rule.response_prompt, message))
    return "tollgate:transform:" + hashlib.sha256(material.encode()).hexdigest()


class Invalid(ValueError):
    """The model's answer is not an HTTP message the gateway will pass on."""


def parse_message(text: str, side: str, max_bytes: int) -> tuple[str, list[tuple[str, str]], bytes]:
    """(start line, headers, body) of the model's answer, read strictly: a start line of the right kind, header
    names that are tokens, values without control characters, a body within max_bytes. Content-Length is left to
    the caller to recompute; framing and encoding headers are dropped."""
    text = text.strip()
    if text.startswith("```"):  # a fenced answer despite the instructions
        text = re.sub(r"^```[a-zA-Z]*\n|\n?```$", "", text).strip()
    head, sep, body = text.replace("\r\n", "\n").partition("\n\n")
    if not sep and "\n" not in head:
        raise Invalid("no headers")
    lines = head.split("\n")
    start = lines[0].strip()
    if side == "response" and not re.fullmatch(r"HTTP/\d(\.\d)? \d{3}( .*)?", start):
        raise Invalid(f"not a status line: {start[:40]!r}")
    if side == "request" and not re.fullmatch(r"[A-Z]+ \S+ HTTP/\d(\.\d)?", start):
        raise Invalid(f"not a request line: {start[:40]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not _TOKEN.match(name):
            raise Invalid(f"not a header: {line[:40]!r}")
        if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
            raise Invalid(f"control characters in header {name}")
        if name.lower() not in _HOP and name.lower() not in CREDENTIALS:  # the original's stay (kept_credentials)
            headers.append((name, value))
    data = body.encode()
    if len(data) > max_bytes:
        raise Invalid(f"body larger than {max_bytes} bytes")
    return start, headers, data
