"""Response cache decisions on plain data: the key, what may be stored, how an entry is packed.

The key covers everything that changes the answer: provider and wire format, the path (Gemini's model is in it), the
routed model, plain or streamed, the whole body in canonical JSON (sorted keys) less the fields that do not change the
answer, and the tenant scope. Peers that key on less leak answers across models and tenants."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .schema import ConfigError, boolean, choice, count, mapping, parse_duration, parse_size, patterns

IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "safety_identifier"})
SCOPES = ("consumer", "group", "global")
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode  # made once


def tenant(scope: str, consumer: str, group: str, byok_key: str = "") -> str:
    """Whose entries a call may read. A call with the client's own provider key is its own tenant whatever the scope
    (one per key: every byok caller is consumer 'byok', and a garbage key must not read a real key's answers)."""
    if byok_key:
        return "byok:" + hashlib.sha256(byok_key.encode()).hexdigest()
    if scope == "global":
        return "*"
    if scope == "group" and group:
        return f"group:{group}"
    return f"consumer:{consumer}"  # scope consumer, or a consumer without a group: never shared


def cache_key(*, provider: str, dialect: str, path: str, model: str, streamed: bool, body: dict,
              tenant_id: str) -> str:
    canonical = _canonical({k: v for k, v in body.items() if k not in IGNORED_FIELDS})
    material = "\n".join((provider, dialect, path, model, "stream" if streamed else "plain", tenant_id, canonical))
    return "tollgate:cache:" + hashlib.sha256(material.encode()).hexdigest()


def is_deterministic(body: dict) -> bool:
    """Temperature 0, asked for explicitly (OpenAI/Anthropic top level, Gemini generationConfig): without it the
    providers sample (their default temperature is 1), and two identical questions deserve two answers."""
    config = body.get("generationConfig")
    temperature = body.get("temperature", config.get("temperature") if isinstance(config, dict) else None)
    return temperature == 0 and not isinstance(temperature, bool)


def request_directive(cache_control: str, tollgate_header: str) -> str:
    """'lookup' (normal), 'refresh' (no-cache: skip the lookup, store the answer) or 'bypass' (neither)."""
    directives = {d.strip().lower() for d in cache_control.split(",")}
    if tollgate_header.strip().lower() == "bypass" or "no-store" in directives:
        return "bypass"
    if "no-cache" in directives:
        return "refresh"
    return "lookup"


@dataclass
class Entry:
    content_type: str
    streamed: bool
    prompt_tokens: int
    completion_tokens: int
    body: bytes               # the answer; for a stream, its whole upstream event sequence

    def pack(self) -> bytes:
        head = json.dumps({"content_type": self.content_type, "streamed": self.streamed,
                           "usage": [self.prompt_tokens, self.completion_tokens]}).encode()
        return head + b"\n" + self.body

    @classmethod
    def unpack(cls, data: bytes) -> Entry | None:
        head, sep, body = data.partition(b"\n")
        try:
            meta = json.loads(head)
            prompt, completion = meta["usage"]
            return cls(meta["content_type"], bool(meta["streamed"]), int(prompt), int(completion), body) if sep else None
        except (ValueError, KeyError, TypeError):
            return None  # an entry from another version: a miss


@dataclass(frozen=True)
class SemanticCache:
    threshold: float = 0.92           # cosine similarity of the last user messages, at least
    scope: str = "consumer"           # consumer | group | global: never across tenants
    max_age_s: float = 3600.0
    on: tuple[str, ...] = ("*",)      # model globs (the routed model)
    max_entries: int = 10_000         # per tenant and context; the oldest go first

    def applies_to(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.on)


def parse_semantic(node) -> SemanticCache | None:
    if node is None:
        return None
    node = mapping(node, "cache.semantic", {"threshold", "scope", "max_age", "on", "embed", "max_entries"})
    threshold = node.get("threshold", 0.92)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold <= 1:
        raise ConfigError(f"cache.semantic.threshold: expected a similarity above 0 and at most 1, got {threshold!r}")
    choice(node.get("embed", "last_user_message"), "cache.semantic.embed", ("last_user_message",))
    return SemanticCache(float(threshold), choice(node.get("scope", "consumer"), "cache.semantic.scope", SCOPES),
                         parse_duration(node.get("max_age", "1h"), "cache.semantic.max_age"),
                         patterns(node, "on", "cache.semantic") or ("*",),
                         count(node.get("max_entries", 10_000), "cache.semantic.max_entries"))


def context_digest(body: dict, messages_key: str, provider: str, model: str, streamed: bool, tenant_id: str) -> str:
    """Everything but the last user message that shapes an answer: tenant, provider, routed model, system prompt,
    tools, response format, sampling parameters and the conversation before it. Semantic entries are searched only
    among those with the same digest."""
    rest = {k: v for k, v in body.items() if k not in IGNORED_FIELDS and k not in ("model", "stream_options")}
    turns = rest.get(messages_key)
    if isinstance(turns, list) and turns:
        rest[messages_key] = turns[:-1]
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    material = "\n".join((provider, model, "stream" if streamed else "plain", tenant_id, canonical))
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True)
class CacheConfig:
    ttl_s: float = 3600.0
    scope: str = "consumer"           # consumer | group | global
    max_entry_bytes: int = 2**20
    only_deterministic: bool = False  # store only answers to requests that ask for temperature 0
    memory_bytes: int = 64 * 2**20    # bound of the in-memory store
    semantic: SemanticCache | None = None


def parse_cache(node) -> CacheConfig | None:
    if node is None:
        return None
    node = mapping(node, "cache", {"enabled", "ttl", "scope", "max_entry_bytes", "only_deterministic",
                                   "memory_bytes", "semantic"})
    if not boolean(node.get("enabled", True), "cache.enabled"):
        return None
    default = CacheConfig()
    return CacheConfig(
        ttl_s=parse_duration(node.get("ttl", default.ttl_s), "cache.ttl"),
        scope=choice(node.get("scope", default.scope), "cache.scope", ("consumer", "group", "global")),
        max_entry_bytes=parse_size(node.get("max_entry_bytes", default.max_entry_bytes), "cache.max_entry_bytes"),
        only_deterministic=boolean(node.get("only_deterministic", default.only_deterministic),
                                   "cache.only_deterministic"),
        memory_bytes=parse_size(node.get("memory_bytes", default.memory_bytes), "cache.memory_bytes"),
        semantic=parse_semantic(node.get("semantic")),
    )
