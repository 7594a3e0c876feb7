"""Where clients put their API key, and which consumer a key belongs to."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl

from .providers import CREDENTIAL_HEADERS
from .schema import ConfigError, boolean, choice, list_of, mapping, string


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeySources:
    """Where else a gateway key may come (seed 001's key-auth: `keys: [apikey]`, `in_header`, `in_query`), besides
    every header an SDK uses and Gemini's ?key=. Such headers and parameters never go upstream either."""
    headers: tuple[str, ...] = ()
    params: tuple[str, ...] = ("key",)


def parse_auth(node) -> tuple[str, KeySources]:
    """`auth: required | none`, or `auth: {mode: required | none, key_sources: {keys, in_header, in_query}}`."""
    if node is None or isinstance(node, str):
        return (choice(node, "auth", ("required", "none")) if node is not None else ""), KeySources()
    node = mapping(node, "auth", {"mode", "key_sources"})
    mode = choice(node["mode"], "auth.mode", ("required", "none")) if "mode" in node else ""
    sources = mapping(node.get("key_sources"), "auth.key_sources", {"keys", "in_header", "in_query"})
    names = [string(k, f"auth.key_sources.keys[{i}]").lower()
             for i, k in enumerate(list_of(sources.get("keys"), "auth.key_sources.keys"))]
    if sources and not names:
        raise ConfigError("auth.key_sources.keys: name at least one header or query parameter")
    in_header = boolean(sources.get("in_header", True), "auth.key_sources.in_header")
    in_query = boolean(sources.get("in_query", False), "auth.key_sources.in_query")
    return mode, KeySources(tuple(n for n in names if n not in CREDENTIAL_HEADERS) if in_header else (),
                            ("key", *names) if in_query else ("key",))


def client_key(headers, query: str, sources: KeySources = KeySources()) -> str:
    """The key a client sent, from any header an SDK uses, a configured one, Gemini's ?key= or a configured query
    parameter; '' if none. The scheme word is optional: 'Bearer k', 'bearer k' and a bare 'k' are the same key."""
    for name in CREDENTIAL_HEADERS + sources.headers:
        value = headers.get(name, "").strip()
        if value:
            scheme, _, rest = value.partition(" ")
            return rest.strip() if scheme.lower() == "bearer" else value
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in sources.params and value:
            return value
    return ""


WEBSOCKET_KEY_PREFIX = "openai-insecure-api-key."  # browsers cannot set headers on a WebSocket: the key rides here


def websocket_key(protocols: str) -> tuple[str, str]:
    """(key, the Sec-WebSocket-Protocol value without it) of a WebSocket handshake; ('', protocols) if none."""
    items = [p.strip() for p in protocols.split(",") if p.strip()]
    key = next((p[len(WEBSOCKET_KEY_PREFIX):] for p in items if p.startswith(WEBSOCKET_KEY_PREFIX)), "")
    return key, ", ".join(p for p in items if not p.startswith(WEBSOCKET_KEY_PREFIX))


def without_key_param(query: str, params: tuple[str, ...] = ("key",)) -> str:
    return "&".join(p for p in query.split("&") if p and p.split("=", 1)[0] not in params)


def path_without_key(path: str, params: tuple[str, ...] = ("key",)) -> str:
    """A request path with Gemini's ?key= (and configured key parameters) taken out of its query."""
    path, _, query = path.partition("?")
    return path + (f"?{q}" if (q := without_key_param(query, params)) else "")


def find_consumer(by_digest: dict, key: str):
    """The config.Consumer whose key this is, or None: looked up by the key's SHA-256 digest, then confirmed in
    constant time. Timing can at most reveal something about digests, which says nothing usable about keys."""
    digest = key_digest(key)
    consumer = by_digest.get(digest)
    return consumer if consumer is not None and hmac.compare_digest(consumer.key_sha256, digest) else None
