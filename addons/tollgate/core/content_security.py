"""Content security services behind the gate's own rules (seed 002's AI Content Security): configuration, what a
service's answer means, and the verdict. Plain data; the calls are made in content_security.py.

  content_security:
    services:
      - {name: omni, type: openai-moderation, provider: openai, model: omni-moderation-latest}
      - {name: guard, type: llm-judge, provider: local, model: llama-guard-3, prompt: config/judge-prompt.txt}
      - {name: corp, type: webhook, url: "http://dlp.internal:8080/check", timeout: 500ms}
    rules:
      - {name: harmful, service: omni, on: [prompt, answer], categories: [violence, self-harm, hate], threshold: 0.5}
      - {name: dlp, service: corp, on: [prompt], groups: [research]}
    on_error: open          # open | closed: what a timeout or a failing service means
    window_chars: 500       # a streamed answer is checked in windows of this many characters
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .schema import (ConfigError, choice, count, known_names, list_of, mapping, parse_duration, patterns, string,
                     unique)

TYPES = ("openai-moderation", "llm-judge", "webhook")
DIRECTIONS = ("prompt", "answer")
DEFAULT_JUDGE_PROMPT = ("You are a safety judge. Classify the user's text. Answer 'safe', or 'unsafe' followed by a "
                        "line with the violated categories, comma-separated.")


@dataclass(frozen=True)
class Service:
    name: str
    type: str
    provider: str = ""
    model: str = ""
    prompt: str = DEFAULT_JUDGE_PROMPT   # llm-judge: its instructions (text, or read from a file)
    url: str = ""                        # webhook
    timeout_s: float = 2.0
    concurrency: int = 16                # calls in flight to this service at most


@dataclass(frozen=True)
class Rule:
    name: str
    service: str
    on: tuple[str, ...] = DIRECTIONS
    categories: tuple[str, ...] = ()     # empty: any category the service flags
    threshold: float = 0.5               # openai-moderation: category score at or above this flags
    groups: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()

    def applies_to(self, direction: str, consumer: str, group: str) -> bool:
        return (direction in self.on and (not self.groups or group in self.groups)
                and (not self.consumers or consumer in self.consumers))


@dataclass(frozen=True)
class ContentSecurity:
    services: dict[str, Service]
    rules: tuple[Rule, ...]
    on_error: str = "open"
    window_chars: int = 500
    cache_ttl_s: float = 3600.0


@dataclass
class Verdict:
    action: str = "allow"                # allow | block | mask | error
    category: str = ""
    reason: str = ""
    spans: list = field(default_factory=list)  # mask: [start, end] of the text to hide

    def pack(self) -> bytes:
        return json.dumps([self.action, self.category, self.reason, self.spans]).encode()

    @classmethod
    def unpack(cls, data: bytes) -> Verdict | None:
        try:
            action, category, reason, spans = json.loads(data)
        except (ValueError, TypeError):
            return None
        return cls(action, category, reason, spans)


def parse_content_security(node, providers: dict, groups: dict, consumer_names: set[str],
                           base_dir: str | None) -> ContentSecurity | None:
    if node is None:
        return None
    node = mapping(node, "content_security", {"services", "rules", "on_error", "window_chars", "cache_ttl"})
    services: dict[str, Service] = {}
    for i, item in enumerate(list_of(node.get("services"), "content_security.services")):
        path = f"content_security.services[{i}]"
        item = mapping(item, path, {"name", "type", "provider", "model", "prompt", "url", "timeout", "concurrency"})
        name = unique(string(item.get("name"), f"{path}.name"), set(services), f"{path}.name", "service")
        kind = choice(item.get("type"), f"{path}.type", TYPES)
        provider = string(item.get("provider"), f"{path}.provider", required=kind != "webhook")
        if provider and provider not in providers:
            raise ConfigError(f"{path}.provider: no provider named {provider!r} (have: {', '.join(providers)})")
        prompt = string(item.get("prompt"), f"{path}.prompt", required=False) or DEFAULT_JUDGE_PROMPT
        if prompt.endswith(".txt"):
            try:
                prompt = (Path(base_dir or ".") / prompt).read_text()
            except OSError as e:
                raise ConfigError(f"{path}.prompt: cannot read {prompt}: {e.strerror}") from None
        url = string(item.get("url"), f"{path}.url", required=kind == "webhook")
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{path}.url: expected an http(s) URL, got {url!r}")
        services[name] = Service(name, kind, provider,
                                 string(item.get("model"), f"{path}.model", required=kind != "webhook"),
                                 prompt, url, parse_duration(item.get("timeout", 2), f"{path}.timeout"),
                                 count(item.get("concurrency", 16), f"{path}.concurrency"))
    rules, names = [], set()
    for i, item in enumerate(list_of(node.get("rules"), "content_security.rules")):
        path = f"content_security.rules[{i}]"
        item = mapping(item, path, {"name", "service", "on", "categories", "threshold", "groups", "consumers"})
        known_names(item, path, groups, consumer_names)
        service = string(item.get("service"), f"{path}.service")
        if service not in services:
            raise ConfigError(f"{path}.service: no service named {service!r} (have: {', '.join(services) or 'none'})")
        on = tuple(choice(d, f"{path}.on[{j}]", DIRECTIONS)
                   for j, d in enumerate(list_of(item.get("on", list(DIRECTIONS)), f"{path}.on")))
        threshold = item.get("threshold", 0.5)
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
            raise ConfigError(f"{path}.threshold: expected a score from 0 to 1, got {threshold!r}")
        rules.append(Rule(unique(string(item.get("name"), f"{path}.name"), names, f"{path}.name", "rule"), service,
                          on, tuple(patterns(item, "categories", path) or ()), float(threshold),
                          tuple(patterns(item, "groups", path) or ()), tuple(patterns(item, "consumers", path) or ())))
    window = count(node.get("window_chars", 500), "content_security.window_chars", minimum=50)
    return ContentSecurity(services, tuple(rules), choice(node.get("on_error", "open"), "content_security.on_error",
                                                          ("open", "closed")), window,
                           parse_duration(node.get("cache_ttl", "1h"), "content_security.cache_ttl"))


def verdict_key(rule: Rule, direction: str, text: str) -> str:
    """The verdict cache's key: the same text under the same rule is checked once."""
    material = "\n".join((rule.name, rule.service, ",".join(rule.categories), str(rule.threshold), direction, text))
    return "tollgate:verdict:" + hashlib.sha256(material.encode()).hexdigest()


def moderation_verdict(rule: Rule, answer: dict) -> Verdict:
    """OpenAI's /v1/moderations answer: the highest-scoring category among the rule's at or above its threshold."""
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or not results or not isinstance(results[0], dict):
        raise ValueError("no results in the moderation answer")
    scores = results[0].get("category_scores") or {}
    flagged = [(float(score), name) for name, score in scores.items()
               if isinstance(score, (int, float)) and score >= rule.threshold
               and (not rule.categories or name in rule.categories)]
    if not flagged:
        return Verdict()
    score, name = max(flagged)
    return Verdict("block", name, f"{name} {score:.2f}")


def judge_verdict(rule: Rule, text: str) -> Verdict:
    """A judge model's answer: 'safe', or 'unsafe' and the categories on the next line (Llama Guard's form), or JSON
    {"verdict": "safe"|"unsafe", "categories": [...]}."""
    text = text.strip()
    try:
        obj = json.loads(text)
        verdict, categories = str(obj.get("verdict", "")).lower(), [str(c) for c in obj.get("categories") or []]
    except (ValueError, AttributeError):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        verdict = lines[0].lower() if lines else ""
        categories = [c.strip() for c in lines[1].split(",") if c.strip()] if len(lines) > 1 else []
    if verdict == "safe":
        return Verdict()
    if verdict != "unsafe":
        raise ValueError(f"the judge answered neither safe nor unsafe: {text[:60]!r}")
    relevant = [c for c in categories if not rule.categories or c in rule.categories]
    if categories and not relevant:
        return Verdict()
    return Verdict("block", (relevant or ["unsafe"])[0], "the judge found it unsafe")


def webhook_verdict(answer: dict, text: str) -> Verdict:
    if not isinstance(answer, dict):
        raise ValueError("the webhook's answer is not an object")
    action = answer.get("action")
    if action not in ("allow", "block", "mask"):
        raise ValueError(f"the webhook answered action {action!r}")
    spans = []
    for span in answer.get("spans") or []:
        if (isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) for x in span)
                and 0 <= span[0] < span[1] <= len(text)):
            spans.append(span)
    if action == "mask" and not spans:
        raise ValueError("the webhook asked to mask but named no valid spans")
    return Verdict(action, str(answer.get("category") or ""), str(answer.get("reason") or "")[:200], spans)
